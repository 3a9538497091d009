// What BasicAuthenticator.verify() asks of the failed-login limits, and the in-process answer
// (one proxy process: FailureLimiter itself). With --workers the answers come from the primary
// (workers/login-limits-client.ts), which is why a call may return a promise.

import type { FailureLimiter } from './failure-limiter.js';

/** How a password check that was let through ended. */
export type LoginOutcome = 'success' | 'failure' | 'no-verdict';

/** A password check let through (`waitMs` 0) or refused for `waitMs`. */
export interface LoginAdmission {
  waitMs: number;
  /** Called once when a check that was let through ends. */
  finish(outcome: LoginOutcome): void;
}

/**
 * `credential` names the credential (an HMAC of user and password, never the password), so that
 * the proxy-wide record of which client has used which credential successfully (the "known
 * client" exemption) speaks of the same one in every process.
 */
export interface LoginLimiter {
  /** Milliseconds until `client` / `user` may log in again (0 when allowed, or when `client` is known to use `credential`). */
  blockedForMs(client: string, user: string, credential: string): number | Promise<number>;
  /** Before bcrypt: refused for `waitMs`, or let through and counted as running until `finish`. */
  begin(client: string, user: string, credential: string): LoginAdmission | Promise<LoginAdmission>;
  /** `client` was let in with `credential` without a check (from the cache): it is known to use it. */
  usedBy(client: string, credential: string): void;
  /** The users file changed: what was known about credentials no longer holds. */
  usersChanged(): void;
}

/** A promise from a LoginLimiter rejects with this when no verdict could be had (answered 503, not counted). */
export class LimiterUnavailableError extends Error {
  constructor(message = 'failed-login limits did not answer') {
    super(message);
    this.name = 'LimiterUnavailableError';
  }
}

const NOTHING = (): void => {};

/**
 * One process: the counters are here, and which client used which credential is what each
 * cached credential remembers (BasicAuthenticator), so `credential` is not needed.
 */
export function localLoginLimiter(limiter: FailureLimiter): LoginLimiter {
  return {
    blockedForMs: (client, user) => limiter.blockedForMs(client, user),
    begin(client, user) {
      const waitMs = limiter.begin(client, user);
      return { waitMs, finish: waitMs > 0 ? NOTHING : (outcome) => limiter.finish(client, user, outcome === 'failure') };
    },
    usedBy: NOTHING,
    usersChanged: NOTHING,
  };
}
