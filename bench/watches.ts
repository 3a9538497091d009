// Issue 8: many concurrent idle watches through one proxy process. Three processes besides this
// one: the stand-in apiserver (bench/apiserver-process.ts, driven over IPC: "emit" writes one
// timed event to every open watch), the proxy as built (`node dist/cli.js serve --workers 1
// --log-level warn`: at the default info level each watch would cost an access-log line), and
// the watch clients (bench/watch-clients.ts). Per scenario, a fresh stand-in and proxy:
//
//   1. the proxy's RSS idle, then the watches are opened and the stand-in confirms it holds
//      every one of them (each watch is one HTTP/1.1 upstream connection from the proxy);
//   2. RSS of the proxy, the stand-in and the clients with every watch open (/proc VmRSS);
//   3. `events` timed events, one at a time: the stand-in stamps its send time into the Pod, the
//      clients report how many watchers got it and each one's receive latency; the next event
//      goes out once every watcher has the previous one (or after a timeout);
//   4. RSS again (and VmHWM, the peak), the proxy's CPU per event.
//
// Scenarios: straight to the stand-in (the baseline: the same clients, the cluster-admin
// certificate) and through the proxy (user-alice's certificate), over HTTP/2 (M connections ×
// watches/M streams, as client-go does) and over HTTP/1.1 (one TLS connection per watch; the
// proxy then holds two descriptors per watch, so the run is bounded by `ulimit -n`).
//
// Standalone (builds dist/ first):  node --import tsx bench/watches.ts
// Settings (env): BENCH_WATCHES (10000), BENCH_WATCH_EVENTS (20), BENCH_WATCH_CONNECTIONS (HTTP/2
// connections, 20), BENCH_WATCH_HTTP1 (1: also over HTTP/1.1; 0: not), BENCH_WATCH_GAP_MS (pause
// between events, 250), BENCH_PROXY_FLAGS (more proxy flags), BENCH_PROXY_CPU_PROF (a directory:
// profile each proxy with --cpu-prof). Writes bench/results/watches.md.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestPki, type PkiName, type TestPki } from '../test/helpers/pki.js';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';
import { proxyFlags } from '../test/helpers/setup.js';
import { buildProxy, installCleanup, processTree, spawnNode, treeCpuSeconds, waitForJsonLine, type Child } from './processes.js';
import { WATCH_PATH, type LatencyStats, type WatchProtocol } from './watch-clients.js';
import { envNumber } from './env.js';

export interface WatchScenarioOptions {
  /** A PKI from createTestPki (the stand-in, the proxy and the clients all use it). */
  pki: TestPki;
  /** Where the children's stdout/stderr files go. */
  workDir: string;
  /** Concurrent watches per scenario (default 10000). */
  watches?: number;
  /** Timed events per scenario (default 20). */
  events?: number;
  /** HTTP/2 connections the watches are spread over (default 20: 500 streams each). */
  h2Connections?: number;
  /** Also run the HTTP/1.1 scenarios, one connection per watch (default true). */
  http1?: boolean;
  /** Pause between one event's last delivery and the next event (default 250 ms). */
  eventGapMs?: number;
  /** How long one event may take to reach every watcher before it is counted short (default 15 s). */
  eventTimeoutMs?: number;
  /** How long opening the watches may take (default 300 s). */
  openTimeoutMs?: number;
  /** More proxy flags (after the defaults: --workers 1 --log-level warn). */
  proxyFlags?: string[];
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

export interface WatchRow {
  scenario: string;
  target: 'direct' | 'proxy';
  protocol: WatchProtocol;
  /** Watches asked for, opened (200 headers at the client), and held by the stand-in. */
  watches: number;
  opened: number;
  upstreamWatches: number;
  openSeconds: number;
  /** RSS in MiB (summed over its worker processes, if any): the proxy before any watch, with every watch open, after the events; its peak (VmHWM). */
  proxyIdleRssMiB: number | undefined;
  proxyRssMiB: number | undefined;
  proxyRssAfterEventsMiB: number | undefined;
  proxyPeakRssMiB: number | undefined;
  /** (RSS with the watches − idle RSS) / watches opened. */
  proxyKiBPerWatch: number | undefined;
  /** The proxy's V8 heap with every watch open (used / total) and its own count of open watches. */
  proxyHeapUsedMiB: number | undefined;
  proxyHeapTotalMiB: number | undefined;
  proxyWatchStreams: number | undefined;
  standinRssMiB: number;
  clientsRssMiB: number;
  /** Events sent, and event deliveries seen against events × watches open. */
  events: number;
  delivered: number;
  expected: number;
  /** Receive − send time over every delivery of every event. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The worst single event's p99. */
  worstEventP99Ms: number;
  /** How long the stand-in's write loop over every watch took, mean per event (it is in every latency). */
  standinWriteMs: number;
  /** p99 minus the p99 of the direct row of the same protocol. */
  addedP99Ms: number | undefined;
  proxyCpuMsPerEvent: number | undefined;
  /** Why a scenario fell short (a watch that failed to open, a process that died). */
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// Children with an IPC channel

interface IpcChild extends Child {
  /** Sends `message` and resolves with the first message after it that `match` accepts. */
  call<T extends object>(message: Record<string, unknown>, match: (m: Record<string, unknown>) => boolean, timeoutMs: number): Promise<T>;
  /** The next message `match` accepts, sent or not. */
  next<T extends object>(match: (m: Record<string, unknown>) => boolean, timeoutMs: number): Promise<T>;
  stderrTail(): string;
}

const ipcChildren = new Set<ChildProcess>();
let ipcCleanupInstalled = false;

/** `node --import tsx SCRIPT ARGS` with stdout/stderr in files and an IPC channel. */
function spawnIpc(name: string, script: string, args: string[], logDir: string): IpcChild {
  if (!ipcCleanupInstalled) {
    ipcCleanupInstalled = true;
    process.on('exit', () => {
      for (const child of ipcChildren) child.kill('SIGKILL');
    });
  }
  const stdoutFile = join(logDir, `${name}.out`);
  const stderrFile = join(logDir, `${name}.err`);
  const out = openSync(stdoutFile, 'w');
  const err = openSync(stderrFile, 'w');
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: PROJECT_ROOT, stdio: ['ignore', out, err, 'ipc'] });
  closeSync(out);
  closeSync(err);
  if (child.pid === undefined) throw new Error(`${name}: could not start ${script}`);
  ipcChildren.add(child);
  child.once('exit', () => ipcChildren.delete(child));

  interface Waiter {
    match: (m: Record<string, unknown>) => boolean;
    resolve: (m: Record<string, unknown>) => void;
    reject: (e: Error) => void;
    timer: NodeJS.Timeout;
  }
  const waiters: Waiter[] = [];
  const stderrTail = (): string => readFileSync(stderrFile, 'utf8').trim().split('\n').slice(-15).join('\n');
  const exitInfo = (): string => `${name} exited (code ${child.exitCode}, signal ${child.signalCode})${stderrTail() ? `:\n${stderrTail()}` : ''}`;
  child.on('message', (m: Record<string, unknown>) => {
    const i = waiters.findIndex((w) => w.match(m));
    if (i === -1) return;
    const [w] = waiters.splice(i, 1);
    clearTimeout(w!.timer);
    w!.resolve(m);
  });
  child.once('exit', () => {
    for (const w of waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error(exitInfo()));
    }
  });
  const next = <T extends object>(match: (m: Record<string, unknown>) => boolean, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (child.exitCode !== null || child.signalCode !== null) return reject(new Error(exitInfo()));
      const waiter: Waiter = {
        match,
        resolve: resolve as (m: Record<string, unknown>) => void,
        reject,
        timer: setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`${name}: no answer within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      waiters.push(waiter);
    });
  return {
    name,
    pid: child.pid,
    stderrTail,
    next,
    call(message, match, timeoutMs) {
      const answer = next<never>(match, timeoutMs);
      child.send(message);
      return answer;
    },
    assertAlive() {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(exitInfo());
    },
    async stop(graceMs = 5_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Measurements

/** A /proc/PID/status field in MiB (VmRSS, VmHWM); undefined when the process is gone. */
export function memoryMiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** memoryMiB summed over a process tree (undefined when the root is gone). */
export function treeMemoryMiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number | undefined {
  const root = memoryMiB(pid, field);
  if (root === undefined) return undefined;
  return processTree(pid)
    .slice(1)
    .reduce((sum, p) => sum + (memoryMiB(p, field) ?? 0), root);
}

/** This process's soft limit on open files (children inherit it; the proxy needs 2 per HTTP/1.1 watch). */
export function openFilesLimit(): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m ? (m[1] === 'unlimited' ? Infinity : Number(m[1])) : undefined;
}

type Server = Child & { url: string; adminUrl?: string };

export interface ProxyGauges {
  heapUsedMiB: number | undefined;
  heapTotalMiB: number | undefined;
  externalMiB: number | undefined;
  /** The proxy's own count of open watches (kube_front_proxy_open_streams{kind="watch"}). */
  watchStreams: number | undefined;
}

/** The proxy's heap and its open-watch gauge, from its admin listener's /metrics. */
export async function proxyGauges(adminUrl: string | undefined): Promise<ProxyGauges> {
  const none = { heapUsedMiB: undefined, heapTotalMiB: undefined, externalMiB: undefined, watchStreams: undefined };
  if (!adminUrl) return none;
  try {
    const res = await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    const value = (name: string): number | undefined => {
      const m = new RegExp(`^kube_front_proxy_${name.replace(/[{}"=]/g, (c) => `\\${c}`)} ([0-9.e+]+)$`, 'm').exec(text);
      return m ? Number(m[1]) : undefined;
    };
    const mib = (n: number | undefined): number | undefined => (n === undefined ? undefined : n / 1048576);
    return {
      heapUsedMiB: mib(value('nodejs_heap_size_used_bytes')),
      heapTotalMiB: mib(value('nodejs_heap_size_total_bytes')),
      externalMiB: mib(value('nodejs_external_memory_bytes')),
      watchStreams: value('open_streams{kind="watch"}'),
    };
  } catch {
    return none;
  }
}

async function startStandin(pki: TestPki, logDir: string, tag: string): Promise<IpcChild & { url: string }> {
  const child = spawnIpc(`apiserver-${tag}`, join(PROJECT_ROOT, 'bench', 'apiserver-process.ts'), [pki.dir], logDir);
  const stdoutFile = join(logDir, `apiserver-${tag}.out`);
  const url = await waitForJsonLine({ ...child, stdoutFile }, (line) => (typeof line.url === 'string' ? line.url : undefined));
  return { ...child, url };
}

async function startProxy(pki: TestPki, upstream: string, logDir: string, tag: string, extra: string[]): Promise<Server> {
  // BENCH_PROXY_CPU_PROF=<dir>: a V8 CPU profile of each proxy, written when it stops.
  const profileDir = process.env.BENCH_PROXY_CPU_PROF;
  const profile = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const args = [...profile, join(PROJECT_ROOT, 'dist', 'cli.js'), 'serve', '--listen', '127.0.0.1:0', ...proxyFlags(pki, { upstream }), '--workers', '1', '--log-level', 'warn', ...extra];
  const child = spawnNode(`proxy-${tag}`, args, logDir, PROJECT_ROOT);
  // The start-up line is printed whatever the log level.
  const started = await waitForJsonLine(child, (line) => (typeof line.msg === 'string' && line.msg.startsWith('listening on') ? line : undefined));
  return { ...child, url: String(started.listen), ...(typeof started.admin === 'string' ? { adminUrl: started.admin } : {}) };
}

interface Spec {
  label: string;
  target: 'direct' | 'proxy';
  protocol: WatchProtocol;
}

interface Endpoint {
  url: string;
  cert: PkiName;
  ca: PkiName;
  servername: string;
}

type Opened = { opened: number; failed: number; seconds: number; errors: number; firstError?: string };
type Collected = LatencyStats & { seq: number };

async function runScenario(spec: Spec, o: Required<Omit<WatchScenarioOptions, 'pki' | 'workDir' | 'log' | 'proxyFlags'>> & WatchScenarioOptions): Promise<WatchRow> {
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const tag = `${spec.target}-${spec.protocol}`;
  const notes: string[] = [];
  const standin = await startStandin(o.pki, o.workDir, tag);
  let proxy: Server | undefined;
  let clients: IpcChild | undefined;
  try {
    let endpoint: Endpoint = { url: standin.url, cert: 'cluster-admin', ca: 'cluster-ca', servername: 'kubernetes' };
    if (spec.target === 'proxy') {
      proxy = await startProxy(o.pki, standin.url, o.workDir, tag, o.proxyFlags ?? []);
      endpoint = { url: `https://127.0.0.1:${new URL(proxy.url).port}`, cert: 'user-alice', ca: 'proxy-ca', servername: 'localhost' };
    }
    await sleep(500);
    const proxyIdleRssMiB = proxy ? treeMemoryMiB(proxy.pid) : undefined;

    const connections = spec.protocol === 'h2' ? Math.min(o.h2Connections, o.watches) : 1;
    clients = spawnIpc(
      `clients-${tag}`,
      join(PROJECT_ROOT, 'bench', 'watch-clients.ts'),
      [
        '--url',
        endpoint.url,
        '--pki',
        o.pki.dir,
        '--cert',
        endpoint.cert,
        '--ca',
        endpoint.ca,
        '--servername',
        endpoint.servername,
        '--protocol',
        spec.protocol,
        '--watches',
        String(o.watches),
        '--connections',
        String(connections),
        '--path',
        WATCH_PATH,
      ],
      o.workDir,
    );
    log(`watches: ${spec.label}: opening ${o.watches}${spec.protocol === 'h2' ? ` (${connections} connections × ${Math.ceil(o.watches / connections)} streams)` : ' (one connection each)'}`);
    const opened = await clients.next<Opened>((m) => typeof m.opened === 'number', o.openTimeoutMs);
    if (opened.failed > 0) notes.push(`${opened.failed} watches failed to open, first: ${opened.firstError}`);
    log(`watches: ${spec.label}: ${opened.opened} open in ${opened.seconds.toFixed(1)} s${opened.failed ? `, ${opened.failed} failed (${opened.firstError})` : ''}`);
    let proxyAlive = true;
    try {
      proxy?.assertAlive();
    } catch (err) {
      proxyAlive = false;
      notes.push(`proxy died: ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`);
    }
    const count = async (): Promise<number> => (await standin.call<{ count: number }>({ cmd: 'count' }, (m) => 'count' in m, 10_000)).count;
    await sleep(1_000);
    const upstreamWatches = await count();
    if (upstreamWatches !== opened.opened) notes.push(`the stand-in holds ${upstreamWatches} watches, the clients ${opened.opened}`);
    const proxyRssMiB = proxy ? treeMemoryMiB(proxy.pid) : undefined;
    const gauges = await proxyGauges(proxy?.adminUrl);
    const standinRssMiB = memoryMiB(standin.pid) ?? NaN;
    let clientsRssMiB = memoryMiB(clients.pid) ?? NaN;

    const perEvent: Collected[] = [];
    const writeMs: number[] = [];
    const cpuBefore = proxy && proxyAlive ? treeCpuSeconds(proxy.pid) : 0;
    if (opened.opened > 0) {
      for (let i = 0; i < o.events; i++) {
        const emitted = await standin.call<{ emitted: number; writeMs: number; watches: number }>({ cmd: 'emit' }, (m) => 'emitted' in m, 30_000);
        writeMs.push(emitted.writeMs);
        const got = await clients.call<Collected>({ cmd: 'collect', seq: emitted.emitted, timeoutMs: o.eventTimeoutMs, id: emitted.emitted }, (m) => m.id === emitted.emitted, o.eventTimeoutMs + 10_000);
        perEvent.push(got);
        if (got.received < got.expected) notes.push(`event ${got.seq}: ${got.received} of ${got.expected} watchers got it within ${o.eventTimeoutMs} ms`);
        await sleep(o.eventGapMs);
      }
    }
    const proxyCpu = proxy && proxyAlive ? treeCpuSeconds(proxy.pid) - cpuBefore : undefined;
    const summary = await clients.call<LatencyStats & { events: number }>({ cmd: 'summary', id: 'summary' }, (m) => m.id === 'summary', 30_000);
    const status = await clients.call<{ open: number; ended: number; errors: number; firstError?: string }>({ cmd: 'status', id: 'status' }, (m) => m.id === 'status', 30_000);
    if (status.ended > 0) notes.push(`${status.ended} watches ended during the run`);
    if (status.errors > opened.failed) notes.push(`client errors: ${status.errors}, first: ${status.firstError}`);
    clientsRssMiB = Math.max(clientsRssMiB, memoryMiB(clients.pid) ?? NaN);
    const proxyRssAfterEventsMiB = proxy ? treeMemoryMiB(proxy.pid) : undefined;
    const proxyPeakRssMiB = proxy ? treeMemoryMiB(proxy.pid, 'VmHWM') : undefined;
    const delivered = perEvent.reduce((n, e) => n + e.received, 0);
    const expected = perEvent.reduce((n, e) => n + e.expected, 0);
    const row: WatchRow = {
      scenario: spec.label,
      target: spec.target,
      protocol: spec.protocol,
      watches: o.watches,
      opened: opened.opened,
      upstreamWatches,
      openSeconds: opened.seconds,
      proxyIdleRssMiB,
      proxyRssMiB,
      proxyRssAfterEventsMiB,
      proxyPeakRssMiB,
      proxyKiBPerWatch: proxyRssMiB !== undefined && proxyIdleRssMiB !== undefined && opened.opened > 0 ? ((proxyRssMiB - proxyIdleRssMiB) * 1024) / opened.opened : undefined,
      proxyHeapUsedMiB: gauges.heapUsedMiB,
      proxyHeapTotalMiB: gauges.heapTotalMiB,
      proxyWatchStreams: gauges.watchStreams,
      standinRssMiB,
      clientsRssMiB,
      events: perEvent.length,
      delivered,
      expected,
      p50Ms: summary.p50Ms,
      p99Ms: summary.p99Ms,
      maxMs: summary.maxMs,
      worstEventP99Ms: Math.max(...perEvent.map((e) => e.p99Ms)),
      standinWriteMs: writeMs.length ? writeMs.reduce((a, b) => a + b, 0) / writeMs.length : NaN,
      addedP99Ms: undefined,
      proxyCpuMsPerEvent: proxyCpu !== undefined && perEvent.length ? (proxyCpu * 1000) / perEvent.length : undefined,
      notes,
    };
    log(`watches: ${spec.label}: ${delivered}/${expected} deliveries, p50 ${row.p50Ms.toFixed(1)} ms, p99 ${row.p99Ms.toFixed(1)} ms, proxy RSS ${fmt(proxyRssMiB, 0)} MiB`);
    return row;
  } finally {
    if (clients) {
      await clients.call({ cmd: 'close', id: 'close' }, (m) => m.id === 'close', 10_000).catch(() => undefined);
      await clients.stop();
    }
    await proxy?.stop();
    await standin.stop();
  }
}

/**
 * Runs the watch scenarios one after another, each with its own stand-in, proxy and clients
 * processes: direct and through the proxy over HTTP/2, then (unless `http1: false`) the same over
 * HTTP/1.1. Expects dist/ to be built. Returns one row per scenario; `addedP99Ms` compares each
 * proxy row with the direct row of its protocol. A scenario that fails to start is a row with a
 * note, not an exception, so the other rows still come back.
 */
export async function runWatchScenarios(options: WatchScenarioOptions): Promise<WatchRow[]> {
  const o = {
    watches: 10_000,
    events: 20,
    h2Connections: 20,
    http1: true,
    eventGapMs: 250,
    eventTimeoutMs: 15_000,
    openTimeoutMs: 300_000,
    ...options,
  };
  const specs: Spec[] = [
    { label: `direct to stand-in, HTTP/2 (${o.h2Connections} conns)`, target: 'direct', protocol: 'h2' },
    { label: `proxy, HTTP/2 (${o.h2Connections} conns)`, target: 'proxy', protocol: 'h2' },
    ...(o.http1
      ? ([
          { label: 'direct to stand-in, HTTP/1.1', target: 'direct', protocol: 'http1' },
          { label: 'proxy, HTTP/1.1', target: 'proxy', protocol: 'http1' },
        ] satisfies Spec[])
      : []),
  ];
  const rows: WatchRow[] = [];
  for (const spec of specs) {
    try {
      rows.push(await runScenario(spec, o));
    } catch (err) {
      (o.log ?? ((line: string) => process.stderr.write(`${line}\n`)))(`watches: ${spec.label}: failed: ${(err as Error).message}`);
      rows.push(failedRow(spec, o.watches, (err as Error).message));
    }
  }
  for (const row of rows) {
    const direct = rows.find((r) => r.target === 'direct' && r.protocol === row.protocol && r.delivered > 0);
    if (row.target === 'proxy' && direct && row.delivered > 0) row.addedP99Ms = row.p99Ms - direct.p99Ms;
  }
  return rows;
}

function failedRow(spec: Spec, watches: number, message: string): WatchRow {
  return {
    scenario: spec.label,
    target: spec.target,
    protocol: spec.protocol,
    watches,
    opened: 0,
    upstreamWatches: 0,
    openSeconds: NaN,
    proxyIdleRssMiB: undefined,
    proxyRssMiB: undefined,
    proxyRssAfterEventsMiB: undefined,
    proxyPeakRssMiB: undefined,
    proxyKiBPerWatch: undefined,
    proxyHeapUsedMiB: undefined,
    proxyHeapTotalMiB: undefined,
    proxyWatchStreams: undefined,
    standinRssMiB: NaN,
    clientsRssMiB: NaN,
    events: 0,
    delivered: 0,
    expected: 0,
    p50Ms: NaN,
    p99Ms: NaN,
    maxMs: NaN,
    worstEventP99Ms: NaN,
    standinWriteMs: NaN,
    addedP99Ms: undefined,
    proxyCpuMsPerEvent: undefined,
    notes: [`failed: ${message.split('\n').slice(0, 4).join(' | ')}`],
  };
}

// ---------------------------------------------------------------------------------------------
// Report

function fmt(n: number | undefined, digits: number): string {
  return n === undefined || Number.isNaN(n) ? '—' : n.toFixed(digits);
}

const WATCH_HEADERS = [
  'scenario',
  'open / asked',
  'open s',
  'proxy RSS MiB idle → open → after events (peak)',
  'proxy KiB/watch',
  'proxy heap MiB used/total',
  'proxy-counted watches',
  'stand-in RSS MiB',
  'clients RSS MiB',
  'deliveries',
  'p50 ms',
  'p99 ms',
  'max ms',
  'added p99 ms',
  'stand-in write ms/event',
  'proxy CPU ms/event',
];

function watchCells(r: WatchRow): string[] {
  return [
    r.scenario,
    `${r.opened} / ${r.watches}`,
    fmt(r.openSeconds, 1),
    r.target === 'proxy' ? `${fmt(r.proxyIdleRssMiB, 0)} → ${fmt(r.proxyRssMiB, 0)} → ${fmt(r.proxyRssAfterEventsMiB, 0)} (${fmt(r.proxyPeakRssMiB, 0)})` : '—',
    fmt(r.proxyKiBPerWatch, 1),
    r.target === 'proxy' ? `${fmt(r.proxyHeapUsedMiB, 0)} / ${fmt(r.proxyHeapTotalMiB, 0)}` : '—',
    fmt(r.proxyWatchStreams, 0),
    fmt(r.standinRssMiB, 0),
    fmt(r.clientsRssMiB, 0),
    `${r.delivered} / ${r.expected}`,
    fmt(r.p50Ms, 1),
    fmt(r.p99Ms, 1),
    fmt(r.maxMs, 1),
    r.addedP99Ms === undefined ? '—' : `${r.addedP99Ms >= 0 ? '+' : ''}${r.addedP99Ms.toFixed(1)}`,
    fmt(r.standinWriteMs, 1),
    fmt(r.proxyCpuMsPerEvent, 1),
  ];
}

/** Target lines for issue 8: RSS < 500 MiB, every event to every watcher, added p99 < 50 ms. */
export function watchVerdicts(rows: WatchRow[]): string[] {
  return rows
    .filter((r) => r.target === 'proxy')
    .map((r) => {
      const rss = r.proxyPeakRssMiB ?? r.proxyRssAfterEventsMiB;
      const all = r.expected > 0 && r.delivered === r.expected && r.opened === r.watches;
      const parts = [
        `RSS ${fmt(rss, 0)} MiB (target < 500: ${rss !== undefined && rss < 500 ? 'met' : 'NOT met'})`,
        `every event to every watcher: ${all ? 'yes' : `NO (${r.delivered}/${r.expected}, ${r.opened}/${r.watches} open)`}`,
        `added p99 ${r.addedP99Ms === undefined ? '—' : `${r.addedP99Ms.toFixed(1)} ms`} (target < 50 ms: ${r.addedP99Ms !== undefined && r.addedP99Ms < 50 ? 'met' : 'NOT met'})`,
      ];
      return `${r.scenario}: ${parts.join('; ')}`;
    });
}

export function watchTextTable(rows: WatchRow[]): string {
  const table = [WATCH_HEADERS, ...rows.map(watchCells)];
  const widths = WATCH_HEADERS.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const line = (r: string[]): string => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  const notes = rows.flatMap((r) => r.notes.map((n) => `${r.scenario}: ${n}`));
  return [line(WATCH_HEADERS), ...rows.map((r) => line(watchCells(r))), '', ...watchVerdicts(rows), ...notes].join('\n');
}

export function watchMarkdown(rows: WatchRow[]): string {
  const line = (r: string[]): string => `| ${r.join(' | ')} |`;
  const notes = rows.flatMap((r) => r.notes.map((n) => `${r.scenario}: ${n}`));
  return [line(WATCH_HEADERS), line(WATCH_HEADERS.map((_, c) => (c === 0 ? '---' : '---:'))), ...rows.map((r) => line(watchCells(r))), '', ...[...watchVerdicts(rows), ...notes].map((n) => `- ${n}`), ''].join('\n');
}

export function watchSetupLines(o: { watches: number; events: number; h2Connections: number }): string[] {
  const cpu = cpus();
  return [
    `kube-front-proxy watch bench, ${new Date().toISOString()}: Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}; open files limit ${openFilesLimit()}.`,
    `${o.watches} idle watches (GET ${WATCH_PATH}) per scenario from a separate clients process; HTTP/2: ${o.h2Connections} connections × ${Math.ceil(o.watches / o.h2Connections)} streams; HTTP/1.1: one TLS connection per watch, 200 per source address.`,
    `Proxy: dist/, --workers 1, --log-level warn (no access-log line per watch), otherwise defaults${process.env.BENCH_PROXY_FLAGS?.trim() ? ` + ${process.env.BENCH_PROXY_FLAGS.trim()}` : ''}; watches reach the stand-in over HTTP/2 (--upstream-http2, the default) unless the flags say otherwise.`,
    `${o.events} events of ~710 bytes (a MODIFIED Pod), one at a time; latency = receive time at the client − send time stamped by the stand-in (same machine clock), over every delivery.`,
  ];
}

// ---------------------------------------------------------------------------------------------
// Standalone

async function main(): Promise<number> {
  installCleanup();
  buildProxy();
  const work = mkdtempSync(join(tmpdir(), 'kfp-watches-'));
  let keep = false;
  try {
    const pki = await createTestPki(join(work, 'pki'));
    const o = {
      pki,
      workDir: work,
      watches: envNumber('BENCH_WATCHES', 10_000),
      events: envNumber('BENCH_WATCH_EVENTS', 20),
      h2Connections: envNumber('BENCH_WATCH_CONNECTIONS', 20),
      http1: envNumber('BENCH_WATCH_HTTP1', 1, true) !== 0,
      eventGapMs: envNumber('BENCH_WATCH_GAP_MS', 250, true),
      proxyFlags: (process.env.BENCH_PROXY_FLAGS ?? '').split(' ').filter(Boolean),
    };
    const rows = await runWatchScenarios(o);
    const setup = watchSetupLines(o);
    process.stdout.write(`\n${setup.join('\n')}\n\n${watchTextTable(rows)}\n`);
    const out = join(PROJECT_ROOT, 'bench', 'results', 'watches.md');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${setup.map((s) => `${s}  `).join('\n')}\n\n${watchMarkdown(rows)}`);
    process.stdout.write(`\nwritten to ${out}\n`);
    keep = rows.some((r) => r.notes.length > 0);
    return rows.every((r) => r.delivered > 0) ? 0 : 1;
  } finally {
    if (keep) process.stderr.write(`bench: logs kept in ${work}\n`);
    else rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = await main();
