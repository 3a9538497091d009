// `kube-front-proxy logs`: reads the traffic log (the JSON lines written by accesslog.ts, from a
// file or from standard input; or, with --access-log-format audit, the audit.k8s.io/v1 Events
// written instead), keeps the requests that match the filters and prints them as an
// aligned table, passes them through as JSON, or summarises them (--stats).
//
// Three layers, kept apart:
//  1. pure functions: parseLine (one line -> LogEntry or nothing), parseSince / parseStatusFilter /
//     compileFilter (options -> predicate; bad values throw a one-line Error), formatHeader /
//     formatEntry (entry -> table row) and LogStats / formatStats (the --stats summary);
//  2. LineSplitter: bytes -> complete lines, with a cap on the length of one line;
//  3. the I/O in runLogs: a stream read to its end, a file read to its end, or a file followed
//     (-f) across growth, rename-and-recreate rotation and copytruncate-style truncation.
//
// Memory stays bounded: lines are handled as they arrive and dropped; --stats keeps counters per
// user, verb and status code and only the 10 slowest calls.
//
// Times in the table are the UTC time of day (HH:MM:SS.mmm), as the log stores them; the header
// says so. Nothing from the log reaches the terminal with control characters in it: a user name or
// path carrying an escape sequence, a bidi override or a line separator shows it as \uXXXX, and
// -o json writes C1 controls, bidi characters and U+2028/U+2029 as JSON \uXXXX escapes (the same
// JSON value), also when an older or foreign writer left them raw in the file.

import { open, stat, type FileHandle } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { escapeLogLine } from '../observe/accesslog.js';

export interface LogsOptions {
  /** path of the traffic-log file; undefined = read `input` (standard input by default) */
  file?: string;
  /** -f: keep reading as the file grows, and across rotation (rename + new file, or truncation) */
  follow: boolean;
  user?: string;
  verb?: string;
  resource?: string;
  namespace?: string;
  /** '2xx' | '3xx' | '4xx' | '5xx' (any 1xx-5xx class) or an exact code such as '403' */
  status?: string;
  /** only lines newer than this, relative to now: '30s', '10m', '1h', '2d' (or combined: '1h30m') */
  since?: string;
  /** only this request: its reqId (json format) or auditID (audit format), exactly */
  auditId?: string;
  /** table: aligned columns; wide: the same plus each line's audit ID; json: the matching lines as read, one per line */
  output: 'table' | 'wide' | 'json';
  /** a summary instead of lines; reads to the end (never follows) */
  stats: boolean;
  /** default: the output stream is a TTY and NO_COLOR is unset or empty */
  color?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Parsing

/** One request line or authentication failure, reduced to what the viewer shows and filters on. */
export interface LogEntry {
  kind: 'request' | 'auth-failure';
  /** the request's ID: reqId in the json format, auditID in the audit format ('' if none); the
   *  apiserver's audit event for the request has it as its auditID */
  auditId: string;
  /** epoch milliseconds; NaN when the line has no usable time */
  time: number;
  /** the authenticated user; for an authentication failure the claimed user name ('' if none) */
  user: string;
  /** '-' for an authentication failure */
  verb: string;
  apiGroup: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
  path: string;
  status: number;
  durationMs: number | undefined;
  phase: 'start' | 'end' | undefined;
  /** the line as read, without its line break */
  raw: string;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const obj = (v: unknown): Record<string, unknown> => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {});

function parseTime(v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v)) return v; // pino's default epoch-ms timestamp
  if (typeof v === 'string') return Date.parse(v);
  return Number.NaN;
}

/**
 * A traffic-log line as a LogEntry; undefined for anything else (not JSON, other messages).
 * Both formats of --access-log-format: json (msg "request" / "authentication failed") and audit
 * (an audit.k8s.io/v1 Event with a responseStatus; see parseAuditEvent).
 */
export function parseLine(line: string): LogEntry | undefined {
  const text = line.trim();
  if (!text.startsWith('{')) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const r = value as Record<string, unknown>;
  if (r.kind === 'Event' && typeof r.apiVersion === 'string' && r.apiVersion.startsWith('audit.k8s.io/')) return parseAuditEvent(r, line);
  if (r.msg === 'request') {
    const status = num(r.status);
    if (status === undefined) return undefined;
    return {
      kind: 'request',
      auditId: str(r.reqId),
      time: parseTime(r.time),
      user: str(r.user),
      verb: str(r.verb),
      apiGroup: str(r.apiGroup),
      resource: str(r.resource),
      subresource: str(r.subresource),
      namespace: str(r.namespace),
      name: str(r.name),
      path: str(r.path),
      status,
      durationMs: num(r.durationMs),
      phase: r.phase === 'start' || r.phase === 'end' ? r.phase : undefined,
      raw: line,
    };
  }
  if (r.msg === 'authentication failed') {
    return {
      kind: 'auth-failure',
      auditId: str(r.reqId),
      time: parseTime(r.time),
      user: str(r.claimedUser),
      verb: '-',
      apiGroup: '',
      resource: '',
      subresource: '',
      namespace: '',
      name: '',
      path: str(r.path),
      status: num(r.status) ?? 401,
      durationMs: num(r.durationMs),
      phase: undefined,
      raw: line,
    };
  }
  return undefined;
}

/**
 * An audit event (observe/accesslog.ts auditEvent) as a LogEntry: an authentication failure when
 * it has the kube-front-proxy/auth-failure annotation, a request otherwise; the time is
 * stageTimestamp, the duration stageTimestamp - requestReceivedTimestamp, and stage
 * ResponseStarted is a long-lived request's 'start' line (its end, ResponseComplete, can't be
 * told apart from an ordinary request, so it has no phase). Events without a responseStatus code
 * (an apiserver's RequestReceived stage) are skipped.
 */
function parseAuditEvent(r: Record<string, unknown>, line: string): LogEntry | undefined {
  const status = num(obj(r.responseStatus).code);
  if (status === undefined) return undefined;
  const time = parseTime(r.stageTimestamp);
  const received = parseTime(r.requestReceivedTimestamp);
  const durationMs = Number.isNaN(time) || Number.isNaN(received) ? undefined : time - received;
  const user = str(obj(r.user).username);
  const path = str(r.requestURI);
  if (typeof obj(r.annotations)['kube-front-proxy/auth-failure'] === 'string') {
    return { kind: 'auth-failure', auditId: str(r.auditID), time, user, verb: '-', apiGroup: '', resource: '', subresource: '', namespace: '', name: '', path, status, durationMs, phase: undefined, raw: line };
  }
  const ref = obj(r.objectRef);
  return {
    kind: 'request',
    auditId: str(r.auditID),
    time,
    user,
    verb: str(r.verb),
    apiGroup: str(ref.apiGroup),
    resource: str(ref.resource),
    subresource: str(ref.subresource),
    namespace: str(ref.namespace),
    name: str(ref.name),
    path,
    status,
    durationMs,
    phase: r.stage === 'ResponseStarted' ? 'start' : undefined,
    raw: line,
  };
}

// ---------------------------------------------------------------------------------------------
// Filtering

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** '30s', '10m', '1h', '2d' or a combination ('1h30m') in milliseconds; throws on anything else. */
export function parseSince(value: string): number {
  const text = value.trim();
  if (!/^(\d+[smhd])+$/.test(text)) {
    throw new Error(`invalid --since "${value}": expected a duration such as 30s, 10m, 1h or 2d`);
  }
  let total = 0;
  for (const m of text.matchAll(/(\d+)([smhd])/g)) total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? 0);
  if (!Number.isSafeInteger(total)) throw new Error(`invalid --since "${value}": too large`);
  return total;
}

export type StatusFilter = { kind: 'class'; class: number } | { kind: 'code'; code: number };

/** '4xx' (any class 1xx-5xx, either case) or an exact code '100'-'599'; throws on anything else. */
export function parseStatusFilter(value: string): StatusFilter {
  const text = value.trim().toLowerCase();
  const cls = /^([1-5])xx$/.exec(text);
  if (cls) return { kind: 'class', class: Number(cls[1]) };
  if (/^[1-5]\d\d$/.test(text)) return { kind: 'code', code: Number(text) };
  throw new Error(`invalid --status "${value}": expected a class (2xx, 3xx, 4xx, 5xx) or a code such as 403`);
}

export type FilterOptions = Pick<LogsOptions, 'user' | 'verb' | 'resource' | 'namespace' | 'status' | 'since' | 'auditId'>;

/**
 * The predicate for the filters in `options`, all of which must match. Empty values are no
 * filter. Values are checked here, so that a bad one fails before any reading starts.
 *  - user: exact; an authentication failure matches its claimed user name
 *  - verb: case-insensitive
 *  - resource: `pods` (with any subresource), `pods/log`, `deployments.apps` (resource.group),
 *    or a path for non-resource requests (`/version`, `/apis` matches `/apis/...` too)
 *  - namespace: exact
 *  - since: lines with a time at or after now - since; lines without a time never match
 *  - auditId: exact, against reqId (json format) or auditID (audit format); a long-lived
 *    request's start and end lines share it
 */
export function compileFilter(options: FilterOptions, now: number): (entry: LogEntry) => boolean {
  const tests: Array<(e: LogEntry) => boolean> = [];
  const { user, verb, resource, namespace, status, since, auditId } = options;
  if (status) {
    const f = parseStatusFilter(status);
    tests.push(f.kind === 'class' ? (e) => Math.floor(e.status / 100) === f.class : (e) => e.status === f.code);
  }
  if (since) {
    const cutoff = now - parseSince(since);
    tests.push((e) => e.time >= cutoff);
  }
  if (user) tests.push((e) => e.user === user);
  if (verb) {
    const want = verb.trim().toLowerCase();
    tests.push((e) => e.verb.toLowerCase() === want);
  }
  if (namespace) tests.push((e) => e.namespace === namespace);
  if (resource) tests.push(resourceMatcher(resource.trim()));
  if (auditId) tests.push((e) => e.auditId === auditId);
  return (e) => tests.every((test) => test(e));
}

function resourceMatcher(value: string): (e: LogEntry) => boolean {
  if (value.startsWith('/')) {
    const prefix = value.length > 1 && value.endsWith('/') ? value.slice(0, -1) : value;
    return (e) => e.resource === '' && (e.path === prefix || e.path.startsWith(prefix === '/' ? '/' : `${prefix}/`));
  }
  const lower = value.toLowerCase();
  const slash = lower.indexOf('/');
  const head = slash < 0 ? lower : lower.slice(0, slash);
  const sub = slash < 0 ? undefined : lower.slice(slash + 1);
  const dot = head.indexOf('.');
  const res = dot < 0 ? head : head.slice(0, dot);
  const group = dot < 0 ? undefined : head.slice(dot + 1);
  return (e) => e.resource !== '' && e.resource.toLowerCase() === res && (group === undefined || e.apiGroup.toLowerCase() === group) && (sub === undefined || e.subresource.toLowerCase() === sub);
}

// ---------------------------------------------------------------------------------------------
// Formatting

const ESC = '\u001b[';
const RESET = `${ESC}0m`;
const BOLD = `${ESC}1m`;

/** The ANSI colour for a status: 2xx green, 3xx cyan, 4xx yellow, 5xx red (others none). */
function statusColor(status: number): string {
  switch (Math.floor(status / 100)) {
    case 2:
      return `${ESC}32m`;
    case 3:
      return `${ESC}36m`;
    case 4:
      return `${ESC}33m`;
    case 5:
      return `${ESC}31m`;
    default:
      return '';
  }
}

function paint(text: string, code: string, color: boolean): string {
  return color && code ? `${code}${text}${RESET}` : text;
}

// eslint-disable-next-line no-control-regex
const TERMINAL_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const TERMINAL_UNSAFE_ALL = new RegExp(TERMINAL_UNSAFE.source, 'g');

/**
 * Control characters (C0, DEL, C1), bidirectional marks, overrides and isolates and the Unicode
 * line separators shown as a visible \uXXXX (as JSON writes them), never acted on by the terminal.
 */
export function sanitize(text: string): string {
  return TERMINAL_UNSAFE.test(text) ? text.replace(TERMINAL_UNSAFE_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) : text;
}

/** Exactly `width` characters: cut with '…' when longer, padded when shorter. */
function fit(text: string, width: number, align: 'left' | 'right' = 'left'): string {
  const chars = Array.from(text);
  if (chars.length > width) return `${chars.slice(0, width - 1).join('')}…`;
  const pad = ' '.repeat(width - chars.length);
  return align === 'left' ? text + pad : pad + text;
}

/** UTC time of day, HH:MM:SS.mmm; '-' when unknown. */
export function timeOfDay(time: number): string {
  return Number.isNaN(time) ? '-' : new Date(time).toISOString().slice(11, 23);
}

/** How the user is shown: an authentication failure's claimed name gets a '?' ('?' alone if none). */
export function displayUser(e: LogEntry): string {
  return e.kind === 'auth-failure' ? `${e.user}?` : e.user || '-';
}

/** `pods/log default/web-1`, `pods default`, `nodes node-1`, `pods`; the path for non-resource requests. */
export function describeTarget(e: LogEntry): string {
  if (!e.resource) return e.path || '-';
  const what = e.subresource ? `${e.resource}/${e.subresource}` : e.resource;
  const where = e.namespace && e.name ? `${e.namespace}/${e.name}` : e.namespace || e.name;
  return where ? `${what} ${where}` : what;
}

/** 3.2ms, 45.0ms, 123ms, 60000ms; '-' when unknown. */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined) return '-';
  return ms < 100 ? `${ms.toFixed(1)}ms` : `${Math.round(ms)}ms`;
}

const W = { time: 12, user: 16, verb: 10, resource: 40, status: 6, duration: 10, phase: 5 } as const;
const GAP = '  ';

/** The table's header line; `wide` (-o wide) adds PHASE and AUDIT-ID. */
export function formatHeader(color: boolean, wide = false): string {
  const cells = [fit('TIME (UTC)', W.time), fit('USER', W.user), fit('VERB', W.verb), fit('RESOURCE', W.resource), fit('STATUS', W.status), fit('DURATION', W.duration, 'right')];
  if (wide) cells.push(fit('PHASE', W.phase), 'AUDIT-ID');
  return paint(cells.join(GAP), BOLD, color);
}

/**
 * One table row: fixed-width columns, so that rows line up however they arrive. `wide` adds the
 * phase as a column and the audit ID last, never cut (it is there to be copied into --audit-id).
 */
export function formatEntry(e: LogEntry, color: boolean, wide = false): string {
  const cells = [
    fit(timeOfDay(e.time), W.time),
    fit(sanitize(displayUser(e)), W.user),
    fit(sanitize(e.verb || '-'), W.verb),
    fit(sanitize(describeTarget(e)), W.resource),
    paint(fit(String(e.status), W.status), statusColor(e.status), color),
    fit(formatDuration(e.durationMs), W.duration, 'right'),
  ];
  if (wide) return [...cells, fit(e.phase ?? '', W.phase), sanitize(e.auditId || '-')].join(GAP);
  return e.phase ? `${cells.join(GAP)}${GAP}${e.phase}` : cells.join(GAP);
}

// ---------------------------------------------------------------------------------------------
// --stats

export interface Count {
  requests: number;
  errors: number;
}

export interface SlowCall {
  time: string;
  durationMs: number;
  user: string;
  verb: string;
  resource: string;
  status: number;
}

export interface StatsSummary {
  /** requests counted: every line except the 'start' line of a long-lived request */
  requests: number;
  /** of those, with status >= 400 */
  errors: number;
  /** ISO times of the first and last counted line ('' when none) */
  from: string;
  to: string;
  byUser: Array<{ user: string } & Count>;
  byVerb: Array<{ verb: string } & Count>;
  byStatus: Array<{ class: string; requests: number; codes: Array<{ status: number; requests: number }> }>;
  /** the 10 slowest, slowest first; long-lived requests (watch, exec, ...) are left out */
  slowest: SlowCall[];
}

const SLOWEST = 10;

/** Counters for --stats. Long-lived requests count once (their 'end' line). */
export class LogStats {
  private requests = 0;
  private errors = 0;
  private first = Number.NaN;
  private last = Number.NaN;
  private readonly users = new Map<string, Count>();
  private readonly verbs = new Map<string, Count>();
  private readonly codes = new Map<number, number>();
  private readonly slowest: SlowCall[] = [];

  add(e: LogEntry): void {
    if (e.phase === 'start') return;
    const error = e.status >= 400;
    this.requests++;
    if (error) this.errors++;
    if (!Number.isNaN(e.time)) {
      if (!(e.time >= this.first)) this.first = e.time;
      if (!(e.time <= this.last)) this.last = e.time;
    }
    bump(this.users, displayUser(e), error);
    bump(this.verbs, e.verb || '-', error);
    this.codes.set(e.status, (this.codes.get(e.status) ?? 0) + 1);
    if (e.durationMs !== undefined && e.phase === undefined) this.considerSlow(e, e.durationMs);
  }

  private considerSlow(e: LogEntry, durationMs: number): void {
    const tail = this.slowest[this.slowest.length - 1];
    if (this.slowest.length >= SLOWEST && tail !== undefined && durationMs <= tail.durationMs) return;
    // Ties keep the earlier call ahead.
    let at = this.slowest.findIndex((s) => durationMs > s.durationMs);
    if (at < 0) at = this.slowest.length;
    this.slowest.splice(at, 0, {
      time: Number.isNaN(e.time) ? '' : new Date(e.time).toISOString(),
      durationMs,
      user: displayUser(e),
      verb: e.verb || '-',
      resource: describeTarget(e),
      status: e.status,
    });
    if (this.slowest.length > SLOWEST) this.slowest.pop();
  }

  summary(): StatsSummary {
    const byCount = <K>(map: Map<string, Count>, key: (name: string, c: Count) => K): K[] => [...map.entries()].sort(([a, x], [b, y]) => y.requests - x.requests || (a < b ? -1 : a > b ? 1 : 0)).map(([name, c]) => key(name, c));
    const classes = new Map<number, Array<{ status: number; requests: number }>>();
    for (const [status, requests] of [...this.codes.entries()].sort(([a], [b]) => a - b)) {
      const cls = Math.floor(status / 100);
      const list = classes.get(cls) ?? [];
      list.push({ status, requests });
      classes.set(cls, list);
    }
    return {
      requests: this.requests,
      errors: this.errors,
      from: Number.isNaN(this.first) ? '' : new Date(this.first).toISOString(),
      to: Number.isNaN(this.last) ? '' : new Date(this.last).toISOString(),
      byUser: byCount(this.users, (user, c) => ({ user, ...c })),
      byVerb: byCount(this.verbs, (verb, c) => ({ verb, ...c })),
      byStatus: [...classes.entries()].sort(([a], [b]) => a - b).map(([cls, codes]) => ({ class: `${cls}xx`, requests: codes.reduce((n, c) => n + c.requests, 0), codes })),
      slowest: this.slowest.map((s) => ({ ...s })),
    };
  }
}

function bump(map: Map<string, Count>, key: string, error: boolean): void {
  const c = map.get(key) ?? { requests: 0, errors: 0 };
  c.requests++;
  if (error) c.errors++;
  map.set(key, c);
}

/** The --stats report for a terminal (names columns sized to the data, at most 48 wide). */
export function formatStats(s: StatsSummary, color: boolean): string {
  const out: string[] = [];
  const head = (text: string) => paint(text, BOLD, color);
  const range = s.from ? `, ${s.from} to ${s.to}` : '';
  out.push(`${s.requests} requests, ${s.errors} errors (status >= 400)${range}`);
  if (s.requests === 0) return `${out.join('\n')}\n`;

  const table = (title: string, rows: Array<{ name: string } & Count>) => {
    const width = Math.min(48, Math.max(title.length, ...rows.map((r) => Array.from(sanitize(r.name)).length)));
    out.push('', head(`${fit(title, width)}  ${fit('REQUESTS', 8, 'right')}  ${fit('ERRORS', 8, 'right')}`));
    for (const r of rows) out.push(`${fit(sanitize(r.name), width)}  ${fit(String(r.requests), 8, 'right')}  ${fit(String(r.errors), 8, 'right')}`);
  };
  table(
    'BY USER',
    s.byUser.map((u) => ({ name: u.user, requests: u.requests, errors: u.errors })),
  );
  table(
    'BY VERB',
    s.byVerb.map((v) => ({ name: v.verb, requests: v.requests, errors: v.errors })),
  );

  out.push('', head(`${fit('BY STATUS', 9)}  ${fit('REQUESTS', 8, 'right')}`));
  for (const c of s.byStatus) {
    out.push(`${fit(c.class, 9)}  ${fit(String(c.requests), 8, 'right')}`);
    for (const code of c.codes) {
      const label = paint(fit(`  ${code.status}`, 9), statusColor(code.status), color);
      out.push(`${label}  ${fit(String(code.requests), 8, 'right')}`);
    }
  }

  out.push('', head(`SLOWEST ${SLOWEST} (long-lived watch/exec/port-forward requests left out)`));
  out.push(head([fit('DURATION', W.duration, 'right'), fit('TIME (UTC)', W.time), fit('USER', W.user), fit('VERB', W.verb), fit('RESOURCE', W.resource), 'STATUS'].join(GAP)));
  for (const c of s.slowest) {
    out.push(
      [
        fit(formatDuration(c.durationMs), W.duration, 'right'),
        fit(c.time ? c.time.slice(11, 23) : '-', W.time),
        fit(sanitize(c.user), W.user),
        fit(sanitize(c.verb), W.verb),
        fit(sanitize(c.resource), W.resource),
        paint(String(c.status), statusColor(c.status), color),
      ].join(GAP),
    );
  }
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Lines from bytes

/** Longest line kept (1 MiB); a longer one is dropped whole, so memory stays bounded. */
export const MAX_LINE = 1024 * 1024;

/** Splits a byte stream into lines (LF; a CR before it is trimmed later by parseLine). */
export class LineSplitter {
  private decoder = new StringDecoder('utf8');
  private rest = '';
  private skipping = false;

  push(chunk: Buffer | string): string[] {
    const text = this.rest + (typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
    const lines = text.split('\n');
    this.rest = lines.pop() ?? '';
    if (this.skipping && lines.length > 0) {
      lines.shift(); // the end of the over-long line
      this.skipping = false;
    }
    if (this.rest.length > MAX_LINE) {
      this.rest = '';
      this.skipping = true;
    }
    return lines;
  }

  /** What is left without a final line break (at the end of the input). */
  end(): string[] {
    const rest = this.rest + this.decoder.end();
    const skipped = this.skipping;
    this.reset();
    return rest && !skipped ? [rest] : [];
  }

  /** Forget a partial line (the file was truncated under it). */
  reset(): void {
    this.decoder = new StringDecoder('utf8');
    this.rest = '';
    this.skipping = false;
  }
}

// ---------------------------------------------------------------------------------------------
// I/O

const POLL_MS = 250;
/** After a rename rotation, the old file is still read until it has been quiet this long. */
const RETIRE_AFTER_MS = 2_000;
const READ_SIZE = 64 * 1024;

type Handler = (lines: string[]) => Promise<void>;

/**
 * Runs the `logs` command: reads, filters and prints. Resolves with the exit code (0) when the
 * input ends, or, with follow, when `signal` aborts. Invalid option values, an unreadable file
 * and standard input being a terminal throw an Error with a one-line message.
 * When the output's reader goes away (EPIPE, e.g. `| head`), it stops and resolves 0.
 */
export async function runLogs(options: LogsOptions, out: NodeJS.WritableStream, input: NodeJS.ReadableStream = process.stdin, signal?: AbortSignal): Promise<number> {
  const filter = compileFilter(options, Date.now());
  const color = options.color ?? ((out as { isTTY?: boolean }).isTTY === true && !process.env.NO_COLOR);
  const stats = options.stats ? new LogStats() : undefined;
  const follow = options.follow && !stats;

  if (options.file === undefined && (input as { isTTY?: boolean }).isTTY === true) {
    throw new Error('no log file given and standard input is a terminal: name the access-log file, or pipe the log in');
  }

  // A reader that went away ends the run quietly; any other output error is thrown.
  let outError: Error | undefined;
  const stop = new AbortController();
  const onOutError = (err: Error) => {
    outError ??= err;
    stop.abort();
  };
  out.on('error', onOutError);
  const onAbort = () => stop.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  if (signal?.aborted) stop.abort();

  const write = async (text: string) => {
    if (text === '' || stop.signal.aborted) return;
    if (!out.write(text)) await drained(out, stop.signal);
  };
  const handle: Handler = async (lines) => {
    let text = '';
    for (const line of lines) {
      const e = parseLine(line);
      if (!e || !filter(e)) continue;
      if (stats) stats.add(e);
      else if (options.output === 'json') text += `${escapeLogLine(e.raw)}\n`;
      else text += `${formatEntry(e, color, options.output === 'wide')}\n`;
    }
    await write(text);
  };

  try {
    const file = options.file === undefined ? undefined : await openTail(options.file);
    if (!stats && options.output !== 'json') await write(`${formatHeader(color, options.output === 'wide')}\n`);
    if (file === undefined) await readStream(input, handle, stop.signal);
    else if (follow) await followFile(file.path, file, handle, stop.signal);
    else {
      try {
        await readToEnd(file, handle, stop.signal);
        await handle(file.splitter.end());
      } finally {
        await file.handle.close();
      }
    }
    if (stats) {
      const summary = stats.summary();
      await write(options.output === 'json' ? `${escapeLogLine(JSON.stringify(summary))}\n` : formatStats(summary, color));
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    out.removeListener('error', onOutError);
  }
  if (outError && (outError as NodeJS.ErrnoException).code !== 'EPIPE') throw outError;
  return 0;
}

/** Resolves when `out` drains, closes or errors, or `signal` aborts. */
function drained(out: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.removeListener('drain', done);
      out.removeListener('close', done);
      out.removeListener('error', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
    out.on('error', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Reads a stream to its end (or until `signal` aborts), pausing it while lines are handled. */
function readStream(input: NodeJS.ReadableStream, handle: Handler, signal: AbortSignal): Promise<void> {
  const splitter = new LineSplitter();
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (err?: unknown) => {
      if (settled) return;
      settled = true;
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('close', onClose);
      input.removeListener('error', finish);
      signal.removeEventListener('abort', onAbort);
      input.pause();
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve();
    };
    let pending = Promise.resolve();
    const onData = (chunk: Buffer | string) => {
      input.pause();
      pending = handle(splitter.push(chunk)).then(() => {
        if (!settled) input.resume();
      }, finish);
    };
    let ended = false;
    const onEnd = () => {
      ended = true;
      handle(splitter.end()).then(() => finish(), finish);
    };
    // Destroyed without an end: what was read has been handled; stop.
    const onClose = () => {
      if (!ended) void pending.then(() => finish());
    };
    const onAbort = () => finish();
    input.on('data', onData);
    input.on('end', onEnd);
    input.on('close', onClose);
    input.on('error', finish);
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) finish();
    else input.resume();
  });
}

interface Tail {
  path: string;
  handle: FileHandle;
  ino: number;
  dev: number;
  position: number;
  splitter: LineSplitter;
  /** when the file last grew (for retiring the old file after a rotation) */
  grewAt: number;
}

async function openTail(path: string): Promise<Tail> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw new Error(`cannot read ${path}: it is a directory`);
    return { path, handle, ino: st.ino, dev: st.dev, position: 0, splitter: new LineSplitter(), grewAt: Date.now() };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Reads from the tail's position to the current end of the file; true when anything was read. */
async function readToEnd(tail: Tail, handle: Handler, signal: AbortSignal): Promise<boolean> {
  const buffer = Buffer.allocUnsafe(READ_SIZE);
  let grew = false;
  while (!signal.aborted) {
    const { bytesRead } = await tail.handle.read(buffer, 0, buffer.length, tail.position);
    if (bytesRead === 0) break;
    tail.position += bytesRead;
    grew = true;
    await handle(tail.splitter.push(buffer.subarray(0, bytesRead)));
  }
  if (grew) tail.grewAt = Date.now();
  return grew;
}

/**
 * Follows `path` (`first` is it, already open) from its start: reads what is there, then polls
 * every 250 ms. Every handle, `first` included, is closed on return.
 *  - growth: the new bytes are read;
 *  - truncation (copytruncate): the file is now shorter than what was read, so reading starts
 *    again at 0 (a truncated file that regrew past the old length between two polls can't be told
 *    apart from growth - the same limit tail -f has);
 *  - rotation by rename: once a new file exists at `path`, it is read from its start, while the
 *    old file is still read until it has been quiet for 2 s (the writer may not have reopened
 *    yet). While nothing is at `path`, the old file is kept.
 */
async function followFile(path: string, first: Tail, handle: Handler, signal: AbortSignal): Promise<void> {
  let current = first;
  let retired: Tail | undefined;
  try {
    while (!signal.aborted) {
      await readToEnd(current, handle, signal);
      if (retired) {
        await readToEnd(retired, handle, signal);
        if (Date.now() - retired.grewAt >= RETIRE_AFTER_MS) {
          await handle(retired.splitter.end());
          await retired.handle.close();
          retired = undefined;
        }
      }
      if (signal.aborted) break;

      const size = (await current.handle.stat()).size;
      if (size < current.position) {
        current.position = 0;
        current.splitter.reset();
        continue;
      }

      const atPath = await stat(path).catch(() => undefined);
      if (atPath && (atPath.ino !== current.ino || atPath.dev !== current.dev)) {
        const next = await openTail(path).catch(() => undefined);
        if (next) {
          await readToEnd(current, handle, signal);
          if (retired) {
            await handle(retired.splitter.end());
            await retired.handle.close();
          }
          retired = current;
          current = next;
          continue;
        }
      }
      await sleep(POLL_MS, signal);
    }
  } finally {
    await current.handle.close();
    if (retired) await retired.handle.close();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
