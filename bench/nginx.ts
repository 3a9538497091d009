// Issue 8: the reference point, the nginx setup of README "Why", measured the way bench.ts
// measures the proxy. nginx (Debian's package) in front of the same stand-in:
//
//   - passwords: `auth_basic_user_file` over the same users file (bcrypt; Debian 12's libxcrypt
//     crypt() takes $2b$/$2y$, and nginx reads the proxy's third "groups" field as a comment),
//     `proxy_set_header X-Remote-User $remote_user`: one bcrypt per request, every request;
//   - client certificates: `ssl_verify_client optional` with the user CA; X-Remote-User is the
//     certificate's CN (a `map` on $ssl_client_s_dn); basic auth is switched off for a verified
//     certificate (auth_basic takes a variable: "off" disables it);
//   - upstream: `proxy_ssl_certificate` front-proxy-client, the cluster CA verified, name
//     "kubernetes", keep-alive connections to the apiserver (`upstream { keepalive }`), buffering
//     off (watches), the client's X-Remote-User/-Group/-Uid and Authorization cleared (no groups:
//     nginx has no way to send one X-Remote-Group per certificate O);
//   - HTTP/2 and HTTP/1.1 offered (ALPN) like the proxy; an access log (buffered) like the
//     proxy's traffic log; worker_processes 1, to compare with one proxy process, and `auto`.
//
// Standalone (installs nginx-light if it is missing and we are root; builds nothing, the proxy
// is not involved):  node --import tsx bench/nginx.ts
// Settings (env): BENCH_SECONDS (5), BENCH_WARMUP_SECONDS (1), BENCH_CONNECTIONS (50),
// BENCH_NGINX_WORKERS ("1,auto"). Writes bench/results/nginx.md.

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool, request, type Dispatcher } from 'undici';
import { basicAuth } from '../test/helpers/clients.js';
import { createTestPki, type PkiName, type TestPki } from '../test/helpers/pki.js';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';
import { ALICE, bcryptLine, writeUsersFile } from '../test/helpers/setup.js';
import { runLoad, type LoadGroup } from './load.js';
import { PAYLOAD_PATH } from './payload.js';
import { cpuSeconds, installCleanup, machineBusySeconds, spawnNode, waitForJsonLine } from './processes.js';
import { markdown, textTable, type Ratio, type Row } from './report.js';
import { envNumber } from './env.js';

/** The small GET of bench.ts: one Pod, ~600 bytes. */
export const SMALL_PATH = '/api/v1/namespaces/default/pods/pod-0';

// ---------------------------------------------------------------------------------------------
// Installing and running nginx

/** The nginx binary, installing Debian's nginx-light (or nginx) when missing and we are root; undefined with the reason when that cannot be. */
export function ensureNginx(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): { binary: string; version: string } | { binary: undefined; reason: string } {
  const found = findNginx();
  if (found) return found;
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return { binary: undefined, reason: 'nginx is not installed and installing it needs root (apt-get install nginx-light)' };
  if (!existsSync('/usr/bin/apt-get')) return { binary: undefined, reason: 'nginx is not installed and there is no apt-get to install it with' };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (pkg: string): boolean => {
    try {
      log(`bench: installing ${pkg} (apt-get install -y --no-install-recommends ${pkg})`);
      execFileSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      return true;
    } catch {
      return false;
    }
  };
  const attempt = (): boolean => install('nginx-light') || install('nginx');
  if (!attempt()) {
    // An image without package lists: fetch them once and try again.
    try {
      execFileSync('apt-get', ['update'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      return { binary: undefined, reason: `apt-get update failed: ${(err as Error).message.split('\n')[0]}` };
    }
    if (!attempt()) return { binary: undefined, reason: 'apt-get install nginx-light and nginx both failed' };
  }
  return findNginx() ?? { binary: undefined, reason: 'nginx was installed but no nginx binary is on /usr/sbin or PATH' };
}

function findNginx(): { binary: string; version: string } | undefined {
  for (const binary of ['/usr/sbin/nginx', 'nginx']) {
    // `nginx -v` prints "nginx version: nginx/1.22.1" to stderr.
    const run = spawnSync(binary, ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (run.status === 0) return { binary, version: `${run.stderr}${run.stdout}`.trim() };
  }
  return undefined;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  server.close();
  await once(server, 'close');
  return port;
}

export interface NginxOptions {
  /** `worker_processes`: 1 (one core, like one proxy process) or 'auto' (one per CPU). */
  workerProcesses?: number | 'auto';
  /** Directory for the config, logs, pid and temp files (default: a new one under the OS temp dir, removed by stop()). */
  dir?: string;
  binary?: string;
}

/**
 * The files of nginx's two TLS legs: what it serves to clients (and the CA their certificates
 * must chain to), and its front-proxy identity towards the apiserver (and the apiserver's CA and
 * name). The stand-in's PKI and the real cluster's (`pki init`) name them differently.
 */
export interface NginxTls {
  servingCert: string;
  servingKey: string;
  /** PEM text of the CA of the serving certificate (for the readiness probe); the name served is "localhost". */
  servingCaPem: string;
  clientCa: string;
  proxyClientCert: string;
  proxyClientKey: string;
  upstreamCa: string;
  /** The apiserver certificate's name ("kubernetes" for kubeadm's). */
  upstreamName: string;
}

/** nginx's files in the bench's stand-in PKI (test/helpers/pki.ts). */
export function standinNginxTls(pki: TestPki): NginxTls {
  return {
    servingCert: pki.path('proxy-server', 'crt'),
    servingKey: pki.path('proxy-server', 'key'),
    servingCaPem: pki.pem['proxy-ca'].cert,
    clientCa: pki.path('user-ca', 'crt'),
    proxyClientCert: pki.path('front-proxy-client', 'crt'),
    proxyClientKey: pki.path('front-proxy-client', 'key'),
    upstreamCa: pki.path('cluster-ca', 'crt'),
    upstreamName: 'kubernetes',
  };
}

export interface NginxServer {
  /** https://127.0.0.1:PORT (serving certificate from NginxTls, name localhost). */
  url: string;
  /** The master process (the workers are its children: treeCpuSeconds(pid) is nginx's CPU). */
  pid: number;
  /** Master and workers (their CPU is the server's). */
  pids(): number[];
  configFile: string;
  assertAlive(): void;
  stop(): Promise<void>;
}

/**
 * nginx's configuration for the README's setup (passwords), plus the client-certificate path,
 * in one server block: a verified certificate's CN is the user and switches auth_basic off;
 * without one, auth_basic over the users file. Both benches (stand-in and real apiserver) use it.
 */
export function nginxConfig(tls: NginxTls, upstreamUrl: string, usersFile: string, port: number, dir: string, workerProcesses: number | 'auto' = 1): string {
  const upstream = new URL(upstreamUrl);
  return `# kube-front-proxy bench: the nginx setup of README "Why", plus client certificates.
${process.getuid?.() === 0 ? '# Workers read the users file (mode 0600, root) on every request.\nuser root;\n' : ''}worker_processes ${workerProcesses};
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 16384; }

http {
  access_log ${join(dir, 'access.log')} combined buffer=64k flush=1s;
  client_body_temp_path ${join(dir, 'client_body')};
  proxy_temp_path ${join(dir, 'proxy_temp')};
  ssl_protocols TLSv1.2 TLSv1.3;

  upstream apiserver {
    server ${upstream.hostname}:${upstream.port};
    keepalive 128;
  }

  # CN of a verified client certificate ($ssl_client_s_dn is RFC 2253: "CN=alice,O=ops,O=devs").
  map $ssl_client_s_dn $kfp_cert_cn {
    default "";
    "~(^|,)CN=(?<cn>[^,]+)" $cn;
  }
  # A verified certificate is the identity and switches basic auth off; otherwise the password.
  map $ssl_client_verify $kfp_realm {
    SUCCESS off;
    default "kubernetes";
  }
  map $ssl_client_verify $kfp_user {
    SUCCESS $kfp_cert_cn;
    default $remote_user;
  }

  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${tls.servingCert};
    ssl_certificate_key ${tls.servingKey};
    ssl_client_certificate ${tls.clientCa};
    ssl_verify_client optional;
    ssl_session_cache shared:SSL:10m;

    location / {
      auth_basic $kfp_realm;
      auth_basic_user_file ${usersFile};

      proxy_pass https://apiserver;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header Authorization "";
      # Client-sent identity headers cleared (X-Remote-Extra-* cannot be: nginx has no
      # header-prefix match without a third-party module).
      proxy_set_header X-Remote-User $kfp_user;
      proxy_set_header X-Remote-Group "";
      proxy_set_header X-Remote-Uid "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_ssl_certificate ${tls.proxyClientCert};
      proxy_ssl_certificate_key ${tls.proxyClientKey};
      proxy_ssl_trusted_certificate ${tls.upstreamCa};
      proxy_ssl_verify on;
      proxy_ssl_name ${tls.upstreamName};
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
`;
}

/** Descendants of `pid` (nginx workers are children of the master). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const nginxChildren = new Set<ChildProcess>();

/**
 * Writes the config into a temp dir, checks it (`nginx -t`), runs nginx in the foreground
 * (`-g 'daemon off;'`) and waits until it accepts TLS connections.
 */
export async function startNginx(tls: NginxTls, upstreamUrl: string, usersFile: string, options: NginxOptions = {}): Promise<NginxServer> {
  const binary = options.binary ?? findNginx()?.binary;
  if (!binary) throw new Error('nginx is not installed (ensureNginx() installs it)');
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'kfp-nginx-'));
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const configFile = join(dir, 'nginx.conf');
  writeFileSync(configFile, nginxConfig(tls, upstreamUrl, usersFile, port, dir, options.workerProcesses ?? 1));
  // -e: the start-up error log too goes to our dir, not /var/log/nginx.
  const base = ['-p', dir, '-e', join(dir, 'error.log'), '-c', configFile];
  try {
    execFileSync(binary, [...base, '-t', '-q'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`nginx -t refused ${configFile}: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`);
  }
  const stderrFile = join(dir, 'nginx.stderr');
  const errFd = openSync(stderrFile, 'w');
  const child = spawn(binary, [...base, '-g', 'daemon off;'], { stdio: ['ignore', errFd, errFd] });
  closeSync(errFd);
  if (child.pid === undefined) throw new Error('nginx did not start');
  nginxChildren.add(child);
  if (nginxChildren.size === 1) process.on('exit', () => nginxChildren.forEach((c) => c.kill('SIGKILL')));
  child.once('exit', () => nginxChildren.delete(child));
  const pid = child.pid;
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const why = (): string =>
    `nginx exited (code ${child.exitCode}): ${readFileSync(stderrFile, 'utf8').trim()} ${existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8').trim().split('\n').slice(-5).join(' | ') : ''}`;
  const url = `https://127.0.0.1:${port}`;

  // Ready when a TLS GET of /healthz gets any HTTP answer.
  const deadline = Date.now() + 10_000;
  const probe = new Pool(url, { connect: { ca: tls.servingCaPem, servername: 'localhost' } });
  try {
    for (;;) {
      if (exited()) throw new Error(why());
      try {
        const res = await request(`${url}/healthz`, { dispatcher: probe });
        await res.body.dump();
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`nginx did not answer on ${url}: ${(err as Error).message}`);
        await sleep(50);
      }
    }
  } finally {
    await probe.close();
  }
  return {
    url,
    pid,
    pids: () => [pid, ...childrenOf(pid)],
    configFile,
    assertAlive() {
      if (exited()) throw new Error(why());
    },
    async stop() {
      if (!exited()) {
        const gone = once(child, 'exit');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await gone;
        clearTimeout(timer);
      }
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

export interface NginxScenarioOptions {
  pki: TestPki;
  /** The stand-in's https URL. */
  upstreamUrl: string;
  /** The stand-in's pid, for its CPU per request (optional). */
  standinPid?: number;
  /** The users file (bcrypt lines; the bench's is cost 10). */
  usersFile: string;
  /** nginx configs and logs go under it. */
  workDir: string;
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** Default [1]; [1, 'auto'] adds the same scenarios with one worker per CPU. */
  workerProcesses?: (number | 'auto')[];
  /** Also GET the ~50 KB PodList (payload.ts) with the client certificate (default true). */
  payload?: boolean;
  log?: (line: string) => void;
}

export interface NginxResult {
  rows: Row[];
  notes: Ratio[];
  /** Set (and rows empty) when nginx could not be installed or started. */
  skipped?: string;
}

function pool(pki: TestPki, url: string, connections: number, cert?: PkiName): Pool {
  return new Pool(url, {
    connections,
    pipelining: 1,
    connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...(cert ? { cert: pki.pem[cert].cert, key: pki.pem[cert].key } : {}) },
  });
}

function get(path: string, headers: Record<string, string> = {}): () => Dispatcher.RequestOptions {
  const options: Dispatcher.RequestOptions = { method: 'GET', path, headers: { accept: 'application/json', ...headers } };
  return () => options;
}

/**
 * What the stand-in sees through nginx (GET /test/identity): the certificate's CN and the basic
 * user as X-Remote-User from front-proxy-client, a spoofed X-Remote-Group dropped. Throws if not.
 */
export async function checkNginxIdentity(pki: TestPki, url: string): Promise<string> {
  const spoof = { 'x-remote-group': 'system:masters', 'x-remote-user': 'mallory' };
  const ask = async (dispatcher: Pool, headers: Record<string, string>): Promise<{ authn: string; user: { username: string; groups: string[] } | null }> => {
    const res = await dispatcher.request({ method: 'GET', path: '/test/identity', headers: { ...spoof, ...headers } });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`GET /test/identity through nginx: HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
    return JSON.parse(text) as { authn: string; user: { username: string; groups: string[] } | null };
  };
  const certPool = pool(pki, url, 1, 'user-alice');
  const basicPool = pool(pki, url, 1);
  try {
    const cert = await ask(certPool, {});
    const basic = await ask(basicPool, { authorization: basicAuth(ALICE) });
    const seen = [cert, basic].map((r) => `${r.authn}:${r.user?.username}[${r.user?.groups.join(',')}]`);
    for (const r of [cert, basic]) {
      if (r.authn !== 'requestheader' || r.user?.username !== 'alice' || r.user.groups.includes('system:masters')) {
        throw new Error(`nginx forwarded the wrong identity: ${seen.join(', ')}`);
      }
    }
    return `cert → ${seen[0]}, basic → ${seen[1]} (spoofed X-Remote-User/Group dropped; nginx sends no groups)`;
  } finally {
    await Promise.all([certPool.close(), basicPool.close()]);
  }
}

/**
 * nginx in front of the stand-in (one nginx per worker setting): small GET with the client
 * certificate, the same with basic auth (bcrypt on every request), and the ~50 KB GET with the
 * certificate. Rows are report.ts Rows; the "proxy" CPU columns are nginx's (master + workers).
 * When nginx cannot be installed or started, returns no rows and `skipped`.
 */
export async function runNginxScenarios(o: NginxScenarioOptions): Promise<NginxResult> {
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const installed = ensureNginx(log);
  if (installed.binary === undefined) return { rows: [], notes: [{ label: 'nginx', value: `skipped: ${installed.reason}` }], skipped: installed.reason };
  const rows: Row[] = [];
  const notes: Ratio[] = [{ label: 'nginx', value: installed.version }];
  for (const workers of o.workerProcesses ?? [1]) {
    let nginx: NginxServer;
    try {
      nginx = await startNginx(standinNginxTls(o.pki), o.upstreamUrl, o.usersFile, { workerProcesses: workers, dir: join(o.workDir, `nginx-${workers}`), binary: installed.binary });
    } catch (err) {
      const reason = (err as Error).message;
      log(`bench: nginx (worker_processes ${workers}) did not start: ${reason}`);
      notes.push({ label: `nginx worker_processes ${workers}`, value: `did not start: ${reason}` });
      continue;
    }
    try {
      notes.push({ label: `nginx worker_processes ${workers}, identity check`, value: await checkNginxIdentity(o.pki, nginx.url) });
      const tag = workers === 1 ? 'nginx' : `nginx (${workers} workers)`;
      const groups: { label: string; group: () => LoadGroup }[] = [
        {
          label: `${tag}, client cert (user-alice)`,
          group: () => ({ label: `${tag}, client cert (user-alice)`, concurrency: o.connections, dispatcher: pool(o.pki, nginx.url, o.connections, 'user-alice'), request: get(SMALL_PATH), expectStatus: 200 }),
        },
        {
          label: `${tag}, basic auth (bcrypt every request)`,
          group: () => ({
            label: `${tag}, basic auth (bcrypt every request)`,
            concurrency: o.connections,
            dispatcher: pool(o.pki, nginx.url, o.connections),
            request: get(SMALL_PATH, { authorization: basicAuth(ALICE) }),
            expectStatus: 200,
          }),
        },
        ...((o.payload ?? true)
          ? [
              {
                label: `${tag}, client cert, 50 KB GET`,
                group: (): LoadGroup => ({ label: `${tag}, client cert, 50 KB GET`, concurrency: o.connections, dispatcher: pool(o.pki, nginx.url, o.connections, 'user-alice'), request: get(PAYLOAD_PATH), expectStatus: 200 }),
              },
            ]
          : []),
      ];
      for (const { label, group } of groups) {
        log(`bench: ${label}`);
        rows.push(await measureGroup(group(), nginx, o));
      }
    } finally {
      await nginx.stop();
    }
  }
  return { rows, notes };
}

async function measureGroup(group: LoadGroup, nginx: NginxServer, o: NginxScenarioOptions): Promise<Row> {
  const counters = () => {
    const pids = nginx.pids();
    return {
      nginx: pids.reduce((s, p) => s + safeCpu(p), 0),
      standin: o.standinPid ? safeCpu(o.standinPid) : 0,
      loadgen: cpuSeconds(process.pid),
      machine: machineBusySeconds(),
    };
  };
  let before = counters();
  let after = before;
  const window = await runLoad([group], {
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
    onMark: (mark) => {
      if (mark === 'start') before = counters();
      else after = counters();
    },
  });
  await (group.dispatcher as Dispatcher).close();
  nginx.assertAlive();
  const g = window.groups[0]!;
  if (g.errors > 0) (o.log ?? ((l: string) => process.stderr.write(`${l}\n`)))(`bench: ${g.label}: ${g.errors} errors, first: ${g.firstError}`);
  const nginxCpu = after.nginx - before.nginx;
  const standinCpu = after.standin - before.standin;
  const loadgen = after.loadgen - before.loadgen;
  const other = Math.max(0, after.machine - before.machine - nginxCpu - standinCpu - loadgen);
  return {
    scenario: g.label,
    requests: g.requests,
    perSecond: g.perSecond,
    p50Ms: g.p50Ms,
    p99Ms: g.p99Ms,
    proxyCpuUsPerRequest: g.requests > 0 ? (nginxCpu / g.requests) * 1e6 : undefined,
    proxyCores: nginxCpu / window.seconds,
    standinCpuUsPerRequest: o.standinPid && g.requests > 0 ? (standinCpu / g.requests) * 1e6 : undefined,
    loadgenCores: loadgen / window.seconds,
    otherCores: other / window.seconds,
    errors: g.errors,
  };
}

/** CPU seconds of a process, 0 if it has gone (an nginx worker replaced meanwhile). */
function safeCpu(pid: number): number {
  try {
    return cpuSeconds(pid);
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Standalone

async function main(): Promise<number> {
  installCleanup();
  const work = mkdtempSync(join(tmpdir(), 'kfp-nginx-bench-'));
  try {
    const pki = await createTestPki(join(work, 'pki'));
    // bcrypt cost 10, as bench.ts (and production files) use.
    const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE, 10)]);
    const standin = spawnNode('apiserver', ['--import', 'tsx', join(PROJECT_ROOT, 'bench', 'apiserver-process.ts'), pki.dir], work, PROJECT_ROOT);
    const upstreamUrl = await waitForJsonLine(standin, (line) => (typeof line.url === 'string' ? line.url : undefined));
    const workers = (process.env.BENCH_NGINX_WORKERS ?? '1,auto').split(',').map((w) => (w.trim() === 'auto' ? 'auto' : Number(w))) as (number | 'auto')[];
    const settings = {
      connections: Math.round(envNumber('BENCH_CONNECTIONS', 50)),
      warmupMs: envNumber('BENCH_WARMUP_SECONDS', 1) * 1000,
      durationMs: envNumber('BENCH_SECONDS', 5) * 1000,
    };
    let result: NginxResult;
    try {
      result = await runNginxScenarios({ pki, upstreamUrl, standinPid: standin.pid, usersFile, workDir: work, workerProcesses: workers, ...settings });
    } finally {
      await standin.stop();
    }
    if (result.skipped) {
      process.stderr.write(`bench: nginx skipped: ${result.skipped}\n`);
      return 1;
    }
    const cpu = cpus();
    const setup = [
      `nginx bench, ${new Date().toISOString()}: ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}; nginx in front of the bench stand-in, loopback.`,
      `Closed loop, HTTP/1.1 keep-alive, ${settings.connections} connections, ${settings.warmupMs / 1000} s warm-up, ${settings.durationMs / 1000} s measured; bcrypt cost 10; "proxy" CPU columns are nginx's (master + workers).`,
    ];
    process.stdout.write(`\n${setup.join('\n')}\n\n${textTable(result.rows, result.notes)}\n`);
    const out = join(PROJECT_ROOT, 'bench', 'results', 'nginx.md');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, markdown(result.rows, result.notes, setup));
    process.stdout.write(`\nwritten to ${out}\n`);
    return result.rows.some((r) => r.errors > 0) ? 1 : 0;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = await main();
