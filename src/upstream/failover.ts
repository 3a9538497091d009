// Which apiserver a request goes to, and what happens when it fails there: one loop for plain
// requests (dispatcher.ts), watches over HTTP/2 (proxy/forward.ts) and upgrades
// (proxy/upgrade.ts). The transport sends and says how far an attempt got; this module picks,
// counts, ejects and decides whether the request is tried again.

import { errorCode, isConnectionFailure, tagUpstream, wasNotProcessed } from './failures.js';
import type { UpstreamPool, UpstreamTarget } from './pool.js';

/** What the transport knows when an attempt fails. */
export interface AttemptFailure {
  /**
   * The attempt got past the point where a failure can be the connection's: the apiserver began
   * answering (or, for a tunnel, its connection was up). Neither ejected nor tried again.
   */
  committed: boolean;
  /** The client went away or broke its request: not the apiserver's fault, nobody to retry for. */
  clientGone: boolean;
}

export interface FailoverPolicy {
  /**
   * Sending the request again is harmless (nothing of it can have been acted on twice): a
   * connection failure before the answer sends it to another apiserver.
   */
  replayable: boolean;
}

/** One try of a request on one apiserver, counted in its `outstanding` until released. */
export interface Attempt {
  readonly target: UpstreamTarget;
  /** The request or stream is done with this apiserver. Idempotent. */
  readonly release: () => void;
  /** It failed: released, then retried, or the error goes to the loop's `fail`. */
  failed(error: Error, how: AttemptFailure): void;
}

/** How often one request is sent again after an HTTP/2 "not processed". */
const NOT_PROCESSED_RETRIES = 2;

/**
 * Sends a request: `send` is called with each attempt (the pool's pick among the apiservers not
 * yet tried), and reports its end through it. A failed attempt, in this order:
 * - committed, or the client gone: the request's own failure; the apiserver is not blamed;
 * - HTTP/2 "not processed": sent again (NOT_PROCESSED_RETRIES a request), its apiserver included;
 * - a connection or TLS failure: the apiserver is ejected, and a replayable request goes on to
 *   one not tried yet;
 * - anything else: the request's failure.
 * `fail` gets the error that ends the request: the last attempt's, or the pool's answer when no
 * apiserver is left (UpstreamPool.exhausted). When the client has gone it still gets the error;
 * its caller knows nobody is left to answer.
 */
export function failover(pool: UpstreamPool, policy: FailoverPolicy, send: (attempt: Attempt) => void, fail: (error: Error) => void): void {
  const tried = new Set<UpstreamTarget>();
  let notProcessed = 0;

  const next = (previous: Error | undefined): void => {
    const target = pool.pick(tried);
    if (!target) {
      fail(pool.exhausted(tried, previous));
      return;
    }
    tried.add(target);
    pool.acquire(target);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      pool.release(target);
    };
    send({
      target,
      release,
      failed(error, { committed, clientGone }) {
        release();
        tagUpstream(error, target.origin);
        if (!committed && !clientGone) {
          const code = errorCode(error);
          // Never reached the apiserver's handlers, so safe whatever the request: the same
          // apiserver may take it again (it is closing that connection, not going away).
          if (wasNotProcessed(code) && notProcessed < NOT_PROCESSED_RETRIES) {
            notProcessed++;
            tried.delete(target);
            next(error);
            return;
          }
          if (isConnectionFailure(code)) {
            pool.eject(target, `${code}: ${error.message}`);
            if (policy.replayable) {
              next(error);
              return;
            }
          }
        }
        fail(error);
      },
    });
  };
  next(undefined);
}
