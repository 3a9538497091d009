// A second real client, @kubernetes/client-node, through the proxy against the real apiserver,
// with a client certificate and with a password: list, Watch, Exec over its WebSocket, and a
// log follow.
import t from 'tap';
import { CoreV1Api, Exec, KubeConfig, Log, Watch, type V1Status } from '@kubernetes/client-node';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { requireKubectl } from '../helpers/kubectl.js';
import { startControlPlane } from './control-plane.js';
import { startProxyInFront } from './proxy-fixture.js';

requireKubectl();
const cp = await startControlPlane();
t.teardown(() => cp.stop());
const PAT = { name: 'pat', password: 'pat-password-4', groups: ['platform'] };
const front = await startProxyInFront(t, cp, { users: [PAT] });
await cp.adminOk(['create', 'clusterrolebinding', 'platform-admin', '--clusterrole=cluster-admin', '--group=platform']);
const certificateUser = await front.certificateKubeconfig('quinn', ['platform']);

const configs = {
  'client certificate': certificateUser.kubeconfig,
  password: front.passwordKubeconfig(PAT),
};

/** Collects what a Writable receives; resolves waitFor() once it contains `text`. */
function sink() {
  const stream = new PassThrough();
  let text = '';
  const waiters: (() => void)[] = [];
  stream.on('data', (d: Buffer) => ((text += d.toString()), waiters.splice(0).forEach((w) => w())));
  return {
    stream,
    text: () => text,
    waitFor: (wanted: string) =>
      new Promise<void>((resolve) => {
        const check = () => (text.includes(wanted) ? resolve() : waiters.push(check));
        check();
      }),
  };
}

for (const [kind, path] of Object.entries(configs)) {
  t.test(`client-node with a ${kind}`, async (t) => {
    const kc = new KubeConfig();
    kc.loadFromString(readFileSync(path, 'utf8'));
    const api = kc.makeApiClient(CoreV1Api);

    const pods = await api.listNamespacedPod({ namespace: 'default' });
    t.same(
      pods.items.map((p) => p.metadata?.name),
      ['pod-0'],
      'list',
    );

    // Watch: an event made by another client arrives.
    const name = `watched-${kind.replace(/\W/g, '')}`;
    const events: string[] = [];
    let seen: () => void = () => undefined;
    const added = new Promise<void>((resolve) => (seen = resolve));
    const watch = await new Watch(kc).watch(
      '/api/v1/namespaces/default/configmaps',
      {},
      (phase, obj: { metadata: { name: string } }) => {
        events.push(`${phase} ${obj.metadata.name}`);
        if (obj.metadata.name === name) seen();
      },
      () => undefined,
    );
    await cp.adminOk(['create', 'configmap', name]);
    await added;
    watch.abort();
    t.ok(events.includes(`ADDED ${name}`), 'Watch received the ADDED event');

    // Exec over client-node's WebSocket (v4/v5 channel protocol).
    const stdout = sink();
    const stderr = sink();
    const status = await new Promise<V1Status>((resolve, reject) => {
      new Exec(kc).exec('default', 'pod-0', 'main', ['sh', '-c', 'cat; echo to-stderr >&2; exit 3'], stdout.stream, stderr.stream, Readable.from([`stdin for ${kind}\n`]), false, resolve).catch(reject);
    });
    t.match(status, { status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '3' }] } });
    t.equal(stdout.text(), `stdin for ${kind}\n`);
    t.equal(stderr.text(), 'to-stderr\n');

    // Log follow: a line written after the follow began arrives.
    const logFile = join(cp.kubeletRoot, 'logs', 'default_pod-0_main.log');
    writeFileSync(logFile, 'before\n');
    const logs = sink();
    const follow = await new Log(kc).log('default', 'pod-0', 'main', logs.stream, { follow: true });
    await logs.waitFor('before\n');
    appendFileSync(logFile, `after, for ${kind}\n`);
    await logs.waitFor(`after, for ${kind}\n`);
    follow.abort();
    t.pass('log follow delivered a line appended while following');
  });
}
