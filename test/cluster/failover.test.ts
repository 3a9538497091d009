// Three real kube-apiservers on one etcd behind one proxy, each with --goaway-chance set, under
// a steady load of GETs and 20 client-node informers: one apiserver is killed with SIGKILL.
// No GET fails, every informer receives the next event (its watch re-established through the
// proxy on a live apiserver), /readyz names the dead one, and started again it rejoins.
import t from 'tap';
import { CoreV1Api, KubeConfig, makeInformer, type V1ConfigMap } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { requireKubectl } from '../helpers/kubectl.js';
import { pollUntil } from '../helpers/raw-tls.js';
import { startControlPlane } from './control-plane.js';
import { startProxyInFront } from './proxy-fixture.js';

requireKubectl();
// --goaway-chance: the apiserver sends GOAWAY after this share of its HTTP/2 requests (kube's
// own way to rebalance clients over apiservers); the proxy must absorb it.
const cp = await startControlPlane({ apiservers: 3, kubelet: false, controllerManager: false, apiserverFlags: ['--goaway-chance=0.02'] });
t.teardown(() => cp.stop());
const front = await startProxyInFront(t, cp, { settings: { healthInterval: '200ms', unhealthyThreshold: 1, healthyThreshold: 1 } });
await cp.adminOk(['create', 'clusterrolebinding', 'ops-admin', '--clusterrole=cluster-admin', '--group=ops']);
await cp.adminOk(['create', 'namespace', 'failover']);
await cp.adminOk(['-n', 'failover', 'create', 'configmap', 'steady', '--from-literal=a=1']);
const operator = await front.certificateKubeconfig('olga', ['ops']);

/** GETs through the proxy, `inFlight` at a time, until stop(); counts what the client saw. */
function steadyLoad(inFlight: number) {
  const client = front.client({ cert: operator.cert, key: operator.key });
  const seen = { ok: 0, failed: [] as string[] };
  let running = true;
  const loop = async () => {
    while (running) {
      try {
        const res = await request(`${front.proxy.url}/api/v1/namespaces/failover/configmaps/steady`, { dispatcher: client });
        await res.body.text();
        if (res.statusCode === 200) seen.ok++;
        else seen.failed.push(`HTTP ${res.statusCode}`);
      } catch (err) {
        seen.failed.push((err as Error).message);
      }
    }
  };
  const loops = Array.from({ length: inFlight }, loop);
  return {
    seen,
    async stop() {
      running = false;
      await Promise.all(loops);
      await client.close();
    },
  };
}

async function readyz(): Promise<{ status: number; text: string }> {
  const res = await request(`${front.proxy.adminUrl}/readyz`);
  return { status: res.statusCode, text: await res.body.text() };
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const value = await pollUntil(probe, Boolean, timeoutMs);
  if (!value) throw new Error(`timed out waiting for ${what}`);
  return value;
}

t.test('GETs with GOAWAYs: none fails', async (t) => {
  const load = steadyLoad(4);
  await until('1,000 GETs', async () => load.seen.ok >= 1000 || load.seen.failed.length > 0);
  await load.stop();
  t.same(load.seen.failed, [], `${load.seen.ok} GETs, none failed`);
});

t.test('kill -9 one apiserver under load and 20 informers; it rejoins when started again', async (t) => {
  const kc = new KubeConfig();
  kc.loadFromString(readFileSync(operator.kubeconfig, 'utf8'));
  const api = kc.makeApiClient(CoreV1Api);
  let stopping = false;
  const informers = Array.from({ length: 20 }, () => {
    const informer = makeInformer<V1ConfigMap>(kc, '/api/v1/namespaces/failover/configmaps', () => api.listNamespacedConfigMap({ namespace: 'failover' }));
    const names = new Set<string>();
    informer.on('add', (cm) => names.add(cm.metadata!.name!));
    // client-node's informer stops on a watch error and leaves the restart to its user.
    informer.on('error', () => void (stopping || informer.start()));
    return { informer, names };
  });
  await Promise.all(informers.map((i) => i.informer.start()));
  t.teardown(() => ((stopping = true), Promise.all(informers.map((i) => i.informer.stop()))));
  await until('every informer listed', async () => informers.every((i) => i.names.has('steady')));

  const load = steadyLoad(4);
  await until('GETs under way', async () => load.seen.ok >= 200);
  const victim = cp.apiservers[1]!;
  await victim.kill('SIGKILL');
  const readyText = await until('/readyz naming the dead apiserver', async () => {
    const r = await readyz();
    return r.text.includes(`[-]${victim.url}`) && r;
  });
  t.equal(readyText.status, 200, 'still ready: two of three healthy');
  t.match(readyText.text, 'ok: 2 of 3 upstreams healthy');

  // Every informer sees an object created after the kill: its watch runs on a live apiserver.
  await cp.adminOk(['-n', 'failover', 'create', 'configmap', 'after-kill']);
  await until('every informer saw after-kill', async () => informers.every((i) => i.names.has('after-kill')));
  const okAtKill = load.seen.ok;
  await until('200 more GETs after the kill', async () => load.seen.ok >= okAtKill + 200);

  await victim.restart();
  await until('/readyz with all three healthy', async () => (await readyz()).text.includes('ok: 3 of 3 upstreams healthy'));
  const rejoined = await until('a request served by the restarted apiserver', async () =>
    front.proxy.logs.some((l) => l.upstream === victim.url && typeof l.status === 'number' && l.status === 200 && Date.parse(String(l.time)) > Date.now() - 10_000),
  );
  t.ok(rejoined, 'the restarted apiserver serves requests again');
  await cp.adminOk(['-n', 'failover', 'create', 'configmap', 'after-restart']);
  await until('every informer saw after-restart', async () => informers.every((i) => i.names.has('after-restart')));
  await load.stop();
  t.same(load.seen.failed, [], `${load.seen.ok} GETs across the kill and the restart, none failed`);
});
