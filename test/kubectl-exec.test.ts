// The real kubectl exec through the proxy, with a password and with a client certificate,
// over WebSocket (kubectl 1.32's first choice) and over SPDY when the apiserver refuses it.
import t from 'tap';
import { kubectl, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
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
