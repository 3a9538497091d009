// The traffic log: one JSON line per finished request with what an operator asks first (who,
// what, where, how it went), and for long-lived requests (watch, logs -f, exec, port-forward)
// one more line when they start, so a tail shows them live. Never a password, an Authorization
// value or a query string (it can carry tokens).

import { pino, stdTimeFunctions, type DestinationStream, type Logger } from 'pino';
import type { AuthFailureReason, AuthMethod, Identity } from '../auth/identity.js';
import type { RequestInfo } from './requestinfo.js';

export interface AccessRecord {
  reqId: string;
  client: string;
  auth: AuthMethod | 'none';
  user: string;
  groups: string[];
  method: string;
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

export interface RequestFacts {
  reqId: string;
  client: string;
  identity: Identity;
  method: string;
  info: RequestInfo;
  userAgent: string | undefined;
}

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
    client: facts.client,
    auth: identity.method,
    user: identity.user,
    groups: identity.groups,
    method: facts.method,
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

export class AccessLog {
  private constructor(
    private readonly logger: Logger | Pick<Logger, 'info'>,
    private readonly destination: (DestinationStream & { reopen?: () => void; flushSync?: () => void }) | undefined,
  ) {}

  /** Lines go to `file` (appended; reopened by reopen() for logrotate) or, without one, to `fallback`. */
  static open(file: string | undefined, fallback: Pick<Logger, 'info'>): AccessLog {
    if (!file) return new AccessLog(fallback, undefined);
    const destination = pino.destination({ dest: file, append: true, mkdir: false, sync: false });
    const logger = pino({ base: { pid: process.pid }, timestamp: stdTimeFunctions.isoTime }, destination);
    return new AccessLog(logger, destination);
  }

  request(record: AccessRecord): void {
    this.logger.info(record, 'request');
  }

  authFailure(record: AuthFailureRecord): void {
    this.logger.info(record, 'authentication failed');
  }

  /** After logrotate moved the file (SIGUSR1): continue in a new file at the same path. */
  reopen(): void {
    this.destination?.reopen?.();
  }

  close(): void {
    this.destination?.flushSync?.();
  }
}
