// The proxy in front of a real kube-apiserver (v1.34.3 and etcd, built from Go modules by
// test/cluster/build.sh), everything on this machine's cores: etcd, the apiserver, the proxy and
// this process as the load generator, as on a small control-plane node with the proxy as a
// sidecar. No controller-manager, no kubelet: the ServiceAccount admission plugin is disabled so
// Pods can be created without a `default` ServiceAccount; Pods have no node and stay Pending.
//
// Request cases: (1) GET of one Pod (~2.5 KB), (2) a list of BENCH_REAL_PODS Pods (~1 MB as JSON),
// (3) the same list over HTTP/2, as kubectl asks for it (direct and the proxy at its defaults).
// Paths: direct (kubernetes-admin's client certificate straight to the apiserver), the proxy at
// its defaults (one process: two workers measured costlier here) and with --workers 1 given,
// each with a certificate user (cluster CA, O=bench-readers) and, for the GET, a password user
// whose credential is cached (bcrypt cost 10, once in the warm-up). Also the certificate user
// straight to the apiserver (same identity without the proxy: the admin's RBAC path is a little
// shorter). Both proxies run throughout; the idle one costs nothing measurable.
//
// Closed loop, BENCH_REAL_INFLIGHT (8) requests in flight over as many HTTP/1.1 keep-alive
// connections, a fixed number of requests per measurement (BENCH_REAL_GETS 3000, BENCH_REAL_LISTS
// 300) after a warm-up of a tenth as many, which opens every connection on both legs (in the first
// round as many as measured: V8 is still compiling the proxy's code). Every case and path once per
// round, direct and proxied interleaved, BENCH_REAL_ROUNDS (3) rounds; the table gives min-max over
// rounds. "Share of direct" is each round's req/s over the same round's direct (admin) req/s. CPU
// is utime+stime from /proc over the measured requests: the proxy's process tree (the "hop"), the
// apiserver's, etcd's, this process's (load-gen), and "other cores": the machine's busy time minus
// all of those (other users of the machine make a run noisy; the table says how noisy).
// BENCH_PROXY_FLAGS adds proxy flags to both proxies; BENCH_PROXY_CPU_PROF=<dir> profiles them.
//
// Beside the proxies, two reference hops on the same path, measured the same way (issue 23):
// nginx (Debian's, bench/nginx.ts's configuration: the certificate's CN or the basic user as
// X-Remote-User, front-proxy-client towards the apiserver, keep-alive upstream, one worker; its
// basic auth runs bcrypt on every request, so its basic row has BENCH_REAL_NGINX_BASIC_GETS (30)
// requests) and the floor (bench/floor.ts: a bare Node https server relaying with undici). The
// table gives each hop's CPU per request over nginx's and over the floor's, per round, for the
// same case and kind of user. nginx sends no X-Remote-Group (it cannot read groups from the
// users file, nor one header per certificate O), so the Role is bound to the two bench users by
// name as well as to their group.
//
// Then the latency the proxy adds at half its capacity (issue 23: p99 added under 2 ms): an open
// loop, BENCH_REAL_OPEN_GETS (3000; 0 skips) GETs of the Pod per path and round, sent on a fixed
// schedule at half the median req/s the proxy (defaults, certificate) reached above, over
// BENCH_REAL_INFLIGHT connections whether or not earlier ones have been answered; each latency is
// counted from when its request was due, so a hop that falls behind is charged for the queue.
// Direct (the certificate user), nginx and the proxy (certificate, cached password) alternate,
// BENCH_REAL_ROUNDS rounds; "added" is each round's percentile over the same round's direct one.
//
// BENCH_REAL_BASELINE=<another build's cli.js>: that build, at the defaults, takes the place of the
// `--workers 1` proxy, so a change's before and after are measured in the same rounds.
//
// BENCH_REAL_PROFILE=<dir>: after the rounds, one more proxy (--workers 1) under --cpu-prof
// serves BENCH_REAL_GETS certificate GETs after as many warm-up ones, and another the lists; each
// profile, cut to the measured window, is summarised (bench/profile-top.ts): top functions, per module, and a split
// by stage in µs per request (shares of the busy time × the unprofiled CPU per request).
//
// Then a watch fan-out (BENCH_REAL_WATCHES 1000; 0 skips): that many watches on the default
// namespace's ConfigMaps over HTTP/2 (100 streams a connection, 100 opening at a time), direct
// (the admin, whom API Priority and Fairness exempts, and the certificate user) and through each
// proxy (the certificate user); once the apiserver counts them all open (its
// apiserver_longrunning_requests metric), BENCH_REAL_WATCH_EVENTS (3) changes of one ConfigMap,
// one at a time, and for each the time from just before the PATCH until every watch has the event.
// The watch clients run in this process (same for every path).
//
// The apiserver writes no audit log here (kubeadm's default; the test harness's Metadata audit
// log adds apiserver CPU to every request): BENCH_REAL_AUDIT=1 keeps it.
// Standalone (builds dist/ first): node --import tsx bench/real-cluster.ts

import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect as http2Connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { cpus, loadavg, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { Pool, type Dispatcher } from 'undici';
import { startControlPlane, type ControlPlane } from '../test/cluster/control-plane.js';
import { proxySettingsFor } from '../test/cluster/proxy-fixture.js';
import { basicAuth } from '../test/helpers/clients.js';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';
import { bcryptLine, settingsToFlags, writeUsersFile, type TestUser } from '../test/helpers/setup.js';
import { envNumber } from './env.js';
import { percentile } from './load.js';
import { buildProxy, cpuSeconds, installCleanup, machineBusySeconds, processTree, spawnNode, treeCpuSeconds, waitForJsonLine, type Child } from './processes.js';
import { ensureNginx, startNginx, type NginxServer, type NginxTls } from './nginx.js';
import type { FloorConfig } from './floor.js';
import { profileReport, type ProfileReport } from './profile-top.js';

export interface RealSettings {
  rounds: number;
  inflight: number;
  gets: number;
  lists: number;
  /** GETs per path and round at half the proxy's capacity (open loop); 0 skips that part. */
  openGets: number;
  pods: number;
  watches: number;
  watchEvents: number;
  audit: boolean;
  /** More proxy flags (BENCH_PROXY_FLAGS, as for the stand-in scenarios). */
  proxyFlags: string[];
  /** GETs per round through nginx's basic auth (a bcrypt each). */
  nginxBasicGets: number;
  /** BENCH_REAL_PROFILE: where the profiled proxy's V8 CPU profile goes (no profile pass without it). */
  profileDir: string | undefined;
  /** BENCH_REAL_BASELINE: another build's cli.js, run at the defaults in place of the `--workers 1` proxy. */
  baselineCli: string | undefined;
}

export function realSettings(): RealSettings {
  return {
    rounds: Math.round(envNumber('BENCH_REAL_ROUNDS', 3)),
    inflight: Math.round(envNumber('BENCH_REAL_INFLIGHT', 8)),
    gets: Math.round(envNumber('BENCH_REAL_GETS', 3000)),
    lists: Math.round(envNumber('BENCH_REAL_LISTS', 300)),
    openGets: Math.round(envNumber('BENCH_REAL_OPEN_GETS', 3000, true)),
    pods: Math.round(envNumber('BENCH_REAL_PODS', 500)),
    watches: Math.round(envNumber('BENCH_REAL_WATCHES', 1000, true)),
    watchEvents: Math.round(envNumber('BENCH_REAL_WATCH_EVENTS', 3)),
    audit: process.env.BENCH_REAL_AUDIT === '1',
    proxyFlags: (process.env.BENCH_PROXY_FLAGS ?? '').split(' ').filter(Boolean),
    nginxBasicGets: Math.round(envNumber('BENCH_REAL_NGINX_BASIC_GETS', 30)),
    profileDir: process.env.BENCH_REAL_PROFILE || undefined,
    baselineCli: process.env.BENCH_REAL_BASELINE ? resolve(process.env.BENCH_REAL_BASELINE) : undefined,
  };
}

const NAMESPACE = 'default';
const GROUP = 'bench-readers';
const CERT_USER = 'bench-cert-user';
const BASIC_USER: TestUser = { name: 'bench-basic-user', password: 'bench-basic-password-1', groups: [GROUP] };
const GET_PATH = `/api/v1/namespaces/${NAMESPACE}/pods/pod-0`;
const LIST_PATH = `/api/v1/namespaces/${NAMESPACE}/pods`;
const WATCH_PATH = `/api/v1/namespaces/${NAMESPACE}/configmaps?watch=1`;
const WATCHED = 'bench-watched';
/** Bytes of annotation per Pod, so that 500 Pods are about 1 MB of JSON. */
const POD_PADDING = 900;
const STREAMS_PER_CONNECTION = 100;
const WATCH_OPEN_CONCURRENCY = 100;

// ---------------------------------------------------------------------------------------------
// Results

/** One measurement: one case on one path in one round. */
interface Sample {
  requests: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError: string | undefined;
  /** CPU seconds in the window. */
  hop: number | undefined;
  apiserver: number;
  etcd: number;
  loadgen: number;
  other: number;
  bytes: number;
  /** The measured window on the monotonic clock V8's profiler uses (µs). */
  windowUs: [number, number];
}

/** What stands between the client and the apiserver. */
type Via = 'direct' | 'nginx' | 'floor' | 'proxy';
/** Who the client is: kubernetes-admin (direct only), a certificate user, a password user. */
type User = 'admin' | 'cert' | 'basic';

export interface RealRow {
  kase: string;
  path: string;
  via: Via;
  user: User;
  requests: number;
  samples: Sample[];
  /** Per round: req/s over the same round's direct (admin) req/s; undefined on the direct row itself. */
  shares: number[] | undefined;
  /** Per round: the hop's CPU per request over nginx's, and over the floor's (same case and user). */
  vsNginx: number[];
  vsFloor: number[];
}

export interface RealWatchRow {
  path: string;
  requested: number;
  opened: number;
  /** What the apiserver counted open (apiserver_longrunning_requests, WATCH configmaps). */
  apiserverHeld: number;
  openSeconds: number;
  /** Per event: ms until half, and until every watch, had it. */
  p50Ms: number[];
  allMs: number[];
  missed: number;
  apiserverRssMb: number;
  hopRssMb: number | undefined;
  errors: number;
  firstError: string | undefined;
}

/** One path at a fixed rate (open loop), round by round. */
export interface RealLatencyRow {
  path: string;
  perSecond: number;
  samples: Sample[];
  /** Per round: p50 and p99 over the same round's direct ones (ms); undefined on the direct row. */
  addedP50Ms: number[] | undefined;
  addedP99Ms: number[] | undefined;
}

export type RealProfile = ProfileReport & { label: string; cpuUsPerRequest: number; profiledCpuUsPerRequest: number; systemShare: number };

export interface RealResult {
  setup: string[];
  rows: RealRow[];
  latencyRows: RealLatencyRow[];
  /** BENCH_REAL_PROFILE's summaries of the profiled proxies: GETs, then lists. */
  profiles: RealProfile[];
  watchRows: RealWatchRow[];
  notes: string[];
  /** Why the part did not run (no Go toolchain to build the control plane). */
  skipped?: string;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** The pid of `binary` whose command line mentions the control plane's directory. */
function findPid(binary: string, dir: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (basename(argv[0] ?? '') === binary && argv.some((a) => a.includes(dir))) return Number(entry);
  }
  throw new Error(`no ${binary} process with ${dir} in its command line`);
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function treeRssMb(pids: number[]): number {
  return pids.reduce((sum, p) => {
    try {
      return sum + rssMb(p);
    } catch {
      return sum;
    }
  }, 0);
}

/** A process (tree) between client and apiserver whose CPU is the hop's: a proxy, nginx, the floor. */
interface Hop {
  pid: number;
  assertAlive(): void;
}

type Proxy = Child & { stdoutFile: string; url: string; label: string };

async function startRealProxy(
  cp: ControlPlane,
  usersFile: string,
  workers: number | undefined,
  label: string,
  extra: string[],
  logDir: string,
  profileDir = process.env.BENCH_PROXY_CPU_PROF,
  cli = join(PROJECT_ROOT, 'dist', 'cli.js'),
): Promise<Proxy> {
  const { workers: _one, ...settings } = proxySettingsFor(cp, usersFile);
  const flags = settingsToFlags(workers === undefined ? settings : { ...settings, workers });
  // Its log files, named after the label ("proxy, --workers 1" → real-proxy-workers-1).
  const name = `real-${label
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')}`;
  // BENCH_PROXY_CPU_PROF=<dir>: V8 CPU profiles of the proxies (workers too), written when they stop.
  const profile = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const child = spawnNode(name, [...profile, cli, 'serve', '--listen', '127.0.0.1:0', ...flags, ...extra], logDir, PROJECT_ROOT);
  const url = await waitForJsonLine(child, (line) => (typeof line.msg === 'string' && line.msg.startsWith('listening on') ? String(line.listen) : undefined), 60_000);
  return { ...child, url, label };
}

/**
 * The order of the plan's measurements in `round`: each run of hops between two direct ones
 * turned by one place a round, so that no hop is always measured after the same one (the one
 * measured right after the floor came out 10-20 % costlier in some rounds, whichever build it
 * was). Direct measurements keep their places: the hops of a case are compared with the direct
 * one before them.
 */
export function roundOrder(isDirect: readonly boolean[], round: number): number[] {
  const order: number[] = [];
  let run: number[] = [];
  const flush = () => {
    const turn = run.length === 0 ? 0 : (round - 1) % run.length;
    order.push(...run.slice(turn), ...run.slice(0, turn));
    run = [];
  };
  isDirect.forEach((direct, i) => {
    if (!direct) return void run.push(i);
    flush();
    order.push(i);
  });
  flush();
  return order;
}

/** nginx's files in the cluster's PKI: the proxy's serving pair and CAs, kubeadm's front-proxy-client. */
function clusterNginxTls(cp: ControlPlane): NginxTls {
  const f = cp.pki.file;
  return {
    servingCert: f('proxy.crt'),
    servingKey: f('proxy.key'),
    servingCaPem: cp.pki.read('proxy-ca.crt'),
    clientCa: f('ca.crt'),
    proxyClientCert: f('front-proxy-client.crt'),
    proxyClientKey: f('front-proxy-client.key'),
    upstreamCa: f('ca.crt'),
    upstreamName: 'kubernetes',
  };
}

/** bench/floor.ts as its own process, with the proxy's certificates and the one password user. */
async function startRealFloor(cp: ControlPlane, basic: TestUser, logDir: string): Promise<Child & { url: string }> {
  const f = cp.pki.file;
  const config: FloorConfig = {
    tlsCertFile: f('proxy.crt'),
    tlsKeyFile: f('proxy.key'),
    clientCaFile: f('ca.crt'),
    upstream: cp.apiservers[0]!.url,
    upstreamCaFile: f('ca.crt'),
    upstreamName: 'kubernetes',
    proxyClientCertFile: f('front-proxy-client.crt'),
    proxyClientKeyFile: f('front-proxy-client.key'),
    basic: { authorization: basicAuth(basic), user: basic.name, groups: basic.groups },
  };
  const configFile = join(logDir, 'floor.json');
  writeFileSync(configFile, JSON.stringify(config));
  const child = spawnNode('real-floor', ['--import', 'tsx', join(PROJECT_ROOT, 'bench', 'floor.ts'), configFile], logDir, PROJECT_ROOT);
  const url = await waitForJsonLine(child, (line) => (typeof line.listen === 'string' ? line.listen : undefined), 60_000);
  return { ...child, url };
}

// ---------------------------------------------------------------------------------------------
// The cluster's objects

interface Identity {
  cert?: string;
  key?: string;
  headers?: Record<string, string>;
}

interface Endpoint {
  url: string;
  ca: string;
  servername: string;
  /** HTTP/2, as kubectl speaks it (one connection per client, requests multiplexed). */
  http2?: boolean;
}

function pool(endpoint: Endpoint, identity: Identity, connections: number): Pool {
  return new Pool(endpoint.url, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    connect: { ca: endpoint.ca, servername: endpoint.servername, ...(identity.cert ? { cert: identity.cert, key: identity.key } : {}) },
    ...(endpoint.http2 ? { allowH2: true } : {}),
  });
}

async function call(dispatcher: Dispatcher, method: Dispatcher.HttpMethod, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; text: string }> {
  const res = await dispatcher.request({
    method,
    path,
    headers: { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': contentType }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.statusCode, text: await res.body.text() };
}

async function callOk(dispatcher: Dispatcher, method: Dispatcher.HttpMethod, path: string, body?: unknown, contentType?: string): Promise<string> {
  const { status, text } = await call(dispatcher, method, path, body, contentType);
  if (status < 200 || status > 299) throw new Error(`${method} ${path}: HTTP ${status}: ${text.slice(0, 500)}`);
  return text;
}

/** A Role to read Pods and ConfigMaps, bound to the users' group; the Pods; the watched ConfigMap. */
async function createObjects(admin: Dispatcher, pods: number, concurrency: number): Promise<void> {
  await callOk(admin, 'POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NAMESPACE}/roles`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: 'bench-reader' },
    rules: [{ apiGroups: [''], resources: ['pods', 'configmaps'], verbs: ['get', 'list', 'watch'] }],
  });
  await callOk(admin, 'POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NAMESPACE}/rolebindings`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: 'bench-reader' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'bench-reader' },
    // By name too: nginx sends no groups.
    subjects: [GROUP].map((name) => ({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name })).concat([CERT_USER, BASIC_USER.name].map((name) => ({ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name }))),
  });
  await callOk(admin, 'POST', `/api/v1/namespaces/${NAMESPACE}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: WATCHED }, data: { seq: '0' } });
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < pods) {
      const i = next++;
      await callOk(admin, 'POST', `/api/v1/namespaces/${NAMESPACE}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `pod-${i}`, labels: { app: 'bench', index: String(i) }, annotations: { 'bench.kube-front-proxy.io/padding': 'x'.repeat(POD_PADDING) } },
        spec: { automountServiceAccountToken: false, containers: [{ name: 'main', image: 'x' }] },
      });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Who the apiserver takes the client for (a SelfSubjectReview), with spoofed identity headers sent along. */
async function whoami(endpoint: Endpoint, identity: Identity): Promise<string> {
  const dispatcher = pool(endpoint, identity, 1);
  try {
    const res = await dispatcher.request({
      method: 'POST',
      path: '/apis/authentication.k8s.io/v1/selfsubjectreviews',
      headers: { 'content-type': 'application/json', accept: 'application/json', 'x-remote-user': 'mallory', 'x-remote-group': 'system:masters', ...identity.headers },
      body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
    });
    const text = await res.body.text();
    if (res.statusCode !== 201 && res.statusCode !== 200) throw new Error(`SelfSubjectReview: HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
    const user = (JSON.parse(text) as { status: { userInfo: { username: string; groups?: string[] } } }).status.userInfo;
    return `${user.username}[${(user.groups ?? []).join(',')}]`;
  } finally {
    await dispatcher.close();
  }
}

/** Throws unless every target is seen as its own user, never as the spoofed one or system:masters; the identities seen. */
async function checkIdentities(targets: Target[]): Promise<string[]> {
  const seen: string[] = [];
  for (const t of targets) {
    const who = await whoami(t.endpoint, t.identity);
    const expected = t.user === 'cert' ? CERT_USER : BASIC_USER.name;
    if (!who.startsWith(`${expected}[`) || who.includes('system:masters')) throw new Error(`${t.path}: the apiserver saw ${who}, expected ${expected}`);
    seen.push(`${t.path} → ${who}`);
  }
  return seen;
}

// ---------------------------------------------------------------------------------------------
// Load

interface LoadResult {
  latencies: number[];
  errors: number;
  firstError: string | undefined;
  bytes: number;
  seconds: number;
}

/** A load's tally: each request's latency from `since`, its whole body read; false when it failed. */
function tally(dispatcher: Dispatcher, options: Dispatcher.RequestOptions): { result: LoadResult; send: (since: number) => Promise<boolean>; started: number } {
  const result: LoadResult = { latencies: [], errors: 0, firstError: undefined, bytes: 0, seconds: 0 };
  const started = performance.now();
  const send = async (since: number): Promise<boolean> => {
    let ok = true;
    try {
      const res = await dispatcher.request(options);
      const body = await res.body.arrayBuffer();
      result.bytes = body.byteLength;
      if (res.statusCode !== 200) {
        ok = false;
        result.firstError ??= `HTTP ${res.statusCode}: ${Buffer.from(body).toString('utf8').slice(0, 300)}`;
      }
    } catch (err) {
      ok = false;
      result.firstError ??= String(err);
    }
    if (!ok) result.errors++;
    result.latencies.push(performance.now() - since);
    return ok;
  };
  return { result, send, started };
}

/** `total` requests, `inflight` at a time, each reading its whole body. */
async function closedLoop(dispatcher: Dispatcher, options: Dispatcher.RequestOptions, total: number, inflight: number): Promise<LoadResult> {
  const { result, send, started } = tally(dispatcher, options);
  let issued = 0;
  const loop = async (): Promise<void> => {
    while (issued < total) {
      issued++;
      // A failure (a connection refused, say) is not retried in a tight loop.
      if (!(await send(performance.now()))) await sleep(10);
    }
  };
  await Promise.all(Array.from({ length: inflight }, loop));
  return { ...result, seconds: (performance.now() - started) / 1000 };
}

/**
 * `total` requests on a fixed schedule, `perSecond` of them a second, each sent when due whatever
 * is still unanswered (the dispatcher queues what finds no free connection); each latency is
 * counted from when the request was due, not from when it could be sent.
 */
async function openLoop(dispatcher: Dispatcher, options: Dispatcher.RequestOptions, total: number, perSecond: number): Promise<LoadResult> {
  const { result, send, started } = tally(dispatcher, options);
  const sent: Promise<boolean>[] = [];
  const due = (i: number): number => started + (i * 1000) / perSecond;
  for (let i = 0; i < total;) {
    const now = performance.now();
    // A timer wakes a millisecond or more late: every request due by now goes at once.
    for (; i < total && due(i) <= now; i++) sent.push(send(due(i)));
    if (i < total) await sleep(Math.max(0, due(i) - performance.now()));
  }
  await Promise.all(sent);
  return { ...result, seconds: (performance.now() - started) / 1000 };
}

/** CLOCK_MONOTONIC in µs: the clock of V8's profile timestamps (so a profile can be cut to a window). */
function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

interface Pids {
  apiserver: number;
  etcd: number;
}

function counters(pids: Pids, hop: Hop | undefined) {
  return {
    hop: hop ? treeCpuSeconds(hop.pid) : undefined,
    apiserver: cpuSeconds(pids.apiserver),
    etcd: cpuSeconds(pids.etcd),
    loadgen: cpuSeconds(process.pid),
    machine: machineBusySeconds(),
  };
}

interface Target {
  path: string;
  via: Via;
  user: User;
  endpoint: Endpoint;
  identity: Identity;
  hop: Hop | undefined;
}

interface Case {
  kase: string;
  requestPath: string;
  count: number;
}

/** One case on one path: a closed loop of `inflight`, or with `perSecond` an open loop over `inflight` connections. */
async function measure(target: Target, kase: Case, pids: Pids, inflight: number, warmup: number, perSecond?: number): Promise<Sample> {
  const dispatcher = pool(target.endpoint, target.identity, inflight);
  const options: Dispatcher.RequestOptions = { method: 'GET', path: kase.requestPath, headers: { accept: 'application/json', ...target.identity.headers } };
  try {
    const warm = await closedLoop(dispatcher, options, Math.max(inflight * 2, warmup), inflight);
    if (warm.errors > 0) throw new Error(`${kase.kase} via ${target.path}: the warm-up failed: ${warm.firstError}`);
    const before = counters(pids, target.hop);
    const from = monotonicUs();
    const run = perSecond === undefined ? await closedLoop(dispatcher, options, kase.count, inflight) : await openLoop(dispatcher, options, kase.count, perSecond);
    const to = monotonicUs();
    const after = counters(pids, target.hop);
    target.hop?.assertAlive();
    const sorted = [...run.latencies].sort((a, b) => a - b);
    const hop = target.hop ? after.hop! - before.hop! : undefined;
    const apiserver = after.apiserver - before.apiserver;
    const etcd = after.etcd - before.etcd;
    const loadgen = after.loadgen - before.loadgen;
    return {
      requests: kase.count,
      seconds: run.seconds,
      perSecond: kase.count / run.seconds,
      p50Ms: percentile(sorted, 0.5),
      p99Ms: percentile(sorted, 0.99),
      errors: run.errors,
      firstError: run.firstError,
      hop,
      apiserver,
      etcd,
      loadgen,
      other: Math.max(0, after.machine - before.machine - (hop ?? 0) - apiserver - etcd - loadgen),
      bytes: run.bytes,
      windowUs: [from, to],
    };
  } finally {
    await dispatcher.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Watches

interface WatchClients {
  opened: number;
  failed: number;
  errors: number;
  firstError: string | undefined;
  seconds: number;
  /** Resolves with each watch's latency (ms from `sentAt`) once all have `seq`, or at the timeout. */
  collect(seq: number, sentAt: number, timeoutMs: number): Promise<number[]>;
  close(): void;
}

/** `count` watches over HTTP/2, STREAMS_PER_CONNECTION to a connection. */
async function openWatches(endpoint: Endpoint, identity: Identity, count: number): Promise<WatchClients> {
  const started = performance.now();
  const sessions: ClientHttp2Session[] = [];
  const arrivals = new Map<number, number[]>();
  const waiters = new Set<() => void>();
  const state = { opened: 0, failed: 0, errors: 0, firstError: undefined as string | undefined };
  const fail = (what: string): void => {
    state.errors++;
    state.firstError ??= what;
  };
  const onLine = (line: string, at: number): void => {
    const m = /"seq":"(\d+)"/.exec(line);
    if (!m || !line.includes(`"name":"${WATCHED}"`)) return;
    const seq = Number(m[1]);
    if (seq === 0) return;
    let list = arrivals.get(seq);
    if (!list) arrivals.set(seq, (list = []));
    list.push(at);
    if (list.length >= state.opened) for (const wake of waiters) wake();
  };
  const openOne = (session: ClientHttp2Session): Promise<void> =>
    new Promise((resolve) => {
      const stream = session.request({ [h2.HTTP2_HEADER_PATH]: WATCH_PATH, accept: 'application/json', ...identity.headers });
      stream.setEncoding('utf8');
      let buffer = '';
      let isOpen = false;
      stream.once('response', (headers) => {
        const status = Number(headers[h2.HTTP2_HEADER_STATUS]);
        if (status !== 200) {
          state.failed++;
          state.firstError ??= `watch answered HTTP ${status}`;
          stream.close();
        } else {
          isOpen = true;
          state.opened++;
        }
        resolve();
      });
      stream.on('data', (chunk: string) => {
        const at = performance.now();
        buffer += chunk;
        let newline: number;
        while ((newline = buffer.indexOf('\n')) !== -1) {
          onLine(buffer.slice(0, newline), at);
          buffer = buffer.slice(newline + 1);
        }
      });
      stream.once('close', () => {
        if (!isOpen) {
          state.failed++;
          state.firstError ??= `watch closed before its headers (RST ${stream.rstCode})`;
          resolve();
        } else {
          state.opened--;
        }
      });
      stream.on('error', (err) => fail(`watch stream: ${err.message}`));
    });
  const connections = Math.ceil(count / STREAMS_PER_CONNECTION);
  for (let c = 0; c < connections; c++) {
    const session = http2Connect(endpoint.url, { ca: endpoint.ca, servername: endpoint.servername, ...(identity.cert ? { cert: identity.cert, key: identity.key } : {}), maxSessionMemory: 100 });
    session.on('error', (err) => fail(`h2 session: ${err.message}`));
    session.on('goaway', (code) => fail(`h2 session got GOAWAY (code ${code})`));
    sessions.push(session);
  }
  // WATCH_OPEN_CONCURRENCY waiting for their headers at any one time, over all connections: a
  // user the apiserver does not exempt from API Priority and Fairness gets 429s for a bigger burst.
  let next = 0;
  const opener = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      await openOne(sessions[Math.floor(i / STREAMS_PER_CONNECTION)]!);
    }
  };
  // The time limit's timer is unref'd: left running, it held the finished bench for 3 minutes.
  await Promise.race([Promise.all(Array.from({ length: WATCH_OPEN_CONCURRENCY }, opener)), sleep(180_000, undefined, { ref: false })]);
  return {
    get opened() {
      return state.opened;
    },
    get failed() {
      return state.failed;
    },
    get errors() {
      return state.errors;
    },
    get firstError() {
      return state.firstError;
    },
    seconds: (performance.now() - started) / 1000,
    async collect(seq, sentAt, timeoutMs) {
      const have = (): number => arrivals.get(seq)?.length ?? 0;
      if (have() < state.opened) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            if (have() < state.opened) return;
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          };
          const timer = setTimeout(() => {
            waiters.delete(done);
            resolve();
          }, timeoutMs);
          waiters.add(done);
        });
      }
      return (arrivals.get(seq) ?? []).map((at) => at - sentAt);
    },
    close() {
      for (const s of sessions) s.destroy();
    },
  };
}

/** Open WATCH requests on configmaps the apiserver counts (its own metric). */
async function apiserverWatches(admin: Dispatcher): Promise<number> {
  const text = await callOk(admin, 'GET', '/metrics');
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('apiserver_longrunning_requests{') && line.includes('resource="configmaps"') && line.includes('verb="WATCH"')) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

async function watchFanOut(target: Target, admin: Dispatcher, pids: Pids, s: RealSettings, seqStart: number, log: (line: string) => void): Promise<RealWatchRow> {
  // The apiserver's own informers watch ConfigMaps over loopback too: count only ours.
  const baseline = await apiserverWatches(admin);
  const clients = await openWatches(target.endpoint, target.identity, s.watches);
  try {
    // The apiserver counts a watch once it is registered: wait until it has them all (or 30 s).
    let held = 0;
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(250)) {
      held = (await apiserverWatches(admin)) - baseline;
      if (held >= clients.opened) break;
    }
    const apiserverRssMb = rssMb(pids.apiserver);
    const hopRssMb = target.hop ? treeRssMb(processTree(target.hop.pid)) : undefined;
    const p50Ms: number[] = [];
    const allMs: number[] = [];
    let missed = 0;
    for (let e = 0; e < s.watchEvents; e++) {
      const seq = seqStart + e;
      await sleep(500);
      const sentAt = performance.now();
      await callOk(admin, 'PATCH', `/api/v1/namespaces/${NAMESPACE}/configmaps/${WATCHED}`, { data: { seq: String(seq) } }, 'application/merge-patch+json');
      const latencies = (await clients.collect(seq, sentAt, 30_000)).sort((a, b) => a - b);
      missed += Math.max(0, clients.opened - latencies.length);
      p50Ms.push(percentile(latencies, 0.5));
      allMs.push(latencies.length ? latencies[latencies.length - 1]! : NaN);
    }
    const row: RealWatchRow = {
      path: target.path,
      requested: s.watches,
      opened: clients.opened,
      apiserverHeld: held,
      openSeconds: clients.seconds,
      p50Ms,
      allMs,
      missed,
      apiserverRssMb,
      hopRssMb,
      errors: clients.errors + clients.failed,
      firstError: clients.firstError,
    };
    log(
      `bench: real watches via ${target.path}: ${clients.opened}/${s.watches} open in ${clients.seconds.toFixed(1)} s (apiserver counts ${held}), every watch had the event after ${allMs.map((v) => v.toFixed(0)).join(', ')} ms${row.errors ? `; ${row.errors} errors, first: ${row.firstError}` : ''}`,
    );
    return row;
  } finally {
    clients.close();
    // Until the apiserver has let go of them, so the next path starts from none.
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(250)) if ((await apiserverWatches(admin)) <= baseline) break;
  }
}

// ---------------------------------------------------------------------------------------------
// The run

export interface RealOptions {
  /** Where the proxies' stdout/stderr files go. */
  workDir: string;
  settings?: RealSettings;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

function machineLine(): string {
  const cpu = cpus();
  const [one, five, fifteen] = loadavg();
  return `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}; load average at start ${one!.toFixed(2)}, ${five!.toFixed(2)}, ${fifteen!.toFixed(2)}`;
}

/** Starts the control plane and both proxies, runs every round and the watch fan-out, stops everything. */
export async function runRealCluster(options: RealOptions): Promise<RealResult> {
  const s = options.settings ?? realSettings();
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const machine = machineLine();
  log('bench: real kube-apiserver: starting etcd and kube-apiserver (test/cluster)');
  let cp: ControlPlane;
  try {
    cp = await startControlPlane({
      kubelet: false,
      controllerManager: false,
      apiserverFlags: ['--disable-admission-plugins=ServiceAccount', ...(s.audit ? [] : ['--audit-log-path=', '--audit-policy-file='])],
    });
  } catch (err) {
    const message = (err as Error).message;
    // No Go toolchain (or the build failed): the stand-in results stand; say why this part is missing.
    if (message.includes('build.sh')) return { setup: [machine], rows: [], latencyRows: [], profiles: [], watchRows: [], notes: [], skipped: message };
    throw err;
  }
  const pids: Pids = { apiserver: findPid('kube-apiserver', cp.dir), etcd: findPid('etcd', cp.dir) };
  // The control plane's processes are not the bench's children: kill them on any way out.
  const killOnExit = (): void => {
    for (const pid of [pids.apiserver, pids.etcd]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(cp.dir, { recursive: true, force: true });
  };
  process.once('exit', killOnExit);
  const proxies: Proxy[] = [];
  const others: { stop(): Promise<void> }[] = [];
  const direct: Endpoint = { url: cp.apiservers[0]!.url, ca: cp.pki.read('ca.crt'), servername: 'kubernetes' };
  const adminId: Identity = { cert: cp.pki.read('admin.crt'), key: cp.pki.read('admin.key') };
  const admin = pool(direct, adminId, 8);
  try {
    log(`bench: real kube-apiserver: ${cp.version} up; creating ${s.pods} Pods`);
    const creating = performance.now();
    await createObjects(admin, s.pods, 8);
    log(`bench: real kube-apiserver: ${s.pods} Pods created in ${((performance.now() - creating) / 1000).toFixed(1)} s; starting the proxies, nginx and the floor`);
    const certUser = await cp.pki.issueUser(CERT_USER, { commonName: CERT_USER, organizations: [GROUP] });
    const usersFile = writeUsersFile(cp.dir, [bcryptLine(BASIC_USER, 10)], 'bench-users.htpasswd');
    proxies.push(await startRealProxy(cp, usersFile, undefined, 'proxy, defaults', s.proxyFlags, options.workDir));
    // BENCH_REAL_BASELINE: the other build, measured beside this one in the same rounds (a change's before and after).
    if (s.baselineCli) proxies.push(await startRealProxy(cp, usersFile, undefined, 'proxy, baseline build', s.proxyFlags, options.workDir, undefined, s.baselineCli));
    else proxies.push(await startRealProxy(cp, usersFile, 1, 'proxy, --workers 1', s.proxyFlags, options.workDir));
    const [defaults, one] = proxies as [Proxy, Proxy];
    const installed = ensureNginx(log);
    if (installed.binary === undefined) throw new Error(`nginx: ${installed.reason}`);
    const nginx: NginxServer = await startNginx(clusterNginxTls(cp), cp.apiservers[0]!.url, usersFile, { workerProcesses: 1, dir: join(options.workDir, 'real-nginx'), binary: installed.binary });
    others.push(nginx);
    const floor = await startRealFloor(cp, BASIC_USER, options.workDir);
    others.push(floor);
    const workersLine = workersOf(defaults);
    const front = (url: string): Endpoint => ({ url, ca: cp.pki.read('proxy-ca.crt'), servername: 'localhost' });
    const cert: Identity = { cert: certUser.cert, key: certUser.key };
    const basic: Identity = { headers: { authorization: basicAuth(BASIC_USER) } };
    const through = (hop: Hop & { url: string }, label: string, via: Via) =>
      ({
        cert: { path: `${label}, cert`, via, user: 'cert', endpoint: front(hop.url), identity: cert, hop },
        basic: { path: `${label}, basic${via === 'nginx' ? ' (bcrypt every request)' : ' (cached)'}`, via, user: 'basic', endpoint: front(hop.url), identity: basic, hop },
      }) satisfies Record<string, Target>;
    const viaNginx = through(nginx, 'nginx (1 worker)', 'nginx');
    const viaFloor = through(floor, 'floor (bare Node + undici)', 'floor');
    const viaDefaults = through(defaults, `proxy defaults (--workers ${workersLine})`, 'proxy');
    const viaOne = through(one, s.baselineCli ? `proxy baseline build (${s.baselineCli})` : 'proxy --workers 1', 'proxy');
    const directAdmin: Target = { path: 'direct (admin cert)', via: 'direct', user: 'admin', endpoint: direct, identity: adminId, hop: undefined };
    const directUser: Target = { path: 'direct (cert user)', via: 'direct', user: 'cert', endpoint: direct, identity: cert, hop: undefined };
    const identities = await checkIdentities([viaNginx.cert, viaNginx.basic, viaFloor.cert, viaFloor.basic, viaOne.cert, viaOne.basic]);
    log(`bench: real identities (spoofed X-Remote-User/Group sent along): ${identities.join('; ')}`);
    const getCase: Case = { kase: 'GET 1 Pod', requestPath: GET_PATH, count: s.gets };
    // nginx's basic auth runs bcrypt (cost 10) on every request: fewer of them.
    const getBcryptCase: Case = { ...getCase, count: s.nginxBasicGets };
    const listCase: Case = { kase: `list ${s.pods} Pods`, requestPath: LIST_PATH, count: s.lists };
    const listOverHttp2: Case = { ...listCase, kase: `${listCase.kase} over HTTP/2` };
    // Direct and proxied interleaved, each case's direct first (the share is against it).
    const plan: [Case, Target][] = [
      [getCase, directAdmin],
      [getCase, viaNginx.cert],
      [getCase, viaFloor.cert],
      [getCase, viaDefaults.cert],
      [getCase, viaOne.cert],
      [getCase, directUser],
      [getBcryptCase, viaNginx.basic],
      [getCase, viaFloor.basic],
      [getCase, viaDefaults.basic],
      [getCase, viaOne.basic],
      [listCase, directAdmin],
      [listCase, viaNginx.cert],
      [listCase, viaFloor.cert],
      [listCase, viaDefaults.cert],
      [listCase, viaOne.cert],
      [listOverHttp2, { ...directAdmin, path: 'direct (admin cert), HTTP/2', endpoint: { ...direct, http2: true } }],
      [listOverHttp2, { ...viaDefaults.cert, path: `${viaDefaults.cert.path}, HTTP/2`, endpoint: { ...viaDefaults.cert.endpoint, http2: true } }],
    ];
    const rows: RealRow[] = plan.map(([c, t]) => ({ kase: c.kase, path: t.path, via: t.via, user: t.user, requests: c.count, samples: [], shares: t.via === 'direct' && t.user === 'admin' ? undefined : [], vsNginx: [], vsFloor: [] }));
    for (let round = 1; round <= s.rounds; round++) {
      for (const i of roundOrder(
        plan.map(([, t]) => t.via === 'direct'),
        round,
      )) {
        const [c, t] = plan[i]!;
        // The first time a path serves a case its code is cold (V8 still compiling): a warm-up as long as the measurement.
        const sample = await measure(t, c, pids, s.inflight, round === 1 ? c.count : Math.ceil(c.count / 10));
        const row = rows[i]!;
        row.samples.push(sample);
        const directRow = rows.find((r) => r.kase === c.kase && r.shares === undefined)!;
        const directSample = directRow.samples[round - 1];
        if (row.shares && directSample) row.shares.push(sample.perSecond / directSample.perSecond);
        const us = (cpu: number): string => `${Math.round((cpu / sample.requests) * 1e6)} µs`;
        log(
          `bench: real round ${round}/${s.rounds}, ${c.kase}, ${t.path}: ${sample.perSecond.toFixed(0)} req/s` +
            `${sample.hop === undefined ? '' : `, hop ${us(sample.hop)}`}, apiserver ${us(sample.apiserver)}, etcd ${us(sample.etcd)}, load-gen ${us(sample.loadgen)}, other ${(sample.other / sample.seconds).toFixed(2)} cores` +
            `${sample.errors ? `; ${sample.errors} errors, first: ${sample.firstError}` : ''}`,
        );
      }
    }
    compareHops(rows);
    const getBytes = rows[0]!.samples[0]?.bytes ?? 0;
    const listBytes = rows.find((r) => r.kase === listCase.kase)?.samples[0]?.bytes ?? 0;

    const latencyRows: RealLatencyRow[] = [];
    if (s.openGets > 0) {
      const capacity = median(rows.find((r) => r.kase === getCase.kase && r.path === viaDefaults.cert.path)!.samples.map((x) => x.perSecond));
      latencyRows.push(...(await addedLatency([directUser, viaNginx.cert, viaDefaults.cert, viaDefaults.basic], { ...getCase, count: s.openGets }, Math.round(capacity / 2), pids, s, log)));
    }

    const profiles: RealProfile[] = [];
    if (s.profileDir) {
      for (const kase of [getCase, listCase]) {
        const reference = rows.find((r) => r.kase === kase.kase && r.path === viaOne.cert.path)!;
        profiles.push(await profileProxy(cp, usersFile, s, options.workDir, cert, kase, pids, median(reference.samples.map((x) => perRequestUs(x.hop, x))), log));
      }
    }

    const watchRows: RealWatchRow[] = [];
    if (s.watches > 0) {
      let seq = 1;
      // The admin is exempt from API Priority and Fairness; the certificate user direct is the
      // same identity (and APF priority level) as the proxied rows.
      for (const t of [directAdmin, directUser, viaDefaults.cert, viaOne.cert]) {
        watchRows.push(await watchFanOut(t, admin, pids, s, seq, log));
        seq += s.watchEvents;
      }
    }
    const setup = [
      `Real control plane: ${cp.version.replace('Kubernetes', 'kube-apiserver')} and etcd 3.6.16 (test/cluster, no controller-manager, no kubelet, ${s.audit ? 'Metadata audit log on' : 'no audit log'}), the proxy (dist/), nginx (${installed.version.replace('nginx version: ', '')}, 1 worker, bench/nginx.ts's configuration), the floor (bench/floor.ts: node:https + undici, nothing else) and this process as the load generator, all on this machine: ${machine}.`,
      `Closed loop, ${s.inflight} in flight (HTTP/1.1 keep-alive, one connection each); per round ${s.gets} GETs of one Pod (${(getBytes / 1024).toFixed(1)} KB JSON; ${s.nginxBasicGets} through nginx's basic auth, a bcrypt of cost 10 each) and ${s.lists} lists of ${s.pods} Pods (${(listBytes / 1048576).toFixed(2)} MB JSON) on each path, after a warm-up of a tenth as many (as many in the first round); ${s.rounds} rounds, cases and paths interleaved; ranges are min-max over rounds.`,
      `CPU from /proc (utime+stime) over each measurement: hop = the proxy's (or nginx's, or the floor's) process tree; apiserver and etcd each; load-gen = this process; other = the rest of the machine. "hop / nginx" and "hop / floor": the hop's CPU per request over nginx's and the floor's in the same round, same case and kind of user. Load average at the end ${loadavg()
        .map((l) => l.toFixed(2))
        .join(', ')}. Extra proxy flags: ${s.proxyFlags.join(' ') || 'none'}.`,
      `Identities the apiserver saw (SelfSubjectReview, spoofed X-Remote-User/Group sent along): ${identities.join('; ')}.`,
    ];
    if (latencyRows.length > 0)
      setup.push(
        `Latency added at half the proxy's capacity: open loop, ${s.openGets} GETs of the Pod per path and round at ${latencyRows[0]!.perSecond} req/s (half the median req/s of the proxy at its defaults, certificate user, above), sent on schedule over ${s.inflight} keep-alive connections, each latency from when its request was due; paths alternating, ${s.rounds} rounds; "added" is each round's percentile minus the same round's direct one (the certificate user straight to the apiserver).`,
      );
    const notes = realNotes(rows, watchRows, latencyRows);
    return { setup, rows, latencyRows, profiles, watchRows, notes };
  } finally {
    await admin.close().catch(() => undefined);
    await Promise.all([...proxies, ...others].map((p) => p.stop()));
    await cp.stop();
    process.off('exit', killOnExit);
  }
}

/** Each of `targets` (the first: direct) at `perSecond` for `kase.count` GETs, alternating, `s.rounds` rounds. */
async function addedLatency(targets: Target[], kase: Case, perSecond: number, pids: Pids, s: RealSettings, log: (line: string) => void): Promise<RealLatencyRow[]> {
  const rows: RealLatencyRow[] = targets.map((t, i) => ({ path: t.path, perSecond, samples: [], addedP50Ms: i === 0 ? undefined : [], addedP99Ms: i === 0 ? undefined : [] }));
  for (let round = 1; round <= s.rounds; round++) {
    for (const [i, t] of targets.entries()) {
      const sample = await measure(t, kase, pids, s.inflight, Math.ceil(kase.count / 10), perSecond);
      const row = rows[i]!;
      row.samples.push(sample);
      const direct = rows[0]!.samples[round - 1]!;
      row.addedP50Ms?.push(sample.p50Ms - direct.p50Ms);
      row.addedP99Ms?.push(sample.p99Ms - direct.p99Ms);
      log(
        `bench: real latency round ${round}/${s.rounds}, ${perSecond} req/s, ${t.path}: p50 ${sample.p50Ms.toFixed(2)} ms, p99 ${sample.p99Ms.toFixed(2)} ms` +
          `${sample.hop === undefined ? '' : `, hop ${Math.round((sample.hop / sample.requests) * 1e6)} µs`}${sample.errors ? `; ${sample.errors} errors, first: ${sample.firstError}` : ''}`,
      );
    }
  }
  return rows;
}

/** Each hop's CPU per request over nginx's and over the floor's, round by round, for the same case and user. */
function compareHops(rows: RealRow[]): void {
  const perRequest = (x: Sample): number => perRequestUs(x.hop, x);
  for (const row of rows) {
    if (row.via === 'direct') continue;
    const nginx = rows.find((r) => r.via === 'nginx' && r.kase === row.kase && r.user === row.user);
    const floor = rows.find((r) => r.via === 'floor' && r.kase === row.kase && r.user === row.user);
    row.samples.forEach((x, i) => {
      if (nginx?.samples[i] && row !== nginx) row.vsNginx.push(perRequest(x) / perRequest(nginx.samples[i]));
      if (floor?.samples[i] && row !== floor) row.vsFloor.push(perRequest(x) / perRequest(floor.samples[i]));
    });
  }
}

function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
}

/**
 * BENCH_REAL_PROFILE: a proxy of its own (--workers 1) under --cpu-prof serves `kase` (after a
 * warm-up as long), is stopped so V8 writes the profile, and the profile cut to the measured
 * window is summarised. Stage µs are shares of the busy time × `cpuUsPerRequest`, the
 * unprofiled proxy's CPU per request (the profiler itself adds some).
 */
async function profileProxy(cp: ControlPlane, usersFile: string, s: RealSettings, workDir: string, identity: Identity, kase: Case, pids: Pids, cpuUsPerRequest: number, log: (line: string) => void): Promise<RealProfile> {
  const dir = join(resolve(s.profileDir!), `real-proxy-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(dir, { recursive: true });
  const label = `proxy --workers 1, cert, ${kase.kase} (profiled)`;
  log(`bench: real profile: ${label}, ${kase.count} requests after as many warm-up ones; profile in ${dir}`);
  const proxy = await startRealProxy(cp, usersFile, 1, label, s.proxyFlags, workDir, dir);
  let sample: Sample;
  let systemShare: number;
  try {
    const target: Target = { path: label, via: 'proxy', user: 'cert', endpoint: { url: proxy.url, ca: cp.pki.read('proxy-ca.crt'), servername: 'localhost' }, identity, hop: proxy };
    const before = userSystemTicks(proxy.pid);
    sample = await measure(target, kase, pids, s.inflight, kase.count);
    const after = userSystemTicks(proxy.pid);
    const [user, system] = [after[0] - before[0], after[1] - before[1]];
    systemShare = system / (user + system);
  } finally {
    // V8 writes the profile as the process exits: give it time rather than SIGKILL.
    await proxy.stop(60_000);
  }
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(dir, f));
  if (files.length === 0) throw new Error(`the profiled proxy wrote no .cpuprofile into ${dir}`);
  // --workers 1 is one process; were there more, the biggest profile is the one that served.
  const file = files.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
  const profiledCpuUsPerRequest = perRequestUs(sample.hop, sample);
  const report = profileReport(file, { window: sample.windowUs, requests: sample.requests, cpuUsPerRequest, systemShare });
  log(`bench: real profile: ${profiledCpuUsPerRequest.toFixed(0)} µs/request under the profiler (${cpuUsPerRequest.toFixed(0)} without), ${file}`);
  return { ...report, label, cpuUsPerRequest, profiledCpuUsPerRequest, systemShare };
}

/** utime and stime of a process (clock ticks): the kernel's share is the system calls (socket reads and writes, on loopback also the peer's TCP receive path). */
function userSystemTicks(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [Number(fields[11]), Number(fields[12])];
}

/** The worker count the proxy's start-up line reports (a supervised proxy has `workers`; one process has not). */
function workersOf(proxy: Proxy): number {
  const line = readFileSync(proxy.stdoutFile, 'utf8')
    .split('\n')
    .find((l) => l.includes('listening on'));
  const workers = line ? (JSON.parse(line) as { workers?: unknown }).workers : undefined;
  return typeof workers === 'number' ? workers : 1;
}

// ---------------------------------------------------------------------------------------------
// Formatting

function thousands(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** "lo-hi" (or one value) with the unit once: "42-75 %". */
function range(values: number[], format: (n: number) => string, unit = ''): string {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return '—';
  const [a, b] = [format(Math.min(...finite)), format(Math.max(...finite))];
  return `${a === b ? a : `${a}-${b}`}${unit}`;
}

const perRequestUs = (cpu: number | undefined, sample: Sample): number => (cpu === undefined ? NaN : (cpu / sample.requests) * 1e6);

const HEADERS = [
  'case',
  'path',
  'requests/round',
  'req/s',
  'share of direct',
  'hop CPU µs/req',
  'hop / nginx CPU',
  'hop / floor CPU',
  'apiserver CPU µs/req',
  'etcd CPU µs/req',
  'hop / apiserver CPU',
  'load-gen CPU µs/req',
  'p50 ms',
  'p99 ms',
  'other cores',
  'errors',
];

function cells(row: RealRow): string[] {
  const ss = row.samples;
  return [
    row.kase,
    row.path,
    String(row.requests),
    range(
      ss.map((x) => x.perSecond),
      thousands,
    ),
    row.shares
      ? range(
          row.shares.map((x) => x * 100),
          (n) => n.toFixed(0),
          ' %',
        )
      : '—',
    range(
      ss.map((x) => perRequestUs(x.hop, x)),
      thousands,
    ),
    range(row.vsNginx, (n) => n.toFixed(2), 'x'),
    range(row.vsFloor, (n) => n.toFixed(2), 'x'),
    range(
      ss.map((x) => perRequestUs(x.apiserver, x)),
      thousands,
    ),
    range(
      ss.map((x) => perRequestUs(x.etcd, x)),
      thousands,
    ),
    range(
      ss.map((x) => (x.hop === undefined ? NaN : x.hop / x.apiserver)),
      (n) => n.toFixed(2),
      'x',
    ),
    range(
      ss.map((x) => perRequestUs(x.loadgen, x)),
      thousands,
    ),
    range(
      ss.map((x) => x.p50Ms),
      (n) => n.toFixed(n < 10 ? 2 : 1),
    ),
    range(
      ss.map((x) => x.p99Ms),
      (n) => n.toFixed(n < 10 ? 2 : 1),
    ),
    range(
      ss.map((x) => x.other / x.seconds),
      (n) => n.toFixed(2),
    ),
    String(ss.reduce((n, x) => n + x.errors, 0)),
  ];
}

const WATCH_HEADERS = ['watch fan-out (ConfigMaps)', 'open / asked', 'apiserver holds', 'open s', 'ms to half the watches', 'ms to every watch', 'missed', 'apiserver RSS MB', 'hop RSS MB', 'errors'];

function watchCells(row: RealWatchRow): string[] {
  const ms = (n: number): string => n.toFixed(n < 10 ? 1 : 0);
  return [
    row.path,
    `${row.opened} / ${row.requested}`,
    String(row.apiserverHeld),
    row.openSeconds.toFixed(1),
    range(row.p50Ms, ms),
    range(row.allMs, ms),
    String(row.missed),
    row.apiserverRssMb.toFixed(0),
    row.hopRssMb === undefined ? '—' : row.hopRssMb.toFixed(0),
    String(row.errors),
  ];
}

const LATENCY_HEADERS = ['GET 1 Pod, open loop', 'req/s asked', 'req/s done', 'p50 ms', 'p99 ms', 'p50 added ms', 'p99 added ms', 'hop CPU µs/req', 'errors'];

function latencyCells(row: RealLatencyRow): string[] {
  const ms = (n: number): string => n.toFixed(2);
  const ss = row.samples;
  return [
    row.path,
    String(row.perSecond),
    range(
      ss.map((x) => x.perSecond),
      thousands,
    ),
    range(
      ss.map((x) => x.p50Ms),
      ms,
    ),
    range(
      ss.map((x) => x.p99Ms),
      ms,
    ),
    row.addedP50Ms ? range(row.addedP50Ms, ms) : '—',
    row.addedP99Ms ? range(row.addedP99Ms, ms) : '—',
    range(
      ss.map((x) => perRequestUs(x.hop, x)),
      thousands,
    ),
    String(ss.reduce((n, x) => n + x.errors, 0)),
  ];
}

const stageHeaders = (p: RealProfile): string[] => [`stage (${p.label})`, 'share of busy time', 'µs/req (share × CPU)', 'µs/req (system time to socket stages)'];

function stageCells(p: RealProfile): string[][] {
  return p.stages.map((st) => [st.stage, `${(st.share * 100).toFixed(1)} %`, st.usPerRequest.toFixed(0), st.usPerRequestByKind.toFixed(0)]);
}

function profileSection(p: RealProfile): string[] {
  return [
    `Where the time goes (BENCH_REAL_PROFILE): ${p.label}; ${p.file}; ${p.windowSeconds.toFixed(1)} s of the measured window, ${(p.busyShare * 100).toFixed(0)} % of it busy on the main thread (${p.busyUsPerRequest.toFixed(0)} µs sampled per request); ${p.profiledCpuUsPerRequest.toFixed(0)} µs/request under the profiler, ${p.cpuUsPerRequest.toFixed(0)} µs without (median over rounds), which the stages below split by their share. The proxy's CPU was ${(p.systemShare * 100).toFixed(0)} % system time (warm-up and measurement). V8 samples wall time: a sample where the thread waits for a core (this machine is shared) counts for the frame it stopped in, so shares lean towards the socket writes that wake the apiserver or the client; the last column charges only the system time to the socket stages and the user time to the rest.`,
    `Per module (Node's internals charged to the module that called them): ${p.modules
      .slice(0, 10)
      .map((m) => `${m.name} ${(m.share * 100).toFixed(1)} %`)
      .join(', ')}.`,
  ];
}

function realNotes(rows: RealRow[], watchRows: RealWatchRow[], latencyRows: RealLatencyRow[]): string[] {
  const notes: string[] = [];
  for (const r of latencyRows) {
    const failed = r.samples.find((x) => x.errors > 0);
    if (failed) notes.push(`at ${r.perSecond} req/s, ${r.path}: ${r.samples.reduce((n, x) => n + x.errors, 0)} errors, first: ${failed.firstError}`);
  }
  for (const r of rows) {
    const failed = r.samples.find((x) => x.errors > 0);
    if (failed) notes.push(`${r.kase}, ${r.path}: ${r.samples.reduce((n, x) => n + x.errors, 0)} errors, first: ${failed.firstError}`);
  }
  for (const w of watchRows) if (w.errors > 0 || w.missed > 0) notes.push(`watches via ${w.path}: ${w.errors} errors, ${w.missed} events missed; first error: ${w.firstError ?? 'none'}`);
  const busiest = Math.max(0, ...rows.flatMap((r) => r.samples.map((x) => x.other / x.seconds)));
  if (busiest >= 0.1) notes.push(`warning: other processes used up to ${busiest.toFixed(2)} cores during a measurement; the numbers are noisy`);
  return notes;
}

function textGrid(headers: string[], body: string[][]): string[] {
  const table = [headers, ...body];
  const widths = headers.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  return table.map((r) =>
    r
      .map((cell, c) => (c < 2 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join('  ')
      .trimEnd(),
  );
}

function markdownGrid(headers: string[], body: string[][]): string[] {
  const line = (r: string[]): string => `| ${r.join(' | ')} |`;
  return [line(headers), line(headers.map((_, c) => (c < 2 ? '---' : '---:'))), ...body.map(line)];
}

export function realTextTable(result: RealResult): string {
  if (result.skipped) return [...result.setup, `real kube-apiserver: skipped: ${result.skipped}`].join('\n');
  const out = [...result.setup, '', ...textGrid(HEADERS, result.rows.map(cells))];
  if (result.latencyRows.length > 0) out.push('', ...textGrid(LATENCY_HEADERS, result.latencyRows.map(latencyCells)));
  for (const p of result.profiles) out.push('', ...profileSection(p), '', ...textGrid(stageHeaders(p), stageCells(p)), '', ...p.top.map((t) => `${(t.share * 100).toFixed(1).padStart(5)}%  ${t.name}`));
  if (result.watchRows.length > 0) out.push('', ...textGrid(WATCH_HEADERS, result.watchRows.map(watchCells)).map((l) => l));
  if (result.notes.length > 0) out.push('', ...result.notes);
  return out.join('\n');
}

export function realMarkdown(result: RealResult): string {
  if (result.skipped) return [...result.setup.map((l) => `${l}  `), '', `Skipped: ${result.skipped}`, ''].join('\n');
  const out = [...result.setup.map((l) => `${l}  `), '', ...markdownGrid(HEADERS, result.rows.map(cells))];
  if (result.latencyRows.length > 0) out.push('', ...markdownGrid(LATENCY_HEADERS, result.latencyRows.map(latencyCells)));
  for (const p of result.profiles) {
    out.push('', ...profileSection(p).map((l) => `${l}  `), '', ...markdownGrid(stageHeaders(p), stageCells(p)));
    out.push('', 'Top functions (self time, share of the busy time):', '', ...p.top.map((t) => `- ${(t.share * 100).toFixed(1)}% \`${t.name}\``));
  }
  if (result.watchRows.length > 0) out.push('', ...markdownGrid(WATCH_HEADERS, result.watchRows.map(watchCells)));
  if (result.notes.length > 0) out.push('', ...result.notes.map((n) => `- ${n}`));
  return `${out.join('\n')}\n`;
}

export function realHasErrors(result: RealResult): boolean {
  return result.rows.some((r) => r.samples.some((x) => x.errors > 0)) || result.latencyRows.some((r) => r.samples.some((x) => x.errors > 0)) || result.watchRows.some((w) => w.errors > 0 || w.missed > 0 || w.opened < w.requested);
}

// Standalone: node --import tsx bench/real-cluster.ts
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  installCleanup();
  buildProxy();
  const work = mkdtempSync(join(tmpdir(), 'kfp-bench-real-'));
  const result = await runRealCluster({ workDir: work });
  process.stdout.write(`\n${realTextTable(result)}\n`);
  if (realHasErrors(result)) {
    process.stderr.write(`bench: proxy logs kept in ${work}\n`);
    process.exitCode = 1;
  } else {
    rmSync(work, { recursive: true, force: true });
  }
}
