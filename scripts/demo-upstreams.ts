// The demo's apiserver: the real control plane of `npm run cluster` when its binaries are built,
// otherwise the tests' stand-in. Each says what it is and what it can do.

import { execFileSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { RawSettings } from '../src/config/index.js';
import { makePod, startApiServer } from '../standin/apiserver.js';
import { createTestPki } from '../test/helpers/pki.js';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';
import { proxySettings } from '../test/helpers/setup.js';

export interface DemoUpstream {
  /** One line for the banner. */
  description: string;
  /** What works and what does not, a line each. */
  notes: string[];
  /** The proxy's settings for it (everything but --listen). */
  settings: RawSettings;
  /** The CA of the proxy's serving certificate, for the kubeconfigs. */
  proxyCa: string;
  /** A client certificate for alice (groups devs, ops) that the proxy accepts. */
  alice: { cert: string; key: string };
  stop(): Promise<void>;
}

const BUILD_SCRIPT = join(PROJECT_ROOT, 'test', 'cluster', 'build.sh');

/**
 * The folder test/cluster/build.sh would print, when it already holds every binary (so starting
 * the cluster does not build for minutes); undefined otherwise. The folder name is computed the
 * way build.sh computes it, by the same shell pipeline.
 */
export function builtClusterBinaries(): string | undefined {
  try {
    const script = readFileSync(BUILD_SCRIPT, 'utf8');
    const k8s = /^K8S_VERSION=(\S+)$/m.exec(script)?.[1];
    const etcd = /^ETCD_VERSION=(\S+)$/m.exec(script)?.[1];
    const hashLine = /^sources_hash="\$\((.*)\)"$/m.exec(script)?.[1];
    if (!k8s || !etcd || !hashLine) return undefined;
    const hash = execFileSync('bash', ['-c', hashLine.replace('"$here/go"', JSON.stringify(join(PROJECT_ROOT, 'test', 'cluster', 'go')))], { encoding: 'utf8' }).trim();
    const out = join(process.env.KFP_CLUSTER_CACHE ?? join(homedir(), '.cache', 'kube-front-proxy'), `k8s-${k8s}-etcd-${etcd}-${hash}`);
    for (const binary of ['kube-apiserver', 'kube-controller-manager', 'fake-kubelet', 'etcd']) accessSync(join(out, binary), constants.X_OK);
    return out;
  } catch {
    return undefined;
  }
}

/** The stand-in (standin/apiserver.ts) on a fresh test PKI in `dir`. */
export async function startStandInUpstream(dir: string, usersFile: string): Promise<DemoUpstream> {
  const pki = await createTestPki(dir);
  const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert, clientCA: pki.pem['cluster-ca'].cert });
  // Something for `get pods -w` to show: pod-0 changes every 10 seconds.
  let version = 1000;
  const changes = setInterval(() => {
    const pod = makePod('default', 'pod-0', 0);
    apiserver.sendWatchEvent('MODIFIED', { ...pod, metadata: { ...pod.metadata, resourceVersion: String(++version), annotations: { 'demo/tick': String(version) } } });
  }, 10_000);
  changes.unref();
  return {
    description: `the tests' kube-apiserver stand-in at ${apiserver.url} (standin/apiserver.ts): it authenticates exactly like kube-apiserver, and serves little else`,
    notes: [
      'works: auth whoami; get pods (with -w, pod-0 changes every 10 s) and namespaces; exec, attach, cp and port-forward',
      '  on pod-0..2 (a few commands: echo, cat, sh -c; port-forward echoes)',
      'not there: deployments and every other kind, create/apply/delete, logs, auth can-i, explain: NotFound or ignored,',
      "  the stand-in's limits, not the proxy's",
      'a real kube-apiserver instead: test/cluster/build.sh (needs Go; about 5 minutes, once), then npm run demo again',
    ],
    settings: proxySettings(pki, { upstream: apiserver.url, usersFile }),
    proxyCa: pki.pem['proxy-ca'].cert,
    alice: pki.pem['user-alice'],
    stop: () => {
      clearInterval(changes);
      return apiserver.close();
    },
  };
}

/** `npm run cluster`'s control plane (etcd, kube-apiserver, kube-controller-manager, fake-kubelet). */
export async function startClusterUpstream(_dir: string, usersFile: string): Promise<DemoUpstream> {
  // Loaded only here: the stand-in demo does not need them.
  const { startControlPlane } = await import('../test/cluster/control-plane.js');
  const { proxySettingsFor } = await import('../test/cluster/proxy-fixture.js');
  const cp = await startControlPlane();
  try {
    await cp.adminOk(['create', 'rolebinding', 'devs-edit', '--clusterrole=edit', '--group=devs', '--namespace=default']);
    const alice = await cp.pki.issueUser('alice', { commonName: 'alice', organizations: ['devs', 'ops'] });
    return {
      description: `a real ${cp.version.replace('Kubernetes', 'kube-apiserver')} at ${cp.apiservers.map((a) => a.url).join(', ')}, with etcd, kube-controller-manager and fake-kubelet (npm run cluster's control plane)`,
      notes: [
        'everything kubectl does works: alice may edit namespace default (RoleBinding devs-edit, group devs);',
        '  exec, logs, cp and port-forward on Pod default/pod-0, whose "container" is this machine',
        `the admin, straight to the apiserver: kubectl --kubeconfig ${cp.adminKubeconfig} get pods`,
        `logs of every process: ${cp.dir} (removed at Ctrl-C)`,
      ],
      settings: proxySettingsFor(cp, usersFile),
      proxyCa: cp.pki.read('proxy-ca.crt'),
      alice: { cert: alice.cert, key: alice.key },
      stop: () => cp.stop(),
    };
  } catch (err) {
    await cp.stop();
    throw err;
  }
}
