// Forwarding through a real proxy: bodies stream intact both ways, methods, content types and
// query strings arrive unchanged, watches outlive quiet periods and slow readers are
// back-pressured rather than buffered.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { request } from 'undici';
import { basicAuth, call, openWatch, proxyClient } from './helpers/clients.js';
import { ALICE, startStack } from './helpers/setup.js';

// How long a watch stays silent before its next event. Raise it past 300 s
// (KFP_TEST_WATCH_QUIET_MS=310000) to check undici's default body timeout is really off.
const QUIET_MS = Number(process.env.KFP_TEST_WATCH_QUIET_MS ?? 3000);

// The proxy's header timeout is set below the quiet period: a proxy that applied it to
// response bodies (as undici does with its own timeouts by default) would cut the watch.
const { apiserver, pki, proxy } = await startStack(t, { flags: ['--upstream-header-timeout', '1s'] });
const client = proxyClient(pki, { cert: 'user-alice' });
t.teardown(() => client.close());

function pattern(n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** The last request the stand-in saw from a client (it keeps the proxy's health checks apart). */
const lastForwarded = () => apiserver.requests.at(-1);

t.test('a large response streams intact', async (t) => {
  const size = 48 * 1024 * 1024 + 7;
  const res = await request(`${proxy.url}/test/bytes?n=${size}`, { dispatcher: client });
  t.equal(res.statusCode, 200);
  const body = Buffer.from(await res.body.arrayBuffer());
  t.equal(body.length, size);
  t.equal(sha256(body), sha256(pattern(size)), 'byte-identical');
});

t.test('a large request body streams intact to the apiserver and back', async (t) => {
  const size = 24 * 1024 * 1024 + 3;
  const payload = pattern(size).reverse();
  const res = await request(`${proxy.url}/test/echo`, { dispatcher: client, method: 'PUT', body: payload, headers: { 'content-type': 'application/octet-stream' } });
  const echoed = Buffer.from(await res.body.arrayBuffer());
  t.equal(res.statusCode, 200);
  t.equal(echoed.length, size);
  t.equal(sha256(echoed), sha256(payload), 'echo is byte-identical');
  t.equal(lastForwarded()?.bodySha256, sha256(payload), 'the apiserver received every byte');
});

t.test('every method and the content types kubectl and controllers send pass unparsed', async (t) => {
  const cases: [string, string, string | Buffer][] = [
    ['POST', 'application/json', '{"kind":"ConfigMap","apiVersion":"v1"}'],
    ['PUT', 'application/json', '{"a":1}'],
    ['PATCH', 'application/strategic-merge-patch+json', '{"metadata":{"labels":{"a":"b"}}}'],
    ['PATCH', 'application/merge-patch+json', '{"data":{"x":null}}'],
    ['PATCH', 'application/json-patch+json', '[{"op":"remove","path":"/data/x"}]'],
    ['PATCH', 'application/apply-patch+yaml', 'apiVersion: v1\nkind: ConfigMap\n'],
    ['POST', 'application/vnd.kubernetes.protobuf', Buffer.from([0x6b, 0x38, 0x73, 0x00, 0x0a, 0xff, 0x00, 0x01])],
    ['DELETE', 'application/json', '{"kind":"DeleteOptions","propagationPolicy":"Foreground"}'],
  ];
  for (const [method, type, body] of cases) {
    const res = await call(client, `${proxy.url}/test/echo`, { method: method as 'POST', body, headers: { 'content-type': type } });
    t.equal(res.status, 200, `${method} ${type}`);
    t.equal(res.text, Buffer.from(body).toString(), `${method} ${type}: body unchanged`);
    t.equal(lastForwarded()?.method, method);
    t.equal(lastForwarded()?.rawHeaders.find(([n]) => n.toLowerCase() === 'content-type')?.[1], type);
  }
  const head = await request(`${proxy.url}/api/v1/namespaces/default/pods`, { dispatcher: client, method: 'HEAD' });
  await head.body.dump();
  t.equal(lastForwarded()?.method, 'HEAD', 'HEAD is forwarded');
});

t.test('paths and query strings reach the apiserver byte for byte', async (t) => {
  const urls = [
    '/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier%21%3Ddb&fieldSelector=metadata.name=x,status.phase!=Running&limit=5&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ%3D%3D',
    '/api/v1/namespaces/default/pods?watch=1&resourceVersion=12&allowWatchBookmarks=true&timeoutSeconds=300',
    '/api/v1/namespaces/default/configmaps/a%2Fb?dryRun=All&fieldManager=kubectl-client-side-apply&fieldValidation=Strict',
    '/apis/apps/v1/namespaces/default/deployments?labelSelector=a+in+(b,c)&x=%E2%9C%93&flag',
  ];
  for (const url of urls) {
    const res = await call(client, `${proxy.url}/test/echo${url.slice(url.indexOf('?'))}`, { method: 'GET' });
    t.equal(res.status, 200);
    t.equal(lastForwarded()?.url, `/test/echo${url.slice(url.indexOf('?'))}`, `query unchanged: ${url}`);
  }
  await call(client, `${proxy.url}/api/v1/namespaces/default/pods/a%2Fb%20c`, { method: 'GET' });
  t.equal(lastForwarded()?.url, '/api/v1/namespaces/default/pods/a%2Fb%20c', 'escaped path unchanged');
});

t.test('upstream status, headers and Status bodies come back unchanged', async (t) => {
  const res = await call(client, `${proxy.url}/test/status/409`, { method: 'GET', headers: { authorization: basicAuth(ALICE) } });
  t.equal(res.status, 409);
  t.match(res.body, { kind: 'Status', code: 409 });
  const missing = await call(client, `${proxy.url}/api/v1/namespaces/default/pods/does-not-exist`);
  t.equal(missing.status, 404);
  t.match(missing.body, { kind: 'Status', reason: 'NotFound' });
});

t.test(`a watch stays open through ${QUIET_MS} ms of silence and delivers later events`, { timeout: QUIET_MS + 30_000 }, async (t) => {
  const watch = await openWatch(client, `${proxy.url}/api/v1/namespaces/default/pods?watch=true`);
  t.equal(watch.statusCode, 200);
  t.equal(watch.headers['transfer-encoding'], 'chunked', 'streamed chunked to the client');
  // The headers came before any event: clients count the watch as open from then on.
  t.equal(apiserver.openWatches(), 1);
  apiserver.sendWatchEvent('ADDED', { kind: 'Pod', apiVersion: 'v1', metadata: { name: 'first', namespace: 'default' } });
  await watch.next(1);
  await new Promise((r) => setTimeout(r, QUIET_MS));
  apiserver.sendWatchEvent('MODIFIED', { kind: 'Pod', apiVersion: 'v1', metadata: { name: 'after-silence', namespace: 'default' } });
  t.match(JSON.parse(await watch.next(2)), { type: 'MODIFIED', object: { metadata: { name: 'after-silence' } } });
  apiserver.closeWatches();
  t.equal(await watch.ended, 'end', 'the watch ends cleanly when the apiserver ends it');
});

t.test('a client that hangs up ends the upstream watch', async (t) => {
  const res = await request(`${proxy.url}/api/v1/namespaces/default/pods?watch=1`, { dispatcher: client });
  while (apiserver.openWatches() === 0) await new Promise((r) => setTimeout(r, 10));
  res.body.destroy();
  const deadline = Date.now() + 5000;
  while (apiserver.openWatches() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(apiserver.openWatches(), 0, 'the apiserver-side watch closed');
});

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

t.test('a slow reader is back-pressured, not buffered', async (t) => {
  const pid = proxy.child.pid as number;
  const before = rssBytes(pid);
  const size = 1024 * 1024 * 1024; // 1 GiB offered by the apiserver
  const res = await request(`${proxy.url}/test/bytes?n=${size}`, { dispatcher: client });
  res.body.pause();
  await new Promise((r) => setTimeout(r, 1500));
  const grown = rssBytes(pid) - before;
  t.ok(grown < 96 * 1024 * 1024, `proxy memory grew by ${(grown / 1048576).toFixed(1)} MiB while 1 GiB waited upstream`);
  // Reading resumes where it stopped: a sample of the stream is still intact.
  const first = await new Promise<Buffer>((resolve) => {
    res.body.once('data', (chunk: Buffer) => resolve(chunk));
    res.body.resume();
  });
  t.equal(first[0], 0, 'the stream starts at byte 0');
  res.body.destroy();
});
