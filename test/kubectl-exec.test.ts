// The real kubectl exec through the proxy, with a password and with a client certificate,
// over WebSocket (kubectl 1.32's first choice) and over SPDY when the apiserver refuses it.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { echoOverTcp, kubectl, portForward, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import { ALICE, startStack } from './helpers/setup.js';

requireKubectl();
const { apiserver, pki, proxy } = await startStack(t);
const ca = pki.pem['proxy-ca'].cert;

const users = {
  'username/password': writeKubeconfig(proxy.url, ca, { username: ALICE.name, password: ALICE.password }),
  'client certificate': writeKubeconfig(proxy.url, ca, { clientCertificate: pki.pem['user-alice'].cert, clientKey: pki.pem['user-alice'].key }),
};

function upgradesSeen(from: number) {
  return apiserver.requests.slice(from).filter((r) => r.rawHeaders.some(([n]) => n.toLowerCase() === 'upgrade'));
}

for (const [kind, kubeconfig] of Object.entries(users)) {
  t.test(`kubectl exec with a ${kind}`, async (t) => {
    const from = apiserver.requests.length;
    const echo = await kubectl(kubeconfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'hello\n' });
    t.equal(echo.code, 0, echo.stderr);
    t.equal(echo.stdout, 'hello\n', 'stdin reaches the container and stdout comes back');
    const upgrade = upgradesSeen(from)[0];
    t.ok(upgrade, 'an upgrade request reached the apiserver');
    t.match(upgrade, { user: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] } });
    t.equal(upgrade?.rawHeaders.find(([n]) => n.toLowerCase() === 'upgrade')?.[1], 'websocket', 'kubectl 1.32 negotiated WebSocket');

    const exit = await kubectl(kubeconfig, ['exec', 'pod-0', '--', 'sh', '-c', 'exit 3']);
    t.equal(exit.code, 3, 'the exit code comes through the error channel');
  });
}

t.test('kubectl exec without valid credentials: the usual Unauthorized', async (t) => {
  const kubeconfig = writeKubeconfig(proxy.url, ca, { username: ALICE.name, password: 'wrong' });
  const res = await kubectl(kubeconfig, ['exec', 'pod-0', '--', 'echo', 'hi']);
  t.equal(res.code, 1);
  t.match(res.stderr, /You must be logged in to the server|Unauthorized|invalid username or password/);
});

t.test('kubectl exec by a user RBAC forbids: kubectl says forbidden', async (t) => {
  const kubeconfig = writeKubeconfig(proxy.url, ca, { clientCertificate: pki.pem['user-bob'].cert, clientKey: pki.pem['user-bob'].key });
  const res = await kubectl(kubeconfig, ['exec', 'pod-0', '--', 'echo', 'hi']);
  t.equal(res.code, 1);
  t.match(res.stderr, /forbidden: User "bob" cannot create resource "pods\/exec"/);
});

t.test('kubectl exec over SPDY: forced, and as the fallback when the apiserver refuses WebSocket', async (t) => {
  const kubeconfig = users['client certificate'];
  const forced = await kubectl(kubeconfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'over spdy\n', env: { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false' } });
  t.equal(forced.code, 0, forced.stderr);
  t.equal(forced.stdout, 'over spdy\n');
  t.equal(apiserver.requests.at(-1)?.rawHeaders.find(([n]) => n.toLowerCase() === 'upgrade')?.[1], 'SPDY/3.1');

  const old = await startStack(t, { pki, apiserver: { websocketExec: false } });
  const oldConfig = writeKubeconfig(old.proxy.url, ca, { username: ALICE.name, password: ALICE.password });
  const from = old.apiserver.requests.length;
  const fallback = await kubectl(oldConfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'fell back\n' });
  t.equal(fallback.code, 0, fallback.stderr);
  t.equal(fallback.stdout, 'fell back\n');
  const upgrades = old.apiserver.requests
    .slice(from)
    .map((r) => r.rawHeaders.find(([n]) => n.toLowerCase() === 'upgrade')?.[1])
    .filter(Boolean);
  t.same(upgrades, ['websocket', 'SPDY/3.1'], 'the refused WebSocket answer reached kubectl, which retried with SPDY');
});

t.test('kubectl port-forward through the proxy: WebSocket-tunnelled SPDY and plain SPDY', async (t) => {
  const kubeconfig = users['username/password'];
  for (const [name, env] of [
    ['WebSocket', {}],
    ['SPDY', { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' }],
  ] as const) {
    const forward = await portForward(kubeconfig, env);
    const payload = randomBytes(256 * 1024);
    const echoed = await echoOverTcp(forward.port, payload);
    t.ok(echoed.equals(payload), `${name}: 256 KiB through the forwarded port and back`);
    await forward.stop();
  }
});
