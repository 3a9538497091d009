// The real kube-apiserver decides on the identity the proxy forwards: whoami for password and
// certificate users, RBAC on a users-file group (the apiserver's own 403 elsewhere), spoofed
// identity headers without effect, impersonation authorized against the proxied user, and the
// audit log recording who acted and from which client address.
import t from 'tap';
import { Agent, request } from 'undici';
import { kubectl, requireKubectl, writeKubeconfig } from '../helpers/kubectl.js';
import { auditEventWhen, startControlPlane, type AuditEvent } from './control-plane.js';
import { ALICE, CAROL, startProxyInFront } from './proxy-fixture.js';

requireKubectl();
const cp = await startControlPlane({ kubelet: false });
t.teardown(() => cp.stop());
t.comment(`kube-apiserver ${cp.version.replace(/^Kubernetes /, '')}`);
const front = await startProxyInFront(t, cp);
const alice = front.passwordKubeconfig(ALICE);
const carol = front.passwordKubeconfig(CAROL);

// Pods in team-a may be listed by the users file's group `devs`; impersonation by group `ops`.
await cp.adminOk(['create', 'namespace', 'team-a']);
await cp.adminOk(['create', 'role', 'pod-reader', '-n', 'team-a', '--verb=get,list,watch', '--resource=pods']);
await cp.adminOk(['create', 'rolebinding', 'devs-read-pods', '-n', 'team-a', '--role=pod-reader', '--group=devs']);

async function whoami(kubeconfig: string, extra: string[] = []) {
  const res = await kubectl(kubeconfig, ['auth', 'whoami', '-o', 'json', ...extra]);
  if (res.code !== 0) throw new Error(`kubectl auth whoami failed: ${res.stderr}`);
  return (JSON.parse(res.stdout) as { status: { userInfo: { username: string; groups: string[]; extra?: Record<string, string[]> } } }).status.userInfo;
}

/** Waits for the audit event `match` accepts (the apiserver writes it as the response completes). */
async function auditEvent(match: (e: AuditEvent) => boolean): Promise<AuditEvent> {
  const found = await auditEventWhen(cp.apiservers[0]!.auditLog, match);
  if (!found) throw new Error('no such audit event within 10 s');
  return found;
}

t.test("auth whoami: the apiserver sees the users file's groups and the certificate's O values", async (t) => {
  t.same(await whoami(alice), { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] });
  t.same(await whoami(carol), { username: 'carol', groups: ['system:authenticated'] });
  const dora = await front.certificateKubeconfig('dora', ['team-a', 'team-b']);
  const throughProxy = await whoami(dora.kubeconfig);
  t.match(throughProxy, { username: 'dora', groups: ['team-a', 'team-b', 'system:authenticated'] });
  // The same certificate presented to the apiserver directly: the identity must be the same,
  // byte for byte, credential-id extra included.
  const direct = writeKubeconfig(cp.apiservers[0]!.url, cp.pki.read('ca.crt'), { clientCertificate: dora.cert, clientKey: dora.key });
  t.same(throughProxy, await whoami(direct), 'the same identity through the proxy as direct');
  t.match(throughProxy.extra, { 'authentication.kubernetes.io/credential-id': [/^X509SHA256=[0-9a-f]{64}$/] });
});

t.test("RBAC decides on the forwarded group; refusals are the apiserver's own", async (t) => {
  const allowed = await kubectl(alice, ['get', 'pods', '-n', 'team-a']);
  t.equal(allowed.code, 0, allowed.stderr);
  t.match(allowed.stderr, /No resources found in team-a namespace/);

  const elsewhere = await kubectl(alice, ['get', 'pods', '-n', 'default']);
  t.equal(elsewhere.code, 1);
  t.match(elsewhere.stderr, 'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default"');

  const unbound = await kubectl(carol, ['get', 'pods', '-n', 'team-a']);
  t.equal(unbound.code, 1);
  t.match(unbound.stderr, 'pods is forbidden: User "carol" cannot list resource "pods" in API group "" in the namespace "team-a"');

  // The Status body is the apiserver's: RBAC's reason and details, not a proxy answer.
  const raw = await request(`${front.proxy.url}/api/v1/namespaces/default/pods`, {
    dispatcher: front.client(),
    headers: { authorization: `Basic ${Buffer.from(`${ALICE.name}:${ALICE.password}`).toString('base64')}` },
  });
  t.equal(raw.statusCode, 403);
  t.match(await raw.body.json(), { kind: 'Status', reason: 'Forbidden', details: { kind: 'pods' }, code: 403 });
});

t.test('client-sent identity headers never change who the apiserver sees; audit has the client address', async (t) => {
  // From 127.0.0.2, so the client's address is told apart from the proxy's own (127.0.0.1).
  const spoofer = new Agent({
    localAddress: '127.0.0.2',
    connect: { ca: cp.pki.read('proxy-ca.crt'), servername: 'localhost' },
    keepAliveTimeout: 10,
    keepAliveMaxTimeout: 10,
  });
  t.teardown(() => spoofer.close());
  const marker = `spoof-${Date.now()}`;
  const res = await request(`${front.proxy.url}/apis/authentication.k8s.io/v1/selfsubjectreviews?marker=${marker}`, {
    dispatcher: spoofer,
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${CAROL.name}:${CAROL.password}`).toString('base64')}`,
      'content-type': 'application/json',
      'x-remote-user': 'kubernetes-admin',
      'X-Remote-Group': 'system:masters',
      'x-remote-extra-scopes': 'all',
      'x-remote-uid': '0',
    },
    body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
  });
  t.equal(res.statusCode, 201);
  t.same(((await res.body.json()) as { status: { userInfo: unknown } }).status.userInfo, { username: 'carol', groups: ['system:authenticated'] });

  const event = await auditEvent((e) => e.requestURI.includes(marker));
  t.equal(event.user.username, 'carol');
  t.same(event.user.groups, ['system:authenticated']);
  t.notOk(event.user.extra, 'no extra from the client');
  t.equal(event.sourceIPs?.[0], '127.0.0.2', `the client address comes first in sourceIPs: ${JSON.stringify(event.sourceIPs)}`);
});

t.test('kubectl --as: refused by the apiserver without impersonate rights, honoured with them, audited as both', async (t) => {
  const denied = await kubectl(alice, ['--as', 'bob', 'get', 'pods', '-n', 'team-a']);
  t.equal(denied.code, 1);
  t.match(denied.stderr, 'users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope');

  await cp.adminOk(['create', 'clusterrole', 'impersonator', '--verb=impersonate', '--resource=users,groups']);
  await cp.adminOk(['create', 'clusterrolebinding', 'ops-impersonate', '--clusterrole=impersonator', '--group=ops']);
  t.same(await whoami(alice, ['--as', 'bob', '--as-group', 'viewers', '--as-group', 'auditors']), { username: 'bob', groups: ['viewers', 'auditors', 'system:authenticated'] });

  const event = await auditEvent((e) => e.impersonatedUser?.username === 'bob');
  t.equal(event.user.username, 'alice');
  t.same(event.user.groups, ['devs', 'ops', 'system:authenticated']);
  t.same(event.impersonatedUser?.groups, ['viewers', 'auditors', 'system:authenticated']);
});
