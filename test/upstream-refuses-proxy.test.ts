// An apiserver that refuses the proxy's own identity (its front-proxy certificate is not from
// --requestheader-client-ca-file, or its CN is not in --requestheader-allowed-names) is the
// proxy's misconfiguration: the client gets a 502 Status naming the flags to check, the health
// check takes that apiserver out at its first check with the same reason, and the proxy logs one
// warning per apiserver per change of state. A 401 the apiserver gives for any other reason (a
// service behind its service proxy, a rejected passed-through token) reaches the user unchanged.
import t from 'tap';
import { basicAuth, call, proxyClient } from './helpers/clients.js';
import { kubectl, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import type { LogLine, ProxyProcess } from './helpers/proxy.js';
import { waitFor } from './helpers/reload.js';
import { createTestPki } from './helpers/pki.js';
import { ALICE, startStack } from './helpers/setup.js';
import { readToEnd, sendUpgrade } from './helpers/tunnel.js';

requireKubectl();

const REFUSED = /^the apiserver https:\/\/127\.0\.0\.1:\d+ did not accept the front-proxy client certificate .*--requestheader-client-ca-file.*--requestheader-allowed-names/;

/** The pool's warnings about apiservers (health and identity), as opposed to per-request lines. */
function upstreamWarnings(proxy: ProxyProcess, from = 0): LogLine[] {
  return proxy.logs.slice(from).filter((l) => l.level >= 40 && typeof l.upstream === 'string' && !String(l.msg).startsWith('preflight'));
}

/** Every warning or error line that carries a stack trace. */
function stackTraces(proxy: ProxyProcess): LogLine[] {
  return proxy.logs.filter((l) => l.level >= 40 && JSON.stringify(l).includes('"stack"'));
}

t.test('an apiserver that does not trust the front-proxy CA: 502 naming the flags, from the first request', async (t) => {
  // The stand-in's --requestheader-client-ca-file holds another CA than the one that signed our certificate.
  const pki = await createTestPki();
  const { proxy, apiserver } = await startStack(t, { pki, apiserver: { requestHeaderCA: pki.pem['rogue-ca'].cert } });
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());

  // Right after start-up: whether or not the first health check is done, never a 401.
  const first = await call(client, `${proxy.url}/api/v1/namespaces/default/pods`);
  t.equal(first.status, 502, "a gateway error, not the user's 401");
  t.match(first.body, { kind: 'Status', status: 'Failure', reason: 'BadGateway', code: 502, message: REFUSED });
  t.notOk(first.headers['retry-after'], 'no Retry-After: kubectl does not retry a misconfiguration for 10 s');
  t.notOk(first.headers['www-authenticate'], 'no password prompt');

  await waitFor('the health check marks it', () => upstreamWarnings(proxy).length > 0);
  const [warning] = upstreamWarnings(proxy);
  t.match(warning, { level: 40, msg: "upstream refuses the proxy's identity", reason: /^did not accept the front-proxy client certificate/ });

  const password = await call(proxyClient(pki), `${proxy.url}/api/v1/namespaces`, { method: 'GET', headers: { authorization: basicAuth(ALICE) } });
  t.equal(password.status, 502, 'a password user gets the same answer');
  t.match(password.body, { reason: 'BadGateway', message: REFUSED });

  const admin = await call(client, `${proxy.adminUrl}/readyz?verbose`);
  t.equal(admin.status, 503, 'the proxy is not ready');
  t.match(admin.text, /did not accept the front-proxy client certificate/, 'its /readyz says why');

  // kubectl prints the reason, at once.
  const kubeconfig = writeKubeconfig(proxy.url, pki.pem['proxy-ca'].cert, { username: ALICE.name, password: ALICE.password });
  const started = performance.now();
  const whoami = await kubectl(kubeconfig, ['auth', 'whoami']);
  t.not(whoami.code, 0);
  t.match(whoami.stderr, /Error from server \(BadGateway\): the apiserver https:\/\/127\.0\.0\.1:\d+ did not accept the front-proxy client certificate/);
  t.notMatch(whoami.stderr, /logged in|Unauthorized/);
  t.ok(performance.now() - started < 5000, 'no retries');
  // Discovery (nearly every kubectl command's first request) gets it as text, which kubectl shows.
  const discovery = await call(client, `${proxy.url}/apis`);
  t.equal(discovery.status, 502);
  t.match(discovery.text, /^the apiserver https:\/\/127\.0\.0\.1:\d+ did not accept the front-proxy client certificate/);
  const getPods = await kubectl(kubeconfig, ['get', 'pods']);
  t.match(getPods.stderr, /an error on the server \("the apiserver https:\/\/127\.0\.0\.1:\d+ did not accept the front-proxy client certificate .*--requestheader-allowed-names/, 'kubectl get pods says it too');

  // exec, attach and port-forward (upgrades, their own path) get the same answer.
  const exec = await sendUpgrade(proxy.port, pki, { path: '/api/v1/namespaces/default/pods/pod-0/exec?command=sh&stdin=true', protocol: 'SPDY/3.1', identity: { cert: 'user-alice' } });
  const execBody = (await readToEnd(exec.socket, exec.rest)).toString();
  t.equal(exec.statusCode, 502, 'exec: 502');
  t.match(JSON.parse(execBody), { kind: 'Status', reason: 'BadGateway', message: REFUSED }, 'exec: the same Status');

  for (let i = 0; i < 5; i++) t.equal((await call(client, `${proxy.url}/api`)).status, 502);
  t.equal(upstreamWarnings(proxy).length, 1, 'one warning for the apiserver, not one per request or check');
  t.same(stackTraces(proxy), [], 'no stack traces');
  t.ok(
    apiserver.requests.every((r) => r.authn === 'rejected'),
    'the apiserver did refuse every request',
  );
});

t.test('allowed-names without our CN, fixed, then broken again: one warning per change', async (t) => {
  const { proxy, apiserver, pki } = await startStack(t, { apiserver: { allowedNames: ['aggregator'] }, flags: ['--health-interval', '200ms'] });
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());
  await waitFor('the first check marks it', () => upstreamWarnings(proxy).length === 1);
  t.match((await call(client, `${proxy.url}/api/v1/namespaces`)).body, { code: 502, message: REFUSED });

  apiserver.setAllowedNames(['aggregator', 'front-proxy-client']);
  await waitFor('back in', () => proxy.logs.some((l) => l.msg === 'upstream healthy again'));
  t.equal((await call(client, `${proxy.url}/test/identity`)).status, 200, 'served once the apiserver accepts the proxy');

  // Broken while healthy: the request that meets the 401 is answered 502, not 401.
  const before = proxy.logs.length;
  apiserver.setAllowedNames(['aggregator']);
  const res = await call(client, `${proxy.url}/api/v1/namespaces/default/pods`);
  t.equal(res.status, 502);
  t.match(res.body, { reason: 'BadGateway', message: REFUSED });
  for (let i = 0; i < 3; i++) t.equal((await call(client, `${proxy.url}/api`)).status, 502);
  await waitFor('the warning', () => upstreamWarnings(proxy, before).length > 0);
  t.same(
    upstreamWarnings(proxy, before).map((l) => l.msg),
    ["upstream refuses the proxy's identity"],
    'one warning for the change',
  );
  t.same(stackTraces(proxy), []);
});

t.test('a watch (over HTTP/2 to the apiserver) meeting the refusal gets the same 502', async (t) => {
  // Checks an hour apart: only the watch's own 401 can find out.
  const { proxy, apiserver, pki } = await startStack(t, { flags: ['--health-interval', '1h'] });
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());
  await waitFor('the first check passes', () => apiserver.healthChecks.length > 0);
  apiserver.setAllowedNames(['aggregator']);
  const res = await call(client, `${proxy.url}/api/v1/namespaces/default/pods?watch=1`);
  t.equal(res.status, 502);
  t.match(res.body, { reason: 'BadGateway', message: REFUSED });
  t.equal(apiserver.requests.filter((r) => r.url.includes('watch=1')).at(-1)?.httpVersion, '2.0', 'it went over HTTP/2');
  await waitFor('the warning', () => upstreamWarnings(proxy).length > 0);
  t.equal(upstreamWarnings(proxy).length, 1);
});

t.test('401s that are not about the proxy reach the user unchanged', async (t) => {
  const backend = { status: 401, headers: { 'Content-Type': 'text/plain; charset=utf-8', 'WWW-Authenticate': 'Basic realm="grafana"' }, body: 'Unauthorized\n' };
  const tokens = { 'good-token': { username: 'system:serviceaccount:ci:deployer', groups: ['system:serviceaccounts'] } };
  const { proxy, pki } = await startStack(t, { apiserver: { serviceBackends: { 'monitoring/grafana': backend }, tokens }, flags: ['--token-passthrough=true'] });
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());

  t.test("a service behind the apiserver's service proxy asks for its own login", async (t) => {
    const res = await call(client, `${proxy.url}/api/v1/namespaces/monitoring/services/grafana/proxy/login`);
    t.equal(res.status, 401);
    t.equal(res.text, 'Unauthorized\n', "the backend's body");
    t.equal(res.headers['www-authenticate'], 'Basic realm="grafana"', "the backend's challenge");
    t.equal((await call(client, `${proxy.url}/test/identity`)).status, 200, 'the apiserver stays in');
    t.same(upstreamWarnings(proxy), [], 'nothing to warn about');
  });

  t.test('a passed-through token the apiserver refuses', async (t) => {
    const anonymous = proxyClient(pki);
    t.teardown(() => anonymous.close());
    const res = await call(anonymous, `${proxy.url}/api/v1/namespaces/default/pods`, { method: 'GET', headers: { authorization: 'Bearer not-a-token' } });
    t.equal(res.status, 401);
    t.match(res.body, { kind: 'Status', reason: 'Unauthorized', message: 'Unauthorized', code: 401 }, "the apiserver's own Status");
    t.equal((await call(anonymous, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: 'Bearer good-token' } })).status, 200);
    t.same(upstreamWarnings(proxy), []);
  });
});
