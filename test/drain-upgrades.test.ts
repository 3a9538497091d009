// During the drain (after SIGTERM), an exec, attach or port-forward (over SPDY or WebSocket) that
// arrives on a connection opened before it gets the same 503 Status as a plain request: it must
// not be tunnelled after the drain has ended every tunnel, to live until the forced exit. Each
// request is sent in two parts, its first line before the signal and the rest once the proxy
// says it is shutting down, so it arrives during the drain on a connection that was already open.
import { once } from 'node:events';
import { connect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { startApiServer } from '../standin/apiserver.js';
import { createTestPki } from './helpers/pki.js';
import { startProxy } from './helpers/proxy.js';
import { waitFor } from './helpers/reload.js';
import { proxyFlags } from './helpers/setup.js';
import { readToEnd } from './helpers/tunnel.js';

const pki = await createTestPki();
const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert });
t.teardown(() => apiserver.close());

const POD = '/api/v1/namespaces/default/pods/pod-0';
const SPDY = ['Connection: Upgrade', 'Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: v4.channel.k8s.io'];
// What kubectl 1.32 tries first; SPDY is its fallback (STACK.md "Upgrades").
const WEBSOCKET = ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${Buffer.from('0123456789abcdef').toString('base64')}`];
const PLAIN_GET = 'a plain GET';
const REQUESTS: { name: string; head: string[] }[] = [
  { name: 'exec', head: [`POST ${POD}/exec?command=sh&stdin=true&stdout=true HTTP/1.1`, ...SPDY] },
  { name: 'attach', head: [`POST ${POD}/attach?stdin=true&stdout=true HTTP/1.1`, ...SPDY] },
  { name: 'port-forward', head: [`POST ${POD}/portforward HTTP/1.1`, 'Connection: Upgrade', 'Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: portforward.k8s.io'] },
  { name: 'exec over WebSocket', head: [`GET ${POD}/exec?command=sh&stdin=true&stdout=true HTTP/1.1`, ...WEBSOCKET, 'Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io'] },
  { name: 'attach over WebSocket', head: [`GET ${POD}/attach?stdin=true&stdout=true HTTP/1.1`, ...WEBSOCKET, 'Sec-WebSocket-Protocol: v5.channel.k8s.io'] },
  { name: 'port-forward over WebSocket', head: [`GET ${POD}/portforward?ports=8080 HTTP/1.1`, ...WEBSOCKET, 'Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io'] },
  { name: PLAIN_GET, head: [`GET ${POD} HTTP/1.1`] },
];

for (const workers of [1, 2]) {
  t.test(`--workers ${workers}: requests and upgrades arriving during the drain get 503`, async (t) => {
    const proxy = await startProxy([...proxyFlags(pki, { upstream: apiserver.url }), '--workers', String(workers), '--shutdown-grace', '10s']);
    t.teardown(() => proxy.stop());

    const sockets: TLSSocket[] = [];
    for (const { head } of REQUESTS) {
      const socket = connect({ host: '127.0.0.1', port: proxy.port, ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key, ALPNProtocols: ['http/1.1'] });
      await once(socket, 'secureConnect');
      socket.write(`${head[0]}\r\n`);
      sockets.push(socket);
    }
    const exited = once(proxy.child, 'exit');
    proxy.child.kill('SIGTERM');
    // Each serving process says so as it begins its drain (under --workers, after the primary).
    const draining = () => proxy.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('shutting down: no new connections')).length;
    await waitFor('every serving process is draining', () => draining() === workers);
    const seenBefore = apiserver.requests.length;

    const answers = await Promise.all(
      REQUESTS.map(async ({ head }, i) => {
        const socket = sockets[i]!;
        const response = readToEnd(socket);
        socket.write(`${['Host: localhost', ...head.slice(1), '', ''].join('\r\n')}`);
        return (await response).toString('latin1');
      }),
    );
    const bodyOf = (answer: string) => JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { kind: string; reason: string; message: string };
    const plainBody = bodyOf(answers[REQUESTS.findIndex((r) => r.name === PLAIN_GET)]!);
    for (const [i, { name }] of REQUESTS.entries()) {
      const answer = answers[i]!;
      t.match(answer, /^HTTP\/1\.1 503 /, `${name}: 503`);
      const body = bodyOf(answer);
      t.match(body, { kind: 'Status', reason: 'ServiceUnavailable', message: /shutting down/ }, `${name}: a Status saying the proxy is shutting down`);
      t.same(body, plainBody, `${name}: the same Status as a plain GET`);
      t.match(answer, /\r\nretry-after: 1\r\n/i, `${name}: Retry-After, as for a plain GET`);
      t.match(answer, /\r\naudit-id: [0-9a-f-]{36}\r\n/i, `${name}: the answer names its request`);
    }
    t.equal(apiserver.requests.length, seenBefore, 'nothing reached the apiserver');
    const [code] = await exited;
    t.equal(code, 0, 'the proxy exits 0 once they are answered');
  });
}
