// `npm run cluster`: the real control plane the cluster tests use (etcd, kube-apiserver,
// kube-controller-manager, fake-kubelet with Pod default/pod-0), with the proxy in front of it,
// for trying things by hand. Prints kubeconfigs (through the proxy and straight to the
// apiserver) and runs until Ctrl-C.
//
//   npm run cluster [-- --apiservers 3]
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane } from './control-plane.js';
import { ALICE, startProxyInFront } from './proxy-fixture.js';

const { values } = parseArgs({ options: { apiservers: { type: 'string', default: '1' } } });
const started = Date.now();
const cp = await startControlPlane({ apiservers: Number(values.apiservers) });
const teardowns: (() => unknown)[] = [];
const front = await startProxyInFront({ teardown: (fn) => teardowns.push(fn) }, cp, { settings: { workers: 2 } });
await cp.adminOk(['create', 'rolebinding', 'devs-edit', '--clusterrole=edit', '--group=devs', '--namespace=default']);
const alice = front.passwordKubeconfig(ALICE);
const bob = await front.certificateKubeconfig('bob', ['devs']);
const note = join(cp.dir, 'README.txt');
const lines = [
  `${cp.version.replace('Kubernetes', 'kube-apiserver')} x${cp.apiservers.length} (${cp.apiservers.map((a) => a.url).join(', ')}), ready in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  `proxy: ${front.proxy.url} (admin ${front.proxy.adminUrl}); the users file is ${front.usersFile}`,
  '',
  `  kubectl --kubeconfig ${alice} auth whoami                # alice, password, groups devs,ops (edit in default)`,
  `  kubectl --kubeconfig ${bob.kubeconfig} exec pod-0 -- ls / # bob, client certificate, group devs`,
  `  kubectl --kubeconfig ${cp.adminKubeconfig} get pods       # the admin, straight to the apiserver`,
  '',
  `Logs of every process and the apiservers' audit logs: ${cp.dir}`,
  'Ctrl-C stops everything and removes that folder.',
];
writeFileSync(note, `${lines.join('\n')}\n`);
console.log(lines.join('\n'));

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  for (const teardown of teardowns.reverse()) await teardown();
  await cp.stop();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
