// The container and deployment files: docker-compose.yml, Dockerfile, .dockerignore and
// deploy/*.yaml. Static checks (parsed with `yaml`, flags checked against the proxy's own
// settings table) plus Debian's `docker-compose config`, which CI installs (apt: docker-compose).
// No Docker engine and no cluster are needed. `kubectl apply --dry-run=client` is not used: it
// still needs API discovery from a reachable server.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { SETTINGS, loadConfig, type RawSettings } from '../src/config/index.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const ADMIN_PORT = 9443;
const PROXY_VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

// The apiserver's front-proxy settings, as kubeadm sets them and the proxy expects them.
const REQUESTHEADER_FLAGS: Record<string, string> = {
  '--requestheader-client-ca-file': '/pki/front-proxy-ca.crt',
  '--requestheader-allowed-names': 'front-proxy-client',
  '--requestheader-username-headers': 'X-Remote-User',
  '--requestheader-group-headers': 'X-Remote-Group',
  '--requestheader-extra-headers-prefix': 'X-Remote-Extra-',
};

type Obj = Record<string, any>;

function loadYamlDocs(rel: string): Obj[] {
  const text = readFileSync(join(ROOT, rel), 'utf8');
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw new Error(`${rel}: empty YAML stream`);
  const out: Obj[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${rel}: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as unknown;
    if (value !== null && value !== undefined) out.push(value as Obj);
  }
  return out;
}

const deployFiles = readdirSync(join(ROOT, 'deploy'))
  .filter((f) => /\.ya?ml$/.test(f))
  .map((f) => `deploy/${f}`);

/** Every pod spec in a list of Kubernetes objects (Pod, Deployment, ...). */
function podSpecs(objects: Obj[]): { name: string; spec: Obj }[] {
  const out: { name: string; spec: Obj }[] = [];
  for (const o of objects) {
    if (o.kind === 'Pod') out.push({ name: `Pod/${o.metadata.name}`, spec: o.spec });
    else if (o.spec?.template?.spec) out.push({ name: `${o.kind}/${o.metadata.name}`, spec: o.spec.template.spec });
  }
  return out;
}

/**
 * A tag with a version in it (major.minor at least, or only a major version for the Node base
 * image's release line, e.g. node:20-bookworm-slim), or a digest; never `latest` or no tag.
 */
function isPinned(image: string, versionPattern = /\d+\.\d+/): boolean {
  if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
  const lastSlash = image.lastIndexOf('/');
  const colon = image.indexOf(':', lastSlash + 1);
  if (colon < 0) return false;
  const tag = image.slice(colon + 1);
  return tag !== 'latest' && versionPattern.test(tag);
}

/** `--flag=value` / `--flag value` arguments as the proxy's `flags` object; unknown flags throw. */
function proxyFlags(args: string[]): Partial<Record<keyof RawSettings, unknown>> {
  const flags: Partial<Record<keyof RawSettings, unknown>> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === 'serve') continue;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unexpected argument ${JSON.stringify(arg)}`);
    const value = m[2] ?? args[++i];
    if (m[1] === 'config') continue;
    const spec = SETTINGS.find((s) => s.flag === m[1]);
    if (!spec) throw new Error(`--${m[1]} is not a setting of kube-front-proxy serve`);
    if (spec.kind === 'list') flags[spec.key] = [...((flags[spec.key] as string[] | undefined) ?? []), value];
    else flags[spec.key] = value;
  }
  return flags;
}

function flagValue(args: string[], flag: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) return args[i + 1];
    if (args[i]!.startsWith(`${flag}=`)) return args[i]!.slice(flag.length + 1);
  }
  return undefined;
}

function probePort(container: Obj, probe: Obj): number | undefined {
  const port = probe.httpGet?.port as number | string | undefined;
  if (typeof port === 'number') return port;
  return (container.ports as Obj[] | undefined)?.find((p) => p.name === port)?.containerPort as number | undefined;
}

t.test('every YAML file parses', async (t) => {
  t.ok(deployFiles.includes('deploy/static-pod.yaml') && deployFiles.includes('deploy/deployment.yaml'), 'deploy/ has the static pod and the deployment');
  for (const file of ['docker-compose.yml', ...deployFiles]) {
    t.doesNotThrow(() => loadYamlDocs(file), file);
  }
});

t.test('Dockerfile: two stages or more, runtime deps only, non-root, the CLI as entrypoint', async (t) => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  // Logical lines: comments dropped, continuations joined.
  const lines = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const froms = lines.filter((l) => /^FROM\s/i.test(l));
  t.ok(froms.length >= 2, `multi-stage (${froms.length} FROM lines)`);
  for (const from of froms) {
    const image = from.split(/\s+/)[1]!;
    t.ok(isPinned(image, /^\d+/), `${image} is pinned to a Node.js major version`);
  }
  t.ok(
    lines.some((l) => /^RUN\s.*npm ci --omit=dev/.test(l)),
    'runtime node_modules from npm ci --omit=dev',
  );
  t.ok(
    lines.some((l) => /^RUN\s.*npm run build/.test(l)),
    'dist/ from npm run build',
  );
  // The last stage is the image: its USER must not be root.
  const lastFrom = lines.findLastIndex((l) => /^FROM\s/i.test(l));
  const users = lines.slice(lastFrom).filter((l) => /^USER\s/i.test(l));
  t.equal(users.length >= 1, true, 'the final stage has a USER instruction');
  const user = users.at(-1)?.split(/\s+/)[1]?.split(':')[0];
  t.ok(user !== undefined && user !== 'root' && user !== '0', `USER ${user} is not root`);
  t.ok(lines.includes('ENTRYPOINT ["node", "/app/dist/cli.js"]'), 'ENTRYPOINT runs dist/cli.js');
  t.ok(lines.includes('CMD ["serve"]'), 'CMD serve');
  t.ok(
    lines.some((l) => /^EXPOSE\s/.test(l) && l.includes('8443') && l.includes(String(ADMIN_PORT))),
    'EXPOSE 8443 and the admin port',
  );
  // Files copied from the build context exist and are not excluded by .dockerignore.
  const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const entry of ['node_modules', 'dist', 'certs', '.git', 'test', 'bench', 'standin']) t.ok(ignored.includes(entry), `.dockerignore excludes ${entry}`);
  for (const line of lines.filter((l) => /^COPY\s/i.test(l) && !/--from=/.test(l))) {
    const sources = line
      .split(/\s+/)
      .slice(1, -1)
      .filter((s) => !s.startsWith('--'));
    for (const source of sources) {
      t.ok(existsSync(join(ROOT, source)), `COPY source ${source} exists`);
      t.notOk(ignored.includes(source), `COPY source ${source} is not in .dockerignore`);
    }
  }
});

t.test('docker-compose.yml: the demo control plane and the proxy in front of it', async (t) => {
  const [compose] = loadYamlDocs('docker-compose.yml');
  const services = compose!.services as Obj;
  t.same(Object.keys(services).sort(), ['etcd', 'kube-apiserver', 'pki', 'proxy']);

  for (const [name, svc] of Object.entries(services)) {
    if (svc.build !== undefined) {
      const context = typeof svc.build === 'string' ? svc.build : (svc.build.context ?? '.');
      const dockerfile = typeof svc.build === 'string' ? 'Dockerfile' : (svc.build.dockerfile ?? 'Dockerfile');
      t.ok(statSync(resolve(ROOT, context)).isDirectory(), `${name}: build context ${context} exists`);
      t.ok(existsSync(resolve(ROOT, context, dockerfile)), `${name}: ${dockerfile} exists`);
    } else {
      t.ok(isPinned(svc.image), `${name}: image ${svc.image} is pinned`);
    }
  }
  t.match(services.etcd.image, /^registry\.k8s\.io\/etcd:\d+\.\d+\.\d+-\d+$/);
  t.match(services['kube-apiserver'].image, /^registry\.k8s\.io\/kube-apiserver:v\d+\.\d+\.\d+$/);

  const apiserver = services['kube-apiserver'].command as string[];
  for (const [flag, value] of Object.entries(REQUESTHEADER_FLAGS)) {
    t.equal(flagValue(apiserver, flag), value, `kube-apiserver ${flag}=${value}`);
  }
  t.equal(flagValue(apiserver, '--client-ca-file'), '/pki/ca.crt');
  t.equal(flagValue(apiserver, '--proxy-client-cert-file'), '/pki/front-proxy-client.crt');
  t.equal(flagValue(apiserver, '--authorization-mode'), 'Node,RBAC');
  t.equal(flagValue(apiserver, '--secure-port'), '6443');

  // The one-shot PKI step runs before everything that reads the keys, and only writes once.
  const pkiScript = (services.pki.entrypoint as string[]).join(' ');
  t.match(pkiScript, /test -f \/pki\/ca\.crt \|\|/, 'pki init only when /pki is empty');
  t.match(pkiScript, /--apiserver-san kube-apiserver/, "the apiserver's certificate names its compose service");
  for (const name of ['kube-apiserver', 'proxy']) {
    t.equal(services[name].depends_on?.pki?.condition, 'service_completed_successfully', `${name} waits for pki`);
  }
  t.equal(services['kube-apiserver'].depends_on?.etcd?.condition, 'service_healthy', 'the apiserver waits for a healthy etcd');

  const proxy = services.proxy;
  const args = proxy.command as string[];
  t.equal(args[0], 'serve');
  const flags = proxyFlags(args);
  t.same(flags.upstreams, ['https://kube-apiserver:6443'], 'upstream is the compose apiserver');
  t.equal(flags.upstreamServerName, 'kubernetes');
  // The proxy accepts exactly these flags (no file access: loadConfig validates values only).
  t.doesNotThrow(() => loadConfig({ flags, env: {} }), 'the proxy flags form a valid configuration');
  t.ok((proxy.volumes as string[]).includes('pki:/pki:ro'), 'the proxy reads the PKI read-only');
  t.ok((proxy.ports as string[]).includes('8443:8443'), 'port 8443 published');
  t.ok((proxy.ports as string[]).includes(`127.0.0.1:${ADMIN_PORT}:${ADMIN_PORT}`), 'admin port published on loopback only');
  t.equal(flags.adminListen, `0.0.0.0:${ADMIN_PORT}`, 'admin listener reachable inside the container');
  t.match((proxy.healthcheck.test as string[]).join(' '), new RegExp(`127\\.0\\.0\\.1:${ADMIN_PORT}/healthz`), 'healthcheck on the admin port');
  // Every file the proxy is told to read lives in a mounted volume.
  const mounts = (proxy.volumes as string[]).map((v) => v.split(':')[1]!);
  for (const key of ['tlsCertFile', 'tlsPrivateKeyFile', 'clientCaFile', 'htpasswdFile', 'upstreamCaFile', 'proxyClientCertFile', 'proxyClientKeyFile'] as const) {
    const path = flags[key] as string;
    t.ok(
      mounts.some((m) => path.startsWith(`${m}/`)),
      `${key} ${path} is on a mounted volume`,
    );
  }
});

t.test('docker-compose config accepts docker-compose.yml', async (t) => {
  const result = spawnSync('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  if (result.error && (result.error as NodeJS.ErrnoException).code === 'ENOENT') {
    t.fail('docker-compose is not installed: this test needs it to validate docker-compose.yml (Debian: apt-get install -y docker-compose)');
    return;
  }
  t.error(result.error, 'docker-compose ran');
  t.equal(result.status, 0, `docker-compose config exits 0${result.status === 0 ? '' : `: ${result.stderr.trim()}`}`);
});

t.test('deploy/*.yaml: pinned images, probes on the admin port, locked-down containers', async (t) => {
  for (const file of deployFiles) {
    const objects = loadYamlDocs(file);
    for (const o of objects) {
      t.ok(o.apiVersion && o.kind && o.metadata?.name, `${file}: ${o.kind}/${o.metadata?.name} has apiVersion, kind and name`);
    }
    const pods = podSpecs(objects);
    t.ok(pods.length >= 1, `${file} has a pod`);
    for (const { name, spec } of pods) {
      for (const c of spec.containers as Obj[]) {
        t.ok(isPinned(c.image), `${file} ${name}: image ${c.image} is pinned`);
        if (/kube-front-proxy/.test(c.image)) t.ok((c.image as string).endsWith(`:${PROXY_VERSION}`), `${file}: the proxy image tag is the package version ${PROXY_VERSION}`);
        for (const kind of ['livenessProbe', 'readinessProbe'] as const) {
          const probe = c[kind] as Obj | undefined;
          t.ok(probe?.httpGet, `${file} ${name}: ${kind} is an httpGet`);
          if (!probe?.httpGet) continue;
          t.equal(probePort(c, probe), ADMIN_PORT, `${file} ${name}: ${kind} on the admin port`);
          t.equal(probe.httpGet.path, kind === 'livenessProbe' ? '/healthz' : '/readyz', `${file} ${name}: ${kind} path`);
        }
        const sc = c.securityContext as Obj;
        t.equal(sc?.allowPrivilegeEscalation, false, `${file} ${name}: no privilege escalation`);
        t.equal(sc?.readOnlyRootFilesystem, true, `${file} ${name}: read-only root filesystem`);
        t.same(sc?.capabilities?.drop, ['ALL'], `${file} ${name}: drops every capability`);
        t.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${file} ${name}: resource requests`);
      }
    }
  }
});

t.test("deploy/static-pod.yaml: beside kubeadm's apiserver", async (t) => {
  const [pod] = loadYamlDocs('deploy/static-pod.yaml');
  t.equal(pod!.kind, 'Pod');
  t.equal(pod!.metadata.namespace, 'kube-system');
  t.equal(pod!.spec.hostNetwork, true);
  t.equal(pod!.spec.priorityClassName, 'system-node-critical');
  const c = pod!.spec.containers[0] as Obj;
  const flags = proxyFlags(c.args as string[]);
  t.equal(flags.listen, '0.0.0.0:8443');
  t.equal(flags.adminListen, `127.0.0.1:${ADMIN_PORT}`, 'admin listener on the node loopback only');
  t.equal(c.livenessProbe.httpGet.host, '127.0.0.1', 'probes go to the loopback (hostNetwork)');
  t.equal(c.readinessProbe.httpGet.host, '127.0.0.1');
  t.doesNotThrow(() => loadConfig({ flags, env: {} }), 'the args form a valid configuration');
  const hostPaths = (pod!.spec.volumes as Obj[]).map((v) => v.hostPath?.path);
  t.ok(hostPaths.includes('/etc/kubernetes/pki') && hostPaths.includes('/etc/kube-front-proxy'), 'kubeadm PKI and the proxy directory from the host');
  t.ok(
    (c.volumeMounts as Obj[]).every((m) => m.readOnly === true),
    'every mount read-only',
  );
  // kubeadm's keys are root 0600: this pod runs as uid 0 on purpose, with no capabilities.
  t.equal(c.securityContext.runAsUser, 0);
});

t.test('deploy/deployment.yaml: in-cluster proxy', async (t) => {
  const objects = loadYamlDocs('deploy/deployment.yaml');
  const kinds = objects.map((o) => o.kind);
  for (const kind of ['Namespace', 'ServiceAccount', 'ConfigMap', 'Deployment', 'Service', 'PodDisruptionBudget']) {
    t.ok(kinds.includes(kind), `has a ${kind}`);
  }
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  t.equal(byKind('ServiceAccount')[0]!.automountServiceAccountToken, false);
  // Applying the file (again) must never replace the Secrets the header has the operator create.
  t.same(byKind('Secret'), [], 'no Secret in the file, placeholder or otherwise');
  const header = readFileSync(join(ROOT, 'deploy/deployment.yaml'), 'utf8').split('\napiVersion:')[0]!;
  const createdSecrets = new Set([...header.matchAll(/kubectl -n kube-front-proxy create secret (?:tls|generic) (\S+)/g)].map((m) => m[1]));
  const steps = [...header.matchAll(/^#\s+(\d)\. /gm)].map((m) => Number(m[1]));
  t.same(steps, [1, 2, 3, 4], 'numbered steps');
  t.ok(header.indexOf('kubectl create namespace kube-front-proxy') < header.indexOf('create secret'), 'the namespace before the Secrets in it');
  t.ok(header.indexOf('create secret') < header.indexOf('kubectl apply -f deploy/deployment.yaml'), 'the Secrets before the pods that mount them');
  t.match(header, /one year|expires/, 'says the front-proxy client certificate expires');

  const deployment = byKind('Deployment')[0]!;
  const pod = deployment.spec.template.spec as Obj;
  t.ok(deployment.spec.replicas >= 2, 'two replicas or more');
  t.ok(pod.affinity?.podAntiAffinity, 'spread over nodes');
  t.equal(pod.automountServiceAccountToken, false);
  t.equal(pod.securityContext.runAsNonRoot, true);
  t.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  const c = pod.containers[0] as Obj;
  t.equal(c.securityContext.runAsNonRoot, true);
  t.not(c.securityContext.runAsUser, 0);
  t.equal(c.securityContext.seccompProfile.type, 'RuntimeDefault');

  // The config file in the ConfigMap is one the proxy accepts, and its paths are mounted.
  const configMap = byKind('ConfigMap').find((m) => m.metadata.name === 'kube-front-proxy')!;
  const configArg = (c.args as string[]).find((a) => a.startsWith('--config='))!.slice('--config='.length);
  const configMount = (c.volumeMounts as Obj[]).find((m) => configArg.startsWith(`${m.mountPath}/`))!;
  t.equal(pod.volumes.find((v: Obj) => v.name === configMount.name).configMap.name, configMap.metadata.name, '--config comes from the ConfigMap');
  const dir = mkdtempSync(join(tmpdir(), 'kfp-deploy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, configMap.data[configArg.split('/').at(-1)!]);
  const config = loadConfig({ configFile: file, flags: {}, env: {} });
  t.same(
    config.upstreams.map((u) => u.hostname),
    ['kubernetes.default.svc'],
    'upstream is the cluster apiserver Service',
  );
  t.equal(config.adminListen?.port, ADMIN_PORT, 'admin listener on the probed port');
  const mountPaths = (c.volumeMounts as Obj[]).map((m) => m.mountPath as string);
  for (const key of ['tlsCertFile', 'tlsPrivateKeyFile', 'clientCaFile', 'htpasswdFile', 'upstreamCaFile', 'proxyClientCertFile', 'proxyClientKeyFile'] as const) {
    const path = config[key] as string;
    t.ok(
      mountPaths.some((m) => path.startsWith(`${m}/`)),
      `${key} ${path} is on a mounted volume`,
    );
  }
  // ConfigMaps the pod mounts are in this file (or kube-root-ca.crt, which the kubelet publishes); Secrets come from the header.
  const names = new Set(objects.map((o) => `${o.kind}/${o.metadata.name}`));
  for (const v of pod.volumes as Obj[]) {
    if (v.secret) t.ok(createdSecrets.has(v.secret.secretName), `Secret ${v.secret.secretName} is created by the header's commands`);
    if (v.configMap && v.configMap.name !== 'kube-root-ca.crt') t.ok(names.has(`ConfigMap/${v.configMap.name}`), `ConfigMap ${v.configMap.name} is defined`);
  }

  const service = byKind('Service')[0]!;
  t.same(
    service.spec.ports.map((p: Obj) => [p.port, p.targetPort]),
    [[443, 'https']],
  );
  t.equal(c.ports.find((p: Obj) => p.name === 'https').containerPort, 8443, 'Service 443 → 8443');
  const pdb = byKind('PodDisruptionBudget')[0]!;
  t.same(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels, 'PDB selects the Deployment');
  t.same(service.spec.selector, deployment.spec.selector.matchLabels, 'Service selects the Deployment');
});
