// `user request-cert` and `user list-certs` against the real control plane: the
// kube-controller-manager's kubernetes.io/kube-apiserver-client signer issues the certificate
// with the cluster CA, and the proxy (whose --client-ca-file is the cluster CA) takes it as is.
import '../../src/pki/certificates.js';
import { spawn } from 'node:child_process';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import t from 'tap';
import { kubectl, requireKubectl } from '../helpers/kubectl.js';
import { PROJECT_ROOT, cliArgs } from '../helpers/proxy.js';
import { tempDir } from '../helpers/temp.js';
import { buildKubeconfig } from '../../src/pki/kubeconfig.js';
import { startControlPlane } from './control-plane.js';
import { startProxyInFront } from './proxy-fixture.js';

requireKubectl();
const cp = await startControlPlane({ kubelet: false });
t.teardown(() => cp.stop());
const front = await startProxyInFront(t, cp);
const proxyCa = cp.pki.file('proxy-ca.crt');
let frankKubeconfig = '';

interface Run {
  /** Resolves when the process exits. */
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** Resolves when stderr has matched. */
  stderrMatch(re: RegExp): Promise<void>;
  kill(signal: NodeJS.Signals): void;
}

/** The CLI as a child process, from source; `user request-cert` with the admin kubeconfig. */
function cli(args: string[], timeoutMs = 120_000): Run {
  const child = spawn(process.execPath, cliArgs(args), { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
    for (const w of waiters.filter((w) => w.re.test(stderr))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    child.once('exit', (code) => {
      clearTimeout(timer);
      // Let the pipes drain.
      setTimeout(() => resolve({ code, stdout, stderr }), 50);
    });
  });
  return {
    done,
    kill: (signal) => child.kill(signal),
    stderrMatch: (re) =>
      re.test(stderr)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ re, resolve });
            void done.then(() => reject(new Error(`exited before stderr matched ${re}: ${stderr}`)));
          }),
  };
}

const workDir = (name: string) => tempDir(`kfp-csr-${name}-`);
const requestArgs = (name: string, dir: string, extra: string[]) => ['user', 'request-cert', name, '--kubeconfig', cp.adminKubeconfig, '-o', join(dir, `${name}.kubeconfig`), '--server', front.proxy.url, '--ca', proxyCa, ...extra];

async function whoami(kubeconfig: string) {
  const res = await kubectl(kubeconfig, ['auth', 'whoami', '-o', 'json']);
  if (res.code !== 0) throw new Error(`kubectl auth whoami failed: ${res.stderr}`);
  // Only name and groups: the extra (the proxy's credential-id for a certificate) is not at issue here.
  const { username, groups } = (JSON.parse(res.stdout) as { status: { userInfo: { username: string; groups: string[] } } }).status.userInfo;
  return { username, groups };
}

/** The last line of stderr: the one a failure ends with. */
const lastLine = (stderr: string) => stderr.trim().split('\n').at(-1) ?? '';

async function csrExists(name: string): Promise<boolean> {
  const res = await cp.admin(['get', 'csr', name, '-o', 'name']);
  return res.code === 0;
}

t.test('--approve: key 0600, certificate and kubeconfig; whoami through the proxy shows the name and groups', async (t) => {
  const dir = workDir('erin');
  const started = Date.now();
  const run = await cli(requestArgs('erin', dir, ['--group', 'team-a', '--group', 'team-b', '--expiration', '2h', '--approve'])).done;
  const roundTrip = Date.now() - started;
  t.equal(run.code, 0, run.stderr);
  t.comment(`request-cert --approve round trip (process start to exit): ${roundTrip} ms; ${lastLine(run.stderr)}`);
  t.match(run.stderr, /created CSR erin: CN=erin, O=team-a, O=team-b, signer kubernetes\.io\/kube-apiserver-client, expiration 2h/);
  t.match(run.stderr, /approved CSR erin/);
  t.same(readdirSync(dir).sort(), ['erin.crt', 'erin.key', 'erin.kubeconfig']);
  t.equal(statSync(join(dir, 'erin.key')).mode & 0o777, 0o600);
  t.equal(statSync(join(dir, 'erin.kubeconfig')).mode & 0o777, 0o600);
  t.same(await whoami(join(dir, 'erin.kubeconfig')), { username: 'erin', groups: ['team-a', 'team-b', 'system:authenticated'] });

  const cert = new x509.X509Certificate(readFileSync(join(dir, 'erin.crt'), 'utf8'));
  const lifetime = cert.notAfter.getTime() - Date.now();
  t.ok(Math.abs(lifetime - 2 * 3600_000) < 5 * 60_000, `notAfter ${cert.notAfter.toISOString()} is 2h from now`);
  const clusterCa = new x509.X509Certificate(cp.pki.read('ca.crt'));
  t.ok(await cert.verify({ publicKey: clusterCa, signatureOnly: true }), 'signed by the cluster CA');

  // The key was never sent: the CSR object holds only the request.
  const csr = JSON.parse(await cp.adminOk(['get', 'csr', 'erin', '-o', 'json'])) as { spec: { request: string; usages: string[]; expirationSeconds: number }; metadata: { labels: Record<string, string> } };
  t.same(csr.spec.usages, ['client auth']);
  t.equal(csr.spec.expirationSeconds, 7200);
  t.equal(csr.metadata.labels['app.kubernetes.io/managed-by'], 'kube-front-proxy');
  const keyDer = x509.PemConverter.decode(readFileSync(join(dir, 'erin.key'), 'utf8'))[0]!;
  t.notOk(JSON.stringify(csr).includes(Buffer.from(keyDer).toString('base64').slice(40, 80)), 'no key material in the CSR object');
});

t.test("an expiration beyond kube-controller-manager's cap is shortened to --cluster-signing-duration (8760h by default), and said", async (t) => {
  const dir = workDir('omar');
  const run = await cli(requestArgs('omar', dir, ['--expiration', '10000h', '--approve'])).done;
  t.equal(run.code, 0, run.stderr);
  t.match(run.stderr, /note: the signer shortened the certificate to end \S+ \(kube-controller-manager caps it at --cluster-signing-duration\)/);
  const cert = new x509.X509Certificate(readFileSync(join(dir, 'omar.crt'), 'utf8'));
  // Long-lived: NotAfter = now + TTL - 5 min backdate.
  const expected = Date.now() + 8760 * 3600_000 - 5 * 60_000;
  t.ok(Math.abs(cert.notAfter.getTime() - expected) < 2 * 60_000, `notAfter ${cert.notAfter.toISOString()} is 8760h less 5m from now`);
});

t.test("without --approve: prints the approve line, waits, and another client's approval completes it", async (t) => {
  const dir = workDir('frank');
  const run = cli(requestArgs('frank', dir, ['--group', 'devs', '--wait', '60s']));
  await run.stderrMatch(/kubectl certificate approve frank/);
  t.notOk(existsSync(join(dir, 'frank.key')), 'nothing written while waiting');
  await cp.adminOk(['certificate', 'approve', 'frank']);
  const result = await run.done;
  t.equal(result.code, 0, result.stderr);
  frankKubeconfig = join(dir, 'frank.kubeconfig');
  t.same(await whoami(frankKubeconfig), { username: 'frank', groups: ['devs', 'system:authenticated'] });
});

t.test('a denied CSR: one line, exit 1, no files', async (t) => {
  const dir = workDir('gina');
  const run = cli(requestArgs('gina', dir, ['--wait', '60s']));
  await run.stderrMatch(/kubectl certificate approve gina/);
  await cp.adminOk(['certificate', 'deny', 'gina']);
  const result = await run.done;
  t.equal(result.code, 1);
  t.match(lastLine(result.stderr), /^kube-front-proxy: CSR gina was denied/);
  t.same(readdirSync(dir), [], 'no files');
});

t.test('a name already taken by a pending CSR; --wait expiry withdraws the request', async (t) => {
  const dir = workDir('hank');
  const first = cli(requestArgs('hank', dir, ['--wait', '4s']));
  await first.stderrMatch(/kubectl certificate approve hank/);
  const dir2 = workDir('hank2');
  const second = await cli(requestArgs('hank', dir2, ['--approve'])).done;
  t.equal(second.code, 1);
  t.equal(lastLine(second.stderr), 'kube-front-proxy: CSR hank already exists (Pending): delete it ("kubectl delete csr hank") or give --csr-name');
  t.same(readdirSync(dir2), []);

  const expired = await first.done;
  t.equal(expired.code, 1);
  t.equal(lastLine(expired.stderr), 'kube-front-proxy: CSR hank was not approved within --wait 4s (CSR hank deleted)');
  t.same(readdirSync(dir), []);
  t.notOk(await csrExists('hank'), 'the withdrawn CSR is gone');
});

t.test('Ctrl-C while waiting withdraws the CSR and writes nothing', async (t) => {
  const dir = workDir('ivan');
  const run = cli(requestArgs('ivan', dir, ['--wait', '60s']));
  await run.stderrMatch(/kubectl certificate approve ivan/);
  run.kill('SIGINT');
  const result = await run.done;
  t.equal(result.code, 130);
  t.equal(lastLine(result.stderr), 'kube-front-proxy: interrupted (SIGINT); CSR ivan deleted; no file written');
  t.same(readdirSync(dir), []);
  t.notOk(await csrExists('ivan'));
});

t.test("--key-file: the user's key stays where it was; the certificate goes beside it", async (t) => {
  const dir = workDir('judy');
  const keyFile = join(dir, 'judy.key');
  // A SEC1 "EC PRIVATE KEY", as openssl ecparam -genkey writes it.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(keyFile, privateKey.export({ type: 'sec1', format: 'pem' }), { mode: 0o600 });
  const before = readFileSync(keyFile);
  const mtime = statSync(keyFile).mtimeMs;
  const out = join(dir, 'out');
  mkdirSync(out);
  const run = await cli(['user', 'request-cert', 'judy', '--group', 'ops', '--key-file', keyFile, '--approve', '--kubeconfig', cp.adminKubeconfig, '-o', join(out, 'judy.kubeconfig'), '--server', front.proxy.url, '--ca', proxyCa]).done;
  t.equal(run.code, 0, run.stderr);
  t.same(readFileSync(keyFile), before, 'key unchanged');
  t.equal(statSync(keyFile).mtimeMs, mtime);
  t.ok(existsSync(join(dir, 'judy.crt')), 'certificate beside the key');
  t.same(readdirSync(out), ['judy.kubeconfig']);
  t.same(await whoami(join(out, 'judy.kubeconfig')), { username: 'judy', groups: ['ops', 'system:authenticated'] });
});

t.test('--csr-file: submitted and fetched only; the user builds the kubeconfig from their own key', async (t) => {
  const dir = workDir('kate');
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: new x509.Name([{ CN: ['kate'] }, { O: ['auditors'] }]),
    keys: keys as never,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  const keyFile = join(dir, 'kate.key');
  writeFileSync(keyFile, `${x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY')}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'kate.csr'), csr.toString('pem'));

  // A request whose subject is not what the admin grants is refused before it is submitted.
  const wrong = await cli(['user', 'request-cert', 'kate', '--group', 'admins', '--csr-file', join(dir, 'kate.csr'), '--approve', '--kubeconfig', cp.adminKubeconfig]).done;
  t.equal(wrong.code, 1);
  t.equal(lastLine(wrong.stderr), `kube-front-proxy: --csr-file ${join(dir, 'kate.csr')}: the request's subject is "CN=kate, O=auditors", not CN=kate, O=admins`);
  t.notOk(await csrExists('kate'));

  const run = await cli(['user', 'request-cert', 'kate', '--group', 'auditors', '--csr-file', join(dir, 'kate.csr'), '--approve', '--kubeconfig', cp.adminKubeconfig]).done;
  t.equal(run.code, 0, run.stderr);
  t.same(readdirSync(dir).sort(), ['kate.crt', 'kate.csr', 'kate.key']);
  t.match(lastLine(run.stderr), /kube-front-proxy kubeconfig --user kate --client-cert/);
  const kubeconfig = join(dir, 'kate.kubeconfig');
  const made = await cli(['kubeconfig', '--user', 'kate', '--client-cert', join(dir, 'kate.crt'), '--client-key', keyFile, '--server', front.proxy.url, '--ca', proxyCa, '-o', kubeconfig]).done;
  t.equal(made.code, 0, made.stderr);
  t.same(await whoami(kubeconfig), { username: 'kate', groups: ['auditors', 'system:authenticated'] });
});

t.test('an admin without approve on the signer: one line naming the permission, CSR withdrawn', async (t) => {
  await cp.adminOk(['create', 'clusterrole', 'csr-submitter', '--verb=create,get,list,watch,delete', '--resource=certificatesigningrequests.certificates.k8s.io']);
  await cp.adminOk(['create', 'clusterrolebinding', 'csr-submitter', '--clusterrole=csr-submitter', '--user=submitter']);
  const pair = await cp.pki.issueUser('submitter', { commonName: 'submitter' });
  const dir = workDir('submitter');
  const kubeconfig = join(dir, 'submitter.kubeconfig');
  writeFileSync(kubeconfig, buildKubeconfig({ server: cp.apiservers[0]!.url, certificateAuthority: cp.pki.read('ca.crt'), user: 'submitter', credentials: { clientCertificate: pair.cert, clientKey: pair.key } }), { mode: 0o600 });
  const out = join(dir, 'out');
  mkdirSync(out);
  const run = await cli(['user', 'request-cert', 'lena', '--approve', '--kubeconfig', kubeconfig, '-o', join(out, 'lena.kubeconfig'), '--server', front.proxy.url, '--ca', proxyCa]).done;
  t.equal(run.code, 1);
  t.match(lastLine(run.stderr), /^kube-front-proxy: approving CSR lena refused: the admin needs "approve" on signers "kubernetes\.io\/kube-apiserver-client".*\(CSR lena deleted\)$/);
  t.same(readdirSync(out), []);
  t.notOk(await csrExists('lena'));
});

t.test("list-certs: the proxy's CSRs, their state and expiry", async (t) => {
  const run = await cli(['user', 'list-certs', '--kubeconfig', cp.adminKubeconfig]).done;
  t.equal(run.code, 0, run.stderr);
  t.comment(run.stdout);
  const rows = run.stdout
    .trim()
    .split('\n')
    .map((l) => l.split('\t'));
  t.same(rows[0], ['CSR', 'USER', 'GROUPS', 'STATE', 'EXPIRES']);
  const byName = new Map(rows.slice(1).map((r) => [r[0], r]));
  t.match(byName.get('erin'), ['erin', 'erin', 'team-a,team-b', 'Issued', /^\d{4}-\d\d-\d\dT/]);
  t.match(byName.get('gina'), ['gina', 'gina', '-', 'Denied', '(asks 720h)']);
  t.match(byName.get('kate'), ['kate', 'kate', 'auditors', 'Issued', /^\d{4}-/]);
  t.notOk(byName.has('hank'), 'withdrawn');
});

t.test('revocation: a CRL signed with the cluster CA (pki revoke) on --client-crl-file refuses the certificate', async (t) => {
  // On the control plane: the cluster CA's files, linked under the names pki revoke reads.
  const caDir = workDir('crl');
  symlinkSync(cp.pki.file('ca.crt'), join(caDir, 'user-ca.crt'));
  symlinkSync(cp.pki.file('ca.key'), join(caDir, 'user-ca.key'));
  const erinDir = workDir('erin2');
  const issued = await cli(requestArgs('erin2', erinDir, ['--csr-name', 'erin2', '--approve', '--expiration', '1h'])).done;
  t.equal(issued.code, 0, issued.stderr);
  const revoked = await cli(['pki', 'revoke', '--dir', caDir, '--cert', join(erinDir, 'erin2.crt')]).done;
  t.equal(revoked.code, 0, revoked.stderr);

  const guarded = await startProxyInFront(t, cp, { flags: ['--client-crl-file', join(caDir, 'user-ca.crl')] });
  const through = (file: string) => {
    const config = readFileSync(file, 'utf8').replace(front.proxy.url, guarded.proxy.url);
    const copy = join(workDir('via'), 'kubeconfig');
    writeFileSync(copy, config, { mode: 0o600 });
    return copy;
  };
  const refused = await kubectl(through(join(erinDir, 'erin2.kubeconfig')), ['auth', 'whoami']);
  t.not(refused.code, 0, 'revoked certificate refused');
  t.comment(refused.stderr.trim().split('\n').at(-1) ?? '');
  t.same(await whoami(through(frankKubeconfig)), { username: 'frank', groups: ['devs', 'system:authenticated'] }, 'others still pass');
});
