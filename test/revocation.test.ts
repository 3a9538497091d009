// Client-certificate revocation (--client-crl-file): a PKI from `pki init`, two users from
// `pki issue-user`, a real proxy process watching the users CA's CRL; `pki revoke` (the real
// command) refuses one user within seconds, on new connections and on a keep-alive connection
// opened before, while the other keeps working; a CRL the proxy cannot trust is refused at
// start-up and on reload, and the list in force stays in force. Then the loader on its own:
// bundles of CRLs from several CAs, DER, and every way a file is refused.
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Client } from 'undici';
import { normalizeSerial } from '../src/auth/crl.js';
import { loadRevocationList } from '../src/material/material.js';
import { ConfigError } from '../src/config/index.js';
import { createCertificateAuthority, issueCertificate, signCrl, type CertificateAndKey } from '../src/pki/certificates.js';
import { issueUserCertificate, pkiInit } from '../src/pki/init.js';
import { startApiServer } from '../standin/apiserver.js';
import { runCli, startProxy, type LogLine } from './helpers/proxy.js';
import type { TapTest } from './helpers/setup.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const dir = mkdtempSync(join(tmpdir(), 'kfp-revocation-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const pkiDir = join(dir, 'certs');
const read = (name: string) => readFileSync(join(pkiDir, name), 'utf8');
const crlFile = join(pkiDir, 'user-ca.crl');

await pkiInit({ dir: pkiDir, sans: ['localhost', '127.0.0.1'] });
const users = {
  alice: await issueUserCertificate({ dir: pkiDir, name: 'alice', groups: ['devs'] }),
  bob: await issueUserCertificate({ dir: pkiDir, name: 'bob', groups: ['viewers'] }),
};
type UserName = keyof typeof users;
const serialOf = (name: UserName) => new X509Certificate(readFileSync(users[name].cert)).serialNumber;
const userCa: CertificateAndKey = { cert: read('user-ca.crt'), key: read('user-ca.key') };

const apiserver = await startApiServer({ cert: read('apiserver.crt'), key: read('apiserver.key'), requestHeaderCA: read('front-proxy-ca.crt') });
t.teardown(() => apiserver.close());
const serveFlags = [
  '--tls-cert-file',
  join(pkiDir, 'proxy.crt'),
  '--tls-private-key-file',
  join(pkiDir, 'proxy.key'),
  '--client-ca-file',
  join(pkiDir, 'user-ca.crt'),
  '--upstream',
  apiserver.url,
  '--upstream-ca-file',
  join(pkiDir, 'ca.crt'),
  '--proxy-client-cert-file',
  join(pkiDir, 'front-proxy-client.crt'),
  '--proxy-client-key-file',
  join(pkiDir, 'front-proxy-client.key'),
  '--admin-listen',
  '127.0.0.1:0',
  '--reload-interval',
  '200ms',
  // One process: the test waits for the reload line, and each worker reloads on its own poll.
  '--workers',
  '1',
];
const proxy = await startProxy([...serveFlags, '--client-crl-file', crlFile]);
t.teardown(() => proxy.stop());

// --- clients -------------------------------------------------------------------------------

interface Answer {
  status: number;
  body: { kind?: string; code?: number; reason?: string; message?: string; user?: { username: string } };
}

/** A client holding one keep-alive connection; `connects` counts the TLS connections it made. */
function userClient(name: UserName): Client & { connects: number } {
  const client = new Client(proxy.url, {
    connect: { ca: read('proxy-ca.crt'), servername: 'localhost', cert: readFileSync(users[name].cert), key: readFileSync(users[name].key) },
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 60_000,
  }) as Client & { connects: number };
  client.connects = 0;
  client.on('connect', () => client.connects++);
  return client;
}

async function identity(client: Client): Promise<Answer> {
  const res = await client.request({ path: '/test/identity', method: 'GET' });
  const text = await res.body.text();
  return { status: res.statusCode, body: JSON.parse(text) as Answer['body'] };
}

/** One request on a connection of its own. */
async function onNewConnection(name: UserName): Promise<Answer> {
  const client = userClient(name);
  try {
    return await identity(client);
  } finally {
    await client.close();
  }
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Replaces the CRL file the way tools do (write aside, rename over), so the proxy never reads half of it. */
function swapCrl(content: string | Buffer): void {
  const temp = `${crlFile}.new`;
  writeFileSync(temp, content, { mode: 0o644 });
  renameSync(temp, crlFile);
}

async function logLineAfter(from: number, pattern: RegExp): Promise<LogLine> {
  let found: LogLine | undefined;
  await until(`a log line matching ${pattern}`, () => (found = proxy.logs.slice(from).find((l) => pattern.test(l.msg))) !== undefined);
  return found as LogLine;
}

const REVOKED = { kind: 'Status', code: 401, reason: 'Unauthorized', message: /revoked/ };

// Opened before anything is revoked, and kept open to the end.
const keptAlice = userClient('alice');
const keptBob = userClient('bob');
t.teardown(() => Promise.all([keptAlice.close(), keptBob.close()]));

// --- end to end ----------------------------------------------------------------------------

t.test('with the empty CRL from pki init both users get in', async (t) => {
  for (const [name, client] of [
    ['alice', keptAlice],
    ['bob', keptBob],
  ] as const) {
    const kept = await identity(client);
    t.equal(kept.status, 200, `${name} on a keep-alive connection`);
    t.equal(kept.body.user?.username, name);
    t.equal((await onNewConnection(name)).status, 200, `${name} on a new connection`);
  }
});

t.test('pki revoke: the revoked user gets 401 without a restart, on open connections too; the other does not', async (t) => {
  const from = proxy.logs.length;
  const revoke = await runCli(['pki', 'revoke', '--cert', users.alice.cert, '--dir', pkiDir]);
  t.equal(revoke.code, 0, revoke.stderr);
  t.match(revoke.stdout, new RegExp(`^revoked O=devs, CN=alice \\(serial ${serialOf('alice')}\\) in ${crlFile}: CRL number 2, 1 revoked certificate`));
  t.match(revoke.stdout, /next update \d{4}-\d\d-\d\dT.*re-sign it before then with "kube-front-proxy pki crl --renew/);

  let last: Answer | undefined;
  await until('alice to be refused on a new connection', async () => (last = await onNewConnection('alice')).status !== 200);
  t.match(last, { status: 401, body: REVOKED }, 'new connection: 401 Status saying the certificate is revoked');
  await logLineAfter(from, /^reloaded certificates/);

  const before = apiserver.requests.length;
  const kept = await identity(keptAlice);
  t.match(kept, { status: 401, body: REVOKED }, 'the keep-alive connection opened before the revocation: 401 too');
  t.equal(keptAlice.connects, 1, 'and it was that same connection');
  t.equal(apiserver.requests.length, before, 'nothing from alice reached the apiserver');

  t.match(await onNewConnection('bob'), { status: 200, body: { user: { username: 'bob' } } }, 'bob on a new connection: 200');
  t.match(await identity(keptBob), { status: 200, body: { user: { username: 'bob' } } }, 'bob on his keep-alive connection: 200');
  t.equal(keptBob.connects, 1);
});

t.test('pki crl lists the revoked serial and the next update', async (t) => {
  const listed = await runCli(['pki', 'crl', '--dir', pkiDir]);
  t.equal(listed.code, 0, listed.stderr);
  const lines = listed.stdout.trimEnd().split('\n');
  t.match(lines[0], new RegExp(`^${crlFile}: CRL number 2, 1 revoked certificate, signed by CN=kube-front-proxy-user-ca on .*, next update \\d{4}-`));
  t.equal(lines[1], 'SERIAL\tREVOKED');
  t.match(lines[2], new RegExp(`^${serialOf('alice')}\\t\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z$`), "alice's serial and when");
  t.equal(lines.length, 3, 'nothing else listed');
  t.notOk(listed.stdout.includes(serialOf('bob')), 'bob is not listed');
});

// Signed by a CA with the users CA's name but another key, and signed by the real CA but stale.
const impostor = await createCertificateAuthority({ commonName: 'kube-front-proxy-user-ca' });
const wrongKeyCrl = join(dir, 'wrong-key.crl');
writeFileSync(wrongKeyCrl, await signCrl(impostor, { entries: [], crlNumber: 99n, nextUpdate: new Date(Date.now() + DAY_MS) }));
const expiredCrl = join(dir, 'expired.crl');
const expiredAt = new Date(Math.floor((Date.now() - DAY_MS) / 1000) * 1000);
writeFileSync(expiredCrl, await signCrl(userCa, { entries: [], crlNumber: 99n, thisUpdate: new Date(Date.now() - 2 * DAY_MS), nextUpdate: expiredAt }));
const wrongKeyProblem = 'CRL 1 (issuer CN=kube-front-proxy-user-ca) signature does not verify against --client-ca-file';
const expiredProblem = `CRL 1 (issuer CN=kube-front-proxy-user-ca) expired on ${expiredAt.toISOString()}`;

t.test('a CRL the proxy cannot trust stops start-up: exit 2, one line naming the flag and the file', async (t) => {
  const listen = ['--listen', '127.0.0.1:0'];
  const [wrongKey, expired] = await Promise.all([runCli(['serve', ...serveFlags, ...listen, '--client-crl-file', wrongKeyCrl]), runCli(['serve', ...serveFlags, ...listen, '--client-crl-file', expiredCrl])]);
  t.equal(wrongKey.code, 2, 'wrong key: exit 2');
  t.equal(wrongKey.stderr, `kube-front-proxy: --client-crl-file ${wrongKeyCrl}: ${wrongKeyProblem}\n`);
  t.equal(expired.code, 2, 'expired: exit 2');
  t.match(expired.stderr, new RegExp(`^kube-front-proxy: --client-crl-file ${expiredCrl}: ${expiredProblem.replace(/[()]/g, '\\$&')}[^\\n]*\\n$`));
});

t.test('the same files swapped in at runtime are refused with a log line; the list in force stays', async (t) => {
  const good = readFileSync(crlFile);
  for (const [label, file, problem] of [
    ['wrong key', wrongKeyCrl, wrongKeyProblem],
    ['expired', expiredCrl, expiredProblem],
  ] as const) {
    const from = proxy.logs.length;
    swapCrl(readFileSync(file));
    const line = await logLineAfter(from, /^reload failed/);
    t.equal(line.level, 50, `${label}: logged as an error`);
    t.ok(line.msg.includes(`--client-crl-file ${crlFile}: ${problem}`), `${label}: the line names the flag, the file and the problem: ${line.msg}`);
    t.match(await onNewConnection('alice'), { status: 401, body: REVOKED }, `${label}: alice stays revoked`);
    t.match(await identity(keptAlice), { status: 401, body: REVOKED }, `${label}: on her old connection too`);
    t.match(await onNewConnection('bob'), { status: 200, body: { user: { username: 'bob' } } }, `${label}: bob still gets in`);
    t.equal((await identity(keptBob)).status, 200);
    t.notOk(
      proxy.logs.slice(from).some((l) => /^reloaded/.test(l.msg)),
      `${label}: not applied`,
    );
  }

  // The good list back: applied again, alice still refused.
  const from = proxy.logs.length;
  swapCrl(good);
  await logLineAfter(from, /^reloaded certificates/);
  t.match(await onNewConnection('alice'), { status: 401, body: REVOKED });
  t.equal((await onNewConnection('bob')).status, 200);
});

// --- the loader on its own -----------------------------------------------------------------

/** A certificate from `ca` with a chosen serial, as the TLS layer would hand it over. */
async function leaf(ca: CertificateAndKey, serialNumber: string): Promise<X509Certificate> {
  return new X509Certificate((await issueCertificate(ca, { commonName: `user-${serialNumber}`, usages: ['clientAuth'], serialNumber })).cert);
}

const inDays = (days: number) => new Date(Date.now() + days * DAY_MS);
const pemToDer = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
const write = (name: string, content: string | Buffer) => {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
};

function refusal(t: TapTest, run: () => unknown, problem: RegExp, label: string, path: string): void {
  try {
    run();
    t.fail(`${label}: accepted`);
  } catch (err) {
    t.ok(err instanceof ConfigError, `${label}: a ConfigError`);
    const message = (err as Error).message;
    t.ok(message.startsWith(`--client-crl-file ${path}: `), `${label}: names the flag and the file: ${message}`);
    t.match(message, problem, `${label}: says what is wrong`);
    t.notMatch(message, /\n/, `${label}: one line`);
  }
}

t.test('a PEM bundle of CRLs from two CAs: each serial counts only for the CA that listed it', async (t) => {
  const [teamA, teamB] = await Promise.all([createCertificateAuthority({ commonName: 'team-a-ca' }), createCertificateAuthority({ commonName: 'team-b-ca', algorithm: 'rsa-2048' })]);
  const bundle = Buffer.from(teamA.cert + teamB.cert);
  // The same two serials from both CAs; the high bit of the first makes DER prepend a zero.
  const shared = 'ff00aa01';
  const other = '0a0b0c';
  const [a1, a2, b1, b2] = await Promise.all([leaf(teamA, shared), leaf(teamA, other), leaf(teamB, shared), leaf(teamB, other)]);
  const crlA = await signCrl(teamA, { entries: [{ serialNumber: shared, revocationDate: new Date() }], crlNumber: 1n, nextUpdate: inDays(2) });
  const soonest = new Date(Math.floor(inDays(1).getTime() / 1000) * 1000);
  const crlB = await signCrl(teamB, { entries: [{ serialNumber: other, revocationDate: new Date() }], crlNumber: 7n, nextUpdate: soonest });

  const list = loadRevocationList(write('two-cas.crl', crlA + crlB), bundle);
  t.equal(list.crls, 2, 'both CRLs read');
  t.same(list.nextUpdate, soonest, 'the earliest nextUpdate of the two');
  t.equal(list.size, 2);
  t.equal(list.isRevoked(a1), true, 'A listed its serial');
  t.equal(list.isRevoked(b1), false, "the same serial from B is not A's to revoke");
  t.equal(list.isRevoked(b2), true, 'B (an RSA CA) listed its serial');
  t.equal(list.isRevoked(a2), false, "the same serial from A is not B's to revoke");

  // A certificate that claims A as issuer and carries the revoked serial but is signed by
  // another key is not "A's certificate": the issuer is settled by the signature.
  const forger = await createCertificateAuthority({ commonName: 'team-a-ca' });
  t.equal(list.isRevoked(await leaf(forger, shared)), false, 'issuer settled by signature, not by name');

  const der = loadRevocationList(write('team-a.der', pemToDer(crlA)), bundle);
  t.equal(der.crls, 1, 'DER: one CRL');
  t.equal(der.isRevoked(a1), true, "DER: A's serial revoked");
  t.equal(der.isRevoked(b2), false, 'DER: B has no CRL here');
  t.equal(der.isRevoked(a2), false);

  // OpenSSL's label and the bare "CRL" label both read.
  t.equal(loadRevocationList(write('bare-label.crl', crlB.replace(/X509 CRL/g, 'CRL')), bundle).isRevoked(b2), true, 'bare CRL label');
});

t.test('serials are compared as numbers, not spellings', async (t) => {
  t.equal(normalizeSerial('00FF01'), 'ff01');
  t.equal(normalizeSerial('0A0B'), normalizeSerial('a0b'));
  t.equal(normalizeSerial('00'), '0');
  t.not(normalizeSerial('0A0B'), normalizeSerial('0A0C'));
});

t.test('every way a CRL file is refused: one ConfigError line', async (t) => {
  const [teamA, teamC] = await Promise.all([createCertificateAuthority({ commonName: 'team-a-ca' }), createCertificateAuthority({ commonName: 'team-c-ca' })]);
  const impostorA = await createCertificateAuthority({ commonName: 'team-a-ca' });
  const bundle = Buffer.from(teamA.cert);
  const good = await signCrl(teamA, { entries: [{ serialNumber: '0102', revocationDate: new Date() }], crlNumber: 1n, nextUpdate: inDays(1) });
  t.equal(loadRevocationList(write('good.crl', good), bundle).size, 1, 'the good one loads');

  const cases: [string, string | Buffer, RegExp][] = [
    ['issuer not in the bundle', await signCrl(teamC, { entries: [], crlNumber: 1n, nextUpdate: inDays(1) }), /^--client-crl-file \S+: CRL 1 issuer CN=team-c-ca is not in --client-ca-file$/],
    ['second CRL of a bundle signed by another key', good + (await signCrl(impostorA, { entries: [], crlNumber: 1n, nextUpdate: inDays(1) })), /: CRL 2 \(issuer CN=team-a-ca\) signature does not verify against --client-ca-file$/],
    ['no CRL in a PEM file', teamA.cert, /: no CRL found \(expected -----BEGIN X509 CRL-----/],
    ['empty file', '', /: empty file/],
    ['not DER either', 'hello, world', /: CRL 1 cannot be parsed: /],
  ];
  // An entry changed after signing (the revoked serial 01 02 becomes 01 03).
  const tampered = pemToDer(good);
  const at = tampered.indexOf(Buffer.from([0x02, 0x02, 0x01, 0x02]));
  t.ok(at > 0, 'found the serial in the DER');
  tampered[at + 3] = 0x03;
  cases.push(['an entry changed after signing (DER)', tampered, /: CRL 1 \(issuer CN=team-a-ca\) signature does not verify against --client-ca-file$/]);

  for (const [label, content, problem] of cases) {
    const path = write(`bad-${label.replace(/\W+/g, '-')}.crl`, content);
    refusal(t, () => loadRevocationList(path, bundle), problem, label, path);
  }

  const goodPath = join(dir, 'good.crl');
  const after = new Date(inDays(1).getTime() + 60_000);
  refusal(t, () => loadRevocationList(goodPath, bundle, after), /: CRL 1 \(issuer CN=team-a-ca\) expired on \d{4}-\d\d-\d\dT[\d:.]+Z/, 'past its nextUpdate', goodPath);
  refusal(t, () => loadRevocationList(goodPath, undefined), /needs --client-ca-file/, 'no client CA', goodPath);
  const missing = join(dir, 'missing.crl');
  refusal(t, () => loadRevocationList(missing, bundle), /: no such file$/, 'missing file', missing);
});

t.test('a CRL that passes its nextUpdate while the proxy runs: still enforced, and one warning says so', async (t) => {
  const soon = join(dir, 'soon.crl');
  // The CRL must still be current when the proxy loads it (an expired one stops start-up) and pass
  // its nextUpdate soon after: on a machine too busy to start the proxy in time, the next try
  // gives it longer.
  let own: Awaited<ReturnType<typeof startProxy>> | undefined;
  let nextUpdate = new Date();
  for (const leadMs of [2_500, 10_000, 30_000]) {
    nextUpdate = new Date(Math.ceil((Date.now() + leadMs) / 1000) * 1000);
    writeFileSync(soon, await signCrl(userCa, { entries: [{ serialNumber: serialOf('bob'), revocationDate: new Date() }], crlNumber: 200n, nextUpdate }));
    try {
      own = await startProxy([...serveFlags, '--client-crl-file', soon, '--reload-interval', '1h']);
      break;
    } catch (err) {
      if (!/expired on/.test(String(err))) throw err;
    }
  }
  if (!own) throw new Error('the proxy never started before its CRL expired');
  const proxyWithSoonCrl = own;
  t.teardown(() => proxyWithSoonCrl.stop());
  let warning: LogLine | undefined;
  while (!(warning = own.logs.find((l) => l.msg.includes('passed its nextUpdate')))) {
    if (Date.now() > nextUpdate.getTime() + 60_000) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(warning, 'a warning when nextUpdate passed');
  t.equal(warning?.nextUpdate, nextUpdate.toISOString(), 'naming the moment');
  t.ok(Date.now() >= nextUpdate.getTime(), 'not before it');
  t.equal(own.logs.filter((l) => l.msg.includes('passed its nextUpdate')).length, 1, 'once');
  const bob = new Client(own.url, { connect: { ca: read('proxy-ca.crt'), servername: 'localhost', cert: readFileSync(users.bob.cert), key: readFileSync(users.bob.key) } });
  t.teardown(() => bob.close());
  const res = await identity(bob);
  t.equal(res.status, 401, 'bob, listed in the expired CRL, is still refused');
});
