// Watches and log follows to the apiserver over HTTP/2 (node:http2, src/upstream/h2.ts): many
// watches share a few upstream connections, each group still arrives as a header field of its
// own, events flow both ways of ending (the apiserver's, the client's) cleanly, failover,
// drain and reload behave as on HTTP/1.1, and --upstream-http2=false keeps the old path.
// End to end against the real proxy process, then the session pool on its own (pings,
// stream limits, idle close, reload) with timings too long to wait for through the process.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { createServer as createHttpsServer } from 'node:https';
import { connect as http2Connect, constants, createSecureServer, type ClientHttp2Stream, type Http2Session, type ServerHttp2Stream } from 'node:http2';
import { createServer as createTcpServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import t from 'tap';
import { request } from 'undici';
import { loadConfig } from '../src/config/index.js';
import { HTTP1_ONLY, Http2Upstreams, responseHeaders } from '../src/upstream/h2.js';
import { UpstreamConnector } from '../src/upstream/tls.js';
import { startApiServer, type ApiServer } from '../standin/apiserver.js';
import { basicAuth, call, openWatch, proxyClient } from './helpers/clients.js';
import { requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import { createTestPki, credentialIdExtra } from './helpers/pki.js';
import { startProxy, type ProxyProcess } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, startStack, withFlag, writeUsersFile, type TapTest } from './helpers/setup.js';

const pki = await createTestPki();
const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)]);
const alice = proxyClient(pki, { cert: 'user-alice' });
const password = proxyClient(pki);
t.teardown(() => Promise.all([alice.close(), password.close()]));

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const WATCH = '/api/v1/namespaces/default/pods?watch=1';
const pod = (name: string) => ({ kind: 'Pod', apiVersion: 'v1', metadata: { name, namespace: 'default' } });

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5000): Promise<number> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(10);
  }
  return Date.now() - started;
}

function standIn(t: TapTest, port = 0): Promise<ApiServer> {
  return startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert, clientCA: pki.pem['cluster-ca'].cert, port }).then((s) => {
    t.teardown(() => s.close());
    return s;
  });
}

/** A proxy in front of `upstreams`; health checks only at start-up unless `extra` says otherwise, so failover is the request's own. */
async function proxyFor(t: TapTest, upstreams: string[], extra: string[] = []): Promise<ProxyProcess> {
  const flags = withFlag(proxyFlags(pki, { upstream: upstreams[0] as string, usersFile }), '--upstream', undefined);
  const proxy = await startProxy([...flags, ...upstreams.flatMap((u) => ['--upstream', u]), ...(extra.includes('--health-interval') ? [] : ['--health-interval', '1h']), ...extra]);
  t.teardown(() => proxy.stop('SIGKILL'));
  return proxy;
}

/** The watch requests the stand-in saw since index `from`, as [httpVersion, user]. */
function watchRequests(apiserver: ApiServer, from = 0) {
  return apiserver.requests.slice(from).filter((r) => r.url.includes('watch='));
}

/** Established TCP connections of process `pid` to `port` on loopback (from /proc). */
function connectionsTo(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1] as string);
    } catch {
      // closed meanwhile
    }
  }
  let count = 0;
  for (const table of ['tcp', 'tcp6']) {
    const lines = readFileSync(`/proc/${pid}/net/${table}`, 'utf8').trim().split('\n').slice(1);
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      const remotePort = parseInt((f[2] ?? '').split(':')[1] ?? '', 16);
      if (remotePort === port && f[3] === '01' && inodes.has(f[9] ?? '')) count++;
    }
  }
  return count;
}

// ---------------------------------------------------------------------------------------------
// End to end

t.test('--upstream-http2 is on by default; the flag and the environment turn it off', async (t) => {
  const required = { tlsCertFile: 'serving.crt', tlsPrivateKeyFile: 'serving.key', htpasswdFile: 'users' };
  t.equal(loadConfig({ flags: required, env: {} }).upstreamHttp2, true);
  t.equal(loadConfig({ flags: { ...required, upstreamHttp2: false }, env: {} }).upstreamHttp2, false);
  t.equal(loadConfig({ flags: required, env: { KUBE_FRONT_PROXY_UPSTREAM_HTTP2: 'false' } }).upstreamHttp2, false);
});

t.test('a watch goes to the apiserver over HTTP/2, plain requests stay on HTTP/1.1; the header contract holds', async (t) => {
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)] });
  const from = apiserver.requests.length;
  const spoofed = { 'x-remote-user': 'root', 'x-remote-group': 'system:masters', 'x-remote-extra-scopes': 'all', 'x-remote-uid': '0' };

  // A client certificate: CN alice, O devs and O ops.
  const query = 'watch=1&labelSelector=app%3Dweb,tier!%3Ddb&fieldSelector=metadata.name%3Dpod-0&resourceVersion=12';
  const byCert = await openWatch(alice, `${proxy.url}/api/v1/namespaces/default/pods?${query}`, spoofed);
  t.equal(byCert.statusCode, 200);
  t.equal(byCert.headers['transfer-encoding'], 'chunked', 'streamed chunked to an HTTP/1.1 client');
  // A password: alice's groups from the users file.
  const byPassword = await openWatch(password, `${proxy.url}${WATCH}`, { ...spoofed, authorization: basicAuth(ALICE) });
  t.equal(byPassword.statusCode, 200);
  await waitFor('both watches open upstream', () => apiserver.openWatches() === 2);

  const seen = watchRequests(apiserver, from);
  t.equal(seen.length, 2);
  // The certificate user carries its credential id as extra (as kube-apiserver gives a direct
  // x509 user); the password user has no extra.
  const certificateExtra = credentialIdExtra(pki.pem['user-alice'].cert);
  for (const request of seen) {
    const byCertificate = request.url.includes('labelSelector=');
    const extra = byCertificate ? certificateExtra : {};
    t.equal(request.httpVersion, '2.0', 'the watch went over HTTP/2');
    t.equal(request.authn, 'requestheader', 'authenticated by the front-proxy certificate');
    t.same(request.user, { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'], extra }, 'two groups, not one "devs,ops"');
    const identity = request.rawHeaders.filter(([n]) => /^(x-remote-|authorization$)/i.test(n)).map(([n, v]) => [n.toLowerCase(), v]);
    t.same(
      identity,
      [
        ['x-remote-user', 'alice'],
        ['x-remote-group', 'devs'],
        ['x-remote-group', 'ops'],
        ...(byCertificate ? [['x-remote-extra-authentication.kubernetes.io%2fcredential-id', certificateExtra['authentication.kubernetes.io/credential-id']![0]]] : []),
      ],
      'each group a field of its own; nothing the client claimed, no credentials',
    );
    t.notOk(
      request.rawHeaders.some(([n]) => ['connection', 'host', 'keep-alive', 'transfer-encoding'].includes(n.toLowerCase())),
      'no connection-specific header',
    );
  }
  t.equal(seen[0]?.url, `/api/v1/namespaces/default/pods?${query}`, 'the query string exactly as the client sent it');

  apiserver.sendWatchEvent('ADDED', pod('over-h2'));
  for (const watch of [byCert, byPassword]) t.match(JSON.parse(await watch.next(1)), { type: 'ADDED', object: { metadata: { name: 'over-h2' } } }, 'the event arrived');

  const plain = await call(alice, `${proxy.url}/api/v1/namespaces/default/pods`);
  t.equal(plain.status, 200);
  t.equal(apiserver.requests.at(-1)?.httpVersion, '1.1', 'a plain list stays on HTTP/1.1');

  apiserver.closeWatches();
  t.equal(await byCert.ended, 'end', "the apiserver ending the watch ends the client's cleanly");
  t.equal(await byPassword.ended, 'end');
  const watchLines = () => proxy.logs.filter((l) => l.msg === 'request' && l.verb === 'watch');
  await waitFor('the end lines', () => watchLines().filter((l) => l.phase === 'end').length === 2);
  const lines = watchLines();
  t.equal(lines.filter((l) => l.phase === 'start').length, 2, 'a start line per watch');
  const ends = lines.filter((l) => l.phase === 'end');
  t.equal(ends.length, 2, 'an end line per watch');
  t.match(ends[0], { status: 200, upstream: apiserver.url });
  t.ok((ends[0]?.bytesOut as number) > 0, 'with the bytes sent');
});

t.test('50 watches share few upstream connections; a client leaving closes its stream upstream', async (t) => {
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)] });
  const pid = proxy.child.pid as number;
  const watches = await Promise.all(Array.from({ length: 50 }, () => openWatch(alice, `${proxy.url}${WATCH}`)));
  await waitFor('50 watches open upstream', () => apiserver.openWatches() === 50);
  const connections = connectionsTo(pid, apiserver.port);
  // One HTTP/2 session, plus the kept-alive HTTP/1.1 connection of the health checks.
  t.ok(connections <= 3, `the proxy holds ${connections} connections to the apiserver for 50 watches`);
  apiserver.sendWatchEvent('MODIFIED', pod('fan-out'));
  await Promise.all(watches.map((w) => w.next(1)));
  t.pass('every watch got the event');
  const during = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
  t.match(during, /^kube_front_proxy_upstream_http2_streams 50$/m, 'the metrics count 50 upstream HTTP/2 streams');
  t.match(during, /^kube_front_proxy_upstream_http2_sessions [12]$/m, 'on one or two sessions');

  for (const w of watches.slice(0, 20)) w.close();
  const ms = await waitFor('the apiserver sees 20 fewer watches', () => apiserver.openWatches() === 30);
  t.pass(`the apiserver's streams closed ${ms} ms after their clients left`);
  apiserver.sendWatchEvent('MODIFIED', pod('after-leavers'));
  await Promise.all(watches.slice(20).map((w) => w.next(2)));
  t.pass('the other 30 keep flowing on the same session');
  for (const w of watches.slice(20)) w.close();
  await waitFor('every upstream watch closed', () => apiserver.openWatches() === 0);
  const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
  t.match(metrics, /kube_front_proxy_upstream_in_flight\{upstream="[^"]+"\} 0/, 'the pool counts no watch in flight any more');
  // These clients speak HTTP/1.1: a response they abandon never 'finish'es, yet it is logged and counted.
  t.match(metrics, /kube_front_proxy_open_streams\{kind="watch"\} 0/, 'and the open-streams gauge is back to 0');
  await waitFor('50 end lines', () => proxy.logs.filter((l) => l.msg === 'request' && l.phase === 'end').length === 50);
});

t.test('a reader that stops does not hold up the other watches on its session', async (t) => {
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)] });
  const stalled = await request(`${proxy.url}${WATCH}`, { dispatcher: proxyClient(pki, { cert: 'user-alice' }) });
  stalled.body.pause();
  const reader = await openWatch(alice, `${proxy.url}${WATCH}`);
  await waitFor('both open', () => apiserver.openWatches() === 2);
  const big = { ...pod('big'), metadata: { name: 'big', namespace: 'default', annotations: { blob: 'x'.repeat(64 * 1024) } } };
  for (let i = 0; i < 200; i++) apiserver.sendWatchEvent('MODIFIED', big);
  await reader.next(200, 15_000);
  t.pass('200 events of 64 KiB reached the reading watch while the other one read nothing');
  stalled.body.destroy();
  reader.close();
});

t.test('a watch whose headers HTTP/2 cannot carry (a single-value field twice) goes over HTTP/1.1', async (t) => {
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)] });
  const res = await request(`${proxy.url}${WATCH}`, { dispatcher: alice, headers: { 'if-none-match': ['"a"', '"b"'] } });
  t.equal(res.statusCode, 200);
  await waitFor('open upstream', () => apiserver.openWatches() === 1);
  const seen = watchRequests(apiserver).at(-1);
  t.equal(seen?.httpVersion, '1.1', 'sent the HTTP/1.1 way');
  t.same(
    seen?.rawHeaders.filter(([n]) => n.toLowerCase() === 'if-none-match').map(([, v]) => v),
    ['"a"', '"b"'],
    'both lines as the client sent them',
  );
  t.same(seen?.user?.groups, ['devs', 'ops', 'system:authenticated']);
  res.body.destroy();
});

t.test('log follow (logs -f) goes over HTTP/2 too', async (t) => {
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)] });
  const from = apiserver.requests.length;
  // The stand-in keeps no logs: its 404 comes back as it is, over whichever protocol.
  const res = await request(`${proxy.url}/api/v1/namespaces/default/pods/pod-0/log?follow=true`, { dispatcher: alice });
  t.equal(res.statusCode, 404);
  await res.body.text();
  await waitFor('the request is recorded', () => apiserver.requests.length > from);
  t.equal(apiserver.requests.at(-1)?.httpVersion, '2.0');
  const once = await call(alice, `${proxy.url}/api/v1/namespaces/default/pods/pod-0/log`);
  t.equal(once.status, 404);
  t.equal(apiserver.requests.at(-1)?.httpVersion, '1.1', 'a log without follow is a plain request');
});

t.test('two apiservers, the first down: the watch lands on the second', async (t) => {
  const down = await standIn(t);
  const downUrl = down.url;
  await down.close();
  const up = await standIn(t);
  const proxy = await proxyFor(t, [downUrl, up.url], ['--upstream-strategy', 'round-robin']);
  const watch = await openWatch(alice, `${proxy.url}${WATCH}`);
  t.equal(watch.statusCode, 200, 'the client never saw the dead one');
  await waitFor('open on the live apiserver', () => up.openWatches() === 1);
  t.equal(watchRequests(up).at(-1)?.httpVersion, '2.0');
  // (Log lines are written in batches: wait for them.)
  await waitFor('the dead one was ejected', () => proxy.logs.some((l) => l.msg === 'upstream ejected' && l.upstream === downUrl));
  t.pass('the dead one was ejected');
  const end = proxy.logs.length;
  watch.close();
  await waitFor('the end line', () => proxy.logs.slice(end).some((l) => l.msg === 'request' && l.phase === 'end'));
  t.equal(proxy.logs.slice(end).find((l) => l.phase === 'end')?.upstream, up.url, 'the log names the apiserver that served it');
});

t.test('every apiserver down: 503; a rogue apiserver certificate: 502; a hung one: 504 after the header timeout', async (t) => {
  const down = await standIn(t);
  const downUrl = down.url;
  await down.close();
  const none = await proxyFor(t, [downUrl]);
  const refused = await call(alice, `${none.url}${WATCH}`);
  t.equal(refused.status, 503);
  t.match(refused.body, { kind: 'Status', reason: 'ServiceUnavailable', message: /ECONNREFUSED/ });

  const rogue = await startApiServer({ cert: pki.pem['rogue-apiserver'].cert, key: pki.pem['rogue-apiserver'].key, requestHeaderCA: pki.pem['front-proxy-ca'].cert });
  t.teardown(() => rogue.close());
  const fooled = await proxyFor(t, [rogue.url]);
  const tls = await call(alice, `${fooled.url}${WATCH}`);
  t.equal(tls.status, 502);
  t.match(tls.body, { kind: 'Status', reason: 'BadGateway', message: /^TLS connection to the apiserver .* failed/ });
  t.equal(rogue.requests.length, 0, 'nothing, and no identity, reached the impostor');

  // Speaks h2 (and HTTP/1.1 for the health checks) and answers /readyz, never a watch.
  const hung = createSecureServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, allowHTTP1: true });
  hung.on('request', (req, res) => {
    if (req.url === '/readyz') res.end('ok');
  });
  hung.listen(0, '127.0.0.1');
  await once(hung, 'listening');
  t.teardown(() => hung.close());
  const slow = await proxyFor(t, [`https://127.0.0.1:${(hung.address() as { port: number }).port}`], ['--upstream-header-timeout', '1s']);
  const started = Date.now();
  const timedOut = await call(alice, `${slow.url}${WATCH}`);
  t.equal(timedOut.status, 504);
  t.match(timedOut.body, { kind: 'Status', reason: 'Timeout' });
  t.ok(Date.now() - started < 3000, `answered after ${Date.now() - started} ms`);
});

t.test('an apiserver without h2: watches use HTTP/1.1', async (t) => {
  const versions: string[] = [];
  const open = new Set<import('node:http').ServerResponse>();
  // HTTPS without ALPN, as an apiserver with HTTP/2 turned off.
  const server = createHttpsServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key }, (req, res) => {
    versions.push(req.httpVersion);
    if (req.url === '/readyz') return res.end('ok');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders();
    open.add(res);
    res.once('close', () => open.delete(res));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const proxy = await proxyFor(t, [`https://127.0.0.1:${(server.address() as { port: number }).port}`]);
  for (let i = 1; i <= 2; i++) {
    const watch = await openWatch(alice, `${proxy.url}${WATCH}`);
    t.equal(watch.statusCode, 200, `watch ${i} open`);
    for (const res of open) res.write('{"type":"ADDED"}\n');
    await watch.next(1);
    watch.close();
  }
  t.notOk(versions.includes('2.0'));
  await waitFor('the log line', () => proxy.logs.some((l) => l.msg.startsWith('apiserver does not offer HTTP/2')));
  await sleep(300);
  t.equal(proxy.logs.filter((l) => l.msg.startsWith('apiserver does not offer HTTP/2')).length, 1, 'and remembered, not asked per watch');
});

t.test('SIGTERM: open HTTP/2-upstream watches end cleanly and the proxy exits 0', async (t) => {
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)], flags: ['--shutdown-grace', '20s'] });
  const watches = await Promise.all(Array.from({ length: 5 }, () => openWatch(alice, `${proxy.url}${WATCH}`)));
  await waitFor('open upstream', () => apiserver.openWatches() === 5);
  const started = Date.now();
  const code = await proxy.stop('SIGTERM');
  t.equal(code, 0, 'exit 0');
  t.ok(Date.now() - started < 5000, `stopped in ${Date.now() - started} ms`);
  t.same(await Promise.all(watches.map((w) => w.ended)), Array(5).fill('end'), 'each client watch ended cleanly');
  await waitFor('the apiserver streams closed', () => apiserver.openWatches() === 0);
});

t.test('kubectl get pods -w through the proxy, the apiserver leg over HTTP/2', async (t) => {
  requireKubectl();
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)] });
  const kubeconfig = writeKubeconfig(proxy.url, pki.pem['proxy-ca'].cert, { username: ALICE.name, password: ALICE.password });
  const dir = dirname(kubeconfig);
  const watch = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', `${dir}/cache`, 'get', 'pods', '-w'], { env: { ...process.env, HOME: dir, KUBECONFIG: kubeconfig } });
  let out = '';
  watch.stdout.on('data', (d: Buffer) => (out += d.toString()));
  watch.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = once(watch, 'exit');
  t.teardown(() => watch.kill('SIGKILL'));
  await waitFor('kubectl opened its watch', () => apiserver.openWatches() === 1, 15_000);
  apiserver.sendWatchEvent('ADDED', { ...pod('watched-pod'), status: { phase: 'Pending' } });
  await waitFor('kubectl printed the event', () => out.includes('watched-pod'));
  apiserver.closeWatches();
  const [code] = await exited;
  t.equal(code, 0, `kubectl get -w exits cleanly when the watch ends: ${out}`);
  t.match(out, /watched-pod\s+0\/0\s+Pending/);
  const seen = watchRequests(apiserver).at(-1);
  t.match(seen, { httpVersion: '2.0', user: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] } });
});

t.test('--upstream-http2=false: watches take one HTTP/1.1 connection each, as before', async (t) => {
  const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE)], flags: ['--upstream-http2', 'false'] });
  const watches = await Promise.all(Array.from({ length: 5 }, () => openWatch(alice, `${proxy.url}${WATCH}`)));
  await waitFor('open upstream', () => apiserver.openWatches() === 5);
  t.same(
    watchRequests(apiserver).map((r) => r.httpVersion),
    Array(5).fill('1.1'),
  );
  t.ok(connectionsTo(proxy.child.pid as number, apiserver.port) >= 5, 'a connection per watch');
  apiserver.sendWatchEvent('ADDED', pod('over-h1'));
  await Promise.all(watches.map((w) => w.next(1)));
  apiserver.closeWatches();
  t.same(await Promise.all(watches.map((w) => w.ended)), Array(5).fill('end'));
});

// ---------------------------------------------------------------------------------------------
// The session pool on its own

const silent = pino({ level: 'silent' });
const connector = () => new UpstreamConnector({ ca: Buffer.from(pki.pem['cluster-ca'].cert), cert: Buffer.from(pki.pem['front-proxy-client'].cert), key: Buffer.from(pki.pem['front-proxy-client'].key), serverName: 'kubernetes' });

interface TestH2Server {
  url: URL;
  /** Sessions accepted so far, and those open now. */
  accepted: number;
  open: Set<Http2Session>;
  streams: Set<ServerHttp2Stream>;
}

/** An h2 server with the apiserver's certificate that answers every stream 200 and keeps it open. */
async function h2Server(t: TapTest, maxConcurrentStreams?: number): Promise<TestH2Server> {
  const server = createSecureServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, ...(maxConcurrentStreams ? { settings: { maxConcurrentStreams } } : {}) });
  const state: TestH2Server = { url: new URL('https://127.0.0.1'), accepted: 0, open: new Set(), streams: new Set() };
  server.on('session', (session: Http2Session) => {
    state.accepted++;
    state.open.add(session);
    session.once('close', () => state.open.delete(session));
  });
  server.on('stream', (stream: ServerHttp2Stream) => {
    stream.on('error', () => {});
    state.streams.add(stream);
    stream.once('close', () => state.streams.delete(stream));
    stream.respond({ ':status': 200 });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.url = new URL(`https://127.0.0.1:${(server.address() as { port: number }).port}`);
  t.teardown(() => {
    for (const s of state.open) s.destroy();
    server.close();
  });
  return state;
}

async function openStream(pool: Http2Upstreams, url: URL): Promise<ClientHttp2Stream> {
  const stream = await pool.request(url, { ':method': 'GET', ':path': WATCH, ':authority': url.host, ':scheme': 'https' });
  if (stream === HTTP1_ONLY) throw new Error('expected h2');
  await responseHeaders(stream, url.origin, 5000);
  return stream;
}

t.test("pool: a new session when one reaches the apiserver's stream limit or our cap", async (t) => {
  const limited = await h2Server(t, 3);
  const pool = new Http2Upstreams(connector(), silent, { maxStreamsPerSession: 250 });
  t.teardown(() => pool.destroy());
  // Seven at once: while the first session connects nobody knows its limit yet.
  const streams = await Promise.all(Array.from({ length: 7 }, () => openStream(pool, limited.url)));
  t.equal(limited.accepted, 3, 'three sessions for seven streams at three each');
  t.same(pool.stats(), { sessions: 3, streams: 7 });

  const roomy = await h2Server(t);
  const capped = new Http2Upstreams(connector(), silent, { maxStreamsPerSession: 4 });
  t.teardown(() => capped.destroy());
  await Promise.all(Array.from({ length: 9 }, () => openStream(capped, roomy.url)));
  t.equal(roomy.accepted, 3, 'our own cap of 4 streams: three sessions for nine');
  for (const s of streams) s.close(constants.NGHTTP2_CANCEL);
});

t.test('pool: an idle session closes; a dead apiserver (no answer to PING) ends its streams', async (t) => {
  const server = await h2Server(t);
  const pool = new Http2Upstreams(connector(), silent, { idleTimeoutMs: 300, pingIntervalMs: 200, pingTimeoutMs: 500 });
  t.teardown(() => pool.destroy());
  const first = await openStream(pool, server.url);
  first.close(constants.NGHTTP2_CANCEL);
  await waitFor('the stream closed', () => pool.stats().streams === 0);
  const idle = await waitFor('the idle session closed', () => server.open.size === 0, 3000);
  t.ok(idle >= 200, `closed ${idle} ms after its last stream`);
  await waitFor('the pool forgot it', () => pool.stats().sessions === 0);

  // A relay that can freeze: the TCP connection stays up, nothing passes (a hung or
  // partitioned apiserver: no FIN, no RST).
  let frozen = false;
  const relayed = new Set<Socket>();
  const relay: Server = createTcpServer((client) => {
    const upstream = tcpConnect(Number(server.url.port), '127.0.0.1');
    relayed.add(client).add(upstream);
    client.on('data', (d: Buffer) => frozen || upstream.write(d));
    upstream.on('data', (d: Buffer) => frozen || client.write(d));
    for (const s of [client, upstream]) s.on('error', () => {});
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  t.teardown(() => {
    for (const s of relayed) s.destroy();
    relay.close();
  });
  const viaRelay = new URL(`https://127.0.0.1:${(relay.address() as { port: number }).port}`);
  const watch = await openStream(pool, viaRelay);
  const ended = new Promise<void>((resolve) => watch.once('close', () => resolve()));
  await sleep(600);
  t.equal(watch.closed, false, 'a live apiserver answers the pings: the quiet watch stays');
  frozen = true;
  const started = Date.now();
  await ended;
  t.ok(Date.now() - started < 2000, `the watch on the frozen connection ended ${Date.now() - started} ms later`);
});

t.test('pool: a reload opens new sessions; the old one closes when its last stream ends', async (t) => {
  const server = await h2Server(t);
  const pool = new Http2Upstreams(connector(), silent);
  t.teardown(() => pool.destroy());
  const old = await openStream(pool, server.url);
  pool.setConnector(connector());
  const fresh = await openStream(pool, server.url);
  t.equal(server.accepted, 2, 'the new watch went on a new session');
  t.equal(server.open.size, 2, 'the old session stays for its watch');
  old.close(constants.NGHTTP2_CANCEL);
  await waitFor('the old session closed', () => server.open.size === 1);
  t.pass('closed once its watch ended');
  t.equal(fresh.closed, false, 'the new watch is untouched');
  pool.close();
  t.rejects(pool.request(server.url, { ':path': '/' }), { code: 'UND_ERR_CLOSED' }, 'a closed pool takes no request');
  fresh.close(constants.NGHTTP2_CANCEL);
  await waitFor('every session closed', () => server.open.size === 0);
});

t.test('node:http2 sends each value of an array header as a field of its own', async (t) => {
  const server = createSecureServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key });
  server.on('stream', (stream: ServerHttp2Stream, _headers: unknown, _flags: number, rawHeaders: string[]) => {
    stream.respond({ ':status': 200 });
    stream.end(JSON.stringify(rawHeaders));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const session = http2Connect(`https://127.0.0.1:${(server.address() as { port: number }).port}`, { ca: pki.pem['cluster-ca'].cert, servername: 'kubernetes' });
  t.teardown(() => session.close());
  const stream = session.request({ ':path': '/', 'x-remote-group': ['devs', 'ops'] });
  let body = '';
  stream.setEncoding('utf8').on('data', (c: string) => (body += c));
  await once(stream, 'end');
  const raw = JSON.parse(body) as string[];
  const groups = raw.flatMap((v, i) => (i % 2 === 0 && v === 'x-remote-group' ? [raw[i + 1]] : []));
  t.same(groups, ['devs', 'ops'], 'two fields, not "devs, ops"');
});
