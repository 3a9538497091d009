// The HTTP/1.1 side of the user-facing listener, where a client's bytes may never make a
// request: its limits (header deadline, keep-alive, header size) and the answer to what the
// parser or the TLS layer refused.

import type { IncomingHttpHeaders } from 'node:http';
import type { Http2SecureServer } from 'node:http2';
import type { Socket } from 'node:net';
import type { Config } from '../config/index.js';
import { StatusError, statusResponseBytes } from './status.js';

/**
 * Bytes a client sent that never made a request: malformed HTTP, headers too large or too slow,
 * a TLS handshake that failed or never finished. Answered with a Status where an HTTP answer can
 * still be written, and the connection always released: end() alone would wait for a client
 * that may never read, and a write behind a stalled handshake never leaves.
 */
export function answerClientError(err: Error & { code?: string }, socket: Socket): void {
  const code = err.code ?? '';
  if (!socket.writable || code === 'ECONNRESET' || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_')) {
    socket.destroy();
    return;
  }
  const status =
    code === 'HPE_HEADER_OVERFLOW'
      ? new StatusError('RequestHeaderFieldsTooLarge', 'request headers too large')
      : code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'HPE_HEADER_TIMEOUT'
        ? new StatusError('RequestTimeout', 'request headers not received in time (--request-header-timeout)')
        : new StatusError('BadRequest', `malformed HTTP request (${code || 'parse error'})`);
  socket.write(statusResponseBytes(status));
  socket.destroySoon();
}

/**
 * The HTTP/1.1 side of the listener takes its limits from properties of the server, not from
 * the options an HTTP/2 server is built with: a request's headers must arrive within the header
 * timeout (checked every connectionsCheckingInterval, 30 s by default, hence the shorter one),
 * an idle keep-alive connection is closed, and the header block is capped (431).
 */
export function limitHttp1(server: Http2SecureServer, config: Config): void {
  const http1 = server as Http2SecureServer & { headersTimeout: number; requestTimeout: number; connectionsCheckingInterval: number; keepAliveTimeout: number; maxHeaderSize: number };
  http1.headersTimeout = config.requestHeaderTimeoutMs;
  // Bodies are streamed to the apiserver, which bounds its own requests.
  http1.requestTimeout = 0;
  http1.connectionsCheckingInterval = Math.min(1000, Math.max(50, Math.floor(config.requestHeaderTimeoutMs / 4)));
  http1.keepAliveTimeout = config.keepAliveTimeoutMs;
  http1.maxHeaderSize = config.maxRequestHeaderBytes;
}

/** Connections that sent a badly framed request: nothing after it on them is processed. */
const badlyFramed = new WeakSet<object>();

/**
 * Framing Node's parser accepts and RFC 9112 does not: an HTTP/1.0 request with
 * Transfer-Encoding (§6.1: treat the framing as faulty and close the connection; a 1.0 hop in
 * front of us may have read the body by its length, not by chunks). Undefined when it is fine.
 */
export function framingError(request: { httpVersion: string; headers: IncomingHttpHeaders; socket: object }): StatusError | undefined {
  if (request.httpVersion !== '1.0' || request.headers['transfer-encoding'] === undefined) return undefined;
  badlyFramed.add(request.socket);
  return new StatusError('BadRequest', 'malformed HTTP request: Transfer-Encoding in an HTTP/1.0 request', { connection: 'close' });
}

/**
 * A request pipelined behind a badly framed one (Node's parser reads on): it may be a smuggled
 * one, so it is neither forwarded nor answered; the connection closes after the 400.
 */
export function followsFramingError(request: { socket: object }): boolean {
  return badlyFramed.has(request.socket);
}
