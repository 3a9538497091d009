// A real Kubernetes control plane on loopback, built from Go modules by build.sh: etcd, one or
// more kube-apiservers started with kubeadm's flags, kube-controller-manager with the few
// controllers the tests need, and fake-kubelet (our kubelet stand-in for exec, attach,
// port-forward and logs) registered as Node `node-0` with Pod `default/pod-0` bound to it.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { buildKubeconfig } from '../../src/pki/kubeconfig.js';
import { kubectl, type KubectlOptions, type KubectlResult } from '../helpers/kubectl.js';
import { pollUntil } from '../helpers/raw-tls.js';
import { createClusterPki, type ClusterPki } from './cluster-pki.js';
import { freePort, startProcess, waitForLine, waitUntilReady, type ManagedProcess } from './processes.js';

const BUILD_SCRIPT = fileURLToPath(new URL('./build.sh', import.meta.url));

/** The binaries' folder; builds them first when the cache misses (minutes, cold). */
export function clusterBinaries(): string {
  try {
    return execFileSync(BUILD_SCRIPT, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  } catch {
    throw new Error('test/cluster/build.sh could not build the control plane (its last line above says why)');
  }
}

export interface ControlPlaneOptions {
  /** kube-apiservers sharing the one etcd (default 1). */
  apiservers?: number;
  /** Flags for every apiserver, replacing the harness's value of the same flag ("--name=value"). */
  apiserverFlags?: string[];
  /** kube-controller-manager (CSR signing, RBAC aggregation, service accounts); default true. */
  controllerManager?: boolean;
  /** fake-kubelet, Node node-0 and Pod pod-0; default true. */
  kubelet?: boolean;
}

export interface Apiserver {
  index: number;
  /** https://127.0.0.1:PORT */
  url: string;
  auditLog: string;
  running(): boolean;
  /** kill -9 (or another signal), waiting for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and waits for /readyz. */
  restart(): Promise<void>;
}

export interface ControlPlane {
  dir: string;
  pki: ClusterPki;
  /** What `kube-apiserver --version` printed, e.g. "Kubernetes v1.34.3". */
  version: string;
  apiservers: Apiserver[];
  /** A kubeconfig for kubernetes-admin (system:masters) straight to the first apiserver. */
  adminKubeconfig: string;
  /** kubectl as the admin, straight to the first apiserver. */
  admin(args: string[], options?: KubectlOptions): Promise<KubectlResult>;
  /** Like admin(), but throws with kubectl's stderr when it fails. */
  adminOk(args: string[], options?: KubectlOptions): Promise<string>;
  /** fake-kubelet's root: logs/<ns>_<pod>_<container>.log are what `kubectl logs` reads. */
  kubeletRoot: string;
  stop(): Promise<void>;
}

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const bin = clusterBinaries();
  const dir = mkdtempSync(join(tmpdir(), 'kfp-cluster-'));
  const processes: ManagedProcess[] = [];
  const stop = async () => {
    await Promise.all(processes.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    return await start(bin, dir, options, processes, stop);
  } catch (err) {
    await Promise.all(processes.map((p) => p.stop()));
    throw err;
  }
}

async function start(bin: string, dir: string, options: ControlPlaneOptions, processes: ManagedProcess[], stop: () => Promise<void>): Promise<ControlPlane> {
  const pki = await createClusterPki(join(dir, 'pki'));
  const version = execFileSync(join(bin, 'kube-apiserver'), ['--version'], { encoding: 'utf8' }).trim();
  const ca = pki.read('ca.crt');

  // etcd: one member on loopback; fsync off, since the data dies with the test.
  const etcdClient = await freePort();
  const etcdPeer = await freePort();
  const etcd = startProcess(
    'etcd',
    join(bin, 'etcd'),
    [
      '--name=default',
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeer}`,
      '--unsafe-no-fsync',
      '--log-level=warn',
    ],
    join(dir, 'etcd.log'),
  );
  processes.push(etcd);
  await waitUntilReady(etcd, 'health', async () => {
    const res = await request(`http://127.0.0.1:${etcdClient}/health`);
    return (await res.body.text()).includes('"health":"true"');
  });

  const kubeletRoot = join(dir, 'kubelet');
  mkdirSync(join(kubeletRoot, 'logs'), { recursive: true });
  const auditPolicy = join(dir, 'audit-policy.yaml');
  writeFileSync(auditPolicy, 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n');

  const count = options.apiservers ?? 1;
  const apiservers: Apiserver[] = [];
  for (let index = 0; index < count; index++) {
    const port = await freePort();
    const url = `https://127.0.0.1:${port}`;
    const auditLog = join(dir, `audit-${index}.log`);
    // Without the controller-manager no namespace gets its `default` ServiceAccount, which the
    // ServiceAccount admission plugin requires of every Pod.
    const withoutServiceAccounts = options.controllerManager === false ? ['--disable-admission-plugins=ServiceAccount'] : [];
    const flags = apiserverFlags(pki, { port, etcd: `http://127.0.0.1:${etcdClient}`, auditPolicy, auditLog }, [...withoutServiceAccounts, ...(options.apiserverFlags ?? [])]);
    let proc: ManagedProcess | undefined;
    const launch = async () => {
      proc = startProcess(`kube-apiserver-${index}`, join(bin, 'kube-apiserver'), flags, join(dir, `apiserver-${index}.log`));
      processes.push(proc);
      const current = proc;
      const probe = new Agent({ connect: { ca, servername: 'kubernetes' }, keepAliveTimeout: 10, keepAliveMaxTimeout: 10 });
      try {
        await waitUntilReady(current, '/readyz ok', async () => {
          const res = await request(`${url}/readyz`, { dispatcher: probe });
          return res.statusCode === 200 && (await res.body.text()) === 'ok';
        });
      } finally {
        await probe.close();
      }
    };
    apiservers.push({
      index,
      url,
      auditLog,
      running: () => proc?.running() ?? false,
      kill: async (signal = 'SIGKILL') => proc?.stop(signal),
      restart: launch,
    });
  }
  await Promise.all(apiservers.map((a) => a.restart()));

  const adminKubeconfig = join(dir, 'admin.kubeconfig');
  writeFileSync(
    adminKubeconfig,
    buildKubeconfig({
      server: apiservers[0]!.url,
      certificateAuthority: ca,
      user: 'kubernetes-admin',
      namespace: 'default',
      credentials: { clientCertificate: pki.read('admin.crt'), clientKey: pki.read('admin.key') },
    }),
    { mode: 0o600 },
  );
  const admin = (args: string[], opts?: KubectlOptions) => kubectl(adminKubeconfig, args, opts);
  const adminOk = async (args: string[], opts?: KubectlOptions) => {
    const result = await admin(args, opts);
    if (result.code !== 0) throw new Error(`kubectl ${args.join(' ')} (as admin) failed: ${result.stderr}`);
    return result.stdout;
  };

  if (options.controllerManager ?? true) {
    const kcm = startProcess(
      'kube-controller-manager',
      join(bin, 'kube-controller-manager'),
      [
        `--kubeconfig=${adminKubeconfig}`,
        '--controllers=csrsigning,csrapproving,csrcleaner,clusterrole-aggregation,root-ca-certificate-publisher-controller,serviceaccount,serviceaccount-token,namespace',
        `--cluster-signing-cert-file=${pki.file('ca.crt')}`,
        `--cluster-signing-key-file=${pki.file('ca.key')}`,
        `--service-account-private-key-file=${pki.file('sa.key')}`,
        `--root-ca-file=${pki.file('ca.crt')}`,
        '--leader-elect=false',
        '--secure-port=0',
        '--v=1',
      ],
      join(dir, 'controller-manager.log'),
    );
    processes.push(kcm);
    // Pods need the namespace's `default` ServiceAccount, which the controller creates.
    await waitUntilReady(kcm, 'the default ServiceAccount', async () => (await admin(['get', 'serviceaccount', 'default', '-o', 'name'])).code === 0);
  }

  if (options.kubelet ?? true) {
    const kubelet = startProcess(
      'fake-kubelet',
      join(bin, 'fake-kubelet'),
      ['--listen=127.0.0.1:0', `--tls-cert-file=${pki.file('kubelet.crt')}`, `--tls-private-key-file=${pki.file('kubelet.key')}`, `--client-ca-file=${pki.file('ca.crt')}`, `--root=${kubeletRoot}`],
      join(dir, 'kubelet.log'),
    );
    processes.push(kubelet);
    const kubeletPort = Number((await waitForLine(kubelet, /listening on 127\.0\.0\.1:(\d+)/))[1]);
    await registerNodeAndPod(adminOk, kubeletPort, options.controllerManager ?? true);
  }

  return {
    dir,
    pki,
    version,
    apiservers,
    adminKubeconfig,
    admin,
    adminOk,
    kubeletRoot,
    stop,
  };
}

interface ApiserverPlaces {
  port: number;
  etcd: string;
  auditPolicy: string;
  auditLog: string;
}

/** kubeadm's kube-apiserver flags (the static Pod manifest it writes), on loopback. */
function apiserverFlags(pki: ClusterPki, at: ApiserverPlaces, overrides: string[]): string[] {
  const f = pki.file;
  const flags = new Map<string, string>([
    ['--advertise-address', '127.0.0.1'],
    ['--bind-address', '127.0.0.1'],
    ['--secure-port', String(at.port)],
    ['--allow-privileged', 'true'],
    ['--authorization-mode', 'Node,RBAC'],
    ['--client-ca-file', f('ca.crt')],
    ['--enable-admission-plugins', 'NodeRestriction'],
    ['--enable-bootstrap-token-auth', 'true'],
    ['--etcd-servers', at.etcd],
    ['--kubelet-client-certificate', f('apiserver-kubelet-client.crt')],
    ['--kubelet-client-key', f('apiserver-kubelet-client.key')],
    ['--kubelet-certificate-authority', f('ca.crt')],
    ['--kubelet-preferred-address-types', 'InternalIP'],
    ['--proxy-client-cert-file', f('front-proxy-client.crt')],
    ['--proxy-client-key-file', f('front-proxy-client.key')],
    ['--requestheader-allowed-names', 'front-proxy-client'],
    ['--requestheader-client-ca-file', f('front-proxy-ca.crt')],
    ['--requestheader-extra-headers-prefix', 'X-Remote-Extra-'],
    ['--requestheader-group-headers', 'X-Remote-Group'],
    ['--requestheader-username-headers', 'X-Remote-User'],
    ['--service-account-issuer', 'https://kubernetes.default.svc.cluster.local'],
    ['--service-account-key-file', f('sa.pub')],
    ['--service-account-signing-key-file', f('sa.key')],
    ['--service-cluster-ip-range', '10.96.0.0/12'],
    ['--tls-cert-file', f('apiserver.crt')],
    ['--tls-private-key-file', f('apiserver.key')],
    ['--audit-policy-file', at.auditPolicy],
    ['--audit-log-path', at.auditLog],
    ['--profiling', 'false'],
  ]);
  for (const override of overrides) {
    const eq = override.indexOf('=');
    flags.set(eq === -1 ? override : override.slice(0, eq), eq === -1 ? 'true' : override.slice(eq + 1));
  }
  return [...flags].map(([name, value]) => `${name}=${value}`);
}

/** Node node-0 whose kubelet is fake-kubelet, and Pod default/pod-0 (container `main`) on it, Running. */
async function registerNodeAndPod(adminOk: (args: string[], o?: KubectlOptions) => Promise<string>, kubeletPort: number, serviceAccounts: boolean): Promise<void> {
  await adminOk(['apply', '-f', '-'], { stdin: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-0' } }) });
  await adminOk([
    'patch',
    'node',
    'node-0',
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({
      status: {
        addresses: [{ type: 'InternalIP', address: '127.0.0.1' }],
        daemonEndpoints: { kubeletEndpoint: { Port: kubeletPort } },
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'fake-kubelet', lastHeartbeatTime: new Date().toISOString(), lastTransitionTime: new Date().toISOString() }],
      },
    }),
  ]);
  await adminOk(['apply', '-f', '-'], {
    stdin: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'pod-0', namespace: 'default' },
      spec: { nodeName: 'node-0', automountServiceAccountToken: serviceAccounts ? undefined : false, containers: [{ name: 'main', image: 'fake', stdin: true }] },
    }),
  });
  await adminOk([
    'patch',
    'pod',
    'pod-0',
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({
      status: {
        phase: 'Running',
        conditions: [{ type: 'Ready', status: 'True' }],
        containerStatuses: [{ name: 'main', image: 'fake', imageID: '', ready: true, restartCount: 0, state: { running: { startedAt: new Date().toISOString() } } }],
      },
    }),
  ]);
}

/** Audit events (audit.k8s.io/v1, one JSON object per line) written so far. */
export function readAuditEvents(auditLog: string): AuditEvent[] {
  let text = '';
  try {
    text = readFileSync(auditLog, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as AuditEvent);
}

/**
 * The first ResponseComplete audit event `match` accepts, once the apiserver has written it (it
 * writes as the response completes, so a client may see the answer first); undefined after
 * `timeoutMs`.
 */
export async function auditEventWhen(auditLog: string, match: (e: AuditEvent) => boolean, timeoutMs = 10_000): Promise<AuditEvent | undefined> {
  const find = () => readAuditEvents(auditLog).find((e) => e.stage === 'ResponseComplete' && match(e));
  return pollUntil(find, (found) => found !== undefined, timeoutMs);
}

export interface AuditEvent {
  auditID: string;
  stage: string;
  verb: string;
  requestURI: string;
  user: { username: string; groups?: string[]; extra?: Record<string, string[]> };
  impersonatedUser?: { username: string; groups?: string[] };
  sourceIPs?: string[];
  responseStatus?: { code: number };
  objectRef?: { resource?: string; namespace?: string; name?: string };
}
