// `pki init` / `pki user`: the files kubeadm and the proxy expect, chained to the right CAs,
// with the right names, usages, lifetimes and modes; no clobbering without force; and a real
// TLS handshake with the result.
import { createHash, createPrivateKey, createPublicKey, sign, verify, X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { loadRevocationList } from '../src/material/material.js';
import { readCrl } from '../src/pki/certificates.js';
import { renewCrl, revokeCertificate, showCrl } from '../src/pki/crl.js';
import { issueUserCertificate, PKI_INIT_FILES, pkiInit, PkiError } from '../src/pki/init.js';
import { runCli } from './helpers/proxy.js';

type TapTest = Parameters<Parameters<typeof t.test>[0]>[0];

const DAY_MS = 24 * 60 * 60 * 1000;
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

async function tempDir(t: TapTest): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kfp-pki-init-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const cert = (dir: string, name: string) => new X509Certificate(readFileSync(join(dir, `${name}.crt`)));
const key = (dir: string, name: string) => createPrivateKey(readFileSync(join(dir, `${name}.key`)));
const mode = (path: string) => statSync(path).mode & 0o777;

function hashes(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir)
      .sort()
      .map((f) => [
        f,
        createHash('sha256')
          .update(readFileSync(join(dir, f)))
          .digest('hex'),
      ]),
  );
}

function checkChain(t: TapTest, leaf: X509Certificate, ca: X509Certificate, label: string) {
  t.ok(leaf.verify(ca.publicKey), `${label}: signature verifies with its CA key`);
  t.ok(leaf.checkIssued(ca), `${label}: issued by its CA`);
}

function checkValidity(t: TapTest, c: X509Certificate, days: number, label: string) {
  const now = Date.now();
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.validTo);
  t.ok(from <= now && now < to, `${label}: valid now`);
  // notBefore is backdated an hour; notAfter is `days` after generation time.
  t.ok(Math.abs(to - now - days * DAY_MS) < 5 * 60 * 1000, `${label}: valid for ${days} days`);
}

t.test('pki init writes a complete, consistent PKI', async (t) => {
  const dir = join(await tempDir(t), 'pki'); // does not exist yet
  const result = await pkiInit({
    dir,
    sans: ['localhost', '127.0.0.1', 'proxy.example.com', '10.0.0.9'],
    apiserverSans: ['kube-apiserver'],
    days: 30,
  });

  t.same([...result.written].sort(), PKI_INIT_FILES.map((f) => join(dir, f)).sort(), 'every file reported');
  t.same(readdirSync(dir).sort(), [...PKI_INIT_FILES].sort(), 'no stray temp files');
  t.equal(mode(dir), 0o755, 'directory mode');
  for (const f of PKI_INIT_FILES) {
    const expected = f.endsWith('.key') ? 0o600 : 0o644;
    t.equal(mode(join(dir, f)), expected, `${f} mode ${expected.toString(8)}`);
  }

  const ca = cert(dir, 'ca');
  const frontProxyCa = cert(dir, 'front-proxy-ca');
  const proxyCa = cert(dir, 'proxy-ca');
  const userCa = cert(dir, 'user-ca');
  for (const [name, c] of Object.entries({ ca, 'front-proxy-ca': frontProxyCa, 'proxy-ca': proxyCa, 'user-ca': userCa })) {
    t.equal(c.ca, true, `${name} is a CA`);
    t.ok(c.checkIssued(c) && c.verify(c.publicKey), `${name} is self-signed`);
    const from = Date.parse(c.validFrom);
    t.ok(from <= Date.now() && Date.parse(c.validTo) - Date.now() > 3000 * DAY_MS, `${name} lives ~10 years`);
  }
  t.match(ca.subject, /^CN=kubernetes$/m, 'cluster CA CN is kubernetes');

  const apiserver = cert(dir, 'apiserver');
  checkChain(t, apiserver, ca, 'apiserver');
  t.equal(apiserver.ca, false);
  t.match(apiserver.subject, /^CN=kube-apiserver$/m);
  t.same(apiserver.keyUsage, [SERVER_AUTH], 'apiserver: serverAuth');
  const apiSans = (apiserver.subjectAltName ?? '').split(', ').sort();
  t.same(apiSans, ['DNS:kube-apiserver', 'DNS:kubernetes', 'DNS:kubernetes.default', 'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local', 'DNS:localhost', 'IP Address:127.0.0.1'], 'apiserver SANs');
  checkValidity(t, apiserver, 30, 'apiserver');

  const fpc = cert(dir, 'front-proxy-client');
  checkChain(t, fpc, frontProxyCa, 'front-proxy-client');
  t.notOk(fpc.checkIssued(ca), 'front-proxy-client is not from the cluster CA');
  t.match(fpc.subject, /^CN=front-proxy-client$/m);
  t.same(fpc.keyUsage, [CLIENT_AUTH], 'front-proxy-client: clientAuth');
  checkValidity(t, fpc, 30, 'front-proxy-client');

  const proxy = cert(dir, 'proxy');
  checkChain(t, proxy, proxyCa, 'proxy');
  t.same(proxy.keyUsage, [SERVER_AUTH], 'proxy: serverAuth');
  t.same((proxy.subjectAltName ?? '').split(', ').sort(), ['DNS:localhost', 'DNS:proxy.example.com', 'IP Address:10.0.0.9', 'IP Address:127.0.0.1'], 'proxy SANs: IPs as IP SANs, names as DNS');
  t.ok(proxy.checkHost('proxy.example.com'), 'proxy cert matches its extra DNS SAN');
  t.ok(proxy.checkIP('10.0.0.9'), 'proxy cert matches its extra IP SAN');
  checkValidity(t, proxy, 30, 'proxy');

  for (const name of ['ca', 'apiserver', 'front-proxy-ca', 'front-proxy-client', 'proxy-ca', 'proxy', 'user-ca']) {
    const k = key(dir, name);
    t.ok(cert(dir, name).checkPrivateKey(k), `${name}.key matches ${name}.crt`);
    t.equal(k.asymmetricKeyType, 'ec', `${name}: ECDSA by default`);
    t.match(readFileSync(join(dir, `${name}.key`), 'utf8'), /^-----BEGIN PRIVATE KEY-----/, `${name}.key is PKCS#8`);
  }

  // An empty CRL from the users CA, valid as long as the leaves, ready for --client-crl-file.
  const crlText = readFileSync(join(dir, 'user-ca.crl'), 'utf8');
  t.match(crlText, /^-----BEGIN X509 CRL-----\n[\s\S]+\n-----END X509 CRL-----\n$/, 'user-ca.crl is one PEM X509 CRL');
  const crl = await readCrl(crlText, readFileSync(join(dir, 'user-ca.crt'), 'utf8'));
  t.equal(crl.signedByCa, true, 'user-ca.crl is signed by the users CA');
  t.equal(crl.issuer, 'CN=kube-front-proxy-user-ca');
  t.equal(crl.crlNumber, 1n, 'CRL number 1');
  t.same(crl.entries, [], 'nothing revoked yet');
  t.ok(Math.abs((crl.nextUpdate?.getTime() ?? 0) - Date.now() - 30 * DAY_MS) < 5 * 60 * 1000, 'valid for --days');
  t.equal((await readCrl(crlText, readFileSync(join(dir, 'proxy-ca.crt'), 'utf8'))).signedByCa, false, "not taken for another CA's");
  t.equal(loadRevocationList(join(dir, 'user-ca.crl'), readFileSync(join(dir, 'user-ca.crt'))).size, 0, 'the proxy accepts it');

  const saKey = key(dir, 'sa');
  const saPub = createPublicKey(readFileSync(join(dir, 'sa.pub')));
  t.equal(saKey.asymmetricKeyType, 'rsa');
  t.equal(saKey.asymmetricKeyDetails?.modulusLength, 2048);
  t.match(readFileSync(join(dir, 'sa.key'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
  t.match(readFileSync(join(dir, 'sa.pub'), 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
  const payload = Buffer.from('service account token');
  t.ok(verify('sha256', payload, saPub, sign('sha256', payload, saKey)), 'sa.key and sa.pub are a pair');
});

t.test('defaults: proxy SANs localhost and 127.0.0.1, 365 days', async (t) => {
  const dir = await tempDir(t);
  await pkiInit({ dir, sans: [] });
  const proxy = cert(dir, 'proxy');
  t.same((proxy.subjectAltName ?? '').split(', ').sort(), ['DNS:localhost', 'IP Address:127.0.0.1']);
  checkValidity(t, proxy, 365, 'proxy');
  checkValidity(t, cert(dir, 'ca'), 3650, 'ca');
});

t.test('refuses to overwrite without force, rewrites with it', async (t) => {
  const dir = await tempDir(t);
  await pkiInit({ dir, sans: ['localhost'] });
  const before = hashes(dir);
  const serialsBefore = ['ca', 'apiserver', 'proxy', 'user-ca'].map((n) => cert(dir, n).serialNumber);

  const err = await pkiInit({ dir, sans: ['localhost'] }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof PkiError, 'a PkiError');
  t.match((err as Error).message, join(dir, 'ca.crt'), 'names the first existing file');
  t.notMatch((err as Error).message, /\n/, 'one line');
  t.same(hashes(dir), before, 'every file byte-identical, nothing added');

  // A single existing target is enough to refuse, and nothing else is written.
  const partial = await tempDir(t);
  await writeFile(join(partial, 'sa.pub'), 'keep me');
  await t.rejects(pkiInit({ dir: partial, sans: ['localhost'] }), { name: 'PkiError', message: /sa\.pub/ });
  t.same(readdirSync(partial), ['sa.pub'], 'nothing written beside the existing file');
  t.equal(readFileSync(join(partial, 'sa.pub'), 'utf8'), 'keep me');

  await pkiInit({ dir, sans: ['localhost'], force: true });
  const after = hashes(dir);
  t.same(Object.keys(after), Object.keys(before), 'same files, no temp files left');
  for (const f of Object.keys(before)) t.not(after[f], before[f], `${f} rewritten`);
  const serialsAfter = ['ca', 'apiserver', 'proxy', 'user-ca'].map((n) => cert(dir, n).serialNumber);
  for (const [i, s] of serialsAfter.entries()) t.not(s, serialsBefore[i], 'new serial');
  checkChain(t, cert(dir, 'proxy'), cert(dir, 'proxy-ca'), 'proxy after force');
  t.equal(mode(join(dir, 'proxy.key')), 0o600, 'key mode kept on rewrite');
});

t.test('rsa-2048 makes RSA keys throughout', async (t) => {
  const dir = await tempDir(t);
  await pkiInit({ dir, sans: ['localhost'], algorithm: 'rsa-2048' });
  for (const name of ['ca', 'apiserver', 'front-proxy-ca', 'front-proxy-client', 'proxy-ca', 'proxy', 'user-ca']) {
    const k = key(dir, name);
    t.equal(k.asymmetricKeyType, 'rsa', `${name}: RSA`);
    t.equal(k.asymmetricKeyDetails?.modulusLength, 2048);
    t.ok(cert(dir, name).checkPrivateKey(k));
  }
  checkChain(t, cert(dir, 'apiserver'), cert(dir, 'ca'), 'apiserver (rsa)');
  const user = await issueUserCertificate({ dir, name: 'carol', groups: ['g'], algorithm: 'rsa-2048' });
  t.equal(createPrivateKey(readFileSync(user.key)).asymmetricKeyType, 'rsa');
  checkChain(t, new X509Certificate(readFileSync(user.cert)), cert(dir, 'user-ca'), 'rsa user');
});

t.test('issueUserCertificate', async (t) => {
  const dir = await tempDir(t);

  await t.rejects(
    issueUserCertificate({ dir, name: 'alice', groups: [] }),
    {
      name: 'PkiError',
      message: /user-ca\.crt: not found/,
    },
    'needs pki init first',
  );

  await pkiInit({ dir, sans: ['localhost'] });
  const paths = await issueUserCertificate({ dir, name: 'alice', groups: ['devs', 'ops'], days: 7 });
  t.same(paths, { cert: join(dir, 'users', 'alice.crt'), key: join(dir, 'users', 'alice.key') });
  t.equal(mode(paths.key), 0o600);
  t.equal(mode(paths.cert), 0o644);

  const alice = new X509Certificate(readFileSync(paths.cert));
  checkChain(t, alice, cert(dir, 'user-ca'), 'alice');
  t.notOk(alice.checkIssued(cert(dir, 'ca')), 'not from the cluster CA');
  t.same(alice.subject.split('\n'), ['O=devs', 'O=ops', 'CN=alice'], 'CN is the user, each group an O');
  t.same(alice.keyUsage, [CLIENT_AUTH], 'clientAuth');
  t.ok(alice.checkPrivateKey(createPrivateKey(readFileSync(paths.key))));
  checkValidity(t, alice, 7, 'alice');

  const before = hashes(join(dir, 'users'));
  await t.rejects(issueUserCertificate({ dir, name: 'alice', groups: ['other'] }), {
    name: 'PkiError',
    message: /alice\.crt: already exists/,
  });
  t.same(hashes(join(dir, 'users')), before, 'existing user files untouched');

  const forced = await issueUserCertificate({ dir, name: 'alice', groups: ['admins'], force: true });
  t.same(new X509Certificate(readFileSync(forced.cert)).subject.split('\n'), ['O=admins', 'CN=alice']);

  const noGroups = await issueUserCertificate({ dir, name: 'system:serviceaccount:ns:x', groups: [] });
  t.equal(new X509Certificate(readFileSync(noGroups.cert)).subject, 'CN=system:serviceaccount:ns:x');
  checkValidity(t, new X509Certificate(readFileSync(noGroups.cert)), 365, 'default days');

  for (const bad of ['', '../evil', 'a/b', 'bad\nname', 'tab\tname', '.', '..']) {
    await t.rejects(issueUserCertificate({ dir, name: bad, groups: [] }), { name: 'PkiError' }, `rejects name ${JSON.stringify(bad)}`);
  }
  await t.rejects(issueUserCertificate({ dir, name: 'ok', groups: [''] }), { name: 'PkiError' }, 'empty group');
  await t.rejects(issueUserCertificate({ dir, name: 'ok', groups: [], days: 0 }), { name: 'PkiError' }, 'bad days');
  t.notOk(existsSync(join(dir, 'evil.crt')), 'nothing escaped the users dir');
  t.same(readdirSync(join(dir, 'users')).sort(), ['alice.crt', 'alice.key', 'system:serviceaccount:ns:x.crt', 'system:serviceaccount:ns:x.key']);
});

t.test('real TLS: proxy cert + user cert authenticate both ways', async (t) => {
  const dir = await tempDir(t);
  await pkiInit({ dir, sans: ['localhost', '127.0.0.1'] });
  const user = await issueUserCertificate({ dir, name: 'alice', groups: ['devs', 'ops'] });

  let serverSide: { authorized: boolean; error: string | null; subject: unknown } | undefined;
  const server = tls.createServer(
    {
      cert: readFileSync(join(dir, 'proxy.crt')),
      key: readFileSync(join(dir, 'proxy.key')),
      ca: readFileSync(join(dir, 'user-ca.crt')),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (socket) => {
      const peer = socket.getPeerCertificate();
      serverSide = {
        authorized: socket.authorized,
        error: socket.authorizationError ? String(socket.authorizationError) : null,
        subject: { CN: peer.subject.CN, O: peer.subject.O },
      };
      socket.end('hello');
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;

  const client = await new Promise<{ authorized: boolean; data: string }>((resolve, reject) => {
    const socket = tls.connect(
      {
        host: '127.0.0.1',
        port,
        servername: 'localhost',
        ca: readFileSync(join(dir, 'proxy-ca.crt')),
        cert: readFileSync(user.cert),
        key: readFileSync(user.key),
      },
      () => {
        const authorized = socket.authorized;
        let data = '';
        socket.setEncoding('utf8');
        socket.on('data', (d: string) => (data += d));
        socket.on('end', () => resolve({ authorized, data }));
      },
    );
    socket.on('error', reject);
  });

  t.equal(client.authorized, true, 'client trusts the proxy cert for localhost via proxy-ca.crt');
  t.equal(client.data, 'hello');
  t.equal(serverSide?.authorized, true, `server accepts the user cert (${serverSide?.error ?? 'no error'})`);
  t.same(serverSide?.subject, { CN: 'alice', O: ['devs', 'ops'] }, 'groups arrive as the O attributes');
});

t.test('concurrent pki revoke runs all land: the CRL is changed under a lock file', async (t) => {
  const dir = await tempDir(t);
  await pkiInit({ dir, sans: ['localhost'] });
  const names = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'];
  const certs = await Promise.all(names.map((name) => issueUserCertificate({ dir, name, groups: [] })));
  const serials = certs.map((c) => new X509Certificate(readFileSync(c.cert)).serialNumber);
  const before = await showCrl(dir);
  // Two admins at once: separate processes (the CLI), and concurrent calls in one process.
  const runs = await Promise.all(certs.slice(0, 3).map((c) => runCli(['pki', 'revoke', '--cert', c.cert, '--dir', dir])));
  for (const run of runs) t.equal(run.code, 0, run.stderr);
  await Promise.all(certs.slice(3).map((c) => revokeCertificate({ dir, cert: c.cert })));
  const after = await showCrl(dir);
  t.same(after.entries.map((e) => e.serialNumber).sort(), [...serials].sort(), 'every revocation is on the list');
  t.equal(after.crlNumber, (before.crlNumber ?? 0n) + 6n, 'one CRL number per change');
  t.notOk(existsSync(join(dir, 'user-ca.crl.lock')), 'the lock is gone afterwards');

  // A lock held by a running command: wait, then say which file, without touching the list.
  const lock = join(dir, 'user-ca.crl.lock');
  await writeFile(lock, '999999\n');
  await t.rejects(revokeCertificate({ dir, cert: certs[0]!.cert, lockWaitMs: 300 }), { name: 'PkiError', message: /user-ca\.crl\.lock: another pki command is changing the CRL/ });
  t.equal((await showCrl(dir)).crlNumber, after.crlNumber, 'the list was not re-signed');
  // One left by a command that died (older than a minute) is taken over.
  const old = new Date(Date.now() - 5 * 60_000);
  await utimes(lock, old, old);
  const renewed = await renewCrl({ dir, lockWaitMs: 300 });
  t.equal(renewed.crlNumber, (after.crlNumber ?? 0n) + 1n);
  t.notOk(existsSync(lock), 'the stale lock was replaced, then released');
});

t.test('pki revoke / pki crl: the users CA revocation list', async (t) => {
  const dir = await tempDir(t);
  await pkiInit({ dir, sans: ['localhost'] });
  const alice = await issueUserCertificate({ dir, name: 'alice', groups: ['devs'] });
  const bob = await issueUserCertificate({ dir, name: 'bob', groups: [] });
  const aliceSerial = new X509Certificate(readFileSync(alice.cert)).serialNumber;
  const bobSerial = new X509Certificate(readFileSync(bob.cert)).serialNumber;
  const crlPath = join(dir, 'user-ca.crl');
  const caPem = readFileSync(join(dir, 'user-ca.crt'), 'utf8');

  const t0 = new Date('2030-01-01T00:00:00Z');
  const first = await revokeCertificate({ dir, cert: alice.cert, days: 10, now: t0 });
  t.equal(first.serial, aliceSerial, 'serial as openssl and Node print it');
  t.equal(first.subject, 'O=devs, CN=alice');
  t.equal(first.alreadyRevokedAt, undefined);
  t.equal(first.crlNumber, 2n, "number bumped from pki init's 1");
  t.same(first.entries, [{ serialNumber: aliceSerial, revocationDate: t0 }]);
  t.equal(first.nextUpdate?.toISOString(), '2030-01-11T00:00:00.000Z', 'next update now + days');
  t.equal(mode(crlPath), 0o644, 'CRL mode 0644');
  t.same(
    readdirSync(dir).filter((f) => f.endsWith('.tmp')),
    [],
    'no temp files left',
  );
  const onDisk = await readCrl(readFileSync(crlPath), caPem);
  t.equal(onDisk.signedByCa, true, 'signed by the users CA');
  t.same(
    onDisk.entries.map((e) => e.serialNumber.toUpperCase()),
    [aliceSerial],
    'the file lists the serial',
  );

  // Again: the original date stays, the list is only re-signed; DER input works too.
  const derCert = join(dir, 'alice.der');
  await writeFile(derCert, new X509Certificate(readFileSync(alice.cert)).raw);
  const t1 = new Date('2030-01-05T00:00:00Z');
  const again = await revokeCertificate({ dir, cert: derCert, now: t1 });
  t.same(again.alreadyRevokedAt, t0, 'reports the first revocation date');
  t.equal(again.crlNumber, 3n);
  t.same(again.entries, [{ serialNumber: aliceSerial, revocationDate: t0 }], 'still one entry, first date');
  t.equal(again.nextUpdate?.toISOString(), '2031-01-05T00:00:00.000Z', 'default 365 days');

  const second = await revokeCertificate({ dir, cert: bob.cert, now: t1 });
  t.same(
    second.entries.map((e) => e.serialNumber),
    [aliceSerial, bobSerial],
    'both listed',
  );
  const shown = await showCrl(dir);
  t.same(
    shown.entries.map((e) => e.serialNumber),
    [aliceSerial, bobSerial],
  );
  t.equal(shown.crlNumber, 4n);

  const renewed = await renewCrl({ dir, days: 2, now: new Date('2030-02-01T00:00:00Z') });
  t.equal(renewed.crlNumber, 5n, 'renew bumps the number');
  t.same(renewed.entries, shown.entries, 'renew keeps every entry and date');
  t.equal(renewed.thisUpdate.toISOString(), '2030-02-01T00:00:00.000Z');
  t.equal(renewed.nextUpdate?.toISOString(), '2030-02-03T00:00:00.000Z');

  // Refusals: one line each, nothing written.
  const before = readFileSync(crlPath);
  await t.rejects(revokeCertificate({ dir, cert: join(dir, 'proxy.crt') }), { name: 'PkiError', message: /proxy\.crt: not issued by the users CA .*user-ca\.crt \(its issuer is CN=kube-front-proxy-ca\)/ }, 'a certificate from another CA');
  await t.rejects(revokeCertificate({ dir, cert: join(dir, 'nope.crt') }), { name: 'PkiError', message: /nope\.crt: not found/ });
  await t.rejects(revokeCertificate({ dir, cert: join(dir, 'user-ca.key') }), { name: 'PkiError', message: /user-ca\.key: not a certificate/ });
  await t.rejects(revokeCertificate({ dir, cert: alice.cert, days: 0 }), { name: 'PkiError' }, 'bad days');
  t.same(readFileSync(crlPath), before, 'the CRL is untouched');

  // A CRL from another CA in its place is refused, not silently replaced.
  const other = await tempDir(t);
  await pkiInit({ dir: other, sans: ['localhost'] });
  await writeFile(crlPath, readFileSync(join(other, 'user-ca.crl')));
  await t.rejects(revokeCertificate({ dir, cert: alice.cert }), { name: 'PkiError', message: /user-ca\.crl: not signed by .*user-ca\.crt/ });
  await t.rejects(showCrl(dir), { name: 'PkiError', message: /not signed by/ });
  await writeFile(crlPath, 'garbage');
  await t.rejects(renewCrl({ dir }), { name: 'PkiError', message: /user-ca\.crl: not a CRL/ });

  // No CRL yet (a PKI made before pki init wrote one): revoke creates it; show says how.
  await rm(crlPath);
  await t.rejects(showCrl(dir), { name: 'PkiError', message: /user-ca\.crl: not found/ });
  const fresh = await revokeCertificate({ dir, cert: bob.cert, now: t1 });
  t.equal(fresh.crlNumber, 1n, 'a new list starts at 1');
  t.same(
    fresh.entries.map((e) => e.serialNumber),
    [bobSerial],
  );
});
