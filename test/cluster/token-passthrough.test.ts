// --token-passthrough in front of the real kube-apiserver: a ServiceAccount token from
// `kubectl create token` works through the proxy for get, watch and exec (the apiserver
// authenticates it itself: the proxy sends no X-Remote-* header, over a connection without the
// front-proxy certificate); a bad token gets the apiserver's own 401; with the flag off, the
// proxy's 401; a password or a certificate sent with a token wins and the token goes nowhere.
import t from 'tap';
import { request } from 'undici';
import { kubectl, requireKubectl, writeKubeconfig } from '../helpers/kubectl.js';
import { startControlPlane } from './control-plane.js';
import { ALICE, startProxyInFront } from './proxy-fixture.js';
import { spawnKubectl } from './watch-process.js';

requireKubectl();
const cp = await startControlPlane({ kubelet: true });
t.teardown(() => cp.stop());
const front = await startProxyInFront(t, cp, { settings: { tokenPassthrough: true } });
const off = await startProxyInFront(t, cp);
const proxyCa = cp.pki.read('proxy-ca.crt');

await cp.adminOk(['create', 'serviceaccount', 'ci-bot', '-n', 'default']);
await cp.adminOk(['create', 'role', 'ci-bot', '-n', 'default', '--verb=get,list,watch', '--resource=pods,configmaps']);
await cp.adminOk(['create', 'role', 'ci-bot-exec', '-n', 'default', '--verb=create,get', '--resource=pods/exec']);
await cp.adminOk(['create', 'rolebinding', 'ci-bot', '-n', 'default', '--role=ci-bot', '--serviceaccount=default:ci-bot']);
await cp.adminOk(['create', 'rolebinding', 'ci-bot-exec', '-n', 'default', '--role=ci-bot-exec', '--serviceaccount=default:ci-bot']);
const token = (await cp.adminOk(['create', 'token', 'ci-bot', '-n', 'default'])).trim();
const BAD_TOKEN = `${token.slice(0, -8)}AAAAAAAA`;
const tokenConfig = (server: string, value: string) => writeKubeconfig(server, proxyCa, { token: value });
const bot = tokenConfig(front.proxy.url, token);
const bearer = (value: string) => ({ authorization: `Bearer ${value}` });
const basic = `Basic ${Buffer.from(`${ALICE.name}:${ALICE.password}`).toString('base64')}`;

async function whoami(kubeconfig: string) {
  const res = await kubectl(kubeconfig, ['auth', 'whoami', '-o', 'json']);
  if (res.code !== 0) throw new Error(`kubectl auth whoami failed: ${res.stderr}`);
  return (JSON.parse(res.stdout) as { status: { userInfo: { username: string; groups: string[] } } }).status.userInfo;
}

t.test('auth whoami: the ServiceAccount, as the apiserver authenticated it', async (t) => {
  const me = await whoami(bot);
  t.equal(me.username, 'system:serviceaccount:default:ci-bot');
  t.ok(me.groups.includes('system:serviceaccounts:default'));
  // The traffic log is written in batches: wait for the line.
  let line = undefined as (typeof front.proxy.logs)[number] | undefined;
  for (let i = 0; i < 50 && !line; i++) {
    line = front.proxy.logs.findLast((l) => l.msg === 'request' && l.resource === 'selfsubjectreviews');
    if (!line) await new Promise((r) => setTimeout(r, 100));
  }
  t.match(line, { auth: 'bearer', user: '', status: 201 }, 'the traffic log says bearer');
  t.notOk(JSON.stringify(front.proxy.logs).includes(token), 'no token bytes in the log');
});

t.test('get, watch and exec with the token', async (t) => {
  const get = await kubectl(bot, ['get', 'pods', '-n', 'default']);
  t.equal(get.code, 0, get.stderr);
  t.match(get.stdout, /pod-0/);

  const watch = spawnKubectl(bot, ['get', 'configmaps', '-n', 'default', '-w', '-o', 'name']);
  t.teardown(() => watch.stop());
  await watch.waitFor(/configmap\/kube-root-ca\.crt/);
  await cp.adminOk(['create', 'configmap', 'seen-by-ci-bot', '-n', 'default', '--from-literal=k=v']);
  await watch.waitFor(/configmap\/seen-by-ci-bot/);
  t.pass('the watch delivered an event that happened after it started');
  await watch.stop();

  const exec = await kubectl(bot, ['exec', 'pod-0', '--', 'sh', '-c', 'echo through-a-token']);
  t.equal(exec.code, 0, exec.stderr);
  t.equal(exec.stdout, 'through-a-token\n');

  const denied = await kubectl(bot, ['get', 'secrets', '-n', 'default']);
  t.equal(denied.code, 1);
  t.match(denied.stderr, 'User "system:serviceaccount:default:ci-bot" cannot list resource "secrets"', 'RBAC decides on the ServiceAccount');
});

t.test("a bad token: the apiserver's 401", async (t) => {
  const res = await request(`${front.proxy.url}/api/v1/namespaces/default/pods`, { dispatcher: front.client(), headers: bearer(BAD_TOKEN) });
  t.equal(res.statusCode, 401);
  const body = (await res.body.json()) as { message: string };
  t.match(body, { kind: 'Status', reason: 'Unauthorized', code: 401 });
  t.equal(body.message, 'Unauthorized', "the apiserver's message, not the proxy's");
  t.notOk(res.headers['www-authenticate'], 'no Basic challenge from the proxy');
  const kc = await kubectl(tokenConfig(front.proxy.url, BAD_TOKEN), ['get', 'pods']);
  t.equal(kc.code, 1);
  t.match(kc.stderr, /Unauthorized|provide credentials/);
});

t.test("flag off: the proxy's 401", async (t) => {
  const res = await request(`${off.proxy.url}/api/v1/namespaces/default/pods`, { dispatcher: off.client(), headers: bearer(token) });
  t.equal(res.statusCode, 401);
  const body = (await res.body.json()) as { message: string };
  // The proxy's own words for an Authorization it does not take (as before the flag existed).
  t.match(body.message, /^malformed Authorization header: expected Basic credentials/, 'the proxy refused it');
  t.match(res.headers['www-authenticate'], /^Basic/);
});

t.test('a password or a certificate with a token: they win, the token goes nowhere', async (t) => {
  const both = await request(`${front.proxy.url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    method: 'POST',
    dispatcher: front.client(),
    headers: [
      ['authorization', `Bearer ${token}`],
      ['authorization', basic],
      ['content-type', 'application/json'],
    ].flat(),
    body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
  });
  t.equal(both.statusCode, 201);
  t.match(await both.body.json(), { status: { userInfo: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] } } });

  const dora = await front.certificateKubeconfig('dora', ['team-a']);
  const withCert = await request(`${front.proxy.url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    method: 'POST',
    dispatcher: front.client({ cert: dora.cert, key: dora.key }),
    headers: { ...bearer(token), 'content-type': 'application/json' },
    body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
  });
  t.equal(withCert.statusCode, 201);
  t.match(await withCert.body.json(), { status: { userInfo: { username: 'dora' } } });
});

t.test('the front-proxy certificate alone is no user: what a token request could fall back to', async (t) => {
  // A request on the front-proxy certificate with no X-Remote-User and no token: the apiserver
  // refuses it (401), so even the front-proxy connection would not lend an identity. The proxy
  // goes further and sends tokens over connections that present no certificate at all.
  const direct = writeKubeconfig(cp.apiservers[0]!.url, cp.pki.read('ca.crt'), { clientCertificate: cp.pki.read('front-proxy-client.crt'), clientKey: cp.pki.read('front-proxy-client.key') });
  const res = await kubectl(direct, ['get', 'pods']);
  t.equal(res.code, 1);
  t.match(res.stderr, /Unauthorized|provide credentials/);
});
