// The upstream side: an apiserver that is down is a 503 Status; one whose certificate does not
// verify (other CA, wrong name) is a 502 Status and never sees the front-proxy certificate or an
// identity header; the apiserver's refusal of our certificate is a 502 that says so.
import { createServer as createNetServer } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import t from 'tap';
import { call, proxyClient } from './helpers/clients.js';
import { startApiServer } from '../standin/apiserver.js';
import { createTestPki } from './helpers/pki.js';
import { startProxy } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, withFlag, writeUsersFile } from './helpers/setup.js';

const pki = await createTestPki();
const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)]);
const client = proxyClient(pki, { cert: 'user-alice' });
t.teardown(() => client.close());

/** A TLS server with a certificate the proxy must not trust; it records what reaches it. */
async function startRogue(cert: { cert: string; key: string }) {
  const seen = { handshakes: 0, clientCertificates: 0, bytes: 0 };
  const server = createTlsServer({ cert: cert.cert, key: cert.key, requestCert: true, rejectUnauthorized: false }, (socket) => {
    seen.handshakes++;
    if (Object.keys(socket.getPeerCertificate()).length > 0) seen.clientCertificates++;
    socket.on('data', (chunk: Buffer) => {
      seen.bytes += chunk.length;
      // Answer like an apiserver would, so a proxy that trusted us fails the test at once.
      socket.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}');
    });
    socket.on('error', () => {});
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return { url: `https://127.0.0.1:${(server.address() as { port: number }).port}`, seen };
}

async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

t.test('apiserver down: 503 ServiceUnavailable Status, at once', async (t) => {
  const proxy = await startProxy(proxyFlags(pki, { upstream: `https://127.0.0.1:${await closedPort()}`, usersFile }));
  t.teardown(() => proxy.stop());
  const started = performance.now();
  const res = await call(client, `${proxy.url}/api/v1/namespaces/default/pods`);
  t.equal(res.status, 503);
  t.match(res.body, { kind: 'Status', status: 'Failure', reason: 'ServiceUnavailable', code: 503, message: /apiserver https:\/\/127\.0\.0\.1:\d+ is unavailable: .*ECONNREFUSED/ });
  t.ok(performance.now() - started < 2000, 'no long hang');
  t.equal((await call(client, `${proxy.url}/api`)).status, 503, 'the proxy keeps serving after the failure');
});

t.test('an apiserver certificate from another CA: 502, and it never sees our certificate or headers', async (t) => {
  const rogue = await startRogue(pki.pem['rogue-apiserver']);
  const proxy = await startProxy(proxyFlags(pki, { upstream: rogue.url, usersFile }));
  t.teardown(() => proxy.stop());
  const res = await call(client, `${proxy.url}/api/v1/namespaces/kube-system/secrets`);
  t.equal(res.status, 502);
  t.match(res.body, { kind: 'Status', reason: 'BadGateway', code: 502, message: /^TLS connection to the apiserver https:\/\/127\.0\.0\.1:\d+ failed: .*(certificate|verify)/i });
  t.equal(rogue.seen.clientCertificates, 0, 'the front-proxy client certificate was never presented');
  t.equal(rogue.seen.bytes, 0, 'no request bytes (and so no identity headers) were sent');
});

t.test('an apiserver certificate without the expected name: 502', async (t) => {
  const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert });
  t.teardown(() => apiserver.close());
  const proxy = await startProxy([...proxyFlags(pki, { upstream: apiserver.url, usersFile }), '--upstream-server-name', 'not-kubernetes.example']);
  t.teardown(() => proxy.stop());
  const res = await call(client, `${proxy.url}/api/v1/namespaces`);
  t.equal(res.status, 502);
  t.match(res.body, { reason: 'BadGateway', message: /not-kubernetes\.example/ });
  t.equal(apiserver.requests.length, 0, 'no request reached it');
});

t.test('a front-proxy certificate the apiserver does not allow: a 502 naming the flags, not a 401 (upstream-refuses-proxy.test.ts)', async (t) => {
  const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert });
  t.teardown(() => apiserver.close());
  const flags = withFlag(withFlag(proxyFlags(pki, { upstream: apiserver.url, usersFile }), '--proxy-client-cert-file', pki.path('front-proxy-wrong-name', 'crt')), '--proxy-client-key-file', pki.path('front-proxy-wrong-name', 'key'));
  const proxy = await startProxy(flags);
  t.teardown(() => proxy.stop());
  const res = await call(client, `${proxy.url}/api/v1/namespaces`);
  t.equal(res.status, 502, "the apiserver refused the identity headers from a non-allowed CN: the proxy's misconfiguration");
  t.match(res.body, { kind: 'Status', reason: 'BadGateway', message: /did not accept the front-proxy client certificate.*--requestheader-allowed-names/ });
  t.equal(apiserver.requests.at(-1)?.peerCN, 'not-the-proxy');
});

t.test('an apiserver that never answers: 504 after --upstream-header-timeout', async (t) => {
  const silent = createTlsServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key }, (socket) => {
    socket.on('error', () => {});
    socket.resume(); // read the request, never answer
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => silent.close());
  const url = `https://127.0.0.1:${(silent.address() as { port: number }).port}`;
  const proxy = await startProxy([...proxyFlags(pki, { upstream: url, usersFile }), '--upstream-header-timeout', '500ms']);
  t.teardown(() => proxy.stop());
  const started = performance.now();
  const res = await call(client, `${proxy.url}/api`);
  const elapsed = performance.now() - started;
  t.equal(res.status, 504);
  t.match(res.body, { kind: 'Status', reason: 'Timeout', code: 504, message: /did not answer in time/ });
  t.ok(elapsed >= 450 && elapsed < 3000, `answered after the timeout (${elapsed.toFixed(0)} ms)`);
});
