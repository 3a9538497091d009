// A credential withdrawn at runtime also ends the long-lived work it opened: a certificate revoked
// with `pki revoke` (the real command) or a user removed from the users file, or whose password
// hash or groups changed in it, loses its open watches (ended cleanly, as a drain ends them) and
// its exec-like tunnels (destroyed on both sides) at the next reload (SIGHUP), while everyone
// else's keep running; a reload that changes nothing cuts nothing. Against a real proxy process,
// one for the whole file: the subtests run in order and each opens its own streams.
import { basename, dirname } from 'node:path';
import t from 'tap';
import { Agent, request } from 'undici';
import { BasicAuthenticator } from '../src/auth/basic.js';
import type { BcryptPool } from '../src/auth/bcrypt-pool.js';
import type { UserEntry, UserTable } from '../src/auth/htpasswd.js';
import { Authenticator } from '../src/auth/index.js';
import { renewCrl } from '../src/pki/crl.js';
import { LongLivedWork } from '../src/proxy/long-lived.js';
import { basicAuth, call, openWatch, proxyClient, type WatchReader } from './helpers/clients.js';
import { createTestPki } from './helpers/pki.js';
import { kubectl, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import { runCli } from './helpers/proxy.js';
import { bcryptLine, CAROL, startStack, writeUsersFile, type TapTest, type TestUser } from './helpers/setup.js';
import { eventReaches, nothingOpen, reloadBySighup, waitFor, within } from './helpers/reload.js';
import { openEchoTunnel } from './helpers/tunnel.js';

const CLOSED = 'closed streams and tunnels of withdrawn credentials';
const WATCH_PATH = '/api/v1/namespaces/default/pods?watch=true';
/** How soon after the SIGHUP a withdrawn stream must be gone. */
const CUT_WITHIN_MS = 2000;

// carol is removed from the file, erin's password and frank's groups change, dave stays as he is.
const ERIN: TestUser = { name: 'erin', password: 'erin-before', groups: ['devs'] };
const ERIN_NEW: TestUser = { ...ERIN, password: 'erin-after' };
const FRANK: TestUser = { name: 'frank', password: 'frank-password', groups: ['ops'] };
const DAVE: TestUser = { name: 'dave', password: 'dave-unchanged', groups: ['admins'] };
// Groups are the line's third field: frank's hash stays byte for byte, only his groups change.
const frankHashed = bcryptLine({ ...FRANK, groups: [] });
const lines = { carol: bcryptLine(CAROL), erin: bcryptLine(ERIN), frank: `${frankHashed}:ops`, dave: bcryptLine(DAVE) };

const pki = await createTestPki();
// An empty, signed CRL next to the test PKI's users CA, where `pki revoke --dir` will add to it.
const crl = await renewCrl({ dir: pki.dir });
const { apiserver, proxy, usersFile } = await startStack(t, {
  pki,
  users: [lines.carol, lines.erin, lines.frank, lines.dave],
  // Only SIGHUP reloads, so each reload happens exactly when the test sends it.
  flags: ['--client-crl-file', crl.path, '--reload-interval', '1h', '--auth-failure-limit', '0'],
});

// Plain HTTP to the admin listener; short keep-alive so nothing holds the test process open.
const plain = new Agent({ keepAliveTimeout: 10, keepAliveMaxTimeout: 10 });
t.teardown(() => plain.close());

/** An echo tunnel through the proxy, by certificate (WebSocket) or password (SPDY). */
function openTunnel(tt: TapTest, auth: { cert: 'user-alice' | 'user-bob' } | TestUser) {
  return openEchoTunnel(tt, proxy.port, pki, 'cert' in auth ? { protocol: 'websocket', identity: auth } : { protocol: 'SPDY/3.1', headers: [`Authorization: ${basicAuth(auth)}`] });
}

function h2Client(cert: 'user-alice' | 'user-bob'): Agent {
  return new Agent({ connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem[cert].cert, key: pki.pem[cert].key }, allowH2: true });
}

async function metric(name: string): Promise<string> {
  const res = await request(`${proxy.adminUrl}/metrics`, { dispatcher: plain });
  const text = await res.body.text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .join('\n');
}

// ---------------------------------------------------------------------------------------------

t.test("pki revoke + SIGHUP: alice's watches end cleanly and her tunnel closes; bob keeps his watch", async (t) => {
  const alice = proxyClient(pki, { cert: 'user-alice' });
  const aliceH2 = h2Client('user-alice');
  const bob = proxyClient(pki, { cert: 'user-bob' });
  // destroy(), not close(): close() would wait for a watch that a failed check left open.
  t.teardown(() => Promise.all([alice.destroy(), aliceH2.destroy(), bob.destroy()]));

  await nothingOpen(apiserver);
  const watches = {
    'alice (HTTP/1.1)': await openWatch(alice, `${proxy.url}${WATCH_PATH}`),
    // Over HTTP/2 the certificate belongs to the session's connection, not to the stream.
    'alice (HTTP/2)': await openWatch(aliceH2, `${proxy.url}${WATCH_PATH}`),
    bob: await openWatch(bob, `${proxy.url}${WATCH_PATH}`),
  };
  for (const [who, watch] of Object.entries(watches)) t.equal(watch.statusCode, 200, `${who}'s watch is open`);
  const { tunnel, closed } = await openTunnel(t, { cert: 'user-alice' });
  await waitFor('the watches and the tunnel to reach the apiserver', () => apiserver.openWatches() === 3 && apiserver.openUpgrades() === 1);
  await eventReaches(t, apiserver, watches);
  // No chunked framing: that response came over HTTP/2.
  t.equal(watches['alice (HTTP/2)'].headers['transfer-encoding'], undefined, "one of alice's watches is over HTTP/2");
  t.equal(watches['alice (HTTP/1.1)'].headers['transfer-encoding'], 'chunked');

  const revoke = await runCli(['pki', 'revoke', '--cert', pki.path('user-alice', 'crt'), '--dir', pki.dir]);
  t.equal(revoke.code, 0, revoke.stderr);
  const started = Date.now();
  const logged = await reloadBySighup(proxy);

  const { bob: bobWatch, ...aliceWatches } = watches;
  for (const [who, watch] of Object.entries(aliceWatches)) {
    t.equal(await within(`${who}'s watch to end`, watch.ended, CUT_WITHIN_MS), 'end', `${who}'s watch ended cleanly (end of body, not an error)`);
  }
  await within("alice's tunnel to close", closed, CUT_WITHIN_MS);
  t.pass("alice's tunnel was closed by the proxy");
  await waitFor('the apiserver side of the tunnel to close', () => apiserver.openUpgrades() === 0, CUT_WITHIN_MS);
  t.equal(apiserver.openWatches(), 1, "the apiserver side of alice's watches closed too");
  t.ok(Date.now() - started < CUT_WITHIN_MS, `all cut ${Date.now() - started} ms after the SIGHUP`);
  tunnel.socket.destroy();

  const warned = logged.filter((l) => l.msg === CLOSED);
  t.equal(warned.length, 1, 'one warn line for the reload');
  t.match(warned[0], { level: 40, streams: 2, tunnels: 1, users: ['alice'] }, 'naming how many and whose');

  await eventReaches(t, apiserver, { bob: bobWatch });
  t.equal(bobWatch.lines.length, 2, "bob's watch still open, with both events");

  const next = await call(alice, `${proxy.url}/test/identity`);
  t.match(next, { status: 401, body: { kind: 'Status', reason: 'Unauthorized', message: /revoked/ } }, "alice's next request: 401");
  t.equal((await call(bob, `${proxy.url}/test/identity`)).status, 200, "bob's next request: 200");

  const counted = await metric('kube_front_proxy_withdrawn_credential_closes_total');
  t.match(counted, /kind="stream"} 2\b/, 'counted: 2 streams');
  t.match(counted, /kind="tunnel"} 1\b/, 'counted: 1 tunnel');
  bobWatch.close();
});

t.test('users file rewritten + SIGHUP: removed and changed users lose their watches and tunnels; dave keeps his', async (t) => {
  const client = proxyClient(pki);
  t.teardown(() => client.destroy());
  const watchAs = (user: TestUser) => openWatch(client, `${proxy.url}${WATCH_PATH}`, { authorization: basicAuth(user) });

  await nothingOpen(apiserver);
  const watches = {
    'carol (removed)': await watchAs(CAROL),
    'erin (new password)': await watchAs(ERIN),
    'frank (new groups)': await watchAs(FRANK),
    'dave (unchanged)': await watchAs(DAVE),
  };
  for (const [who, watch] of Object.entries(watches)) t.equal(watch.statusCode, 200, `${who}: watch open`);
  const carolTunnel = await openTunnel(t, CAROL);
  const daveTunnel = await openTunnel(t, DAVE);
  await waitFor('the watches and tunnels to reach the apiserver', () => apiserver.openWatches() === 4 && apiserver.openUpgrades() === 2);
  await eventReaches(t, apiserver, watches);

  writeUsersFile(dirname(usersFile), [bcryptLine(ERIN_NEW), `${frankHashed}:ops,admins`, lines.dave], basename(usersFile));
  const logged = await reloadBySighup(proxy);

  const { 'dave (unchanged)': daveWatch, ...cut } = watches;
  for (const [who, watch] of Object.entries(cut)) {
    t.equal(await within(`${who}: the watch to end`, watch.ended, CUT_WITHIN_MS), 'end', `${who}: watch ended cleanly`);
  }
  await within("carol's tunnel to close", carolTunnel.closed, CUT_WITHIN_MS);
  t.pass("carol's tunnel was closed by the proxy");
  carolTunnel.tunnel.socket.destroy();
  await waitFor("the apiserver side of carol's tunnel to close", () => apiserver.openUpgrades() === 1, CUT_WITHIN_MS);

  const warned = logged.filter((l) => l.msg === CLOSED);
  t.equal(warned.length, 1, 'one warn line for the reload');
  t.match(warned[0], { level: 40, streams: 3, tunnels: 1, users: ['carol', 'erin', 'frank'] });
  t.notOk(JSON.stringify(warned).includes(ERIN.password) || JSON.stringify(warned).includes('$2'), 'no password or hash in it');

  await eventReaches(t, apiserver, { dave: daveWatch });
  const echoed = new Promise<Buffer>((resolve) => daveTunnel.tunnel.socket.once('data', resolve));
  daveTunnel.tunnel.socket.write('still here');
  t.equal((await echoed).toString(), 'still here', "dave's tunnel still carries bytes");

  const identity = (user: TestUser) => call(client, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(user) } });
  t.equal((await identity(CAROL)).status, 401, 'carol: 401');
  t.equal((await identity(ERIN)).status, 401, 'erin with her old password: 401');
  t.equal((await identity(ERIN_NEW)).status, 200, 'erin with her new password: 200');
  t.match(await identity(FRANK), { status: 200, body: { user: { username: 'frank', groups: ['ops', 'admins', 'system:authenticated'] } } }, 'frank reconnects with his new groups');

  daveWatch.close();
  daveTunnel.tunnel.socket.destroy();
});

t.test('a reload that changes nothing cuts nothing', async (t) => {
  const bob = proxyClient(pki, { cert: 'user-bob' });
  const bobH2 = h2Client('user-bob');
  const client = proxyClient(pki);
  t.teardown(() => Promise.all([bob.destroy(), bobH2.destroy(), client.destroy()]));
  await nothingOpen(apiserver);
  const watches = {
    'bob (HTTP/1.1)': await openWatch(bob, `${proxy.url}${WATCH_PATH}`),
    'bob (HTTP/2)': await openWatch(bobH2, `${proxy.url}${WATCH_PATH}`),
    dave: await openWatch(client, `${proxy.url}${WATCH_PATH}`, { authorization: basicAuth(DAVE) }),
  };
  const bobTunnel = await openTunnel(t, { cert: 'user-bob' });
  const daveTunnel = await openTunnel(t, DAVE);
  await eventReaches(t, apiserver, watches);

  for (const round of [1, 2]) {
    const logged = await reloadBySighup(proxy);
    t.notOk(
      logged.some((l) => l.msg === CLOSED),
      `SIGHUP ${round}: nothing closed`,
    );
    await eventReaches(t, apiserver, watches);
    for (const [who, { tunnel }] of Object.entries({ bob: bobTunnel, dave: daveTunnel })) {
      const echoed = new Promise<Buffer>((resolve) => tunnel.socket.once('data', resolve));
      tunnel.socket.write(`round ${round}`);
      t.equal((await echoed).toString(), `round ${round}`, `SIGHUP ${round}: ${who}'s tunnel still carries bytes`);
    }
  }
  for (const [who, watch] of Object.entries(watches)) t.equal(watch.lines.length, 3, `${who}'s watch got every event`);

  for (const watch of Object.values(watches)) watch.close();
  bobTunnel.tunnel.socket.destroy();
  daveTunnel.tunnel.socket.destroy();
});

// ---------------------------------------------------------------------------------------------
// The pieces on their own: the races the reload's sweep cannot see.

t.test('a login whose bcrypt was running when the users file changed is refused if its entry changed', async (t) => {
  // A stand-in for the worker pool: the "hash" is the password, and each compare waits to be let go.
  const waiting: (() => void)[] = [];
  const pool = {
    compare: (password: string, hash: string) => new Promise<boolean>((resolve) => waiting.push(() => resolve(password === hash))),
  } as unknown as BcryptPool;
  const table = (...users: UserEntry[]): UserTable => ({ users: new Map(users.map((u) => [u.name, u])), maxCost: 4 });
  const hank = { name: 'hank', hash: 'pw2', groups: [] };
  const basic = new BasicAuthenticator(table({ name: 'gina', hash: 'pw1', groups: ['devs'] }, hank), pool, { cacheTtlMs: 60_000, cacheSize: 10 });

  const ginaLogin = basic.verify('gina', 'pw1');
  const hankLogin = basic.verify('hank', 'pw2');
  // Re-read from disk: new objects, hank's with the same hash and groups.
  basic.setUsers(table({ name: 'gina', hash: 'pw1', groups: ['devs', 'admins'] }, { ...hank }));
  for (const release of waiting) release();
  t.match(await ginaLogin, { ok: false, reason: 'bad-password' }, "gina's groups changed during her check: refused");
  const hankResult = await hankLogin;
  if (!hankResult.ok) throw new Error(`hank was refused: ${hankResult.reason}`);
  t.equal(hankResult.identity.user, 'hank', "hank's entry is unchanged: let in");

  const authenticator = new Authenticator({ certificates: false, basic, revocations: undefined, failures: undefined });
  t.equal(authenticator.stillHolds(hankResult.identity), true, 'hank still holds');
  t.equal(authenticator.stillHolds({ method: 'basic', user: 'hank', groups: [], extra: {}, upstreamAuth: 'front-proxy' }), false, 'an identity without a credential never holds');
  basic.setUsers(table({ name: 'gina', hash: 'pw1', groups: ['devs'] }));
  t.equal(authenticator.stillHolds(hankResult.identity), false, 'hank removed: no longer holds');
});

t.test('a stream registered after the sweep, by an identity already withdrawn, is ended at once', async (t) => {
  let holds = true;
  const registry = new LongLivedWork(() => holds);
  const ended: string[] = [];
  const identity = (user: string) => ({ method: 'basic' as const, user, groups: [], extra: {}, upstreamAuth: 'front-proxy' as const });
  registry.add('stream', () => ended.push('early'), identity('early'));
  holds = false;
  t.same(registry.endWithdrawn(), { stream: ['early'], tunnel: [] }, 'the sweep ends the open one and names its user');
  t.same(ended, ['early']);
  t.equal(registry.count('stream'), 0);
  registry.add('stream', () => ended.push('late'), identity('late'));
  t.same(ended, ['early'], 'not inside add(), while the caller is still wiring the stream up');
  await Promise.resolve();
  t.same(ended, ['early', 'late'], 'but right after');
  t.equal(registry.count('stream'), 0, 'and never listed');
});

t.test('the real kubectl: `get pods -w` as bob ends when his certificate is revoked, and he is refused after', async (t) => {
  requireKubectl();
  await nothingOpen(apiserver);
  const kubeconfig = writeKubeconfig(proxy.url, pki.pem['proxy-ca'].cert, { clientCertificate: pki.pem['user-bob'].cert, clientKey: pki.pem['user-bob'].key });
  const watching = kubectl(kubeconfig, ['get', 'pods', '-w'], { timeoutMs: 30_000 });
  await waitFor("kubectl's watch to reach the apiserver", () => apiserver.openWatches() === 1, 10_000);

  const revoke = await runCli(['pki', 'revoke', '--cert', pki.path('user-bob', 'crt'), '--dir', pki.dir]);
  t.equal(revoke.code, 0, revoke.stderr);
  const started = Date.now();
  await reloadBySighup(proxy);
  const watched = await within('kubectl get -w to exit', watching, 10_000);
  t.ok(Date.now() - started < 10_000, `kubectl's watch ended ${Date.now() - started} ms after the SIGHUP (${watched.code}: ${watched.stderr.trim()})`);
  t.match(watched.stdout, /pod-0/, 'it had listed the pods before');

  const again = await kubectl(kubeconfig, ['get', 'pods']);
  t.not(again.code, 0, 'a new kubectl get is refused');
  t.match(again.stderr, /Unauthorized|must be logged in/, `kubectl says why: ${again.stderr.trim()}`);
});
