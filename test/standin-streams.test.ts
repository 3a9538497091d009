// The stand-in's streaming subresources against the real kubectl (1.32) pointed straight at it,
// as against a real cluster: exec/attach over WebSocket (v5.channel.k8s.io) and SPDY/3.1,
// port-forward over SPDY tunnelled in WebSocket and over plain SPDY, RBAC and NotFound refusals
// before any upgrade; plus the raw /test/upgrade-echo tunnels the proxy's tests use.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { issueCertificate } from '../src/pki/certificates.js';
import { startApiServer, type ApiServer, type SeenRequest } from '../standin/apiserver.js';
import { echoOverTcp, kubectl, portForward, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import { createTestPki, type PkiName } from './helpers/pki.js';

requireKubectl();
const pki = await createTestPki();
const serverOptions = {
  cert: pki.pem.apiserver.cert,
  key: pki.pem.apiserver.key,
  requestHeaderCA: pki.pem['front-proxy-ca'].cert,
  clientCA: pki.pem['cluster-ca'].cert,
};
const api = await startApiServer(serverOptions);
// An apiserver without WebSocket streaming: kubectl must fall back to SPDY/3.1.
const spdyOnly = await startApiServer({ ...serverOptions, websocketExec: false });
const bobCert = await issueCertificate(pki.pem['cluster-ca'], { commonName: 'bob', organizations: ['viewers'], usages: ['clientAuth'] });
const ca = pki.pem['cluster-ca'].cert;
const admin = (server: ApiServer) => writeKubeconfig(server.url, ca, { clientCertificate: pki.pem['cluster-admin'].cert, clientKey: pki.pem['cluster-admin'].key });
const adminConfig = admin(api);
const spdyOnlyConfig = admin(spdyOnly);
const bobConfig = writeKubeconfig(api.url, ca, { clientCertificate: bobCert.cert, clientKey: bobCert.key });
const NO_WEBSOCKETS = { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false', KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' };

t.teardown(async () => {
  await Promise.all([api.close(), spdyOnly.close()]);
  await Promise.all([pki.dir, ...[adminConfig, spdyOnlyConfig, bobConfig].map(dirname)].map((d) => rm(d, { recursive: true, force: true })));
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const header = (r: SeenRequest, name: string) => r.rawHeaders.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
function upgradesSince(server: ApiServer, from: number) {
  return server.requests.slice(from).filter((r) => header(r, 'upgrade').length > 0);
}

// -------------------------------------------------------------------------------------------
t.test('kubectl exec and attach over WebSocket (v5.channel.k8s.io)', async (t) => {
  const from = api.requests.length;
  const echo = await kubectl(adminConfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'hello\n' });
  t.same(echo, { code: 0, stdout: 'hello\n', stderr: '' }, 'stdin reaches cat, stdout comes back');
  const [upgrade, ...more] = upgradesSince(api, from);
  t.equal(more.length, 0, 'one upgrade, no fallback');
  t.match(upgrade, {
    method: 'GET',
    url: '/api/v1/namespaces/default/pods/pod-0/exec?command=cat&container=app&stderr=true&stdin=true&stdout=true',
    authn: 'x509',
    user: { username: 'direct-admin' },
  });
  t.same(header(upgrade!, 'upgrade'), ['websocket']);
  t.same(header(upgrade!, 'sec-websocket-protocol'), ['v5.channel.k8s.io'], 'kubectl 1.32 offers v5 only');

  const exit = await kubectl(adminConfig, ['exec', 'pod-0', '--', 'sh', '-c', 'exit 3']);
  t.equal(exit.code, 3, 'exit code from the error channel');
  t.match(exit.stderr, 'command terminated with exit code 3');
  t.same(await kubectl(adminConfig, ['exec', 'pod-0', '--', 'echo', 'hi', 'there']), { code: 0, stdout: 'hi there\n', stderr: '' });
  const missing = await kubectl(adminConfig, ['exec', 'pod-0', '--', 'no-such-tool']);
  t.equal(missing.code, 127);
  t.match(missing.stderr, 'exec: "no-such-tool": executable file not found in $PATH');
  const attach = await kubectl(adminConfig, ['attach', '-i', 'pod-0'], { stdin: 'attached\n' });
  t.equal(attach.code, 0, attach.stderr);
  t.equal(attach.stdout, 'attached\n', 'attach echoes stdin like cat');
});

t.test('kubectl exec over SPDY/3.1: forced, and as the fallback from a refused WebSocket', async (t) => {
  let from = api.requests.length;
  const forced = await kubectl(adminConfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'over spdy\n', env: NO_WEBSOCKETS });
  t.same(forced, { code: 0, stdout: 'over spdy\n', stderr: '' });
  const [spdy, ...more] = upgradesSince(api, from);
  t.equal(more.length, 0);
  t.equal(spdy?.method, 'POST');
  t.same(header(spdy!, 'upgrade'), ['SPDY/3.1']);
  t.same(header(spdy!, 'x-stream-protocol-version'), ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io']);
  t.equal((await kubectl(adminConfig, ['exec', 'pod-0', '--', 'sh', '-c', 'exit 3'], { env: NO_WEBSOCKETS })).code, 3);

  from = spdyOnly.requests.length;
  const fallback = await kubectl(spdyOnlyConfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'fell back\n' });
  t.same(fallback, { code: 0, stdout: 'fell back\n', stderr: '' });
  t.same(
    upgradesSince(spdyOnly, from).map((r) => [r.method, header(r, 'upgrade')[0]]),
    [
      ['GET', 'websocket'],
      ['POST', 'SPDY/3.1'],
    ],
    'WebSocket refused with 400, then SPDY',
  );
  t.equal((await kubectl(spdyOnlyConfig, ['exec', 'pod-0', '--', 'sh', '-c', 'exit 7'])).code, 7);
});

t.test('refusals come before the upgrade, on both attempts', async (t) => {
  const from = api.requests.length;
  const denied = await kubectl(bobConfig, ['exec', 'pod-0', '--', 'echo', 'hi']);
  t.equal(denied.code, 1);
  t.match(denied.stderr, 'Error from server (Forbidden): pods "pod-0" is forbidden: User "bob" cannot create resource "pods/exec" in API group "" in the namespace "default"');
  t.same(
    upgradesSince(api, from).map((r) => [r.method, header(r, 'upgrade')[0], r.user?.username]),
    [
      ['GET', 'websocket', 'bob'],
      ['POST', 'SPDY/3.1', 'bob'],
    ],
    'kubectl retries a refused WebSocket with SPDY',
  );
  const pf = await kubectl(bobConfig, ['port-forward', 'pod/pod-0', '0:80'], { timeoutMs: 10_000 });
  t.equal(pf.code, 1);
  t.match(pf.stderr, 'User "bob" cannot create resource "pods/portforward"');

  const gone = await kubectl(adminConfig, ['exec', 'nope', '--', 'echo', 'hi']);
  t.equal(gone.code, 1);
  t.match(gone.stderr, 'Error from server (NotFound): pods "nope" not found', 'kubectl fetches the pod first');

  // Raw upgrades: the Status arrives as an ordinary response, then the connection closes.
  for (const protocol of ['websocket', 'SPDY/3.1'] as const) {
    const missing = await rawUpgrade(api, { path: '/api/v1/namespaces/default/pods/nope/exec?command=sh&stdout=true', protocol, cert: 'cluster-admin' });
    t.equal(missing.statusCode, 404, `${protocol}: 404`);
    t.match(JSON.parse((await readToEnd(missing.socket, missing.rest)).toString()), { kind: 'Status', reason: 'NotFound', message: 'pods "nope" not found', code: 404 });
    const forbidden = await rawUpgrade(api, { path: '/api/v1/namespaces/default/pods/pod-0/attach?stdin=true&stdout=true', protocol, identity: bobCert });
    t.equal(forbidden.statusCode, 403, `${protocol}: 403`);
    t.match(JSON.parse((await readToEnd(forbidden.socket, forbidden.rest)).toString()), {
      reason: 'Forbidden',
      message: 'pods "pod-0" is forbidden: User "bob" cannot create resource "pods/attach" in API group "" in the namespace "default"',
    });
  }
  const anonymous = await rawUpgrade(api, { path: '/api/v1/namespaces/default/pods/pod-0/exec?command=sh&stdout=true', protocol: 'SPDY/3.1' });
  t.equal(anonymous.statusCode, 403, 'anonymous');
  await readToEnd(anonymous.socket, anonymous.rest);
  const plain = await rawUpgrade(api, { path: '/api/v1/namespaces/default/pods/pod-0/exec?command=sh&stdout=true', protocol: 'none', cert: 'cluster-admin' });
  t.equal(plain.statusCode, 400, 'no Upgrade header');
  t.match(JSON.parse((await readToEnd(plain.socket, plain.rest)).toString()), { message: 'Upgrade request required' });
});

t.test('kubectl port-forward: SPDY tunnelled in WebSocket, and plain SPDY', async (t) => {
  for (const [name, env, expected] of [
    ['WebSocket', {}, [['GET', 'websocket', 'SPDY/3.1+portforward.k8s.io']]],
    ['SPDY', NO_WEBSOCKETS, [['POST', 'SPDY/3.1', 'portforward.k8s.io']]],
  ] as const) {
    const from = api.requests.length;
    const pf = await portForward(adminConfig, env);
    const payload = randomBytes(1024 * 1024);
    t.equal(sha(await echoOverTcp(pf.port, payload)), sha(payload), `${name}: 1 MiB through port 80 and back`);
    t.equal((await echoOverTcp(pf.port, Buffer.from('again'))).toString(), 'again', `${name}: a second connection`);
    t.same(
      upgradesSince(api, from).map((r) => [r.method, header(r, 'upgrade')[0], [...header(r, 'sec-websocket-protocol'), ...header(r, 'x-stream-protocol-version')].join(',')]),
      expected,
    );
    await pf.stop();
  }
});

// -------------------------------------------------------------------------------------------
t.test('/test/upgrade-echo', async (t) => {
  const payload = randomBytes(1024 * 1024);
  const spdy = await rawUpgrade(api, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1', cert: 'cluster-admin' });
  t.equal(spdy.statusCode, 101);
  t.same([spdy.header('connection'), spdy.header('upgrade'), spdy.header('x-stream-protocol-version')], ['Upgrade', 'SPDY/3.1', 'v4.channel.k8s.io']);
  t.equal(api.openUpgrades(), 1);
  const back = readToEnd(spdy.socket, spdy.rest);
  spdy.socket.end(payload);
  const echoed = await back;
  t.equal(echoed.length, payload.length);
  t.equal(sha(echoed), sha(payload), '1 MiB each way, byte-identical, ended after the client half-closed');
  t.match(api.requests.at(-1), { method: 'POST', url: '/test/upgrade-echo', authn: 'x509' });

  const ws = await rawUpgrade(api, { path: '/test/upgrade-echo', protocol: 'websocket', headers: ['Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io'] });
  t.equal(ws.statusCode, 101);
  t.equal(ws.header('sec-websocket-accept'), createHash('sha1').update(`${WS_KEY}258EAFA5-E914-47DA-95CA-C5AB0DC11B56`).digest('base64'));
  t.equal(ws.header('sec-websocket-protocol'), 'v5.channel.k8s.io');
  const wsBack = readToEnd(ws.socket, ws.rest);
  ws.socket.end('raw bytes, no framing');
  t.equal((await wsBack).toString(), 'raw bytes, no framing');
  t.match(api.requests.at(-1), { method: 'GET', url: '/test/upgrade-echo', authn: 'anonymous' });
  t.same(header(api.requests.at(-1)!, 'sec-websocket-protocol'), ['v5.channel.k8s.io, v4.channel.k8s.io'], 'raw headers recorded');

  const rejected = await rawUpgrade(api, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1', cert: 'user-other-ca' });
  t.equal(rejected.statusCode, 401);
  await readToEnd(rejected.socket, rejected.rest);

  const results = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const data = randomBytes(16 * 1024 + i);
      const tunnel = await rawUpgrade(api, { path: '/test/upgrade-echo', protocol: i % 2 ? 'SPDY/3.1' : 'websocket' });
      const got = readToEnd(tunnel.socket, tunnel.rest);
      tunnel.socket.end(data);
      return tunnel.statusCode === 101 && sha(await got) === sha(data);
    }),
  );
  t.equal(results.filter(Boolean).length, 200, '200 concurrent tunnels');
  const deadline = Date.now() + 2000;
  while (api.openUpgrades() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(api.openUpgrades(), 0, 'every tunnel closed');

  const doomed = await startApiServer(serverOptions);
  const open = await rawUpgrade(doomed, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1' });
  t.equal(doomed.openUpgrades(), 1);
  const closed = readToEnd(open.socket, open.rest);
  const started = performance.now();
  await doomed.close();
  await closed;
  t.ok(performance.now() - started < 1000, 'the client sees the tunnel end at once');
  t.equal(doomed.openUpgrades(), 0, 'close() destroys open tunnels');
});

// -------------------------------------------------------------------------------------------
// A raw TLS client for upgrade requests.

const WS_KEY = Buffer.from('0123456789abcdef').toString('base64');

interface RawUpgrade {
  path: string;
  protocol: 'websocket' | 'SPDY/3.1' | 'none';
  cert?: PkiName;
  identity?: { cert: string; key: string };
  headers?: string[];
}

async function rawUpgrade(server: ApiServer, request: RawUpgrade) {
  const identity = request.identity ?? (request.cert ? pki.pem[request.cert] : undefined);
  const socket = connect({
    host: '127.0.0.1',
    port: server.port,
    ca,
    servername: 'kubernetes',
    ALPNProtocols: ['http/1.1'],
    ...(identity ? { cert: identity.cert, key: identity.key } : {}),
    ...({ allowHalfOpen: true } as object),
  });
  await once(socket, 'secureConnect');
  const protocolHeaders = {
    websocket: ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${WS_KEY}`],
    'SPDY/3.1': ['Connection: Upgrade', 'Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: v4.channel.k8s.io'],
    none: ['Connection: close'],
  }[request.protocol];
  const method = request.protocol === 'SPDY/3.1' ? 'POST' : 'GET';
  socket.write([`${method} ${request.path} HTTP/1.1`, 'Host: kubernetes', ...protocolHeaders, ...(request.headers ?? []), '', ''].join('\r\n'));
  let received = Buffer.alloc(0);
  while (received.indexOf('\r\n\r\n') === -1) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    received = Buffer.concat([received, chunk]);
  }
  socket.pause();
  const split = received.indexOf('\r\n\r\n');
  const [statusLine = '', ...lines] = received.subarray(0, split).toString('latin1').split('\r\n');
  return {
    statusCode: Number(statusLine.split(' ')[1]),
    header: (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name}:`))?.replace(/^[^:]*:\s*/, ''),
    socket,
    rest: received.subarray(split + 4),
  };
}

async function readToEnd(socket: TLSSocket, first: Buffer): Promise<Buffer> {
  const chunks = [first];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.resume();
  await Promise.race([once(socket, 'end'), once(socket, 'close')]);
  return Buffer.concat(chunks);
}
