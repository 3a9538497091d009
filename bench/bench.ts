// `npm run bench`: the cost of the proxy on this machine. Three processes on loopback: the
// kube-apiserver stand-in, the proxy as built (`node dist/cli.js serve`), and this one as the
// closed-loop load generator. Scenarios: (a) straight to the stand-in, (b) through the proxy
// with a client certificate, (c) with a password (bcrypt once, then the verified-credential
// cache), (d) the password user (from 127.0.0.1) while other clients, each from its own loopback
// address (127.0.0.2, ...), flood the proxy with wrong passwords for the same user name: with
// the default --auth-failure-limit they are soon answered 429 without bcrypt, and the user's
// cached credential keeps working. The attackers' 401s and 429s are counted. (e, f) a 50 KB
// PodList direct and through the proxy. (g) HTTP/2 clients. (h, i) direct and through the proxy
// at a fixed rate (open loop, bench/load.ts): the latency the proxy adds at a given load. Then
// nginx configured as README's "Why" describes, in front of the same stand-in (bench/nginx.ts
// installs Debian's nginx if it can), and 10,000 concurrent watches (bench/watches.ts: stand-in,
// proxy and watch clients in processes of their own).
//
// Settings (env): BENCH_SECONDS (measured window per scenario, default 5), BENCH_WARMUP_SECONDS
// (1), BENCH_CONNECTIONS (concurrent loops per scenario, and the password user's in (d); 50),
// BENCH_ATTACKERS (wrong-password loops in (d), one source address each; 50), BENCH_RATE
// (requests a second in the open-loop scenarios h and i, over BENCH_CONNECTIONS connections;
// 3000), BENCH_PROXY_CPU_PROF (a directory: profile the proxy with --cpu-prof), BENCH_PROXY_FLAGS (more proxy flags;
// "--auth-failure-limit 0" measures the flood without limits, every guess a bcrypt), BENCH_NGINX=0
// (skip nginx), BENCH_WATCHES (10000; 0 skips), BENCH_WATCH_HTTP1=1, BENCH_ONLY=b,c (just those
// request scenarios). Writes bench/results.md.
//
// Last, the same proxy in front of a real kube-apiserver and etcd (bench/real-cluster.ts, built
// by test/cluster/build.sh; skipped with the reason when that cannot build): GETs and 1 MB lists
// direct, through the proxy at its defaults and at --workers 1, CPU per request of the hop and of
// the apiserver, and a watch fan-out. BENCH_REAL=0 skips it, BENCH_REAL=only runs nothing else;
// its own settings (BENCH_REAL_ROUNDS, BENCH_REAL_INFLIGHT, BENCH_REAL_GETS, ...) are in that file.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Pool, type Dispatcher } from 'undici';
import { basicAuth } from '../test/helpers/clients.js';
import { createTestPki, type PkiName, type TestPki } from '../test/helpers/pki.js';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, writeUsersFile } from '../test/helpers/setup.js';
import { dispatchersOf, expectedStatuses, runLoad, type LoadGroup, type Window } from './load.js';
import { runNginxScenarios } from './nginx.js';
import { PAYLOAD_PATH } from './payload.js';
import { runWatchScenarios, watchMarkdown, watchSetupLines, watchTextTable, type WatchRow } from './watches.js';
import { tunnelThroughput } from './tunnel.js';
import { buildProxy, cpuSeconds, installCleanup, treeCpuSeconds, machineBusySeconds, spawnNode, waitForJsonLine, type Child } from './processes.js';
import { markdown, replaceLastSection, textTable, times, type Ratio, type Row } from './report.js';
import { envNumber } from './env.js';
import type { RealResult } from './real-cluster.js';

/** A small authorized JSON GET (one Pod, ~700 bytes): the proxy's overhead, not the payload, dominates. */
const PATH = '/api/v1/namespaces/default/pods/pod-0';
/** As in production users files; the cost only shows on a cache miss and in the attack. */
const BCRYPT_COST = 10;
/** The committed record of the last full run (date and machine in its first lines). */
const RESULTS = join(PROJECT_ROOT, 'bench', 'results.md');

interface Settings {
  warmupMs: number;
  durationMs: number;
  connections: number;
  attackers: number;
  /** Requests a second in the open-loop scenarios (h, i). */
  rate: number;
}

function readSettings(): Settings {
  return {
    warmupMs: envNumber('BENCH_WARMUP_SECONDS', 1) * 1000,
    durationMs: envNumber('BENCH_SECONDS', 5) * 1000,
    connections: Math.round(envNumber('BENCH_CONNECTIONS', 50)),
    attackers: Math.round(envNumber('BENCH_ATTACKERS', 50)),
    rate: Math.round(envNumber('BENCH_RATE', 3000)),
  };
}

type Server = Child & { url: string };

async function startStandin(pki: TestPki, logDir: string): Promise<Server> {
  const child = spawnNode('apiserver', ['--import', 'tsx', join(PROJECT_ROOT, 'bench', 'apiserver-process.ts'), pki.dir], logDir, PROJECT_ROOT);
  const url = await waitForJsonLine(child, (line) => (typeof line.url === 'string' ? line.url : undefined));
  return { ...child, url };
}

async function startProxy(pki: TestPki, upstream: string, usersFile: string, logDir: string): Promise<Server> {
  // BENCH_PROXY_CPU_PROF=<dir>: a V8 CPU profile of the proxy over the whole run, written when it stops.
  const profileDir = process.env.BENCH_PROXY_CPU_PROF;
  const profile = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  // BENCH_PROXY_FLAGS: more proxy flags, e.g. "--log-level warn" to measure without the traffic log.
  const extra = (process.env.BENCH_PROXY_FLAGS ?? '').split(' ').filter(Boolean);
  const args = [...profile, join(PROJECT_ROOT, 'dist', 'cli.js'), 'serve', '--listen', '127.0.0.1:0', ...proxyFlags(pki, { upstream, usersFile }), ...extra];
  const child = spawnNode('proxy', args, logDir, PROJECT_ROOT);
  const listen = await waitForJsonLine(child, (line) => (typeof line.msg === 'string' && line.msg.startsWith('listening on') ? String(line.listen) : undefined));
  return { ...child, url: listen };
}

interface Endpoint {
  url: string;
  ca: PkiName;
  servername: string;
}

/** One keep-alive connection per loop, HTTP/1.1 without pipelining, as one kubectl per loop. */
function pool(pki: TestPki, endpoint: Endpoint, connections: number, cert?: PkiName, localAddress?: string, http2 = false): Pool {
  return new Pool(endpoint.url, {
    // HTTP/2 as kubectl speaks it: a few connections, many concurrent streams on each.
    ...(http2 ? { connections: Math.max(1, Math.ceil(connections / 10)), allowH2: true, pipelining: 10 } : { connections, pipelining: 1 }),
    ...(localAddress ? { localAddress } : {}),
    connect: {
      ca: pki.pem[endpoint.ca].cert,
      servername: endpoint.servername,
      ...(cert ? { cert: pki.pem[cert].cert, key: pki.pem[cert].key } : {}),
    },
  });
}

function get(headers: Record<string, string> = {}, path = PATH): () => Dispatcher.RequestOptions {
  const options: Dispatcher.RequestOptions = { method: 'GET', path, headers: { accept: 'application/json', ...headers } };
  return () => options;
}

/** A new wrong password each time, so no two attempts can share one bcrypt in the proxy. */
function wrongPasswords(): () => Dispatcher.RequestOptions {
  let attempt = 0;
  return () => ({ method: 'GET', path: PATH, headers: { accept: 'application/json', authorization: basicAuth({ name: ALICE.name, password: `wrong-${attempt++}` }) } });
}

/** 127.0.0.2, 127.0.0.3, ...: never 127.0.0.1 (the measured user) nor a .0 or .255. */
function attackerAddress(i: number): string {
  const n = i + 1;
  return `127.0.${Math.floor(n / 254)}.${(n % 254) + 1}`;
}

interface Scenario {
  /** Through the proxy (its CPU per request is reported) or straight to the stand-in. */
  viaProxy: boolean;
  groups: LoadGroup[];
}

function scenarios(pki: TestPki, standin: Server, proxy: Server, s: Settings): Scenario[] {
  const direct: Endpoint = { url: standin.url, ca: 'cluster-ca', servername: 'kubernetes' };
  const front: Endpoint = { url: proxy.url, ca: 'proxy-ca', servername: 'localhost' };
  const ok = (label: string, dispatcher: Dispatcher, request: () => Dispatcher.RequestOptions, concurrency = s.connections): LoadGroup => ({
    label,
    concurrency,
    dispatcher,
    request,
    expectStatus: 200,
  });
  const alice = get({ authorization: basicAuth(ALICE) });
  // Linux routes all of 127/8 to lo: each attacker is a client of its own to the proxy.
  const attackers = Array.from({ length: s.attackers }, (_, i) => pool(pki, front, 1, undefined, attackerAddress(i)));
  return [
    { viaProxy: false, groups: [ok('a. direct to stand-in (cluster-admin cert)', pool(pki, direct, s.connections, 'cluster-admin'), get())] },
    { viaProxy: true, groups: [ok('b. proxy, client cert (user-alice)', pool(pki, front, s.connections, 'user-alice'), get())] },
    { viaProxy: true, groups: [ok('c. proxy, basic auth (cached)', pool(pki, front, s.connections, undefined, '127.0.0.1'), alice)] },
    {
      viaProxy: true,
      groups: [
        ok('d. proxy, basic auth under attack', pool(pki, front, s.connections, undefined, '127.0.0.1'), alice),
        { label: `d. attackers (wrong passwords, ${s.attackers} addresses)`, concurrency: s.attackers, dispatcher: attackers, request: wrongPasswords(), expectStatus: [401, 429] },
      ],
    },
    { viaProxy: false, groups: [ok('e. direct, 50 KB GET (PodList)', pool(pki, direct, s.connections, 'cluster-admin'), get({}, PAYLOAD_PATH))] },
    { viaProxy: true, groups: [ok('f. proxy, client cert, 50 KB GET', pool(pki, front, s.connections, 'user-alice'), get({}, PAYLOAD_PATH))] },
    { viaProxy: true, groups: [ok(`g. proxy, client cert, HTTP/2 (${Math.ceil(s.connections / 10)} connections × 10 streams)`, pool(pki, front, s.connections, 'user-alice', undefined, true), get())] },
    { viaProxy: false, groups: [{ ...ok(`h. direct, open loop ${s.rate} req/s`, pool(pki, direct, s.connections, 'cluster-admin'), get()), ratePerSecond: s.rate }] },
    { viaProxy: true, groups: [{ ...ok(`i. proxy, client cert, open loop ${s.rate} req/s`, pool(pki, front, s.connections, 'user-alice'), get()), ratePerSecond: s.rate }] },
  ];
}

/** CPU seconds used inside a scenario's measured window. */
interface CpuUse {
  proxy: number;
  standin: number;
  loadgen: number;
  /** Everything else on the machine (other users of these 2 cores make a run noisy). */
  other: number;
}

interface Measurement {
  window: Window;
  cpu: CpuUse;
}

/** Cumulative CPU seconds of our three processes and of the whole machine. */
function cpuCounters(proxy: Server, standin: Server) {
  return { proxy: treeCpuSeconds(proxy.pid), standin: cpuSeconds(standin.pid), loadgen: cpuSeconds(process.pid), machine: machineBusySeconds() };
}

/** Runs one scenario and the CPU each process used inside its measured window. */
async function measure(scenario: Scenario, s: Settings, proxy: Server, standin: Server): Promise<Measurement> {
  let before = cpuCounters(proxy, standin);
  let after = before;
  const window = await runLoad(scenario.groups, {
    warmupMs: s.warmupMs,
    durationMs: s.durationMs,
    onMark: (mark) => {
      if (mark === 'start') before = cpuCounters(proxy, standin);
      else after = cpuCounters(proxy, standin);
    },
  });
  await Promise.all(scenario.groups.flatMap((g) => dispatchersOf(g).map((d) => d.close())));
  proxy.assertAlive();
  standin.assertAlive();
  const proxyCpu = after.proxy - before.proxy;
  const standinCpu = after.standin - before.standin;
  const loadgen = after.loadgen - before.loadgen;
  const other = Math.max(0, after.machine - before.machine - proxyCpu - standinCpu - loadgen);
  return { window, cpu: { proxy: proxyCpu, standin: standinCpu, loadgen, other } };
}

function rowsOf(scenario: Scenario, m: Measurement): Row[] {
  const { window } = m;
  const soleGroup = window.groups.length === 1;
  // Only requests that reached the stand-in cost it anything: the attackers' 401s never do.
  const reachesStandin = (i: number): boolean => expectedStatuses(scenario.groups[i]!).includes(200);
  const forwarded = window.groups.reduce((n, g, i) => (reachesStandin(i) ? n + g.requests : n), 0);
  return window.groups.map((g, i) => ({
    scenario: g.label,
    requests: g.requests,
    perSecond: g.perSecond,
    p50Ms: g.p50Ms,
    p99Ms: g.p99Ms,
    // With attackers in the mix the proxy's CPU (mostly bcrypt) belongs to no single row.
    proxyCpuUsPerRequest: scenario.viaProxy && soleGroup ? (m.cpu.proxy / g.requests) * 1e6 : undefined,
    proxyCores: scenario.viaProxy ? m.cpu.proxy / window.seconds : undefined,
    standinCpuUsPerRequest: reachesStandin(i) ? (m.cpu.standin / forwarded) * 1e6 : undefined,
    loadgenCores: m.cpu.loadgen / window.seconds,
    otherCores: m.cpu.other / window.seconds,
    errors: g.errors,
  }));
}

function ratios(rows: Row[]): Ratio[] {
  const find = (prefix: string) => rows.find((r) => r.scenario.startsWith(prefix));
  const [direct, cert, basic, attacked] = [find('a.'), find('b.'), find('c.'), find('d. proxy')];
  // BENCH_ONLY ran a subset: no comparisons.
  if (!direct || !cert || !basic || !attacked) return [];
  const compare = (a: Row, b: Row): string => `req/s ${times(a.perSecond, b.perSecond)}, p50 ${times(a.p50Ms, b.p50Ms)}, p99 ${times(a.p99Ms, b.p99Ms)}`;
  const attackP99 = attacked.p99Ms / basic.p99Ms;
  const verdict = (met: boolean) => (met ? 'met' : 'NOT met');
  const out: Ratio[] = [
    { label: 'proxy (cert) vs direct', value: compare(cert, direct) },
    { label: 'added p99 latency, cert, closed loop (saturated: mostly queueing)', value: `${(cert.p99Ms - direct.p99Ms).toFixed(2)} ms` },
    {
      label: 'basic (cached) vs cert, CPU per request (target ≤ 1.2x)',
      value: `${times(basic.proxyCpuUsPerRequest ?? NaN, cert.proxyCpuUsPerRequest ?? NaN)}: ${verdict((basic.proxyCpuUsPerRequest ?? Infinity) <= 1.2 * (cert.proxyCpuUsPerRequest ?? 0))}; ${compare(basic, cert)}`,
    },
    {
      label: 'basic under attack vs no attack',
      value: `p99 ${times(attacked.p99Ms, basic.p99Ms)} (target ≤ 2x: ${verdict(attackP99 <= 2)}), req/s ${times(attacked.perSecond, basic.perSecond)}`,
    },
    {
      label: "proxy CPU per request (cert) vs the stand-in's (direct)",
      value: times(cert.proxyCpuUsPerRequest ?? NaN, direct.standinCpuUsPerRequest ?? NaN),
    },
  ];
  const [pacedDirect, pacedProxy] = [find('h.'), find('i.')];
  if (pacedDirect && pacedProxy) {
    const added = pacedProxy.p99Ms - pacedDirect.p99Ms;
    out.push({ label: 'added p99 latency, cert, open loop at the same rate (i vs h; target < 2 ms)', value: `${added.toFixed(2)} ms (p50 +${(pacedProxy.p50Ms - pacedDirect.p50Ms).toFixed(2)} ms): ${verdict(added < 2)}` });
  }
  const nginxCert = rows.find((r) => r.scenario.startsWith('nginx') && r.scenario.includes('client cert') && !r.scenario.includes('50 KB'));
  if (nginxCert?.proxyCpuUsPerRequest !== undefined && cert.proxyCpuUsPerRequest !== undefined) {
    const ratio = cert.proxyCpuUsPerRequest / nginxCert.proxyCpuUsPerRequest;
    out.push({
      label: 'proxy vs nginx, CPU per request on the client-cert path (target ≤ 2x)',
      value: `${cert.proxyCpuUsPerRequest.toFixed(0)} vs ${nginxCert.proxyCpuUsPerRequest.toFixed(0)} µs: ${ratio.toFixed(2)}x, ${verdict(ratio <= 2)}`,
    });
  }
  const nginxBasic = rows.find((r) => r.scenario.startsWith('nginx') && r.scenario.includes('basic'));
  if (nginxBasic) out.push({ label: 'proxy (cached password) vs nginx (bcrypt per request), req/s', value: times(basic.perSecond, nginxBasic.perSecond) });
  return out;
}

/** Other processes on these 2 cores (a test run, a build) slow every scenario they overlap. */
function noiseWarnings(rows: Row[]): Ratio[] {
  const busiest = Math.max(...rows.map((r) => r.otherCores));
  if (busiest < 0.1) return [];
  return [{ label: 'warning', value: `other processes used up to ${busiest.toFixed(2)} cores during the run; the numbers are noisy, run again on an idle machine` }];
}

function setupLines(s: Settings): string[] {
  const cpu = cpus();
  return [
    `kube-front-proxy bench, ${new Date().toISOString()}: Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}.`,
    `Loopback; stand-in, proxy (dist/, 1 bcrypt worker) and load generator are 3 processes on these cores.`,
    `Closed loop (h, i: open loop at ${s.rate} req/s, latency from when each request was due), HTTP/1.1 keep-alive, ${s.connections} connections (+${s.attackers} attackers in d, one loopback address each), ${s.warmupMs / 1000} s warm-up, ${s.durationMs / 1000} s measured; GET ${PATH}; bcrypt cost ${BCRYPT_COST}.`,
    `Extra proxy flags: ${process.env.BENCH_PROXY_FLAGS?.trim() || 'none'} (failed-login limit: the default 10 per address and per name per minute, unless set there).`,
  ];
}

/** The throw-away PKI and the servers' logs: removed at exit, kept (and named) when something failed. */
function workDir(): { path: string; keep(): void } {
  const path = mkdtempSync(join(tmpdir(), 'kfp-bench-'));
  let keep = false;
  process.once('exit', () => {
    if (keep) process.stderr.write(`bench: server logs kept in ${path}\n`);
    else rmSync(path, { recursive: true, force: true });
  });
  return { path, keep: () => (keep = true) };
}

/** What the attackers were answered (401 = a bcrypt ran, 429 = refused by the failed-login limit). */
function answerNotes(scenario: Scenario, window: Window): Ratio[] {
  return window.groups.flatMap((g, i) => {
    if (expectedStatuses(scenario.groups[i]!).includes(200)) return [];
    const counts = Object.entries(g.statuses).map(([status, n]) => `${status === '0' ? 'transport errors' : status}: ${n}`);
    return [{ label: `${g.label}, answers in the window`, value: counts.join(', ') || 'none' }];
  });
}

async function runAll(settings: Settings, work: string): Promise<{ rows: Row[]; tunnels: Ratio[]; answers: Ratio[] }> {
  const pki = await createTestPki(join(work, 'pki'));
  const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE, BCRYPT_COST)]);
  const standin = await startStandin(pki, work);
  const proxy = await startProxy(pki, standin.url, usersFile, work);
  const rows: Row[] = [];
  const answers: Ratio[] = [];
  let tunnels: Ratio[] = [];
  try {
    // BENCH_ONLY=b,f runs just those scenarios (e.g. under BENCH_PROXY_CPU_PROF).
    const only = process.env.BENCH_ONLY?.split(',').map((x) => `${x.trim()}.`);
    const chosen = scenarios(pki, standin, proxy, settings).filter((sc) => !only || only.some((o) => sc.groups[0]?.label.startsWith(o)));
    for (const scenario of chosen) {
      process.stderr.write(`bench: ${scenario.groups.map((g) => g.label).join(' + ')}\n`);
      const m = await measure(scenario, settings, proxy, standin);
      for (const g of m.window.groups) if (g.errors > 0) process.stderr.write(`bench: ${g.label}: ${g.errors} errors, first: ${g.firstError}\n`);
      rows.push(...rowsOf(scenario, m));
      answers.push(...answerNotes(scenario, m.window));
    }
    tunnels = await measureTunnels(pki, standin, proxy);
    // nginx as README's "Why" configures it, in front of the same stand-in (skipped, with the
    // reason, where Debian's nginx cannot be installed). The proxy idles meanwhile.
    if (process.env.BENCH_NGINX !== '0') {
      process.stderr.write('bench: nginx\n');
      const nginx = await runNginxScenarios({ pki, upstreamUrl: standin.url, standinPid: standin.pid, usersFile, workDir: work, connections: settings.connections, warmupMs: settings.warmupMs, durationMs: settings.durationMs });
      rows.push(...nginx.rows);
      answers.push(...nginx.notes, ...(nginx.skipped ? [{ label: 'nginx', value: `skipped: ${nginx.skipped}` }] : []));
    }
  } finally {
    await Promise.all([proxy.stop(), standin.stop()]);
  }
  return { rows, tunnels, answers };
}

const TUNNEL_BYTES = 256 * 1024 * 1024;

/** One tunnel's throughput direct to the stand-in and through the proxy (password user). */
async function measureTunnels(pki: TestPki, standin: Server, proxy: Server): Promise<Ratio[]> {
  process.stderr.write('bench: one upgrade tunnel, direct and through the proxy\n');
  const direct = await tunnelThroughput({ port: Number(new URL(standin.url).port), ca: pki.pem['cluster-ca'].cert, servername: 'kubernetes', cert: pki.pem['cluster-admin'] }, TUNNEL_BYTES);
  const viaProxy = await tunnelThroughput({ port: Number(new URL(proxy.url).port), ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'] }, TUNNEL_BYTES);
  return [{ label: `one SPDY tunnel, ${TUNNEL_BYTES / 1048576} MiB echoed`, value: `direct ${direct.toFixed(0)} MiB/s, through the proxy ${viaProxy.toFixed(0)} MiB/s (${times(viaProxy, direct)})` }];
}

/** BENCH_WATCHES (10000; 0 skips), BENCH_WATCH_EVENTS (20), BENCH_WATCH_CONNECTIONS (20 HTTP/2 connections). */
function watchSettings(): { watches: number; events: number; h2Connections: number } {
  const watches = process.env.BENCH_WATCHES === '0' ? 0 : Math.round(envNumber('BENCH_WATCHES', 10_000));
  return { watches, events: Math.round(envNumber('BENCH_WATCH_EVENTS', 20)), h2Connections: Math.round(envNumber('BENCH_WATCH_CONNECTIONS', 20)) };
}

/** Watches at scale, in processes of their own (after the request scenarios: they need the cores). */
async function watchScenarios(work: string): Promise<WatchRow[]> {
  const w = watchSettings();
  if (w.watches === 0) return [];
  const pki = await createTestPki(join(work, 'watch-pki'));
  // BENCH_WATCH_HTTP1=1 adds one HTTP/1.1 connection per watch (needs 2 descriptors per watch in the proxy).
  return runWatchScenarios({ pki, workDir: work, ...w, http1: process.env.BENCH_WATCH_HTTP1 === '1' });
}

/** BENCH_REAL: 1 (default) runs the real-apiserver part after the rest, 0 skips it, only runs nothing else. */
function realMode(): '1' | '0' | 'only' {
  const mode = process.env.BENCH_REAL ?? '1';
  if (mode === '' || mode === '1') return '1';
  if (mode === '0' || mode === 'only') return mode;
  throw new Error(`BENCH_REAL=${mode}: expected 1, 0 or only`);
}

async function main(): Promise<number> {
  installCleanup();
  const settings = readSettings();
  const real = realMode();
  buildProxy();
  const work = workDir();
  let rows: Row[] = [];
  let tunnels: Ratio[] = [];
  let answers: Ratio[] = [];
  let watchRows: WatchRow[] = [];
  let realResult: RealResult | undefined;
  try {
    if (real !== 'only') {
      ({ rows, tunnels, answers } = await runAll(settings, work.path));
      watchRows = await watchScenarios(work.path);
    }
    // Its own processes (etcd, kube-apiserver, two proxies), after the rest: it needs the cores.
    // (Loaded only then: BENCH_REAL=0 never touches test/cluster.)
    if (real !== '0') realResult = await (await import('./real-cluster.js')).runRealCluster({ workDir: work.path });
  } catch (err) {
    work.keep();
    throw err;
  }
  let standinSection = '';
  if (real !== 'only') {
    const notes = [...ratios(rows), ...answers, ...tunnels, ...noiseWarnings(rows)];
    process.stdout.write(`\n${setupLines(settings).join('\n')}\n\n${textTable(rows, notes)}\n`);
    standinSection = markdown(rows, notes, setupLines(settings));
  }
  let watchSection = '';
  if (watchRows.length > 0) {
    const setup = watchSetupLines(watchSettings());
    // Both tables end with their verdict lines.
    process.stdout.write(`\n${setup.join('\n')}\n\n${watchTextTable(watchRows)}\n`);
    watchSection = `\n## ${watchSettings().watches} concurrent watches\n\n${setup.join('\n')}\n\n${watchMarkdown(watchRows)}\n`;
  }
  let realSection = '';
  let realErrors = false;
  if (realResult) {
    const { realHasErrors, realMarkdown, realTextTable } = await import('./real-cluster.js');
    realErrors = realHasErrors(realResult);
    process.stdout.write(`\n${realTextTable(realResult)}\n`);
    realSection = `${standinSection || watchSection ? '\n' : ''}## In front of a real kube-apiserver\n\n${realMarkdown(realResult)}`;
  }
  mkdirSync(dirname(RESULTS), { recursive: true });
  // BENCH_REAL=only replaces just its own section of the last full run's record.
  const previous = real === 'only' && existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : undefined;
  writeFileSync(RESULTS, previous && realSection ? replaceLastSection(previous, '## In front of a real kube-apiserver', realSection.trimStart(), new Date().toISOString().slice(0, 10)) : standinSection + watchSection + realSection);
  process.stdout.write(`\nwritten to ${RESULTS}\n`);
  if (rows.some((r) => r.errors > 0) || realErrors) {
    work.keep();
    return 1;
  }
  return 0;
}

process.exitCode = await main();
