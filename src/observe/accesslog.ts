// The traffic log: one JSON line per finished request with what an operator asks first (who,
// what, where, how it went), and for long-lived requests (watch, logs -f, exec, port-forward)
// one more line when they start, so a tail shows them live. Never a password, an Authorization
// value or a query string (it can carry tokens).

import { pino, stdTimeFunctions, type Logger } from 'pino';
import type { AuthFailureReason, AuthMethod } from '../auth/identity.js';
import type { RequestContext } from '../request/context.js';
import { closeLogs, flushLogsWithin } from './log-flush.js';
import { batchedDestination } from './destination.js';

export interface AccessRecord {
  reqId: string;
  client: string;
  auth: AuthMethod | 'none';
  user: string;
  groups: string[];
  method: string;
  /** HTTP/1.1 or HTTP/2.0, as the client spoke it. */
  protocol: string;
  path: string;
  verb: string;
  apiGroup: string;
  apiVersion: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  upstream: string;
  userAgent: string;
  /** Only on long-lived requests: 'start' when the stream opens, 'end' when it closes. */
  phase?: 'start' | 'end';
}

/** What the line says of the request itself (the rest is its outcome). */
export type RequestFacts = Pick<RequestContext, 'reqId' | 'clientAddress' | 'identity' | 'method' | 'protocol' | 'info' | 'userAgent'>;

export interface Outcome {
  status: number;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  upstream: string | undefined;
  phase?: 'start' | 'end';
}

export function accessRecord(facts: RequestFacts, outcome: Outcome): AccessRecord {
  const { info, identity } = facts;
  return {
    reqId: facts.reqId,
    client: facts.clientAddress,
    auth: identity.method,
    user: identity.user,
    groups: identity.groups,
    method: facts.method,
    protocol: facts.protocol,
    path: info.path,
    verb: info.verb,
    apiGroup: info.apiGroup,
    apiVersion: info.apiVersion,
    resource: info.resource,
    subresource: info.subresource,
    namespace: info.namespace,
    name: info.name,
    status: outcome.status,
    bytesIn: outcome.bytesIn,
    bytesOut: outcome.bytesOut,
    durationMs: Math.round(outcome.durationMs * 10) / 10,
    upstream: outcome.upstream ?? '',
    userAgent: facts.userAgent ?? '',
    ...(outcome.phase ? { phase: outcome.phase } : {}),
  };
}

export interface AuthFailureRecord {
  reqId: string;
  client: string;
  auth: AuthMethod | 'none';
  reason: AuthFailureReason;
  /** The user name the client claimed; never its password. */
  claimedUser: string | undefined;
  method: string;
  path: string;
  status: number;
  userAgent: string;
}

export type AccessLogFormat = 'json' | 'audit';

/** What pino.destination() returns (sonic-boom), as far as we use it. */
interface SonicBoom {
  write(line: string): boolean;
  reopen(): void;
  flush(cb?: (err?: Error) => unknown): void;
  destroy(): void;
}

/**
 * The same record as a Kubernetes audit.k8s.io/v1 Event at level Metadata, so tools that read
 * apiserver audit logs read ours. requestURI is the path alone: a query can carry tokens.
 */
export function auditEvent(record: AccessRecord | AuthFailureRecord, now = Date.now()): Record<string, unknown> {
  const durationMs = 'durationMs' in record ? record.durationMs : 0;
  const isRequest = 'verb' in record;
  return {
    kind: 'Event',
    apiVersion: 'audit.k8s.io/v1',
    level: 'Metadata',
    auditID: record.reqId,
    stage: isRequest && record.phase === 'start' ? 'ResponseStarted' : 'ResponseComplete',
    requestURI: record.path,
    verb: isRequest ? record.verb : record.method.toLowerCase(),
    // A passed-through token (auth "bearer") is the apiserver's to authenticate: the proxy knows no
    // user for it, and its own audit event (same auditID) names the one the apiserver found.
    user: isRequest && record.auth !== 'bearer' ? { username: record.user, groups: [...record.groups, 'system:authenticated'] } : { username: isRequest ? '' : (record.claimedUser ?? ''), groups: [] },
    sourceIPs: [record.client],
    userAgent: record.userAgent,
    ...(isRequest && record.resource
      ? {
          objectRef: {
            resource: record.resource,
            namespace: record.namespace || undefined,
            name: record.name || undefined,
            apiGroup: record.apiGroup || undefined,
            apiVersion: record.apiVersion,
            subresource: record.subresource || undefined,
          },
        }
      : {}),
    responseStatus: { metadata: {}, code: record.status },
    requestReceivedTimestamp: new Date(now - durationMs).toISOString(),
    stageTimestamp: new Date(now).toISOString(),
    annotations: isRequest ? { 'kube-front-proxy/auth': record.auth, 'kube-front-proxy/upstream': record.upstream } : { 'kube-front-proxy/auth': record.auth, 'kube-front-proxy/auth-failure': record.reason },
  };
}

/**
 * One request line, exactly as pino would write `logger.info(record, 'request')` (level, time,
 * pid, the record's fields in order, msg), built by hand: pino's generic serializer walks the
 * object and cost about 18 µs of the ~75 µs the proxy spends on a small request.
 */
export function requestLine(record: AccessRecord, pid: number, time = new Date()): string {
  const q = JSON.stringify;
  return escapeLogLine(
    `{"level":30,"time":"${time.toISOString()}","pid":${pid},"reqId":${q(record.reqId)},"client":${q(record.client)},"auth":${q(record.auth)},` +
      `"user":${q(record.user)},"groups":${q(record.groups)},"method":${q(record.method)},"protocol":${q(record.protocol)},"path":${q(record.path)},` +
      `"verb":${q(record.verb)},"apiGroup":${q(record.apiGroup)},"apiVersion":${q(record.apiVersion)},"resource":${q(record.resource)},` +
      `"subresource":${q(record.subresource)},"namespace":${q(record.namespace)},"name":${q(record.name)},"status":${record.status},` +
      `"bytesIn":${record.bytesIn},"bytesOut":${record.bytesOut},"durationMs":${record.durationMs},"upstream":${q(record.upstream)},` +
      `"userAgent":${q(record.userAgent)}${record.phase ? `,"phase":${q(record.phase)}` : ''},"msg":"request"}\n`,
  );
}

/**
 * Characters JSON.stringify (and so pino) writes raw that a terminal or an editor acts on: C1
 * controls (U+0080-U+009F; U+0085 is a line break to some), the bidirectional marks, embeddings,
 * overrides and isolates (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069: text shown in
 * another order than it is stored) and the Unicode line and paragraph separators (U+2028, U+2029).
 * C0 controls, '"' and '\\' JSON.stringify escapes itself.
 */
// eslint-disable-next-line no-control-regex
export const UNSAFE_CHARS = /[\u0080-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const UNSAFE_CHARS_ALL = new RegExp(UNSAFE_CHARS.source, 'g');

const escapeChar = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * A JSON text with every UNSAFE_CHARS character written as a \uXXXX escape: the same JSON value,
 * which JSON.parse reads back to the same strings. Applied to a whole line: in valid JSON these
 * characters can only stand inside a string, where the escape means the character itself. One
 * regex test per line; lines without them (nearly all) are returned as they are.
 */
export function escapeLogLine(line: string): string {
  return UNSAFE_CHARS.test(line) ? line.replace(UNSAFE_CHARS_ALL, escapeChar) : line;
}

/**
 * pino options for every logger whose lines can carry client-sent strings (user names, paths,
 * user agents): its serialiser escapes like JSON.stringify, which leaves UNSAFE_CHARS raw.
 */
export const escapingHooks = { streamWrite: escapeLogLine } as const;

/** An authentication-failure line, as pino would write `logger.info(record, 'authentication failed')`, escaped. */
export function authFailureLine(record: AuthFailureRecord, level: number, pid: number, time = new Date()): string {
  const fields = JSON.stringify(record).slice(1, -1);
  return escapeLogLine(`{"level":${level},"time":"${time.toISOString()}","pid":${pid}${fields ? `,${fields}` : ''},"msg":"authentication failed"}\n`);
}

const INFO = pino.levels.values.info as number;
const DEBUG = pino.levels.values.debug as number;

type JsonLogger = Pick<Logger, 'info' | 'debug' | 'level'>;

export class AccessLog {
  private constructor(
    /** JSON format: pino, for authentication failures and the level that turns request lines off. */
    private readonly logger: JsonLogger | undefined,
    /** Where lines go: the file's, or the stdout destination shared with the other logs. */
    private readonly destination: SonicBoom | undefined,
    private readonly format: AccessLogFormat,
    /** False for stdout shared with the other logs: its owner reopens nothing and flushes at exit. */
    private readonly ownsDestination: boolean,
  ) {}

  /**
   * Lines go to `file` (appended; reopened by reopen() for logrotate) or, without one, to stdout:
   * the JSON format through `fallback`'s destination (with the other logs), the audit format on
   * its own.
   */
  static open(file: string | undefined, format: AccessLogFormat, fallback: JsonLogger): AccessLog {
    if (!file && format === 'json') return new AccessLog(fallback, (fallback as unknown as Record<symbol, SonicBoom>)[pino.symbols.streamSym], format, false);
    const destination = batchedDestination({ dest: file ?? 1, append: true, mkdir: false }) as SonicBoom;
    if (format === 'audit') return new AccessLog(undefined, destination, format, true);
    return new AccessLog(pino({ base: { pid: process.pid }, timestamp: stdTimeFunctions.isoTime, hooks: escapingHooks }, destination), destination, format, true);
  }

  request(record: AccessRecord): void {
    if (this.format === 'audit') this.destination?.write(escapeLogLine(`${JSON.stringify(auditEvent(record))}\n`));
    // --log-level warn (or above) turns request lines off, as it did when pino wrote them.
    else if (this.logger && (pino.levels.values[this.logger.level] ?? 0) <= INFO) this.destination?.write(requestLine(record, process.pid));
  }

  authFailure(record: AuthFailureRecord): void {
    // The failed logins that led to a lockout are logged; the refusals during it (thousands a
    // second under a flood) only at debug: the authentications_total metric counts them all.
    // Written by hand (as pino would, then escaped), not through the logger: without a file it
    // is the caller's logger, which may have no escaping hooks.
    if (record.reason === 'rate-limited') {
      if (this.logger && (pino.levels.values[this.logger.level] ?? Infinity) <= DEBUG) this.destination?.write(authFailureLine(record, DEBUG, process.pid));
      return;
    }
    if (this.format === 'json') {
      // 'silent' (no number in levels.values) writes none, as pino did.
      if (this.logger && (pino.levels.values[this.logger.level] ?? Infinity) <= INFO) this.destination?.write(authFailureLine(record, INFO, process.pid));
    } else this.destination?.write(escapeLogLine(`${JSON.stringify(auditEvent(record))}\n`));
  }

  /** After logrotate moved the file (SIGUSR1): continue in a new file at the same path. */
  reopen(): void {
    if (this.ownsDestination) this.destination?.reopen();
  }

  /**
   * Writes what is buffered, waiting at most 200 ms, then closes. Not flushSync(): sonic-boom
   * retries a failing write for ever (EAGAIN from a stdout nobody reads, EPIPE, a full disk),
   * and the drain would wait on it until the process is killed.
   */
  async close(): Promise<void> {
    // The shared stdout destination is flushed by its owner when the process exits (shutdown.ts).
    if (!this.ownsDestination || !this.destination) return;
    await flushLogsWithin(this.destination, 200);
    closeLogs(this.destination);
  }
}
