// The real kube-apiserver started with identity header names besides X-Remote-*: it reads them
// from the front proxy's connection as it reads X-Remote-*, so a client of the proxy that sends
// X-Other-Group: system:masters would be in that group. The proxy learns the names from
// kube-system/extension-apiserver-authentication (as kube-front-proxy:preflight, which needs the
// RoleBinding) and removes them from every request.
import t from 'tap';
import { Agent, request, type Dispatcher } from 'undici';
import { requireKubectl } from '../helpers/kubectl.js';
import { startControlPlane } from './control-plane.js';
import { ALICE, startProxyInFront } from './proxy-fixture.js';

requireKubectl();
const cp = await startControlPlane({
  kubelet: false,
  controllerManager: false,
  apiserverFlags: [
    // X-User first: the apiserver takes the first non-empty username header.
    '--requestheader-username-headers=X-User,X-Remote-User',
    '--requestheader-group-headers=X-Remote-Group,X-Other-Group',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-,X-Extra-',
    '--requestheader-uid-headers=X-Remote-Uid,X-Uid',
  ],
});
t.teardown(() => cp.stop());
t.comment(`kube-apiserver ${cp.version.replace(/^Kubernetes /, '')}`);
await cp.adminOk(['create', 'rolebinding', 'kube-front-proxy-preflight', '--namespace', 'kube-system', '--role', 'extension-apiserver-authentication-reader', '--user', 'kube-front-proxy:preflight']);

const SPOOF = { 'x-user': 'kubernetes-admin', 'X-Other-Group': 'system:masters', 'x-extra-scopes': 'all', 'X-UID': '0' };

interface UserInfo {
  username: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
}

async function review(dispatcher: Dispatcher, url: string, headers: Record<string, string>): Promise<UserInfo> {
  const res = await request(`${url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    dispatcher,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
  });
  const text = await res.body.text();
  if (res.statusCode !== 201) throw new Error(`${res.statusCode}: ${text}`);
  return (JSON.parse(text) as { status: { userInfo: UserInfo } }).status.userInfo;
}

t.test('the apiserver honours the extra names from a front proxy (the hole, straight at it)', async (t) => {
  const frontProxy = new Agent({ connect: { ca: cp.pki.read('ca.crt'), cert: cp.pki.read('front-proxy-client.crt'), key: cp.pki.read('front-proxy-client.key') } });
  t.teardown(() => frontProxy.close());
  const seen = await review(frontProxy, cp.apiservers[0]!.url, { 'x-remote-user': 'alice', ...SPOOF });
  t.equal(seen.username, 'kubernetes-admin');
  t.ok(seen.groups.includes('system:masters'), `groups ${JSON.stringify(seen.groups)}`);
  t.same(seen.extra, { scopes: ['all'] });
  t.equal(seen.uid, '0');
});

t.test('through the proxy: learned, and removed from every request', async (t) => {
  const front = await startProxyInFront(t, cp);
  const deadline = Date.now() + 15_000;
  while (!front.proxy.logs.some((l) => String(l.msg).startsWith('removing from every request'))) {
    if (Date.now() > deadline) throw new Error(`the proxy did not learn the names: ${front.proxy.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const line = front.proxy.logs.find((l) => String(l.msg).startsWith('removing from every request')) as { names?: string[]; prefixes?: string[] };
  t.same([...(line.names ?? [])].sort(), ['x-other-group', 'x-uid', 'x-user']);
  t.same(line.prefixes, ['x-extra-']);
  const client = front.client();
  t.teardown(() => client.close());
  const seen = await review(client, front.proxy.url, { authorization: `Basic ${Buffer.from(`${ALICE.name}:${ALICE.password}`).toString('base64')}`, ...SPOOF });
  t.same(seen, { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] }, 'no system:masters, no spoofed user, UID or extra');
});
