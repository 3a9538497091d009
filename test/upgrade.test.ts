// Upgrade tunnels (exec, attach, cp, port-forward) through a real proxy, driven by raw TLS
// clients: authenticated like any request, identity headers rewritten, the apiserver's answer
// relayed verbatim, bytes spliced unchanged both ways with half-close, and nothing left behind.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import t from 'tap';
import { pino } from 'pino';
import { loadConfig } from '../src/config/index.js';
import { loadMaterial } from '../src/material/material.js';
import { createProxyServer } from '../src/server.js';
import { basicAuth } from './helpers/clients.js';
import { startApiServer } from '../standin/apiserver.js';
import { ALICE, proxySettings, startStack } from './helpers/setup.js';
import { readToEnd, sendUpgrade } from './helpers/tunnel.js';

const stack = await startStack(t);
const { apiserver, pki, proxy } = stack;
const ALICE_AUTH = `Authorization: ${basicAuth(ALICE)}`;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Sends `payload` through an echo tunnel, half-closes, and returns what came back. */
async function echoThrough(port: number, payload: Buffer, protocol: 'SPDY/3.1' | 'websocket' = 'SPDY/3.1', headers = [ALICE_AUTH]) {
  const res = await sendUpgrade(port, pki, { path: '/test/upgrade-echo', protocol, headers });
  if (res.statusCode !== 101) throw new Error(`expected 101, got ${res.statusCode}`);
  const back = readToEnd(res.socket, res.rest);
  res.socket.end(payload);
  return { res, echoed: await back };
}

t.test("SPDY: 101 relayed with the apiserver's headers, 1 MiB each way byte-identical", async (t) => {
  const payload = randomBytes(1024 * 1024);
  const { res, echoed } = await echoThrough(proxy.port, payload);
  t.equal(res.header('upgrade'), 'SPDY/3.1');
  t.equal(res.header('x-stream-protocol-version'), 'v4.channel.k8s.io', 'the negotiated version reaches the client');
  t.equal(echoed.length, payload.length);
  t.equal(sha(echoed), sha(payload), 'byte-identical after a half-close');
});

t.test('WebSocket: 101 with Sec-WebSocket-Accept and the chosen subprotocol', async (t) => {
  const res = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'websocket', headers: ['Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io'], identity: { cert: 'user-alice' } });
  t.equal(res.statusCode, 101);
  t.equal(
    res.header('sec-websocket-accept'),
    createHash('sha1')
      .update(`${Buffer.from('0123456789abcdef').toString('base64')}258EAFA5-E914-47DA-95CA-C5AB0DC11B56`)
      .digest('base64'),
  );
  const back = readToEnd(res.socket, res.rest);
  res.socket.end('ping');
  t.equal((await back).toString(), 'ping');
  t.match(apiserver.requests.at(-1), { user: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] } });
});

t.test("identity headers on the upgrade request are the proxy's only", async (t) => {
  const spoofed = ['X-Remote-User: root', 'x-remote-group: system:masters', 'X-REMOTE-GROUP: admins', 'X-Remote-Extra-Scopes: all', 'X-Remote-Uid: 0'];
  const { echoed } = await echoThrough(proxy.port, Buffer.from('x'), 'SPDY/3.1', [ALICE_AUTH, ...spoofed]);
  t.equal(echoed.toString(), 'x');
  const seen = apiserver.requests.at(-1);
  t.same(
    seen?.rawHeaders.filter(([n]) => /^x-remote-/i.test(n)).map(([n, v]) => [n.toLowerCase(), v]),
    [
      ['x-remote-user', 'alice'],
      ['x-remote-group', 'devs'],
      ['x-remote-group', 'ops'],
    ],
  );
  t.notOk(
    seen?.rawHeaders.some(([n]) => n.toLowerCase() === 'authorization'),
    'the password stays at the proxy',
  );
  t.equal(seen?.peerCN, 'front-proxy-client');
});

t.test('unauthenticated upgrades: 401 Status, socket closed, nothing forwarded', async (t) => {
  const before = apiserver.requests.length;
  for (const headers of [[], ['Authorization: Basic YWxpY2U6d3Jvbmc='], ['X-Remote-User: alice']]) {
    const res = await sendUpgrade(proxy.port, pki, { path: '/api/v1/namespaces/default/pods/pod-0/exec?command=sh&stdin=true', protocol: 'websocket', headers });
    t.equal(res.statusCode, 401);
    t.ok(res.header('www-authenticate')?.startsWith('Basic realm="kube-front-proxy"'));
    const body = await readToEnd(res.socket, res.rest);
    t.match(JSON.parse(body.toString()), { kind: 'Status', reason: 'Unauthorized', code: 401 });
  }
  t.equal(apiserver.requests.length, before);
});

t.test('a refusal from the apiserver (403, 404) reaches the client as an ordinary response', async (t) => {
  const forbidden = await sendUpgrade(proxy.port, pki, {
    path: '/api/v1/namespaces/default/pods/pod-0/exec?command=sh&stdin=true&stdout=true',
    protocol: 'websocket',
    headers: ['Sec-WebSocket-Protocol: v5.channel.k8s.io'],
    identity: { cert: 'user-bob' },
  });
  t.equal(forbidden.statusCode, 403);
  t.match(JSON.parse((await readToEnd(forbidden.socket, forbidden.rest)).toString()), { kind: 'Status', reason: 'Forbidden', code: 403, message: /User "bob" cannot create resource "pods\/exec"/ });
  const missing = await sendUpgrade(proxy.port, pki, { path: '/api/v1/namespaces/default/pods/nope/exec?command=sh&stdout=true', protocol: 'SPDY/3.1', headers: [ALICE_AUTH] });
  t.equal(missing.statusCode, 404);
  t.match(JSON.parse((await readToEnd(missing.socket, missing.rest)).toString()), { kind: 'Status', reason: 'NotFound' });
});

t.test('closing the client side ends the tunnel upstream', async (t) => {
  const res = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1', headers: [ALICE_AUTH] });
  t.equal(res.statusCode, 101);
  while (apiserver.openUpgrades() === 0) await new Promise((r) => setTimeout(r, 10));
  res.socket.destroy();
  const deadline = Date.now() + 3000;
  while (apiserver.openUpgrades() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(apiserver.openUpgrades(), 0, 'the apiserver side closed promptly');
});

t.test('an apiserver that dies mid-session closes the client side promptly', async (t) => {
  const doomed = await startStack(t, { pki });
  const res = await sendUpgrade(doomed.proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1', headers: [ALICE_AUTH] });
  t.equal(res.statusCode, 101);
  res.socket.resume();
  const ended = once(res.socket, 'end');
  const closed = once(res.socket, 'close');
  const started = performance.now();
  await doomed.apiserver.close();
  await ended;
  t.ok(performance.now() - started < 1000, `the end reached the client ${(performance.now() - started).toFixed(0)} ms after the apiserver went`);
  res.socket.end(); // the client finishes its side, as kubectl does
  await closed;
  t.ok(performance.now() - started < 2000, 'and the tunnel closed');
});

t.test('a quiet tunnel is not cut', async (t) => {
  const res = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1', headers: [ALICE_AUTH] });
  await new Promise((r) => setTimeout(r, 2500));
  const back = readToEnd(res.socket, res.rest);
  res.socket.end('still here');
  t.equal((await back).toString(), 'still here');
});

t.test('200 concurrent tunnels each moving data all complete intact', async (t) => {
  const results = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const payload = randomBytes(32 * 1024 + i);
      const { echoed } = await echoThrough(proxy.port, payload, i % 2 ? 'SPDY/3.1' : 'websocket');
      return sha(echoed) === sha(payload);
    }),
  );
  t.equal(results.filter(Boolean).length, 200);
});

t.test('no socket, timer or listener is left behind (in-process proxy)', async (t) => {
  const config = loadConfig({ flags: { ...proxySettings(pki, { upstream: apiserver.url, usersFile: stack.usersFile }), listen: '127.0.0.1:0' }, env: {} });
  const inProcess = await createProxyServer(config, loadMaterial(config), pino({ level: 'silent' }));
  await inProcess.app.listen({ host: '127.0.0.1', port: 0 });
  const port = (inProcess.app.server.address() as { port: number }).port;
  const resources = () =>
    process
      .getActiveResourcesInfo()
      .filter((r) => r !== 'TTYWrap')
      .sort()
      .join(',');
  // Warm up (worker threads, TLS session cache), then count.
  await echoThrough(port, Buffer.from('warm'));
  await new Promise((r) => setTimeout(r, 100));
  const before = resources();
  const listenersBefore = inProcess.app.server.listenerCount('upgrade');
  for (let round = 0; round < 20; round++) {
    await echoThrough(port, randomBytes(4096));
    const aborted = await sendUpgrade(port, pki, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1', headers: [ALICE_AUTH] });
    aborted.socket.destroy();
    const denied = await sendUpgrade(port, pki, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1' });
    await readToEnd(denied.socket, denied.rest);
    denied.socket.destroy(); // the test's own socket: a half-open client must not count against the proxy
  }
  const deadline = Date.now() + 5000;
  while ((inProcess.upgrades.open > 0 || resources() !== before) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.equal(inProcess.upgrades.open, 0, 'no tunnel is tracked');
  t.equal(resources(), before, 'the same handles and timers as before 60 upgrades');
  t.equal(inProcess.app.server.listenerCount('upgrade'), listenersBefore, 'no listener added');
  await inProcess.close();
});
