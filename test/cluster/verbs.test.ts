// kubectl's everyday verbs through the proxy against the real kube-apiserver: reads, chunked
// lists, writes (create, server-side apply, patch, delete), a watch that sees another client's
// change, discovery, explain and OpenAPI, can-i, and a CRD created and used.
import t from 'tap';
import { kubectl, requireKubectl } from '../helpers/kubectl.js';
import { readAuditEvents, startControlPlane } from './control-plane.js';
import { startProxyInFront, type ProxyInFront } from './proxy-fixture.js';
import { spawnKubectl } from './watch-process.js';

requireKubectl();
const cp = await startControlPlane({ kubelet: false });
t.teardown(() => cp.stop());
const ERIN = { name: 'erin', password: 'erin-password-3', groups: ['platform'] };
const front: ProxyInFront = await startProxyInFront(t, cp, { users: [ERIN] });
const erin = front.passwordKubeconfig(ERIN);
await cp.adminOk(['create', 'clusterrolebinding', 'platform-admin', '--clusterrole=cluster-admin', '--group=platform']);
await cp.adminOk(['create', 'namespace', 'verbs']);

async function ok(args: string[], stdin?: string): Promise<string> {
  const res = await kubectl(erin, [...args], stdin === undefined ? {} : { stdin });
  if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${res.stderr}`);
  return res.stdout;
}

t.test('create, get, server-side apply, patch, delete', async (t) => {
  t.match(await ok(['-n', 'verbs', 'create', 'configmap', 'one', '--from-literal=a=1']), 'configmap/one created');
  t.same(JSON.parse(await ok(['-n', 'verbs', 'get', 'configmap', 'one', '-o', 'json'])).data, { a: '1' });

  const applied = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'one', namespace: 'verbs' }, data: { a: '1', b: '2' } };
  t.match(await ok(['apply', '--server-side', '--field-manager=erin-tool', '-f', '-'], JSON.stringify(applied)), 'configmap/one serverside-applied');
  const afterApply = JSON.parse(await ok(['-n', 'verbs', 'get', 'configmap', 'one', '-o', 'json', '--show-managed-fields']));
  t.same(afterApply.data, { a: '1', b: '2' });
  t.ok(
    afterApply.metadata.managedFields.some((m: { manager: string; operation: string }) => m.manager === 'erin-tool' && m.operation === 'Apply'),
    'the apply is recorded under its field manager',
  );

  t.match(await ok(['-n', 'verbs', 'patch', 'configmap', 'one', '--type=merge', '-p', '{"data":{"c":"3"}}']), 'configmap/one patched');
  t.match(await ok(['-n', 'verbs', 'patch', 'configmap', 'one', '-p', '{"metadata":{"labels":{"tier":"x"}}}']), 'configmap/one patched', 'strategic merge patch');
  t.match(await ok(['-n', 'verbs', 'patch', 'configmap', 'one', '--type=json', '-p', '[{"op":"remove","path":"/data/a"}]']), 'configmap/one patched');
  const patched = JSON.parse(await ok(['-n', 'verbs', 'get', 'configmap', 'one', '-o', 'json']));
  t.same(patched.data, { b: '2', c: '3' });
  t.same(patched.metadata.labels, { tier: 'x' });

  t.match(await ok(['-n', 'verbs', 'delete', 'configmap', 'one']), 'configmap "one" deleted');
  const gone = await kubectl(erin, ['-n', 'verbs', 'get', 'configmap', 'one']);
  t.equal(gone.code, 1);
  t.match(gone.stderr, 'Error from server (NotFound): configmaps "one" not found');
});

t.test('a list in chunks (--chunk-size) is paged by the apiserver', async (t) => {
  const items = Array.from({ length: 23 }, (_, i) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `chunk-${i}`, namespace: 'verbs' } }));
  await ok(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
  const names = (await ok(['-n', 'verbs', 'get', 'configmaps', '--chunk-size=5', '-o', 'name'])).trim().split('\n');
  t.equal(names.filter((n) => n.startsWith('configmap/chunk-')).length, 23);
  const pages = readAuditEvents(cp.apiservers[0]!.auditLog).filter((e) => e.user.username === 'erin' && e.verb === 'list' && e.requestURI.includes('limit=5'));
  t.ok(pages.filter((e) => e.requestURI.includes('continue=')).length >= 4, `5 pages or more, each after the first with a continue token (saw ${pages.length})`);
});

t.test("get -w sees another client's changes", async (t) => {
  await ok(['-n', 'verbs', 'create', 'configmap', 'watched', '--from-literal=v=0']);
  const watch = spawnKubectl(erin, ['-n', 'verbs', 'get', 'configmap', 'watched', '-w', '-o', 'jsonpath={.data.v}{"\\n"}']);
  t.teardown(() => watch.stop());
  await watch.waitFor(/^0$/m);
  for (const v of ['1', '2']) {
    await cp.adminOk(['-n', 'verbs', 'patch', 'configmap', 'watched', '--type=merge', '-p', JSON.stringify({ data: { v } })]);
    await watch.waitFor(new RegExp(`^${v}$`, 'm'));
  }
  await cp.adminOk(['-n', 'verbs', 'delete', 'configmap', 'watched']);
  await watch.waitFor(/^2\n2$/m);
  t.pass('the watch saw each change and the deletion');
});

t.test('discovery, explain, OpenAPI v3, can-i', async (t) => {
  const resources = await ok(['api-resources', '-o', 'name']);
  t.match(resources, /^configmaps$/m);
  t.match(resources, /^customresourcedefinitions\.apiextensions\.k8s\.io$/m);
  t.match(await ok(['explain', 'deployment.spec.replicas']), /FIELD:\s+replicas <integer>/);
  t.match(JSON.parse(await ok(['get', '--raw', '/openapi/v3'])), { paths: { 'api/v1': {} } });
  t.equal((await ok(['auth', 'can-i', 'delete', 'nodes'])).trim(), 'yes');
  const viewer = await front.certificateKubeconfig('viktor', ['nobody']);
  const cannot = await kubectl(viewer.kubeconfig, ['auth', 'can-i', 'delete', 'nodes']);
  t.equal(cannot.stdout.trim(), 'no', 'the apiserver answers for the certificate user');
  t.equal(cannot.code, 1);
});

t.test('a CRD created and used through the proxy', async (t) => {
  const crd = {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: 'widgets.example.com' },
    spec: {
      group: 'example.com',
      scope: 'Namespaced',
      names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
      versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', properties: { size: { type: 'integer' } } } } } } }],
    },
  };
  await ok(['apply', '-f', '-'], JSON.stringify(crd));
  await ok(['wait', '--for=condition=Established', 'crd/widgets.example.com', '--timeout=30s']);
  // Discovery of the new group reaches kubectl through the proxy once the apiserver serves it.
  const widget = { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w1', namespace: 'verbs' }, spec: { size: 3 } };
  let created = await kubectl(erin, ['apply', '--server-side', '-f', '-'], { stdin: JSON.stringify(widget) });
  const deadline = Date.now() + 15_000;
  while (created.code !== 0 && Date.now() < deadline) created = await kubectl(erin, ['apply', '--server-side', '-f', '-'], { stdin: JSON.stringify(widget) });
  t.equal(created.code, 0, created.stderr);
  t.equal(JSON.parse(await ok(['-n', 'verbs', 'get', 'widgets', 'w1', '-o', 'json'])).spec.size, 3);
  const invalid = await kubectl(erin, ['-n', 'verbs', 'patch', 'widget', 'w1', '--type=merge', '-p', '{"spec":{"size":"big"}}']);
  t.equal(invalid.code, 1);
  t.match(invalid.stderr, /spec.size: Invalid value: "string": spec.size in body must be of type integer/);
});
