// `user request-cert` without a cluster: the pure parts (durations, subject checks, kubectl's
// messages), argument errors, and a stand-in kubectl that hands back certificates a real signer
// would not (wrong subject, wrong usage, another key): each is refused with one line, exit 1, and
// no file written. The real signer end to end is test/cluster/csr.test.ts.
import '../src/pki/certificates.js';
import { chmodSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import t from 'tap';
import { kubectlMessage } from '../src/csr/kubectl.js';
import { formatDuration, parseDuration, subjectMismatch } from '../src/csr/request.js';
import { createCertificateAuthority, issueCertificate, type CertificateOptions } from '../src/pki/certificates.js';
import { runCli } from './helpers/proxy.js';
import type { TapTest } from './helpers/setup.js';
import { tempDir } from './helpers/temp.js';

t.test('durations: Go style and days; formatted back', async (t) => {
  t.equal(parseDuration('--expiration', '720h'), 720 * 3600);
  t.equal(parseDuration('--expiration', '1h30m'), 5400);
  t.equal(parseDuration('--wait', '45s'), 45);
  t.equal(parseDuration('--expiration', '30d'), 30 * 86400);
  t.throws(() => parseDuration('--wait', ''), /--wait: "" is not a duration/);
  t.throws(() => parseDuration('--wait', '5 minutes'), /is not a duration/);
  t.throws(() => parseDuration('--wait', '-5m'), /is not a duration/);
  t.equal(formatDuration(7200), '2h');
  t.equal(formatDuration(5400), '1h30m');
  t.equal(formatDuration(4), '4s');
  t.equal(formatDuration(0), '0s');
});

t.test('subject: exactly CN=user and one O per group, in any order', async (t) => {
  const name = (rdns: Record<string, string[]>[]) => new x509.Name(rdns);
  t.equal(subjectMismatch(name([{ CN: ['ann'] }, { O: ['a'] }, { O: ['b'] }]), 'ann', ['b', 'a']), undefined);
  t.equal(subjectMismatch(name([{ CN: ['ann'] }]), 'ann', []), undefined);
  t.match(subjectMismatch(name([{ CN: ['ann'] }, { O: ['a'] }]), 'ann', []), /^"CN=ann, O=a", not CN=ann$/);
  t.ok(subjectMismatch(name([{ CN: ['ann'] }]), 'ann', ['a']), 'a missing group');
  t.ok(subjectMismatch(name([{ CN: ['bob'] }]), 'ann', []), 'another name');
  t.ok(subjectMismatch(name([{ CN: ['ann'] }, { OU: ['x'] }]), 'ann', []), 'another attribute');
  t.ok(subjectMismatch(name([{ CN: ['ann'] }, { CN: ['root'] }]), 'ann', []), 'two CNs');
  t.ok(subjectMismatch(name([{ CN: ['ann'] }, { O: ['a'] }, { O: ['a'] }]), 'ann', ['a']), 'a repeated group');
});

t.test('kubectl messages: one line, without the "Error from server" prefix and klog lines', async (t) => {
  t.equal(kubectlMessage('Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io "x" is forbidden: nope\n'), 'certificatesigningrequests.certificates.k8s.io "x" is forbidden: nope');
  t.equal(kubectlMessage('W1207 01:00:00.000 1 warnings.go:70] skew\nerror: the server doesn\'t have a resource type "csr"\n'), 'the server doesn\'t have a resource type "csr"');
  t.equal(kubectlMessage(''), 'kubectl failed without a message');
});

// A kubectl stand-in: `config view` gives a cluster CA, `create` keeps the object, `get` returns
// it with whatever certificate the test put in issued.crt.
const FAKE = `#!/usr/bin/env node
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
const dir = process.env.FAKE_KUBECTL_DIR;
const args = process.argv.slice(4);
const b64 = (s) => Buffer.from(s).toString('base64');
if (args[0] === 'config') {
  console.log(JSON.stringify({ clusters: [{ cluster: { 'certificate-authority-data': b64(readFileSync(join(dir, 'ca.crt'), 'utf8')) } }] }));
} else if (args[0] === 'create') {
  const obj = JSON.parse(readFileSync(0, 'utf8'));
  obj.metadata.uid = 'uid-1';
  writeFileSync(join(dir, 'csr.json'), JSON.stringify(obj));
  console.log(JSON.stringify(obj));
} else if (args[0] === 'get') {
  const obj = JSON.parse(readFileSync(join(dir, 'csr.json'), 'utf8'));
  obj.status = { conditions: [{ type: 'Approved', status: 'True' }], certificate: b64(readFileSync(join(dir, 'issued.crt'), 'utf8')) };
  console.log(JSON.stringify(obj));
} else if (args[0] === 'certificate' || args[0] === 'delete') {
  console.log('ok');
} else {
  console.error('error: unexpected ' + args.join(' '));
  process.exit(1);
}
`;

const clusterCa = await createCertificateAuthority({ commonName: 'fake-cluster-ca' });
const otherCa = await createCertificateAuthority({ commonName: 'another-ca' });
const proxyCaDir = tempDir('kfp-csr-unit-');
writeFileSync(join(proxyCaDir, 'proxy-ca.crt'), clusterCa.cert);

/**
 * Runs `user request-cert nina --group devs` against the stand-in kubectl, which hands back a
 * certificate issued by `ca` as `cert` says; `ownKey`: the CLI is given that certificate's key
 * (--key-file), so the certificate matches the request's key and only its issuer can be wrong.
 * Returns the last line of stderr of a refusal.
 */
async function withIssued(t: TapTest, ca: typeof clusterCa, cert: Omit<CertificateOptions, 'validityDays'>, { ownKey = false, expect = 'refused' as 'refused' | 'written' } = {}) {
  const dir = tempDir('kfp-csr-fake-');
  const fake = join(dir, 'kubectl.mjs');
  writeFileSync(fake, FAKE);
  chmodSync(fake, 0o755);
  writeFileSync(join(dir, 'ca.crt'), clusterCa.cert);
  const issued = await issueCertificate(ca, { ...cert, validityDays: 30 });
  writeFileSync(join(dir, 'issued.crt'), issued.cert);
  writeFileSync(join(dir, 'nina.key'), issued.key, { mode: 0o600 });
  const out = join(dir, 'out');
  await import('node:fs').then((fs) => fs.mkdirSync(out));
  const result = await runCli(
    [
      ...['user', 'request-cert', 'nina', '--group', 'devs', '--approve', '--kubeconfig', join(dir, 'admin.kubeconfig'), '-o', join(out, 'nina.kubeconfig')],
      ...['--server', 'https://127.0.0.1:8443', '--ca', join(proxyCaDir, 'proxy-ca.crt'), ...(ownKey ? ['--key-file', join(dir, 'nina.key')] : [])],
    ],
    { KUBE_FRONT_PROXY_KUBECTL: fake, FAKE_KUBECTL_DIR: dir },
  );
  if (expect === 'written') {
    t.equal(result.code, 0, result.stderr);
    t.same(readdirSync(out), ['nina.kubeconfig'], 'the kubeconfig written');
    return '';
  }
  t.equal(result.code, 1, result.stderr);
  t.same(readdirSync(out), [], 'no files');
  return result.stderr.trim().split('\n').at(-1) ?? '';
}

t.test('a certificate with another subject is refused', async (t) => {
  const line = await withIssued(t, clusterCa, { commonName: 'mallory', organizations: ['system:masters'], usages: ['clientAuth'] });
  t.equal(line, 'kube-front-proxy: the certificate issued for CSR nina has subject "O=system:masters, CN=mallory", not CN=nina, O=devs; not written');
});

t.test('a certificate for server auth is refused', async (t) => {
  const line = await withIssued(t, clusterCa, { commonName: 'nina', organizations: ['devs'], usages: ['serverAuth'] });
  t.match(line, /^kube-front-proxy: the certificate issued for CSR nina has extended key usages \[1\.3\.6\.1\.5\.5\.7\.3\.1\], not exactly client auth/);
});

t.test('a certificate for another key is refused', async (t) => {
  const line = await withIssued(t, clusterCa, { commonName: 'nina', organizations: ['devs'], usages: ['clientAuth'] });
  t.equal(line, 'kube-front-proxy: the certificate issued for CSR nina has another public key than the request; not written');
});

t.test("a certificate for the request's key, subject and usage, but from another CA, is refused", async (t) => {
  const line = await withIssued(t, otherCa, { commonName: 'nina', organizations: ['devs'], usages: ['clientAuth'] }, { ownKey: true });
  t.match(line, /^kube-front-proxy: the certificate issued for CSR nina is not signed by the cluster CA \(CN=fake-cluster-ca\); give the signer's CA with --signer-ca/);
});

t.test('the same from the cluster CA is written (what the refusal above depends on)', async (t) => {
  await withIssued(t, clusterCa, { commonName: 'nina', organizations: ['devs'], usages: ['clientAuth'] }, { ownKey: true, expect: 'written' });
});

t.test('argument errors: exit 2 before anything is sent; no kubectl: exit 1', async (t) => {
  const base = ['user', 'request-cert', 'nina', '--kubeconfig', '/nonexistent', '--server', 'https://127.0.0.1:8443', '--ca', join(proxyCaDir, 'proxy-ca.crt')];
  const short = await runCli([...base, '-o', join(proxyCaDir, 'x.kubeconfig'), '--expiration', '5m']);
  t.equal(short.code, 2);
  t.equal(short.stderr.trim(), 'kube-front-proxy: --expiration: "5m" is under 10m, the least the API accepts');
  const noOut = await runCli(base);
  t.equal(noOut.code, 2);
  t.equal(noOut.stderr.trim(), 'kube-front-proxy: -o: required (the kubeconfig to write)');
  const masters = await runCli([...base, '-o', join(proxyCaDir, 'x.kubeconfig'), '--group', 'system:masters']);
  t.equal(masters.code, 2);
  t.match(masters.stderr, /^kube-front-proxy: --group system:masters: refused/);
  const both = await runCli([...base, '-o', join(proxyCaDir, 'x.kubeconfig'), '--key-file', 'a', '--csr-file', 'b']);
  t.equal(both.code, 2);
  const exists = await runCli([...base, '-o', join(proxyCaDir, 'proxy-ca.crt')]);
  t.equal(exists.code, 1);
  t.equal(exists.stderr.trim(), `kube-front-proxy: ${join(proxyCaDir, 'proxy-ca.crt')}: already exists; refusing to overwrite`);
  const noKubectl = await runCli([...base, '-o', join(proxyCaDir, 'y.kubeconfig')], { KUBE_FRONT_PROXY_KUBECTL: '/nonexistent/kubectl' });
  t.equal(noKubectl.code, 1);
  t.equal(noKubectl.stderr.trim(), 'kube-front-proxy: /nonexistent/kubectl: not found on PATH (user request-cert and list-certs run kubectl with --kubeconfig)');
  t.same(readdirSync(proxyCaDir), ['proxy-ca.crt']);
});
