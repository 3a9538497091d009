// When client certificates stop being valid, so that what they opened ends then. A request is
// checked against the clock (x509.ts), but a watch, a log follow or a tunnel makes no new
// request: kube-apiserver checks validity on every request, so what it would refuse now must
// not carry on through the proxy. x509.ts tells this clock each connection's end of validity
// (the earliest notAfter of its chain); at each such moment the listeners run, and the server
// ends the streams and tunnels whose credential no longer holds (Authenticator.stillHolds), as
// a reload does for a revoked one.
//
// One timer for the whole process, set for the earliest moment pending. Moments are kept per
// connection open (a connection that closes takes its moment with it), so their number is
// bounded by the connections, and most share a few certificates' moments.

import type { TLSSocket } from 'node:tls';

/** The longest setTimeout Node honours (~24.8 days); later moments are reached in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class CredentialExpiry {
  /** Moment (ms since the epoch) -> open connections whose credential ends then. */
  private readonly pending = new Map<number, number>();
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private armedFor = Number.POSITIVE_INFINITY;

  private readonly now: () => number;
  private readonly maxTimerMs: number;

  /** `maxTimerMs`: for tests, a shorter longest timer, to see far moments reached in steps. */
  constructor(options: { now?: () => number; maxTimerMs?: number } = {}) {
    this.now = options.now ?? Date.now;
    this.maxTimerMs = Math.min(options.maxTimerMs ?? MAX_TIMER_MS, MAX_TIMER_MS);
  }

  /** Runs `listener` each time some credential has just expired; returns how to stop. */
  onExpiry(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Moments pending (for tests). */
  get size(): number {
    return this.pending.size;
  }

  /**
   * `connection`'s credential holds until `notAfter` (inclusive: it has expired once the clock
   * is past it). Far-future moments are fine; a moment already past fires at once.
   */
  watch(connection: TLSSocket, notAfter: number): void {
    if (!Number.isFinite(notAfter)) return;
    // Expired once the clock is past notAfter: the first whole millisecond after it.
    const at = Math.floor(notAfter) + 1;
    if (!this.track(connection, at)) return;
    this.pending.set(at, (this.pending.get(at) ?? 0) + 1);
    if (at < this.armedFor) this.arm(at);
  }

  /** Calls `forget` when `connection` closes; false if it is already gone. */
  private track(connection: TLSSocket, at: number): boolean {
    const forget = () => {
      const count = this.pending.get(at);
      if (count === undefined) return;
      if (count > 1) this.pending.set(at, count - 1);
      else this.pending.delete(at);
    };
    try {
      if (connection.destroyed) return false;
      // An HTTP/2 session's socket forwards this to the TLS socket underneath.
      connection.once('close', forget);
      return true;
    } catch {
      // An HTTP/2 session whose socket is already gone: nothing left to end.
      return false;
    }
  }

  private arm(at: number): void {
    clearTimeout(this.timer);
    this.armedFor = at;
    this.timer = setTimeout(() => this.fire(), Math.min(Math.max(0, at - this.now()), this.maxTimerMs));
    // Nothing to end keeps a process alive: it is the connections that do.
    this.timer.unref();
  }

  private fire(): void {
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    const now = this.now();
    let due = false;
    let next = Number.POSITIVE_INFINITY;
    for (const at of this.pending.keys()) {
      // Once per moment: its connections' requests meet the clock at the auth step from now on.
      if (at <= now) {
        due = true;
        this.pending.delete(at);
      } else if (at < next) {
        next = at;
      }
    }
    if (next !== Number.POSITIVE_INFINITY) this.arm(next);
    if (!due) return;
    for (const listener of [...this.listeners]) listener();
  }
}

/** The process's clock: x509.ts feeds it, the server listens (server.ts: onExpiry(closeWithdrawn)). */
export const credentialExpiry = new CredentialExpiry();
