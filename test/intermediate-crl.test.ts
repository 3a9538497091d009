// Revoking an intermediate CA revokes what it issued: every certificate of a client's chain is
// looked up in --client-crl-file, not only the client's own. A corporate PKI: a root, an issuing
// CA in --client-ca-file next to it (ann and cat under it), another that the client sends in its
// handshake (ben under it), and dot directly under the root. The CRL file holds one CRL per CA:
// the root's (listing intermediates) and the first issuing CA's (listing leaves). Against a real
// proxy process, reloaded by SIGHUP; the subtests run in order, each revoking one more thing.
import { X509Certificate } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Client, request, type Dispatcher } from 'undici';
import { loadRevocationList } from '../src/material/material.js';
import { TrustedCas } from '../src/auth/trusted-cas.js';
import { createCertificateAuthority, issueCertificate, signCrl, type CertificateAndKey } from '../src/pki/certificates.js';
import { openWatch } from './helpers/clients.js';
import { createTestPki, intermediateCa } from './helpers/pki.js';
import { eventReaches, nothingOpen, reloadBySighup, waitFor, within } from './helpers/reload.js';
import { startStack } from './helpers/setup.js';

const CLOSED = 'closed streams and tunnels of withdrawn credentials';
const WATCH_PATH = '/api/v1/namespaces/default/pods?watch=true';
const DAY_MS = 24 * 60 * 60 * 1000;
/** How soon after the SIGHUP a withdrawn stream must be gone. */
const CUT_WITHIN_MS = 2000;

const pki = await createTestPki();
const root = await createCertificateAuthority({ commonName: 'corp-root' });
const [issuingInBundle, issuingSent] = await Promise.all([intermediateCa(root, 'corp-issuing-1'), intermediateCa(root, 'corp-issuing-2')]);
const client = (commonName: string) => ({ commonName, organizations: ['devs'], usages: ['clientAuth' as const] });
const [ann, ben, cat, dot] = await Promise.all([issueCertificate(issuingInBundle, client('ann')), issueCertificate(issuingSent, client('ben')), issueCertificate(issuingInBundle, client('cat')), issueCertificate(root, client('dot'))]);
type User = 'ann' | 'ben' | 'cat' | 'dot';
const credentials: Record<User, CertificateAndKey> = {
  ann,
  // ben's issuing CA is not in --client-ca-file: he sends it after his own certificate.
  ben: { cert: ben.cert + issuingSent.cert, key: ben.key },
  cat,
  dot,
};
const serial = (pem: string) => new X509Certificate(pem).serialNumber;

const caFile = join(pki.dir, 'corp-cas.crt');
writeFileSync(caFile, root.cert + issuingInBundle.cert);
const crlFile = join(pki.dir, 'corp.crl');
let crlNumber = 1n;
/** Writes the CRL file (write aside, rename over): the root's CRL, then the first issuing CA's. */
async function writeCrls(revoked: { byRoot: string[]; byIssuing: string[] }): Promise<void> {
  const entries = (pems: string[]) => pems.map((pem) => ({ serialNumber: serial(pem), revocationDate: new Date() }));
  const nextUpdate = new Date(Date.now() + DAY_MS);
  const number = crlNumber++;
  const crls = await Promise.all([signCrl(root, { entries: entries(revoked.byRoot), crlNumber: number, nextUpdate }), signCrl(issuingInBundle, { entries: entries(revoked.byIssuing), crlNumber: number, nextUpdate })]);
  writeFileSync(`${crlFile}.new`, crls.join(''));
  renameSync(`${crlFile}.new`, crlFile);
}
await writeCrls({ byRoot: [], byIssuing: [] });

const { apiserver, proxy } = await startStack(t, {
  pki,
  // Only SIGHUP reloads, so each reload happens exactly when the test sends it.
  flags: ['--client-ca-file', caFile, '--client-crl-file', crlFile, '--reload-interval', '1h'],
});

const connectOptions = (who: User) => ({ ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...credentials[who] });

interface Answer {
  status: number;
  body: { message?: string; user?: { username: string } };
}

async function identity(dispatcher: Dispatcher): Promise<Answer> {
  const res = await request(`${proxy.url}/test/identity`, { dispatcher });
  return { status: res.statusCode, body: (await res.body.json()) as Answer['body'] };
}

/** One kept-alive HTTP/1.1 connection per user, opened before any revocation. */
const kept = Object.fromEntries((['ann', 'ben', 'cat', 'dot'] as User[]).map((who) => [who, new Client(proxy.url, { connect: connectOptions(who), keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 })])) as Record<User, Client>;
t.teardown(() => Promise.all(Object.values(kept).map((c) => c.destroy())));

async function onNewConnection(who: User): Promise<Answer> {
  const fresh = new Client(proxy.url, { connect: connectOptions(who) });
  try {
    return await identity(fresh);
  } finally {
    await fresh.destroy();
  }
}

/** Each user's answer on the connection kept since the start and on a new one. */
async function statuses(): Promise<Record<User, [number, number]>> {
  const out = {} as Record<User, [number, number]>;
  for (const who of Object.keys(kept) as User[]) out[who] = [(await identity(kept[who])).status, (await onNewConnection(who)).status];
  return out;
}

t.test('before any revocation, everyone is let in, on kept and new connections', async (t) => {
  for (const who of Object.keys(kept) as User[]) t.match(await identity(kept[who]), { status: 200, body: { user: { username: who } } }, `${who}: 200`);
  t.same(await statuses(), { ann: [200, 200], ben: [200, 200], cat: [200, 200], dot: [200, 200] });
});

t.test("a leaf revoked in its issuing CA's CRL, in a file that holds the root's CRL too", async (t) => {
  await writeCrls({ byRoot: [], byIssuing: [cat.cert] });
  await reloadBySighup(proxy);
  t.match(await identity(kept.cat), { status: 401, body: { message: 'client certificate has been revoked' } }, 'cat: 401 on the connection he holds');
  t.same(await statuses(), { ann: [200, 200], ben: [200, 200], cat: [401, 401], dot: [200, 200] }, 'only cat is refused');
});

t.test('the root revokes the issuing CA ben sends: ben is refused on his connections and his watch ends', async (t) => {
  const watcher = new Client(proxy.url, { connect: connectOptions('ben'), keepAliveTimeout: 60_000 });
  const annWatcher = new Client(proxy.url, { connect: connectOptions('ann'), keepAliveTimeout: 60_000 });
  t.teardown(() => Promise.all([watcher.destroy(), annWatcher.destroy()]));
  await nothingOpen(apiserver);
  const watches = { ben: await openWatch(watcher, `${proxy.url}${WATCH_PATH}`), ann: await openWatch(annWatcher, `${proxy.url}${WATCH_PATH}`) };
  await waitFor('both watches to reach the apiserver', () => apiserver.openWatches() === 2);
  await eventReaches(t, apiserver, watches);

  await writeCrls({ byRoot: [issuingSent.cert], byIssuing: [cat.cert] });
  const started = Date.now();
  await reloadBySighup(proxy);
  t.equal(await within("ben's watch to end", watches.ben.ended, CUT_WITHIN_MS), 'end', "ben's watch ended cleanly");
  t.ok(Date.now() - started < CUT_WITHIN_MS, `cut ${Date.now() - started} ms after the SIGHUP`);
  await waitFor('the warn line', () => proxy.logs.some((l) => l.msg === CLOSED));
  t.match(proxy.logs.filter((l) => l.msg === CLOSED).at(-1), { streams: 1, tunnels: 0, users: ['ben'] }, 'naming ben');

  t.match(await identity(kept.ben), { status: 401, body: { message: /issued under a revoked CA certificate \(CN=corp-issuing-2\)/ } }, 'ben: 401 on the connection he holds, naming the revoked CA');
  t.same(await statuses(), { ann: [200, 200], ben: [401, 401], cat: [401, 401], dot: [200, 200] }, "ann (the other issuing CA) and dot (the root's own) carry on");
  await eventReaches(t, apiserver, { ann: watches.ann });
  watches.ann.close();
});

t.test('the root revokes the issuing CA in --client-ca-file: everyone under it is refused', async (t) => {
  await writeCrls({ byRoot: [issuingSent.cert, issuingInBundle.cert], byIssuing: [cat.cert] });
  await reloadBySighup(proxy);
  t.match(await identity(kept.ann), { status: 401, body: { message: /issued under a revoked CA certificate \(CN=corp-issuing-1\)/ } }, 'ann: 401 on the connection she holds');
  t.same(await statuses(), { ann: [401, 401], ben: [401, 401], cat: [401, 401], dot: [200, 200] }, 'only dot is left');
});

t.test('RevocationList.firstRevoked and TrustedCas.chainOf on their own', async (t) => {
  const x = (pem: string) => new X509Certificate(pem);
  const bundle = Buffer.from(root.cert + issuingInBundle.cert);
  const cas = new TrustedCas(bundle);
  const chain = cas.chainOf(x(ben.cert), [x(issuingSent.cert)]);
  t.same(
    chain?.above.map((c) => c.subject),
    ['CN=corp-issuing-2', 'CN=corp-root'],
    "ben's chain: his issuing CA, then the root",
  );
  t.same(
    cas.chainOf(x(dot.cert), [])?.above.map((c) => c.subject),
    ['CN=corp-root'],
    "dot's: the root alone",
  );
  t.equal(cas.knownChain(x(ben.cert).fingerprint256), chain, 'remembered for a resumed session, which sends no intermediates');
  t.equal(chain?.notAfter, Math.min(Date.parse(x(issuingSent.cert).validTo), Date.parse(x(root.cert).validTo)), 'valid until the first of them expires');

  const path = join(pki.dir, 'unit.crl');
  writeFileSync(path, await signCrl(root, { entries: [{ serialNumber: serial(issuingSent.cert), revocationDate: new Date() }], crlNumber: 1n, nextUpdate: new Date(Date.now() + DAY_MS) }));
  const list = loadRevocationList(path, bundle);
  const benChain = [x(ben.cert), ...(chain?.above ?? [])];
  t.equal(list.firstRevoked(benChain)?.subject, 'CN=corp-issuing-2', 'the revoked link is found');
  t.equal(list.isRevoked(x(ben.cert)), false, "though ben's own certificate is not listed");
  t.equal(list.firstRevoked([x(dot.cert), x(root.cert)]), undefined, "dot's chain: nothing revoked");
  // A serial is only unique per CA: the same number from another CA is not the revoked one.
  const lookalike = await createCertificateAuthority({ commonName: 'corp-root' });
  const sameSerial = await issueCertificate(lookalike, { ...client('eve'), serialNumber: serial(issuingSent.cert) });
  t.equal(list.firstRevoked([x(sameSerial.cert)]), undefined, 'the same serial from another CA is not revoked');
});
