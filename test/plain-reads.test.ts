// Plain reads (a get, a list) go to the apiserver through the pool's dispatcher directly and are
// written into the client's response as they arrive (src/proxy/forward.ts forwardRead): an answer
// up to 64 KiB in one write with its headers, a longer one streamed from there. Both must reach
// the client whole, over HTTP/1.1 and HTTP/2, and be logged with their size.
import { connect } from 'node:http2';
import t from 'tap';
import { request } from 'undici';
import { proxyClient } from './helpers/clients.js';
import { waitFor } from './helpers/reload.js';
import { startStack } from './helpers/setup.js';

// About 1 KiB a Pod as JSON: a list of 400 is several times the gathering limit.
const { proxy, pki, apiserver } = await startStack(t, { apiserver: { pods: 400 } });
const client = proxyClient(pki, { cert: 'user-alice' });
t.teardown(() => client.close());
const LIST = '/api/v1/namespaces/default/pods';

t.test('a list longer than the gathering limit arrives whole over HTTP/1.1', async (t) => {
  const res = await request(`${proxy.url}${LIST}`, { dispatcher: client });
  t.equal(res.statusCode, 200);
  const text = await res.body.text();
  t.ok(Buffer.byteLength(text) > 64 * 1024, `longer than 64 KiB (${Buffer.byteLength(text)} bytes)`);
  t.equal((JSON.parse(text) as { items: unknown[] }).items.length, 400, 'every item');
  t.equal(res.headers['audit-id'], apiserver.requests.at(-1)?.auditId, "the apiserver's Audit-Id");
});

t.test('a short get and a long list over HTTP/2, logged with the bytes sent', async (t) => {
  const session = connect(proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key });
  t.teardown(() => session.close());
  const get = (path: string) =>
    new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
      const stream = session.request({ ':path': path });
      const chunks: Buffer[] = [];
      let status = 0;
      stream.on('response', (headers) => (status = Number(headers[':status'])));
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
      stream.on('error', reject);
    });
  const one = await get(`${LIST}/pod-7`);
  t.equal(one.status, 200);
  t.equal((JSON.parse(one.body.toString()) as { metadata: { name: string } }).metadata.name, 'pod-7');
  const all = await get(LIST);
  t.equal((JSON.parse(all.body.toString()) as { items: unknown[] }).items.length, 400);
  await waitFor('both lines', () => proxy.logs.filter((l) => l.msg === 'request' && l.protocol === 'HTTP/2.0').length >= 2);
  const lines = proxy.logs.filter((l) => l.msg === 'request' && l.protocol === 'HTTP/2.0');
  t.equal(lines.find((l) => l.path === `${LIST}/pod-7`)?.bytesOut, one.body.length, 'the get: its bytes');
  t.equal(lines.find((l) => l.path === LIST)?.bytesOut, all.body.length, 'the list: its bytes');
});

t.test("a read whose path needs http-proxy's checks still gets them; one that passes them is served", async (t) => {
  const read = async (path: string) => {
    // The dispatcher's own request(): a URL would have its dot segments removed before sending.
    const res = await client.request({ origin: proxy.url, path, method: 'GET' });
    return { status: res.statusCode, body: await res.body.text() };
  };
  const seen = apiserver.requests.length;
  for (const path of [`${LIST}/../secrets`, `${LIST}/%2e%2e/secrets`, `${LIST}/pod-7/..%2f..%2fsecrets`, `${LIST}\\..\\secrets`]) {
    const { status, body } = await read(path);
    t.equal(status, 400, `${path}: refused`);
    t.match(JSON.parse(body), { kind: 'Status', code: 400 }, `${path}: a Status`);
  }
  t.equal(apiserver.requests.length, seen, 'none reached the apiserver');
  const escaped = await read(`${LIST}/pod-%37`);
  t.equal(escaped.status, 200, 'a percent-escape that is no traversal: served');
  t.equal((JSON.parse(escaped.body) as { metadata: { name: string } }).metadata.name, 'pod-7');
});
