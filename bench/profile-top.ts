// Top functions by self time in a V8 CPU profile (node --cpu-prof), for the closing notes and
// for deciding what to take off the request path; and a split of the proxy's busy time by stage
// of a request (TLS in, HTTP parsing, admission, header rebuild, forwarding, TLS out, logging,
// metrics), which bench/real-cluster.ts turns into µs per request.
// Usage: node --import tsx bench/profile-top.ts FILE [N] [--by-module] [--stages] [--window FROM-TO]
// --by-module: time per module instead (a package in node_modules or one of our files), Node's
// internals and native code charged to the innermost module that called them: what each layer
// costs apart from the layers it calls. --stages: the split by stage. --window: only samples
// between FROM and TO, µs on CLOCK_MONOTONIC (V8's profile clock, process.hrtime()'s too).

import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Share {
  name: string;
  /** Of the busy (non-idle) time. */
  share: number;
}

export interface Stage {
  stage: string;
  share: number;
  /** share × CPU per request. */
  usPerRequest: number;
  /**
   * With the process's system-time share: the system time split over the socket stages (reads,
   * writes) by their shares among themselves, the user time over the other stages likewise.
   * V8 samples wall time, so a thread preempted inside write() (it has just woken the peer on
   * a busy machine) piles samples on the writes that are no CPU of its own.
   */
  usPerRequestByKind: number;
}

export interface ProfileReport {
  file: string;
  windowSeconds: number;
  /** Busy (non-idle) share of the window on the sampled (main) thread. */
  busyShare: number;
  /** Busy sampled time per request (when `requests` was given). */
  busyUsPerRequest: number;
  top: Share[];
  modules: Share[];
  stages: Stage[];
}

/** A profile's frames and samples, each sample as (leaf node id, µs), within an optional window. */
class Samples {
  readonly byId: Map<number, ProfileNode>;
  readonly parentOf = new Map<number, number>();
  readonly samples: { id: number; us: number }[] = [];
  readonly total: number;
  readonly idle: number;

  constructor(profile: CpuProfile, window?: [number, number]) {
    this.byId = new Map(profile.nodes.map((n) => [n.id, n]));
    for (const node of profile.nodes) for (const child of node.children ?? []) this.parentOf.set(child, node.id);
    let at = profile.startTime;
    let total = 0;
    let idle = 0;
    profile.samples.forEach((id, i) => {
      const us = profile.timeDeltas[i] ?? 0;
      at += us;
      if (window && (at < window[0] || at > window[1])) return;
      total += us;
      if (this.byId.get(id)?.callFrame.functionName === '(idle)') idle += us;
      else this.samples.push({ id, us });
    });
    this.total = total;
    this.idle = idle;
  }

  get busy(): number {
    return this.total - this.idle;
  }

  /** Frames from the leaf to the root. */
  stack(id: number): ProfileNode[] {
    const out: ProfileNode[] = [];
    for (let at: number | undefined = id; at !== undefined; at = this.parentOf.get(at)) {
      const node = this.byId.get(at);
      if (node) out.push(node);
    }
    return out;
  }

  /** Busy time per key, as shares, biggest first. */
  shares(key: (id: number) => string): Share[] {
    const time = new Map<string, number>();
    for (const { id, us } of this.samples) {
      const k = key(id);
      time.set(k, (time.get(k) ?? 0) + us);
    }
    return [...time.entries()].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, share: us / this.busy }));
  }
}

function moduleOf(url: string): string | undefined {
  if (!url) return undefined;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  if (url.startsWith('node:')) return 'node: internals';
  const ours = /\/(src|dist)\/(.*)$/.exec(url);
  return ours ? `${ours[1]}/${ours[2]}` : url;
}

function functionKey(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(src|dist)\//, '$1/')}:${lineNumber + 1}` : '';
  return `${functionName || '(anonymous)'} ${where}`.trim();
}

/** The innermost frame of a package or of ours: Node's internals and native code are charged to whoever called them. */
function moduleKey(stack: ProfileNode[]): string {
  for (const node of stack) {
    const module = moduleOf(node.callFrame.url);
    if (module && module !== 'node: internals') return module;
  }
  return `node alone: ${stack[0]?.callFrame.functionName || '(anonymous)'}`;
}

// ---------------------------------------------------------------------------------------------
// Stages of a proxied request

export const STAGES = [
  'TLS in: response writes to the client (encrypt + write)',
  'HTTP parsing of the client request (Node http server)',
  'admission (authentication, limits)',
  'header rebuild',
  'forwarding: fastify, reply-from, http-proxy, our route',
  'forwarding: undici (request, response parsing)',
  'TLS out: request writes to the apiserver (encrypt + write)',
  'socket reads and TLS decrypt (both legs, native)',
  'logging',
  'metrics',
  'garbage collection',
  'other',
] as const;
type StageName = (typeof STAGES)[number];
/** Stages that are mostly system calls (the kernel's TCP, on loopback the peer's receive path too). */
const SOCKET_STAGES = new Set<StageName>(['TLS in: response writes to the client (encrypt + write)', 'TLS out: request writes to the apiserver (encrypt + write)', 'socket reads and TLS decrypt (both legs, native)']);

/** Native functions that write to a socket (the TLS record is encrypted inside them). */
const SOCKET_WRITES = new Set(['writev', 'writeBuffer', 'writeUtf8String', 'writeLatin1String', 'writeAsciiString', 'writeUcs2String', 'writeGeneric', 'writevGeneric', 'shutdown']);
const SOCKET_READS = new Set(['onStreamRead', 'readStart', 'readStop']);

/** Whether any frame of the stack is one `test` accepts. */
function anyFrame(stack: ProfileNode[], test: (url: string, fn: string) => boolean): boolean {
  return stack.some((n) => test(n.callFrame.url, n.callFrame.functionName));
}

/** The innermost package or file of ours on the stack (undici's llhttp runs as WebAssembly). */
function innermostModule(stack: ProfileNode[]): string | undefined {
  for (const node of stack) {
    const url = node.callFrame.url;
    if (url.startsWith('wasm://')) return 'undici';
    const module = moduleOf(url);
    if (module && module !== 'node: internals') return module;
  }
  return undefined;
}

// First match wins: metrics before logging, since the traffic log's hook also counts the request.
const OUR_LAYERS: [RegExp, StageName][] = [
  [/\/(src|dist)\/observe\/metrics|node_modules\/(prom-client|tdigest|bintrees)\//, 'metrics'],
  [/\/(src|dist)\/(observe\/|commands\/logview)|node_modules\/(pino|sonic-boom|thread-stream|pino-std-serializers|fast-redact|quick-format-unescaped|on-exit-leak-free)\//, 'logging'],
  [/\/(src|dist)\/(auth\/|request\/|edge\/(connection-limit|client-connections|http1-limits|http2-)|workers\/login-limits)/, 'admission (authentication, limits)'],
  [/\/(src|dist)\/(proxy\/headers|upstream\/trusted-headers)/, 'header rebuild'],
];
const FRAMEWORK =
  /^(fastify|@fastify\/.*|light-my-request|avvio|find-my-way|fast-json-stringify|fast-querystring|toad-cache|process-warning|abstract-logging|fastq|secure-json-parse|(src|dist)\/(proxy|server|upstream|edge\/status|edge\/refused-body).*)$/;

function stageOf(stack: ProfileNode[]): StageName {
  const leaf = stack[0]?.callFrame.functionName ?? '';
  if (leaf === '(garbage collector)') return 'garbage collection';
  if (leaf === '(program)') return 'socket reads and TLS decrypt (both legs, native)';
  // Our own layers, with whatever they call (Node, packages): their time is theirs.
  for (const [re, stage] of OUR_LAYERS) if (anyFrame(stack, (u) => re.test(u))) return stage;
  // Otherwise the innermost package (or file of ours) decides: a socket write is undici's (the
  // request to the apiserver) or the server side's (the response to the client; also buffered
  // writes flushed when the last one completed, with no caller on the stack).
  const owner = innermostModule(stack);
  const writes = SOCKET_WRITES.has(leaf) || anyFrame(stack.slice(0, 4), (u, fn) => SOCKET_WRITES.has(fn) && (u === '' || u.startsWith('node:')));
  if (writes) return owner === 'undici' ? 'TLS out: request writes to the apiserver (encrypt + write)' : 'TLS in: response writes to the client (encrypt + write)';
  if (owner === 'undici') return 'forwarding: undici (request, response parsing)';
  if (owner && FRAMEWORK.test(owner)) return 'forwarding: fastify, reply-from, http-proxy, our route';
  if (owner) return 'other';
  if (anyFrame(stack, (u, fn) => /node:_http_(server|common|incoming)/.test(u) || fn === 'execute' || fn === 'parserOnHeadersComplete')) return 'HTTP parsing of the client request (Node http server)';
  if (anyFrame(stack, (_u, fn) => SOCKET_READS.has(fn))) return 'socket reads and TLS decrypt (both legs, native)';
  if (anyFrame(stack, (u) => /node:_http_outgoing|node:_tls_wrap|node:net/.test(u))) return 'TLS in: response writes to the client (encrypt + write)';
  return 'other';
}

// ---------------------------------------------------------------------------------------------

export interface ReportOptions {
  window?: [number, number];
  /** Requests in the window: with cpuUsPerRequest, the stages in µs per request. */
  requests?: number;
  /** The process's CPU per request (from /proc): the stages' shares are split from it. */
  cpuUsPerRequest?: number;
  top?: number;
  /** System time over all CPU time of the process in the window (from /proc). */
  systemShare?: number;
}

export function profileReport(file: string, options: ReportOptions = {}): ProfileReport {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const s = new Samples(profile, options.window);
  const stageShares = s.shares((id) => stageOf(s.stack(id)));
  const perRequest = options.cpuUsPerRequest ?? (options.requests ? s.busy / options.requests : NaN);
  const socketShare = stageShares.filter((x) => SOCKET_STAGES.has(x.name as StageName)).reduce((sum, x) => sum + x.share, 0);
  return {
    file,
    windowSeconds: s.total / 1e6,
    busyShare: s.total ? s.busy / s.total : 0,
    busyUsPerRequest: options.requests ? s.busy / options.requests : NaN,
    top: s.shares((id) => functionKey(s.byId.get(id)!)).slice(0, options.top ?? 20),
    modules: s.shares((id) => moduleKey(s.stack(id))),
    stages: STAGES.map((stage) => {
      const share = stageShares.find((x) => x.name === stage)?.share ?? 0;
      const socket = SOCKET_STAGES.has(stage);
      const kindShare = socket ? socketShare : 1 - socketShare;
      const kindCpu = options.systemShare === undefined ? NaN : (socket ? options.systemShare : 1 - options.systemShare) * perRequest;
      return { stage, share, usPerRequest: share * perRequest, usPerRequestByKind: kindShare > 0 ? (share / kindShare) * kindCpu : 0 };
    }),
  };
}

// Standalone
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const windowArg = args.indexOf('--window');
  const window = windowArg === -1 ? undefined : (args[windowArg + 1]!.split('-').map(Number) as [number, number]);
  const positional = args.filter((a, i) => !a.startsWith('--') && (windowArg === -1 || i !== windowArg + 1));
  const [file, count = '25'] = positional;
  if (!file) {
    process.stderr.write('usage: profile-top.ts FILE.cpuprofile [N] [--by-module] [--stages] [--window FROM-TO]\n');
    process.exit(2);
  }
  const report = profileReport(file, { window, top: Number(count) });
  const mode = args.includes('--stages') ? 'stages' : args.includes('--by-module') ? 'modules' : 'functions';
  process.stdout.write(
    `${file}: ${report.windowSeconds.toFixed(1)} s sampled, ${(report.busyShare * 100).toFixed(0)}% busy; ${mode === 'modules' ? 'per module, Node charged to its caller' : mode === 'stages' ? 'per stage of a request' : 'per function, self time'}\n`,
  );
  const list = mode === 'stages' ? report.stages.map((x) => ({ name: x.stage, share: x.share })) : mode === 'modules' ? report.modules.slice(0, Number(count)) : report.top;
  for (const { name, share } of list) process.stdout.write(`${(share * 100).toFixed(1).padStart(5)}%  ${name}\n`);
}
