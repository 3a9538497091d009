// The real kubectl through the proxy, once with a username and password and once with a client
// certificate: it reaches the apiserver as the right user, and a refused login reads as
// kubectl's usual "must be logged in".
import t from 'tap';
import { kubectl, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import { ALICE, startStack } from './helpers/setup.js';

requireKubectl();
const { pki, proxy } = await startStack(t);
const ca = pki.pem['proxy-ca'].cert;

const users = {
  'username/password': writeKubeconfig(proxy.url, ca, { username: ALICE.name, password: ALICE.password }),
  'client certificate': writeKubeconfig(proxy.url, ca, { clientCertificate: pki.pem['user-alice'].cert, clientKey: pki.pem['user-alice'].key }),
};

for (const [kind, kubeconfig] of Object.entries(users)) {
  t.test(`kubectl with a ${kind}`, async (t) => {
    const whoami = await kubectl(kubeconfig, ['auth', 'whoami', '-o', 'json']);
    t.equal(whoami.code, 0, whoami.stderr);
    t.match(JSON.parse(whoami.stdout), { kind: 'SelfSubjectReview', status: { userInfo: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] } } });

    const api = await kubectl(kubeconfig, ['get', '--raw', '/api']);
    t.equal(api.code, 0, api.stderr);
    t.match(JSON.parse(api.stdout), { kind: 'APIVersions', versions: ['v1'] });

    const pods = await kubectl(kubeconfig, ['get', 'pods', '-o', 'name']);
    t.equal(pods.code, 0, pods.stderr);
    t.match(pods.stdout, /^pod\/pod-0$/m, 'discovery and a list work');
  });
}

t.test('kubectl with a wrong password is told to log in', async (t) => {
  const kubeconfig = writeKubeconfig(proxy.url, ca, { username: ALICE.name, password: 'wrong' });
  const res = await kubectl(kubeconfig, ['get', '--raw', '/api']);
  t.equal(res.code, 1);
  t.equal(res.stderr, 'error: You must be logged in to the server (invalid username or password)\n');
});

t.test('kubectl with an expired certificate is told why', async (t) => {
  const kubeconfig = writeKubeconfig(proxy.url, ca, { clientCertificate: pki.pem['user-expired'].cert, clientKey: pki.pem['user-expired'].key });
  const res = await kubectl(kubeconfig, ['auth', 'whoami']);
  t.equal(res.code, 1);
  t.equal(res.stderr, 'error: You must be logged in to the server (client certificate has expired)\n');
});
