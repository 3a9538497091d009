// A CA removed from --client-ca-file (say its key leaked) stops letting its users in on the
// connections they already hold, not only on new handshakes: after the reload (SIGHUP) alice,
// whose certificate comes from the removed CA, gets 401 on her kept-alive HTTP/1.1 connection
// and on her HTTP/2 session, her watches end and her tunnel closes, and a new connection fails
// too, including one that offers a TLS session verified before the reload; bob (the other CA)
// and carl (an intermediate of bob's CA, which he sends in his handshake) carry on. Putting the
// CA back lets alice in again; a reload that leaves the file as it was cuts nothing. Against a
// real proxy process, one for the whole file: the subtests run in order. Then the chain check
// on its own: intermediates in any order, look-alike CAs, a leaf posing as a CA.

// @peculiar/x509 (the intermediate CAs below) needs the Reflect metadata polyfill first.
import { X509Certificate } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { connect as connectHttp2, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import { buildConnector, Client, request, type Dispatcher } from 'undici';
import { Authenticator } from '../src/auth/index.js';
import { TrustedCas } from '../src/auth/trusted-cas.js';
import { createCertificateAuthority, issueCertificate, type CertificateAndKey, type CertificateOptions } from '../src/pki/certificates.js';
import { openWatch, type WatchReader } from './helpers/clients.js';
import { createTestPki, intermediateCa } from './helpers/pki.js';
import { kubectl, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import type { LogLine } from './helpers/proxy.js';
import { startStack, type TapTest } from './helpers/setup.js';
import { eventReaches, nothingOpen, reloadBySighup, waitFor, within } from './helpers/reload.js';
import { openEchoTunnel } from './helpers/tunnel.js';

const CLOSED = 'closed streams and tunnels of withdrawn credentials';
const WATCH_PATH = '/api/v1/namespaces/default/pods?watch=true';
const UNTRUSTED = { kind: 'Status', code: 401, reason: 'Unauthorized', message: 'client certificate is not signed by a trusted certificate authority' };
/** How soon after the SIGHUP a withdrawn stream must be gone. */
const CUT_WITHIN_MS = 2000;

const client = (commonName: string, organizations: string[]): CertificateOptions => ({ commonName, organizations, usages: ['clientAuth'] });

// CA A is the test PKI's users CA (alice's certificate); CA B is another team's, with bob
// directly under it and carl under an intermediate of it.
const pki = await createTestPki();
const caA = pki.pem['user-ca'];
const caB = await createCertificateAuthority({ commonName: 'team-b-ca' });
const caBIntermediate = await intermediateCa(caB, 'team-b-intermediate');
const [bob, carl] = await Promise.all([issueCertificate(caB, client('bob', ['viewers'])), issueCertificate(caBIntermediate, client('carl', ['ops']))]);
type User = 'alice' | 'bob' | 'carl';
const credentials: Record<User, CertificateAndKey> = {
  alice: pki.pem['user-alice'],
  bob,
  // The intermediate is not in --client-ca-file: carl sends it after his own certificate.
  carl: { cert: carl.cert + caBIntermediate.cert, key: carl.key },
};

const caFile = join(pki.dir, 'client-cas.crt');
/** Replaces --client-ca-file the way tools do (write aside, rename over). */
function writeCaFile(...cas: CertificateAndKey[]): void {
  writeFileSync(`${caFile}.new`, cas.map((ca) => ca.cert).join(''), { mode: 0o644 });
  renameSync(`${caFile}.new`, caFile);
}
writeCaFile(caA, caB);

const { apiserver, proxy } = await startStack(t, {
  pki,
  // Only SIGHUP reloads, so each reload happens exactly when the test sends it.
  flags: ['--client-ca-file', caFile, '--reload-interval', '1h'],
});

const connectOptions = (who: User) => ({ ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...credentials[who] });

type KeptClient = Client & { connects: number };

/**
 * One kept-alive HTTP/1.1 connection (a Client holds one); `connects` counts the TLS connections
 * it made. `connector`: to share a TLS session cache between clients.
 */
function keptClient(who: User, connector?: buildConnector.connector): KeptClient {
  const kept = new Client(proxy.url, { connect: connector ?? connectOptions(who), keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 }) as KeptClient;
  kept.connects = 0;
  kept.on('connect', () => kept.connects++);
  return kept;
}

/**
 * A connector whose clients resume each other's TLS sessions, as one kubectl-like process's
 * connections do; `resumed` says, for each connection made, whether it resumed one.
 */
function resumingConnector(who: User): { connect: buildConnector.connector; resumed: boolean[] } {
  const base = buildConnector({ ...connectOptions(who), maxCachedSessions: 10 });
  const resumed: boolean[] = [];
  const connect: buildConnector.connector = (options, callback) =>
    base(options, (err, socket) => {
      if (socket) resumed.push((socket as TLSSocket).isSessionReused());
      (callback as (err: Error | null, socket: unknown) => void)(err, socket);
    });
  return { connect, resumed };
}

interface Answer {
  status: number;
  body: { kind?: string; code?: number; reason?: string; message?: string; user?: { username: string } };
}

async function identity(dispatcher: Dispatcher): Promise<Answer> {
  const res = await request(`${proxy.url}/test/identity`, { dispatcher });
  return { status: res.statusCode, body: (await res.body.json()) as Answer['body'] };
}

/** One request on a connection of its own. */
async function onNewConnection(who: User): Promise<Answer> {
  const fresh = keptClient(who);
  try {
    return await identity(fresh);
  } finally {
    await fresh.destroy();
  }
}

function openSession(who: User): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = connectHttp2(proxy.url, connectOptions(who));
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

async function h2Identity(session: ClientHttp2Session): Promise<Answer> {
  const stream = session.request({ ':method': 'GET', ':path': '/test/identity' });
  const headers = new Promise<IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
  let text = '';
  for await (const chunk of stream.setEncoding('utf8')) text += chunk as string;
  return { status: Number((await headers)[':status']), body: JSON.parse(text) as Answer['body'] };
}

/** What the subtests read of a watch, over either client. */
type Watch = Pick<WatchReader, 'statusCode' | 'lines' | 'ended' | 'close'>;

/** A watch on an HTTP/2 session of node:http2, as client-go multiplexes them. */
async function h2Watch(session: ClientHttp2Session): Promise<Watch> {
  const stream = session.request({ ':method': 'GET', ':path': WATCH_PATH });
  const headers = await new Promise<IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
  const lines: string[] = [];
  let buffered = '';
  stream.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts);
  });
  const ended = new Promise<'end' | 'error'>((resolve) => {
    stream.once('end', () => resolve('end'));
    stream.once('error', () => resolve('error'));
  });
  return { statusCode: Number(headers[':status']), lines, ended, close: () => stream.close() };
}

function openTunnelAsAlice(tt: TapTest) {
  return openEchoTunnel(tt, proxy.port, pki, { protocol: 'websocket', identity: { cert: 'user-alice' } });
}

// Alice's kept-alive connection and HTTP/2 session outlive the first subtest: the second one
// shows the same connection let in again once her CA is back.
const keptAlice = keptClient('alice');
const aliceSession = await openSession('alice');
t.teardown(() => Promise.all([keptAlice.destroy(), aliceSession.destroy()]));

// ---------------------------------------------------------------------------------------------

t.test('CA A removed from --client-ca-file + SIGHUP: alice is refused on the connections she holds and loses her watches and tunnel; bob and carl carry on', async (t) => {
  const kept = { bob: keptClient('bob'), carl: keptClient('carl') };
  const watchers = { alice: keptClient('alice'), bob: keptClient('bob'), carl: keptClient('carl') };
  const resuming = resumingConnector('alice');
  const before = keptClient('alice', resuming.connect);
  // destroy(), not close(): close() would wait for a watch that a failed check left open.
  t.teardown(() => Promise.all([...Object.values(kept), ...Object.values(watchers), before].map((c) => c.destroy())));

  for (const [who, dispatcher] of Object.entries({ alice: keptAlice, ...kept })) {
    t.match(await identity(dispatcher), { status: 200, body: { user: { username: who } } }, `${who} gets in on a kept-alive connection`);
  }
  t.match(await h2Identity(aliceSession), { status: 200, body: { user: { username: 'alice' } } }, 'and alice on an HTTP/2 session');
  t.equal((await identity(before)).status, 200, "a connection of alice's whose TLS session a later one could resume");
  await before.close();

  const aliceWatches: Record<string, Watch> = {
    'alice (HTTP/1.1)': await openWatch(watchers.alice, `${proxy.url}${WATCH_PATH}`),
    'alice (HTTP/2)': await h2Watch(aliceSession),
  };
  const otherWatches = {
    bob: await openWatch(watchers.bob, `${proxy.url}${WATCH_PATH}`),
    carl: await openWatch(watchers.carl, `${proxy.url}${WATCH_PATH}`),
  };
  const watches = { ...aliceWatches, ...otherWatches };
  for (const [who, watch] of Object.entries(watches)) t.equal(watch.statusCode, 200, `${who}'s watch is open`);
  const { tunnel, closed } = await openTunnelAsAlice(t);
  await waitFor('the watches and the tunnel to reach the apiserver', () => apiserver.openWatches() === 4 && apiserver.openUpgrades() === 1);
  await eventReaches(t, apiserver, watches);

  writeCaFile(caB);
  const started = Date.now();
  const logged = await reloadBySighup(proxy);

  for (const [who, watch] of Object.entries(aliceWatches)) {
    t.equal(await within(`${who}'s watch to end`, watch.ended, CUT_WITHIN_MS), 'end', `${who}'s watch ended cleanly`);
  }
  await within("alice's tunnel to close", closed, CUT_WITHIN_MS);
  t.pass("alice's tunnel was closed by the proxy");
  tunnel.socket.destroy();
  await waitFor("the apiserver side of alice's watches and tunnel to close", () => apiserver.openWatches() === 2 && apiserver.openUpgrades() === 0, CUT_WITHIN_MS);
  t.ok(Date.now() - started < CUT_WITHIN_MS, `all cut ${Date.now() - started} ms after the SIGHUP`);
  const warned = logged.filter((l) => l.msg === CLOSED);
  t.equal(warned.length, 1, 'one warn line for the reload');
  t.match(warned[0], { level: 40, streams: 2, tunnels: 1, users: ['alice'] }, 'naming how many and whose');

  t.match(await identity(keptAlice), { status: 401, body: UNTRUSTED }, "alice's next request on her kept-alive connection: 401");
  t.equal(keptAlice.connects, 1, 'on the same connection');
  t.match(await h2Identity(aliceSession), { status: 401, body: UNTRUSTED }, 'on her HTTP/2 session: 401');
  t.notOk(aliceSession.closed || aliceSession.destroyed, 'the same session');
  const refusedAlice = (l: LogLine) => l.msg === 'authentication failed' && l.reason === 'cert-untrusted' && l.claimedUser === 'alice';
  await waitFor("the refusal's log line", () => proxy.logs.some(refusedAlice));
  t.match(proxy.logs.find(refusedAlice), { auth: 'x509', status: 401 }, 'logged as a handshake-time failure is');

  await eventReaches(t, apiserver, otherWatches);
  for (const [who, dispatcher] of Object.entries(kept)) {
    t.match(await identity(dispatcher), { status: 200, body: { user: { username: who } } }, `${who}'s next request: 200`);
    t.equal(dispatcher.connects, 1, `${who}: on the same connection`);
  }

  t.match(await onNewConnection('alice'), { status: 401, body: UNTRUSTED }, "a new connection of alice's: 401");
  const after = keptClient('alice', resuming.connect);
  t.match(await identity(after), { status: 401, body: UNTRUSTED }, 'one offering the TLS session of her earlier connection: 401');
  await after.destroy();
  t.same(resuming.resumed, [false, false], 'the proxy did not resume that session (its verdict was made against the previous CAs)');
  t.equal((await onNewConnection('bob')).status, 200, "a new connection of bob's: 200");
  t.equal((await onNewConnection('carl')).status, 200, "of carl's: 200");

  // reset: no idle keep-alive connection left to hold the test process open.
  const counted = await request(`${proxy.adminUrl}/metrics`, { reset: true }).then((res) => res.body.text());
  t.match(counted, /kube_front_proxy_authentications_total\{method="x509",outcome="cert-untrusted"\} [1-9]/, 'counted by reason');
  for (const watch of Object.values(otherWatches)) watch.close();
});

t.test('CA A back in the file + SIGHUP: alice gets in again', async (t) => {
  await nothingOpen(apiserver);
  writeCaFile(caA, caB);
  const logged = await reloadBySighup(proxy);
  t.notOk(
    logged.some((l) => l.msg === CLOSED),
    'nothing closed',
  );
  t.match(await onNewConnection('alice'), { status: 200, body: { user: { username: 'alice' } } }, 'on a new connection');
  // The verdict follows the CAs in force: the connection refused under B alone is trusted again.
  t.match(await identity(keptAlice), { status: 200, body: { user: { username: 'alice' } } }, 'and on the connection she kept');
  t.equal(keptAlice.connects, 1, 'the same one');
  t.equal((await h2Identity(aliceSession)).status, 200, 'and on her HTTP/2 session');
});

t.test('a reload that leaves --client-ca-file as it was cuts nothing', async (t) => {
  const kept = { alice: keptClient('alice'), bob: keptClient('bob'), carl: keptClient('carl') };
  const watchers = { alice: keptClient('alice'), bob: keptClient('bob'), carl: keptClient('carl') };
  t.teardown(() => Promise.all([...Object.values(kept), ...Object.values(watchers)].map((c) => c.destroy())));
  await nothingOpen(apiserver);
  for (const [who, dispatcher] of Object.entries(kept)) t.equal((await identity(dispatcher)).status, 200, `${who} gets in`);
  const watches = {
    'alice (HTTP/1.1)': await openWatch(watchers.alice, `${proxy.url}${WATCH_PATH}`),
    'alice (HTTP/2)': await h2Watch(aliceSession),
    bob: await openWatch(watchers.bob, `${proxy.url}${WATCH_PATH}`),
    carl: await openWatch(watchers.carl, `${proxy.url}${WATCH_PATH}`),
  };
  const { tunnel, closed } = await openTunnelAsAlice(t);
  let tunnelClosed = false;
  void closed.then(() => (tunnelClosed = true));
  await eventReaches(t, apiserver, watches);

  // SIGHUP alone, then the same bytes written anew (a new inode and mtime).
  for (const round of [1, 2]) {
    if (round === 2) writeCaFile(caA, caB);
    const logged = await reloadBySighup(proxy);
    t.notOk(
      logged.some((l) => l.msg === CLOSED),
      `reload ${round}: nothing closed`,
    );
    await eventReaches(t, apiserver, watches);
    for (const [who, dispatcher] of Object.entries(kept)) {
      t.equal((await identity(dispatcher)).status, 200, `reload ${round}: ${who}'s next request: 200`);
      t.equal(dispatcher.connects, 1, `reload ${round}: ${who}: on the same connection`);
    }
    t.equal((await h2Identity(aliceSession)).status, 200, `reload ${round}: alice on her HTTP/2 session: 200`);
    const echoed = new Promise<Buffer>((resolve) => tunnel.socket.once('data', resolve));
    tunnel.socket.write(`round ${round}`);
    t.equal((await echoed).toString(), `round ${round}`, `reload ${round}: alice's tunnel still carries bytes`);
  }
  t.notOk(tunnelClosed, 'the tunnel stayed open');
  for (const [who, watch] of Object.entries(watches)) t.equal(watch.lines.length, 3, `${who}'s watch got every event`);

  for (const watch of Object.values(watches)) watch.close();
  tunnel.socket.destroy();
});

t.test('a resumed TLS session, which carries no intermediates, is let in when its certificate chains', async (t) => {
  const resuming = resumingConnector('carl');
  for (const round of [1, 2]) {
    const carlClient = keptClient('carl', resuming.connect);
    t.match(await identity(carlClient), { status: 200, body: { user: { username: 'carl' } } }, `carl, connection ${round}`);
    await carlClient.destroy();
  }
  // The first connection was checked with the intermediate carl sent; the second, resumed, is
  // let in because the proxy remembers that his certificate chains (TrustedCas.vouchesFor).
  t.same(resuming.resumed, [false, true], "the second resumed the first one's session");
});

// ---------------------------------------------------------------------------------------------
// The chain check on its own.

t.test('TrustedCas.chains: issued by a CA in the bundle, directly or through intermediates the client sent, every signature checked', async (t) => {
  const x = (pem: string) => new X509Certificate(pem);
  const bundle = (...cas: CertificateAndKey[]) => new TrustedCas(Buffer.from(cas.map((ca) => ca.cert).join('')));
  // Another CA named exactly like team B's: names match, signatures do not.
  const lookAlike = await createCertificateAuthority({ commonName: 'team-b-ca' });
  const lookAlikeIntermediate = await intermediateCa(lookAlike, 'team-b-intermediate');
  const deeper = await intermediateCa(caBIntermediate, 'team-b-deeper');
  const [dan, forged, posing] = await Promise.all([
    issueCertificate(deeper, client('dan', [])),
    issueCertificate(lookAlikeIntermediate, client('mallory', ['system:masters'])),
    // Signed with bob's key: a leaf's key is no CA's, whatever the names say.
    issueCertificate(bob, client('eve', ['system:masters'])),
  ]);
  const both = bundle(caA, caB);

  t.ok(both.chains(x(bob.cert), []), 'bob: issued by a CA in the bundle');
  t.ok(both.chains(x(pki.pem['user-alice'].cert), []), 'alice: by the other one');
  t.notOk(bundle(caB).chains(x(pki.pem['user-alice'].cert), []), 'alice, once her CA is gone: no');
  t.ok(both.chains(x(carl.cert), [x(caBIntermediate.cert)]), 'carl: through the intermediate he sent');
  t.notOk(both.chains(x(carl.cert), []), 'carl without it: no (it is not in the bundle)');
  t.notOk(bundle(caA).chains(x(carl.cert), [x(caBIntermediate.cert)]), "carl when team B's CA is gone: no");
  t.ok(both.chains(x(dan.cert), [x(pki.pem['user-bob'].cert), x(caBIntermediate.cert), x(lookAlikeIntermediate.cert), x(deeper.cert)]), 'dan: two intermediates, sent out of order among others');
  t.notOk(both.chains(x(forged.cert), [x(lookAlikeIntermediate.cert)]), 'a look-alike intermediate of a look-alike CA: no');
  t.notOk(both.chains(x(forged.cert), [x(caBIntermediate.cert)]), "a certificate naming team B's intermediate that it did not sign: no");
  t.notOk(both.chains(x(posing.cert), [x(bob.cert)]), "a certificate signed with a leaf's key, the leaf sent as its issuer: no");
  t.ok(bundle(caA, caB, caBIntermediate, deeper).chains(x(dan.cert), []), 'intermediates in the bundle are links too');
  // Node's TLS layer refuses that chain as well (UNABLE_TO_GET_ISSUER_CERT): no partial chains.
  t.notOk(bundle(caA, deeper).chains(x(dan.cert), []), 'but not where a chain may end: that takes a self-signed CA of the bundle');

  const fresh = bundle(caA, caB);
  t.notOk(fresh.vouchesFor(x(carl.cert).fingerprint256), 'a leaf not yet checked is not vouched for');
  fresh.chains(x(carl.cert), [x(caBIntermediate.cert)]);
  fresh.chains(x(forged.cert), [x(lookAlikeIntermediate.cert)]);
  t.ok(fresh.vouchesFor(x(carl.cert).fingerprint256), 'one found to chain is');
  t.notOk(fresh.vouchesFor(x(forged.cert).fingerprint256), 'one found not to, is not');
});

t.test('Authenticator.setClientCas keeps the set in force when the bundle is unchanged', async (t) => {
  const pem = Buffer.from(caA.cert + caB.cert);
  const first = new TrustedCas(pem);
  const authenticator = new Authenticator({ certificates: true, basic: undefined, revocations: undefined, clientCas: first, failures: undefined });
  t.equal(authenticator.setClientCas(new TrustedCas(Buffer.from(pem))), false, 'the same bytes: unchanged, no connection is checked again');
  t.equal(authenticator.setClientCas(undefined), false, 'none at all (cannot happen on reload): the set in force stays');
  t.equal(authenticator.setClientCas(new TrustedCas(Buffer.from(caB.cert))), true, 'a CA removed: changed');
  t.equal(authenticator.setClientCas(new TrustedCas(pem)), true, 'and back: changed');
});

t.test('the real kubectl: `get pods -w` as bob ends when CA B leaves --client-ca-file, and he is refused after', async (t) => {
  requireKubectl();
  await nothingOpen(apiserver);
  const kubeconfig = writeKubeconfig(proxy.url, pki.pem['proxy-ca'].cert, { clientCertificate: bob.cert, clientKey: bob.key });
  const watching = kubectl(kubeconfig, ['get', 'pods', '-w'], { timeoutMs: 30_000 });
  await waitFor("kubectl's watch to reach the apiserver", () => apiserver.openWatches() === 1, 10_000);

  writeCaFile(caA);
  t.teardown(async () => {
    writeCaFile(caA, caB);
    await reloadBySighup(proxy);
  });
  const started = Date.now();
  await reloadBySighup(proxy);
  const watched = await within('kubectl get -w to exit', watching, 10_000);
  t.ok(Date.now() - started < 10_000, `kubectl's watch ended ${Date.now() - started} ms after the SIGHUP (exit ${watched.code})`);
  t.match(watched.stdout, /pod-0/, 'it had listed the pods before');

  const again = await kubectl(kubeconfig, ['get', 'pods']);
  t.not(again.code, 0, 'a new kubectl get is refused');
  t.match(again.stderr, /must be logged in to the server/, `kubectl says why: ${again.stderr.trim()}`);
});
