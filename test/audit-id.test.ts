// One ID per request, from the proxy's traffic log to the apiserver's audit event: every request
// forwarded carries an Audit-ID (the client's own when it is safe, else the proxy's request ID),
// the log line's reqId is that ID, and the client gets it back as Audit-Id, on the proxy's own
// refusals too. Against the stand-in, which adopts Audit-ID as kube-apiserver does.
import { request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import type { Duplex } from 'node:stream';
import t from 'tap';
import type { SeenRequest } from '../standin/apiserver.js';
import { basicAuth, call, openWatch, proxyClient, rawRequest } from './helpers/clients.js';
import type { LogLine } from './helpers/proxy.js';
import { ALICE, startStack } from './helpers/setup.js';
import { clientAuditId, MAX_AUDIT_ID_LENGTH } from '../src/proxy/headers.js';

const { apiserver, pki, proxy } = await startStack(t, { flags: ['--auth-failure-delay', '0'] });
const cert = proxyClient(pki, { cert: 'user-alice' });
const password = proxyClient(pki);
t.teardown(() => Promise.all([cert.close(), password.close()]));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The traffic-log line (request or refused login) whose reqId is `id`, once written. */
async function lineFor(id: string, match: (l: LogLine) => boolean = () => true): Promise<LogLine | undefined> {
  for (let i = 0; i < 250; i++) {
    const line = proxy.logs.find((l) => l.reqId === id && (l.msg === 'request' || l.msg === 'authentication failed') && match(l));
    if (line) return line;
    await sleep(20);
  }
  return undefined;
}

/** The request the stand-in saw last for `path` (a path prefix). */
function seenFor(path: string, from: number): SeenRequest | undefined {
  return apiserver.requests.slice(from).findLast((r) => r.url.startsWith(path));
}

/** Audit-ID header lines the apiserver received (case and repetition as sent). */
const auditHeaders = (seen: SeenRequest | undefined) => seen?.rawHeaders.filter(([n]) => n.toLowerCase() === 'audit-id').map(([, v]) => v);

t.test('clientAuditId: which client values are kept', async (t) => {
  t.equal(MAX_AUDIT_ID_LENGTH, 64, 'the apiserver cuts longer IDs in its own log lines (audit.GetAuditIDTruncated)');
  for (const kept of ['a', 'my-id-123', 'a'.repeat(64), '!~', 'x,y', '0c6f2a1e-5b1d-4e7a-9f3b-2d8e4c1a7b90']) t.equal(clientAuditId(kept), kept, JSON.stringify(kept));
  for (const replaced of [undefined, '', 'a'.repeat(65), 'a b', 'a, b', ' a', 'a\t', 'caf\u00e9', 'caf\u00c3\u00a9', 'x\u007f', 'x\u0000', ['a', 'b'], ['a']]) {
    t.equal(clientAuditId(replaced), undefined, JSON.stringify(replaced));
  }
});

t.test("no Audit-ID from the client: the proxy's UUID, in the log, upstream and in the answer", async (t) => {
  const from = apiserver.requests.length;
  const res = await call(cert, `${proxy.url}/api/v1/namespaces/default/pods`);
  t.equal(res.status, 200);
  const id = String(res.headers['audit-id']);
  t.match(id, UUID, 'a UUID, the form the apiserver generates');
  const seen = seenFor('/api/v1/namespaces/default/pods', from);
  t.equal(seen?.auditId, id, 'the apiserver took it as its audit ID');
  t.same(auditHeaders(seen), [id], 'one Audit-ID line upstream');
  const line = await lineFor(id);
  t.match(line, { msg: 'request', user: 'alice', verb: 'list', status: 200 }, 'the log line names it');
  const other = await call(cert, `${proxy.url}/api/v1/namespaces/default/pods`);
  t.not(other.headers['audit-id'], id, 'each request its own');
});

t.test('a safe client Audit-ID is kept end to end', async (t) => {
  for (const id of ['my-id-123', 'a'.repeat(64), 'x:y/z=1,2;~!', 'quote"back\\slash{}', '0c6f2a1e-5b1d-4e7a-9f3b-2d8e4c1a7b90']) {
    const from = apiserver.requests.length;
    const res = await call(cert, `${proxy.url}/api/v1/namespaces/default/pods/pod-0`, { method: 'GET', headers: { 'audit-id': id } });
    t.equal(res.status, 200);
    t.equal(res.headers['audit-id'], id, `${id}: echoed`);
    t.equal(seenFor('/api/v1/namespaces/default/pods/pod-0', from)?.auditId, id, `${id}: the apiserver's audit ID`);
    t.match(await lineFor(id), { verb: 'get', name: 'pod-0', status: 200 }, `${id}: the log line's reqId`);
  }
});

t.test("an unsafe, over-long, empty or repeated Audit-ID is replaced by the proxy's own", async (t) => {
  const cases: [string, string][] = [
    ['over 64 characters', 'a'.repeat(65)],
    ['a space', 'has space'],
    ['a tab', 'tab\there'],
    ['non-ASCII (Latin-1 byte)', 'caf\u00e9'],
    ['empty', ''],
  ];
  for (const [name, value] of cases) {
    const from = apiserver.requests.length;
    const res = await rawRequest(proxy.port, pki, `GET /api/v1/namespaces/default/pods/pod-0 HTTP/1.1\r\nHost: localhost\r\nAudit-ID: ${value}\r\nConnection: close`, '', { cert: 'user-alice' });
    const echoed = res.headerLines.find((l) => /^audit-id:/i.test(l))?.replace(/^audit-id:\s*/i, '');
    t.equal(res.statusCode, 200, name);
    t.match(echoed, UUID, `${name}: replaced by a UUID`);
    const seen = seenFor('/api/v1/namespaces/default/pods/pod-0', from);
    t.same(auditHeaders(seen), [echoed], `${name}: only the proxy's ID went upstream`);
    t.ok(await lineFor(String(echoed)), `${name}: and is the log line's`);
  }
  // Repeated: two lines, each safe on its own.
  const from = apiserver.requests.length;
  const res = await call(cert, `${proxy.url}/api/v1/namespaces/default/pods/pod-0`, { method: 'GET', headers: { 'audit-id': ['first', 'second'] } });
  t.match(res.headers['audit-id'], UUID, 'repeated: replaced');
  t.same(auditHeaders(seenFor('/api/v1/namespaces/default/pods/pod-0', from)), [res.headers['audit-id']], "repeated: one line upstream, the proxy's");
  t.ok(await lineFor(String(res.headers['audit-id'])));
});

t.test("the apiserver's own refusals (404, 5xx) and the proxy's name the same ID", async (t) => {
  const notFound = await call(cert, `${proxy.url}/api/v1/namespaces/default/pods/nope`, { method: 'GET', headers: { 'audit-id': 'nf-1' } });
  t.equal(notFound.status, 404);
  t.equal(notFound.headers['audit-id'], 'nf-1');
  t.match(await lineFor('nf-1'), { status: 404 });

  const refused = await call(password, `${proxy.url}/api`, { method: 'GET', headers: { 'audit-id': 'refused-1', authorization: basicAuth({ name: 'alice', password: 'guessing' }) } });
  t.equal(refused.status, 401);
  t.equal(refused.headers['audit-id'], 'refused-1', "the proxy's 401 names the client's ID");
  t.match(await lineFor('refused-1'), { msg: 'authentication failed', reason: 'bad-password', status: 401 });

  const anonymous = await call(password, `${proxy.url}/api`);
  t.equal(anonymous.status, 401);
  t.match(anonymous.headers['audit-id'], UUID, "a 401 without a client ID: the proxy's");
  t.match(await lineFor(String(anonymous.headers['audit-id'])), { msg: 'authentication failed', status: 401 });

  const method = await call(cert, `${proxy.url}/api`, { method: 'TRACE' as 'GET', headers: { 'audit-id': 'trace-1' } });
  t.equal(method.headers['audit-id'], 'trace-1', `the proxy's ${method.status} names it`);
});

t.test('HTTP/2 client: the same rules, and a watch over the HTTP/2 upstream path', async (t) => {
  const session = await new Promise<ClientHttp2Session>((resolve, reject) => {
    const s = connect(proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  t.teardown(() => session.close());
  const get = (path: string, headers: Record<string, string | string[]> = {}) =>
    new Promise<IncomingHttpHeaders>((resolve, reject) => {
      const stream = session.request({ ':method': 'GET', ':path': path, ...headers });
      let response: IncomingHttpHeaders = {};
      stream.on('response', (h) => (response = h));
      stream.resume();
      stream.on('end', () => resolve(response));
      stream.on('error', reject);
    });
  let from = apiserver.requests.length;
  const kept = await get('/api/v1/namespaces/default/pods/pod-1', { 'audit-id': 'h2-kept' });
  t.equal(kept['audit-id'], 'h2-kept');
  t.equal(seenFor('/api/v1/namespaces/default/pods/pod-1', from)?.auditId, 'h2-kept');
  t.match(await lineFor('h2-kept'), { protocol: 'HTTP/2.0', status: 200 });
  from = apiserver.requests.length;
  const repeated = await get('/api/v1/namespaces/default/pods/pod-1', { 'audit-id': ['one', 'two'] });
  t.match(repeated['audit-id'], UUID, 'HTTP/2 fields repeated: replaced');
  t.equal(seenFor('/api/v1/namespaces/default/pods/pod-1', from)?.auditId, repeated['audit-id']);
  const refused = await get('/api', { 'audit-id': 'h2-refused', authorization: basicAuth({ name: 'nobody', password: 'x' }) });
  t.equal(refused[':status'], 200, 'a certificate user: basic credentials are not read');

  // A watch: upstream over HTTP/2 (on by default).
  const watch = await openWatch(cert, `${proxy.url}/api/v1/namespaces/default/pods?watch=1`, { 'audit-id': 'watch-1' });
  t.teardown(() => watch.close());
  t.equal(watch.headers['audit-id'], 'watch-1', 'the watch response names it');
  let seen: SeenRequest | undefined;
  for (let i = 0; i < 100 && !seen; i++) {
    seen = apiserver.requests.find((r) => r.auditId === 'watch-1');
    if (!seen) await sleep(20);
  }
  // The stand-in records a request once its body is read, which for a watch is at once.
  t.equal(seen?.httpVersion, '2.0', 'the watch went upstream over HTTP/2');
  t.same(auditHeaders(seen), ['watch-1']);
  t.match(await lineFor('watch-1', (l) => l.phase === 'start'), { verb: 'watch', phase: 'start' });
});

t.test('upgrades: Audit-ID upstream, Audit-Id on the 101 and on a refusal, the ID in the log', async (t) => {
  const from = apiserver.requests.length;
  const { res, socket } = await new Promise<{ res: IncomingMessage; socket: Duplex }>((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port: proxy.port,
      method: 'POST',
      path: '/api/v1/namespaces/default/pods/pod-0/exec?command=cat&stdin=true&stdout=true',
      ca: pki.pem['proxy-ca'].cert,
      servername: 'localhost',
      cert: pki.pem['user-alice'].cert,
      key: pki.pem['user-alice'].key,
      headers: { connection: 'Upgrade', upgrade: 'SPDY/3.1', 'x-stream-protocol-version': 'v4.channel.k8s.io', 'audit-id': 'exec-1' },
    });
    req.on('upgrade', (res, socket) => resolve({ res, socket }));
    req.on('response', (res) => reject(new Error(`not upgraded: ${res.statusCode}`)));
    req.on('error', reject);
    req.end();
  });
  t.equal(res.statusCode, 101);
  t.equal(res.headers['audit-id'], 'exec-1', "the 101 names it (the apiserver relays the kubelet's 101 without one)");
  t.equal(seenFor('/api/v1/namespaces/default/pods/pod-0/exec', from)?.auditId, 'exec-1', 'the apiserver took it');
  t.match(await lineFor('exec-1', (l) => l.phase === 'start'), { subresource: 'exec', status: 101, phase: 'start' });
  socket.destroy();
  t.match(await lineFor('exec-1', (l) => l.phase === 'end'), { subresource: 'exec', phase: 'end' }, 'the end line too');

  const refused = await rawRequest(proxy.port, pki, 'POST /api/v1/namespaces/default/pods/pod-0/exec?command=cat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nAudit-ID: exec-refused');
  t.equal(refused.statusCode, 401);
  t.ok(
    refused.headerLines.some((l) => /^audit-id: exec-refused$/i.test(l)),
    "the proxy's 401 on the upgrade path names it",
  );
  t.match(await lineFor('exec-refused'), { msg: 'authentication failed', status: 401 });

  const mine = await rawRequest(proxy.port, pki, 'POST /api/v1/namespaces/default/pods/pod-0/exec?command=cat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nAudit-ID: not safe');
  const id = mine.headerLines.find((l) => /^audit-id:/i.test(l))?.replace(/^audit-id:\s*/i, '');
  t.match(id, UUID, "an unsafe one on the upgrade path: the proxy's UUID");
  t.ok(await lineFor(String(id)));
});

t.test('429 from the failed-login limit and 503 with no apiserver name the ID too', async (t) => {
  // Refusals during a lockout are logged at debug only (a flood would fill the log).
  const stack = await startStack(t, { pki, flags: ['--auth-failure-delay', '0', '--log-level', 'debug'] });
  const client = proxyClient(pki);
  const alice = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => Promise.all([client.close(), alice.close()]));
  const lineIn = async (id: string) => {
    for (let i = 0; i < 250; i++) {
      const line = stack.proxy.logs.find((l) => l.reqId === id && (l.msg === 'request' || l.msg === 'authentication failed'));
      if (line) return line;
      await sleep(20);
    }
    return undefined;
  };
  let last = await call(client, `${stack.proxy.url}/api`, { method: 'GET', headers: { authorization: basicAuth({ name: 'alice', password: 'wrong' }) } });
  for (let i = 0; i < 12 && last.status !== 429; i++) {
    last = await call(client, `${stack.proxy.url}/api`, { method: 'GET', headers: { 'audit-id': `limit-${i}`, authorization: basicAuth({ name: 'alice', password: 'wrong' }) } });
  }
  t.equal(last.status, 429);
  const id = String(last.headers['audit-id']);
  t.match(id, /^limit-\d+$/, "the 429 names the client's ID");
  t.match(await lineIn(id), { msg: 'authentication failed', reason: 'rate-limited', status: 429 });
  const right = await call(client, `${stack.proxy.url}/api`, { method: 'GET', headers: { authorization: basicAuth(ALICE) } });
  t.equal(right.status, 429);
  t.match(right.headers['audit-id'], UUID, "without one, the proxy's");

  await stack.apiserver.close();
  const gone = await call(alice, `${stack.proxy.url}/api/v1/namespaces/default/pods`, { method: 'GET', headers: { 'audit-id': 'no-upstream-1' } });
  t.ok(gone.status === 503 || gone.status === 502, `the proxy answers ${gone.status} itself`);
  t.equal(gone.headers['audit-id'], 'no-upstream-1', 'and names the ID');
  t.match(await lineIn('no-upstream-1'), { msg: 'request', status: gone.status });
});
