import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { limitUnreadBody } from './refused-body.js';

// Every error the proxy itself answers is a Kubernetes `Status` object, so kubectl prints it the
// way it prints the apiserver's own errors ("error: You must be logged in to the server (...)").
// Handlers name a failure from this table; nothing else builds error JSON.

export type StatusReason =
  | 'BadRequest'
  | 'Unauthorized'
  | 'Forbidden'
  | 'NotFound'
  | 'MethodNotAllowed'
  | 'RequestTimeout'
  | 'RequestEntityTooLarge'
  | 'RequestHeaderFieldsTooLarge'
  | 'TooManyRequests'
  | 'InternalError'
  | 'BadGateway'
  | 'ServiceUnavailable'
  | 'Timeout';

const codeForReason: Record<StatusReason, number> = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  // Not one of Kubernetes' reasons (nor is 431's): said for a client too slow to send its headers.
  RequestTimeout: 408,
  RequestEntityTooLarge: 413,
  RequestHeaderFieldsTooLarge: 431,
  TooManyRequests: 429,
  InternalError: 500,
  BadGateway: 502,
  ServiceUnavailable: 503,
  // kube-apiserver answers a gateway timeout with reason "Timeout" and code 504.
  Timeout: 504,
};

export interface KubeStatus {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: StatusReason;
  code: number;
}

/** A failure the proxy answers itself; thrown or passed around, turned into a Status at the edge. */
export class StatusError extends Error {
  readonly reason: StatusReason;
  readonly code: number;
  /** Extra response headers, e.g. WWW-Authenticate or Retry-After. */
  readonly headers: Record<string, string>;

  constructor(reason: StatusReason, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'StatusError';
    this.reason = reason;
    this.code = codeForReason[reason];
    this.headers = headers;
  }

  toStatus(): KubeStatus {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      code: this.code,
    };
  }
}

/**
 * Answers a fastify request with `error` as a Status: code, extra headers, JSON body. A body the
 * request still has to send gets a short grace, not the connection for ever (refused-body.ts).
 */
export function sendStatus(reply: StatusReply, error: StatusError): StatusReply {
  limitUnreadBody(reply.request.raw, reply.raw);
  return reply.code(error.code).headers(error.headers).type('application/json').send(error.toStatus());
}

/** The part of a fastify reply sendStatus uses (any server type). */
interface StatusReply {
  request: { raw: IncomingMessage | Http2ServerRequest };
  raw: ServerResponse | Http2ServerResponse;
  code(code: number): StatusReply;
  headers(values: Record<string, string>): StatusReply;
  type(contentType: string): StatusReply;
  send(payload: unknown): StatusReply;
}

export const BASIC_REALM = 'kube-front-proxy';

export function unauthorized(message: string): StatusError {
  return new StatusError('Unauthorized', message, {
    'www-authenticate': `Basic realm="${BASIC_REALM}", charset="UTF-8"`,
  });
}

/** The answer to a request or upgrade that arrives on an open connection during the drain: go elsewhere. */
export function shuttingDown(): StatusError {
  return new StatusError('ServiceUnavailable', 'kube-front-proxy is shutting down; retry', { 'retry-after': '1', connection: 'close' });
}

/** The path of a request-target without its query: queries may carry tokens (a proxied service's ?token=). */
export function pathOf(url: string): string {
  const index = url.indexOf('?');
  return index === -1 ? url : url.slice(0, index);
}

/** Writes a Status as a complete HTTP/1.1 response on a raw socket (used before/without fastify). */
export function statusResponseBytes(error: StatusError): string {
  const body = JSON.stringify(error.toStatus());
  const lines = [
    `HTTP/1.1 ${error.code} ${STATUS_CODES[error.code] ?? 'Error'}`,
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(error.headers)
      .filter(([name]) => name.toLowerCase() !== 'connection')
      .map(([name, value]) => `${name}: ${value}`),
  ];
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}
