// A request the proxy answers itself (401, 429, 503...) before reading its body. Node keeps such
// a connection and reads the rest of the body to reuse it, for as long as the client takes: a
// client that trickles a byte now and then holds the connection, unauthenticated, for ever. The
// body of a refused request is given a short grace to arrive (so that a client that writes its
// whole body before it reads, as curl does, still gets its answer rather than a reset), then the
// connection is closed.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';

/** How long the unread body of a refused request may keep arriving after the answer (nginx's lingering_timeout). */
export const REFUSED_BODY_GRACE_MS = 3_000;

/**
 * Called as the proxy answers `req` itself: if its body has not all arrived by the end of the
 * grace after the answer, the HTTP/1.1 connection is closed (one whose body does arrive stays
 * open for its next request). HTTP/2 needs nothing: Node resets a stream whose response ended
 * before its request with NO_ERROR (RFC 9113 §8.1), and the client stops sending.
 */
export function limitUnreadBody(req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse, graceMs = REFUSED_BODY_GRACE_MS): void {
  if (req.httpVersionMajor === 2 || req.complete || !hasBody(req as IncomingMessage)) return;
  // Node reads (and drops) the rest of the body to keep the connection: for the grace, no longer.
  const socket = (req as IncomingMessage).socket;
  res.once('finish', () => {
    if (req.complete || socket.destroyed) return;
    const timer = setTimeout(() => socket.destroy(), graceMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    req.once('end', () => clearTimeout(timer));
  });
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}
