// What the client-facing HTTP/2 guards share: why a session was ended, how it is ended, and a
// token bucket for the frames a client may send only so often.

import { constants, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';

/** Why a client's HTTP/2 session was ended (the `reason` label of the metric). */
export type SessionCloseReason = 'rapid-reset' | 'ping-flood' | 'settings-flood' | 'continuation-flood' | 'frame-flood' | 'idle-streams' | 'parked-streams';
export const SESSION_CLOSE_REASONS: readonly SessionCloseReason[] = ['rapid-reset', 'ping-flood', 'settings-flood', 'continuation-flood', 'frame-flood', 'idle-streams', 'parked-streams'];

/** Why the proxy reset one client stream (the `reason` label of the metric). */
export type StreamResetReason = 'stalled-response' | 'stalled-request';
export const STREAM_RESET_REASONS: readonly StreamResetReason[] = ['stalled-response', 'stalled-request'];

/** Sessions already ended by a guard, so that a closure is counted once whichever guard sees it. */
const ended = new WeakSet<ServerHttp2Session>();

/**
 * How long the GOAWAY gets to reach the client before the socket is destroyed: a reset drops
 * what the client has not read yet. nghttp2 refuses new streams meanwhile.
 */
const GOAWAY_GRACE_MS = 250;

/**
 * Ends an abusive session: GOAWAY with ENHANCE_YOUR_CALM, and the socket destroyed shortly
 * after. close() would wait for its streams, and an abuser's streams never finish; destroying
 * at once resets a socket with unread input, and the client's kernel drops the GOAWAY with it.
 * Returns false when a guard had already ended the session (count each closure once); a session
 * nghttp2 is already tearing down still counts.
 */
export function endAbusiveSession(session: ServerHttp2Session): boolean {
  if (ended.has(session)) return false;
  ended.add(session);
  if (session.destroyed) return true;
  // destroy(undefined, code) sends GOAWAY with NO_ERROR whatever the code (Node 20): ours first.
  session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM);
  setTimeout(() => session.destroy(), GOAWAY_GRACE_MS).unref();
  return true;
}

/** Streams this proxy reset itself (their close carries an error code too). */
const resetHere = new WeakSet<ServerHttp2Stream>();

export function resetStream(stream: ServerHttp2Stream, code: number): void {
  resetHere.add(stream);
  stream.close(code);
}

export function resetByProxy(stream: ServerHttp2Stream): boolean {
  return resetHere.has(stream);
}

/** Allows `burst` events at once and `perSecond` after that; take() says whether one more fits. */
export class TokenBucket {
  private tokens: number;
  private at = Date.now();

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
  ) {
    this.tokens = burst;
  }

  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
