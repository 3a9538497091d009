// A backend behind the apiserver's service proxy may send its headers long before its body (a
// server-sent events stream, say): the proxy passes the headers on at once rather than with the
// first body byte. (kube-apiserver's own answers of unknown length are relayed with their
// headers and first bytes together.)
import t from 'tap';
import { request } from 'undici';
import { proxyClient } from './helpers/clients.js';
import { startStack } from './helpers/setup.js';

t.test("a streaming service backend's headers reach the client before its body", async (t) => {
  let release!: () => void;
  const bodyAfter = new Promise<void>((resolve) => (release = resolve));
  const backend = { status: 200, headers: { 'Content-Type': 'text/event-stream' }, body: 'data: hello\n\n', bodyAfter };
  const { proxy, pki } = await startStack(t, { apiserver: { serviceBackends: { 'monitoring/events': backend } } });
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());

  // Resolves with the headers; the body is still held by the backend.
  const res = await request(`${proxy.url}/api/v1/namespaces/monitoring/services/events/proxy/stream`, { dispatcher: client });
  t.equal(res.statusCode, 200, 'headers while the body is held');
  t.equal(res.headers['content-type'], 'text/event-stream');
  release();
  t.equal(await res.body.text(), 'data: hello\n\n', 'then the body');
});
