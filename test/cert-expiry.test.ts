// A client certificate ends when it ends: one that expires while its connection is open stops
// authenticating at notAfter, as kube-apiserver (which checks validity on every request) would.
// Against a real proxy process: a certificate generated here, valid for a few more seconds,
// opens a kept-alive HTTP/1.1 connection, an HTTP/2 session, watches over both and an exec-like
// tunnel; at notAfter its watches end cleanly, its tunnel closes, and its next request on the
// connections it holds gets 401, while bob (a certificate valid for a year: far past Node's
// longest timer) carries on. Then the expiry clock on its own: far moments, steps, closed
// connections.
import { EventEmitter } from 'node:events';
import { connect as connectHttp2, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import { Agent, buildConnector, Client, request, type Dispatcher } from 'undici';
import { CredentialExpiry } from '../src/auth/credential-expiry.js';
import { issueCertificate, type CertificateAndKey } from '../src/pki/certificates.js';
import { openWatch, proxyClient, type WatchReader } from './helpers/clients.js';
import { createTestPki, intermediateCa, type TestPki } from './helpers/pki.js';
import { eventReaches, nothingOpen, waitFor, within } from './helpers/reload.js';
import { startStack } from './helpers/setup.js';
import { openEchoTunnel } from './helpers/tunnel.js';

const CLOSED = 'closed streams and tunnels of withdrawn credentials';
const WATCH_PATH = '/api/v1/namespaces/default/pods?watch=true';
const EXPIRED = { kind: 'Status', code: 401, reason: 'Unauthorized', message: 'client certificate has expired' };
/** How long after notAfter what the certificate opened must be gone. */
const CUT_WITHIN_MS = 1500;
const HOUR_MS = 60 * 60 * 1000;

const pki = await createTestPki();
// Only SIGHUP reloads (and none is sent): nothing here is a reload's doing.
const { apiserver, proxy } = await startStack(t, { pki, flags: ['--reload-interval', '1h'] });

/** A certificate from the users CA that expires `seconds` from now (X.509 times are whole seconds). */
async function expiringIn(seconds: number, commonName: string): Promise<{ credential: CertificateAndKey; notAfter: number }> {
  const notAfter = (Math.floor(Date.now() / 1000) + seconds) * 1000;
  const credential = await issueCertificate(pki.pem['user-ca'], { commonName, organizations: ['devs'], usages: ['clientAuth'], notBefore: new Date(Date.now() - HOUR_MS), notAfter: new Date(notAfter) });
  return { credential, notAfter };
}

interface Answer {
  status: number;
  body: { kind?: string; code?: number; reason?: string; message?: string; user?: { username: string } };
}

async function identity(dispatcher: Dispatcher): Promise<Answer> {
  const res = await request(`${proxy.url}/test/identity`, { dispatcher });
  return { status: res.statusCode, body: (await res.body.json()) as Answer['body'] };
}

function openSession(credential: CertificateAndKey): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = connectHttp2(proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...credential });
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

t.test('a certificate that expires while its connections are open: 401 from notAfter on, and its watches and tunnel end then', async (t) => {
  const { credential: eve, notAfter } = await expiringIn(4, 'eve');
  const tls = { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...eve };
  // fay's own certificate is good for a day, but the issuing CA she sends expires with eve's.
  const issuing = await intermediateCa(pki.pem['user-ca'], 'expiring-issuing-ca', { notAfter: new Date(notAfter) });
  const fayLeaf = await issueCertificate(issuing, { commonName: 'fay', usages: ['clientAuth'] });
  const fay = new Client(proxy.url, { connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: fayLeaf.cert + issuing.cert, key: fayLeaf.key }, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
  // One kept-alive HTTP/1.1 connection; `connects` counts the TLS connections it made.
  let connects = 0;
  const kept = new Client(proxy.url, { connect: tls, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
  kept.on('connect', () => connects++);
  const session = await openSession(eve);
  const watchers = { h1: new Agent({ connect: tls }), h2: new Agent({ connect: tls, allowH2: true }) };
  const bob = proxyClient(pki, { cert: 'user-bob' });
  // Connections that resume each other's TLS sessions, as one kubectl process's do: a resumed
  // session carries the verdict of the handshake it resumes, made while the certificate was valid.
  const resumed: boolean[] = [];
  const base = buildConnector({ ...tls, maxCachedSessions: 10 });
  const resuming: buildConnector.connector = (options, callback) =>
    base(options, (err, socket) => {
      if (socket) resumed.push((socket as TLSSocket).isSessionReused());
      (callback as (err: Error | null, socket: unknown) => void)(err, socket);
    });
  const onResumingConnection = async () => {
    const fresh = new Client(proxy.url, { connect: resuming });
    try {
      return await identity(fresh);
    } finally {
      await fresh.destroy();
    }
  };
  // destroy(), not close(): close() would wait for a watch left open by a failed check.
  t.teardown(() => Promise.all([kept.destroy(), session.destroy(), watchers.h1.destroy(), watchers.h2.destroy(), bob.destroy(), fay.destroy()]));

  await nothingOpen(apiserver);
  const watches: Record<string, WatchReader> = {
    'eve (HTTP/1.1)': await openWatch(watchers.h1, `${proxy.url}${WATCH_PATH}`),
    'eve (HTTP/2)': await openWatch(watchers.h2, `${proxy.url}${WATCH_PATH}`),
    bob: await openWatch(bob, `${proxy.url}${WATCH_PATH}`),
  };
  // The tunnel helper takes its client certificate from the PKI by name: eve's under alice's.
  const withEve = { ...pki, pem: { ...pki.pem, 'user-alice': eve } } as TestPki;
  const { tunnel, closed } = await openEchoTunnel(t, proxy.port, withEve, { protocol: 'websocket', identity: { cert: 'user-alice' } });
  t.teardown(() => tunnel.socket.destroy());
  t.match(await identity(kept), { status: 200, body: { user: { username: 'eve' } } }, 'before notAfter: eve on her kept-alive connection');
  t.match(await h2Identity(session), { status: 200, body: { user: { username: 'eve' } } }, 'and on her HTTP/2 session');
  t.match(await identity(fay), { status: 200, body: { user: { username: 'fay' } } }, 'fay on hers');
  t.equal((await onResumingConnection()).status, 200, 'eve on a connection whose TLS session the next one resumes');
  await waitFor('the watches and the tunnel to reach the apiserver', () => apiserver.openWatches() === 3 && apiserver.openUpgrades() === 1);
  await eventReaches(t, apiserver, watches);
  t.equal(watches['eve (HTTP/2)']!.headers['transfer-encoding'], undefined, "one of eve's watches is over HTTP/2");
  t.ok(Date.now() < notAfter, `all open ${notAfter - Date.now()} ms before notAfter`);

  // The events: each awaited, bounded by notAfter plus the allowance.
  const deadline = () => Math.max(0, notAfter - Date.now()) + CUT_WITHIN_MS;
  const { bob: bobWatch, ...eveWatches } = watches;
  for (const [who, watch] of Object.entries(eveWatches)) {
    t.equal(await within(`${who}'s watch to end`, watch.ended, deadline()), 'end', `${who}'s watch ended cleanly (end of body, not an error)`);
  }
  const watchesEnded = Date.now();
  await within("eve's tunnel to close", closed, deadline());
  t.pass("eve's tunnel was closed by the proxy");
  t.ok(watchesEnded > notAfter, `not before notAfter (${watchesEnded - notAfter} ms after it)`);
  t.ok(Date.now() - notAfter < CUT_WITHIN_MS, `all cut within ${Date.now() - notAfter} ms of notAfter`);
  await waitFor("the apiserver side of eve's watches and tunnel to close", () => apiserver.openWatches() === 1 && apiserver.openUpgrades() === 0, CUT_WITHIN_MS);

  t.match(await identity(kept), { status: 401, body: EXPIRED }, "eve's next request on her kept-alive connection: 401");
  t.equal(connects, 1, 'on the same connection');
  t.match(await h2Identity(session), { status: 401, body: EXPIRED }, 'and on her HTTP/2 session: 401');
  t.notOk(session.closed || session.destroyed, 'the same session');
  const fresh = new Agent({ connect: tls });
  t.match(await identity(fresh), { status: 401, body: EXPIRED }, 'as on a new connection');
  await fresh.destroy();
  t.match(await onResumingConnection(), { status: 401, body: EXPIRED }, 'and on a new connection that resumes a TLS session from before notAfter');
  t.same(resumed, [false, true], 'which it did');
  t.match(await identity(fay), { status: 401, body: EXPIRED }, 'fay, whose issuing CA expired: 401 on her kept-alive connection too');

  await waitFor('the warn line', () => proxy.logs.some((l) => l.msg === CLOSED));
  const warned = proxy.logs.filter((l) => l.msg === CLOSED);
  t.equal(warned.length, 1, 'one warn line');
  t.match(warned[0], { level: 40, streams: 2, tunnels: 1, users: ['eve'] }, 'naming how many and whose');

  await eventReaches(t, apiserver, { bob: bobWatch! });
  t.equal((await identity(bob)).status, 200, 'bob (a year of validity left) carries on');
  bobWatch!.close();
});

// ---------------------------------------------------------------------------------------------
// The clock on its own.

/** A stand-in for a client connection: all the clock uses is 'close' and `destroyed`. */
function connection(): TLSSocket & EventEmitter {
  return Object.assign(new EventEmitter(), { destroyed: false }) as unknown as TLSSocket & EventEmitter;
}

t.test("CredentialExpiry: a moment past Node's longest timer is reached in steps, not at once", async (t) => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));

  // Node's own limit (~24.8 days): setTimeout would fire a 60-day wait after 1 ms.
  const far = new CredentialExpiry();
  let fired = 0;
  far.onExpiry(() => fired++);
  far.watch(connection(), Date.now() + 60 * 24 * HOUR_MS);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(fired, 0, 'a moment 60 days ahead has not fired');
  t.notOk(
    warnings.some((w) => w.name === 'TimeoutOverflowWarning'),
    'and no timer overflowed',
  );

  // The same with a 20 ms longest timer: a moment 150 ms ahead takes several steps.
  const stepped = new CredentialExpiry({ maxTimerMs: 20 });
  const notAfter = Date.now() + 150;
  const at = new Promise<number>((resolve) => stepped.onExpiry(() => resolve(Date.now())));
  let steps = 0;
  stepped.onExpiry(() => steps++);
  stepped.watch(connection(), notAfter);
  const firedAt = await within('the stepped moment', at, 2000);
  t.ok(firedAt > notAfter, `fired after notAfter (${firedAt - notAfter} ms)`);
  t.equal(steps, 1, 'the listeners ran once');
  t.equal(stepped.size, 0, 'and the moment is gone');
});

t.test('CredentialExpiry: one round per moment; a closed connection takes its moment with it', async (t) => {
  const clock = new CredentialExpiry();
  const rounds: number[] = [];
  const stop = clock.onExpiry(() => rounds.push(Date.now()));
  const now = Date.now();
  const [a, b, c] = [connection(), connection(), connection()];
  clock.watch(a, now + 60);
  clock.watch(b, now + 60);
  clock.watch(c, now + 60_000);
  t.equal(clock.size, 2, 'two moments');
  c.emit('close');
  t.equal(clock.size, 1, "the closed connection's moment is gone");
  await waitFor('the first round', () => rounds.length === 1, 2000);
  t.equal(clock.size, 0, 'nothing left');
  clock.watch(a, Date.now() - 10);
  await waitFor('a moment already past fires at once', () => rounds.length === 2, 2000);
  stop();
  clock.watch(a, Date.now() - 10);
  const gone = connection();
  Object.assign(gone, { destroyed: true });
  clock.watch(gone, Date.now() + 60_000);
  t.equal(clock.size, 1, 'a connection already gone is not watched');
  await waitFor('the moment to pass', () => clock.size === 0, 2000);
  t.equal(rounds.length, 2, 'a listener that stopped hears nothing');
});
