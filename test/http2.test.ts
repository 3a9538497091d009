// HTTP/2 on the user-facing port: offered by ALPN next to HTTP/1.1, as kube-apiserver does.
// kubectl and client-go multiplex over it; upgrades (exec, attach, port-forward) stay on
// HTTP/1.1, which kubectl asks for on those connections.
import { readFileSync } from 'node:fs';
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import t from 'tap';
import { basicAuth } from './helpers/clients.js';
import { kubectl, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import { credentialIdExtra } from './helpers/pki.js';
import { waitFor } from './helpers/reload.js';
import { ALICE, startStack } from './helpers/setup.js';

const { apiserver, pki, proxy } = await startStack(t);

function openSession(cert?: 'user-alice'): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const identity = cert ? { cert: pki.pem[cert].cert, key: pki.pem[cert].key } : {};
    const session = connect(proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...identity });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

interface H2Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function get(session: ClientHttp2Session, path: string, headers: Record<string, string | string[]> = {}): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'GET', ':path': path, ...headers });
    let response: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (response = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(response[':status']), headers: response, body: Buffer.concat(chunks).toString('utf8') }));
    stream.on('error', reject);
  });
}

function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
}

t.test('ALPN offers h2; many requests multiplex over one connection, each authenticated', async (t) => {
  const session = await openSession();
  t.teardown(() => session.close());
  t.equal(session.alpnProtocol, 'h2', 'the proxy picks h2 when the client offers it');
  const before = apiserver.requests.length;
  const results = await Promise.all(Array.from({ length: 40 }, () => get(session, '/test/identity', { authorization: basicAuth(ALICE) })));
  t.same(new Set(results.map((r) => r.status)), new Set([200]), '40 concurrent streams, all 200');
  t.same(JSON.parse(results[0]!.body).user, { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'], extra: {} });
  t.equal(apiserver.requests.length - before, 40, 'each reached the apiserver');
  t.equal((await get(session, '/test/identity')).status, 401, 'a stream without credentials on the same connection: 401');
  const wrong = await get(session, '/api', { authorization: basicAuth({ name: 'alice', password: 'wrong' }) });
  t.match(JSON.parse(wrong.body), { kind: 'Status', reason: 'Unauthorized', code: 401 }, 'a Status over HTTP/2 too');
});

t.test('over HTTP/2 too, identity headers come from the proxy only; pseudo-headers are not forwarded', async (t) => {
  const session = await openSession('user-alice');
  t.teardown(() => session.close());
  const res = await get(session, '/test/identity', { 'x-remote-user': 'root', 'x-remote-group': ['system:masters', 'x'], 'x-remote-extra-scopes': 'all', 'impersonate-user': 'bob' });
  t.equal(res.status, 200);
  const seen = apiserver.requests.at(-1);
  t.equal(seen?.user?.username, 'alice', 'the certificate user');
  const extra = credentialIdExtra(pki.pem['user-alice'].cert);
  t.same(seen?.user?.extra, extra, "with the certificate's credential id as its one extra");
  const names = seen?.rawHeaders.map(([n]) => n.toLowerCase()) ?? [];
  t.same(
    seen?.rawHeaders.filter(([n]) => /^x-remote-/i.test(n)).map(([n, v]) => [n.toLowerCase(), v]),
    [
      ['x-remote-user', 'alice'],
      ['x-remote-group', 'devs'],
      ['x-remote-group', 'ops'],
      ['x-remote-extra-authentication.kubernetes.io%2fcredential-id', extra['authentication.kubernetes.io/credential-id']![0]],
    ],
  );
  t.notOk(
    names.some((n) => n.startsWith(':')),
    'no pseudo-header reaches the apiserver',
  );
  // The stand-in offers h2 as kube-apiserver does; the proxy stays on HTTP/1.1 upstream, where
  // each group is its own header line (undici's HTTP/2 client would join them into one field,
  // "devs,ops", which the apiserver would read as a single group).
  t.equal(seen?.httpVersion, '1.1', 'HTTP/1.1 to the apiserver even though it offers h2');
  t.ok(names.includes('impersonate-user'), 'Impersonate-* passes as on HTTP/1.1');
  // The traffic-log line is written once the response has gone, and batched: wait for it.
  await waitFor('the traffic-log line', () => proxy.logs.some((l) => l.msg === 'request' && l.path === '/test/identity' && l.protocol === 'HTTP/2.0'));
  const logged = proxy.logs.filter((l) => l.msg === 'request' && l.path === '/test/identity' && l.protocol === 'HTTP/2.0').at(-1);
  t.equal(logged?.protocol, 'HTTP/2.0', 'the traffic log says which protocol the client spoke');
  t.ok((logged?.bytesOut as number) > 0, 'and counts the bytes of this stream');
});

t.test('a watch over HTTP/2: headers at once, events as they happen, flow-controlled', async (t) => {
  const session = await openSession('user-alice');
  t.teardown(() => session.close());
  const stream = session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/pods?watch=1' });
  const headers = await new Promise<IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
  t.equal(headers[':status'], 200, 'the watch is open before any event');
  const lines: string[] = [];
  let buffered = '';
  let received = 0;
  stream.on('data', (c: Buffer) => {
    received += c.length;
    buffered += c.toString('utf8');
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts.filter(Boolean));
  });
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'h2-pod', namespace: 'default', resourceVersion: '7' } };
  apiserver.sendWatchEvent('ADDED', pod);
  const deadline = Date.now() + 3000;
  while (lines.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.match(JSON.parse(lines[0] ?? '{}'), { type: 'ADDED', object: { metadata: { name: 'h2-pod' } } }, 'the event arrived');
  stream.close(constants.NGHTTP2_CANCEL);
  const watchEnd = () => proxy.logs.find((l) => l.msg === 'request' && l.verb === 'watch' && l.protocol === 'HTTP/2.0' && l.phase === 'end');
  const endDeadline = Date.now() + 3000;
  while (!watchEnd() && Date.now() < endDeadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(watchEnd()?.bytesOut, received, 'the end line counts exactly the bytes the client got');

  // Flow control end to end: a stream the client stops reading holds the apiserver back
  // instead of filling the proxy's memory.
  const pid = proxy.child.pid as number;
  const before = rssBytes(pid);
  const big = session.request({ ':method': 'GET', ':path': `/test/bytes?n=${1024 * 1024 * 1024}` });
  await new Promise((resolve) => big.once('response', resolve));
  big.pause();
  await new Promise((r) => setTimeout(r, 1500));
  const grown = rssBytes(pid) - before;
  t.ok(grown < 96 * 1024 * 1024, `proxy memory grew by ${(grown / 1048576).toFixed(1)} MiB while 1 GiB waited upstream`);
  big.close(constants.NGHTTP2_CANCEL);
});

t.test('kubectl picks HTTP/2 for requests and HTTP/1.1 for exec, both through the proxy', async (t) => {
  requireKubectl();
  const kubeconfig = writeKubeconfig(proxy.url, pki.pem['proxy-ca'].cert, { clientCertificate: pki.pem['user-alice'].cert, clientKey: pki.pem['user-alice'].key });
  const from = proxy.logs.length;
  const get = await kubectl(kubeconfig, ['get', 'pods', '-o', 'name']);
  t.equal(get.code, 0, `kubectl get pods: ${get.stderr}`);
  const exec = await kubectl(kubeconfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'over http/1.1\n' });
  t.equal(exec.code, 0, `kubectl exec: ${exec.stderr}`);
  t.equal(exec.stdout, 'over http/1.1\n');
  await new Promise((r) => setTimeout(r, 200));
  const lines = proxy.logs.slice(from).filter((l) => l.msg === 'request');
  t.ok(
    lines.some((l) => l.resource === 'pods' && l.verb === 'list' && l.protocol === 'HTTP/2.0'),
    'kubectl get went over HTTP/2',
  );
  t.ok(
    lines.some((l) => l.subresource === 'exec' && l.protocol === 'HTTP/1.1'),
    'kubectl exec went over HTTP/1.1',
  );
});

t.test('drain: an HTTP/2 client gets GOAWAY and the proxy exits without waiting out its grace', async (t) => {
  const own = await startStack(t, { pki, flags: ['--shutdown-grace', '20s'] });
  const session = connect(own.proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' });
  await new Promise((resolve) => session.once('connect', resolve));
  t.equal((await get(session, '/test/identity', { authorization: basicAuth(ALICE) })).status, 200);
  const goaway = new Promise((resolve) => session.once('goaway', resolve));
  const started = Date.now();
  const code = await own.proxy.stop('SIGTERM');
  t.equal(code, 0, 'exit 0');
  t.ok(Date.now() - started < 5000, `stopped in ${Date.now() - started} ms with an idle HTTP/2 session open`);
  await goaway;
  t.pass('the session got GOAWAY');
  session.destroy();
});

t.test('an idle HTTP/2 session is closed after --keep-alive-timeout; one holding a quiet watch is not', async (t) => {
  const own = await startStack(t, { pki, flags: ['--keep-alive-timeout', '1s'] });
  const connectTo = () =>
    new Promise<ClientHttp2Session>((resolve, reject) => {
      const s = connect(own.proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  const idle = await connectTo();
  const watching = await connectTo();
  t.teardown(() => {
    idle.destroy();
    watching.destroy();
  });
  let idleGoaway = 0;
  let watchingGoaway = 0;
  idle.on('goaway', () => (idleGoaway = Date.now()));
  watching.on('goaway', () => (watchingGoaway = Date.now()));
  const opened = Date.now();
  t.equal((await get(idle, '/test/identity')).status, 200);
  const watch = watching.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/pods?watch=1' });
  await new Promise((resolve) => watch.once('response', resolve));
  watch.resume();
  await new Promise((r) => setTimeout(r, 2500));
  t.ok(idleGoaway > 0 && idleGoaway - opened < 2500, `the idle session got GOAWAY (${idleGoaway - opened} ms after opening)`);
  t.equal(watchingGoaway, 0, 'the session with a quiet watch open did not, 2.5 s later');
  const ended = Date.now();
  watch.close(constants.NGHTTP2_CANCEL);
  await new Promise((r) => setTimeout(r, 1800));
  t.ok(watchingGoaway > 0, `once its last stream ended it did too (${watchingGoaway - ended} ms later)`);
});

t.test('over HTTP/2 too, a header block over --max-request-header-bytes gets 431 and nothing is forwarded', async (t) => {
  const big = connect(proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', maxSendHeaderBlockLength: 1 << 20 } as never);
  t.teardown(() => big.destroy());
  await new Promise((resolve) => big.once('connect', resolve));
  big.on('error', () => {});
  const before = apiserver.requests.length;
  const answer = await new Promise<string>((resolve) => {
    const stream = big.request({ ':path': '/test/identity', authorization: basicAuth(ALICE), 'x-big': 'a'.repeat(64 * 1024) });
    stream.on('response', (h) => resolve(String(h[':status'])));
    stream.on('error', (e: NodeJS.ErrnoException) => resolve(`stream error ${e.code}`));
    stream.end();
  });
  t.equal(answer, '431');
  t.equal(apiserver.requests.length, before, 'nothing reached the apiserver');
  const session = await openSession();
  t.teardown(() => session.close());
  t.equal((await get(session, '/test/identity', { authorization: basicAuth(ALICE) })).status, 200, 'the proxy serves the next client');
});
