// What BasicAuthenticator.verify() asks of the failed-login limits, and the in-process answer
// (one proxy process: FailureLimiter itself, and the record of known clients). With --workers
// the answers come from the primary (workers/login-limits-client.ts), which is why a call may
// return a promise.

import type { FailureLimiter } from './failure-limiter.js';
import type { UserTable } from './htpasswd.js';
import { KnownClients } from './known-clients.js';

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
 * the record of which client has used which credential successfully (the "known client"
 * exemption) speaks of the same one in every process.
 */
export interface LoginLimiter {
  /** Milliseconds until `client` / `user` may log in again (0 when allowed, or when `client` is known to use `credential`). */
  blockedForMs(client: string, user: string, credential: string): number | Promise<number>;
  /**
   * Before bcrypt: refused for `waitMs`, or let through and counted as running until `finish`.
   * A client known to use `credential` is let through uncounted; should the check fail (its
   * users-file entry changed since), it is known no more and the failure counts.
   */
  begin(client: string, user: string, credential: string): LoginAdmission | Promise<LoginAdmission>;
  /** `client` was let in with `credential` (of `user`, if given) without a check (from the cache): it is known to use it. */
  usedBy(client: string, credential: string, user?: string): void;
  /**
   * The users file was read again. `withdrawn`: the users whose password hash changed or who
   * were removed (withdrawnUsers): the clients known to use their credentials are known no
   * more, and everything else is kept, so a routine reload does not lock owners out. Without
   * the list nothing is known about what changed: every known client is forgotten.
   */
  usersChanged(withdrawn?: readonly string[]): void;
}

/**
 * The users whose credentials `next` withdraws from `previous`: removed, or with another
 * password hash (a new group changes who they are, not whether the password is theirs).
 */
export function withdrawnUsers(previous: UserTable | undefined, next: UserTable | undefined): string[] {
  const withdrawn: string[] = [];
  for (const [name, entry] of previous?.users ?? []) {
    if (next?.users.get(name)?.hash !== entry.hash) withdrawn.push(name);
  }
  return withdrawn;
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
 * One process: the counters, and which client used which credential. BasicAuthenticator's
 * cache remembers that too, but a reload empties the cache; this record outlives it.
 */
export function localLoginLimiter(limiter: FailureLimiter, known = new KnownClients()): LoginLimiter {
  return {
    blockedForMs: (client, user, credential) => (known.has(credential, client) ? 0 : limiter.blockedForMs(client, user)),
    begin(client, user, credential) {
      if (known.has(credential, client)) {
        return {
          waitMs: 0,
          finish(outcome) {
            if (outcome === 'success') known.add(credential, client, user);
            else if (outcome === 'failure') {
              known.forget(credential);
              limiter.recordFailure(client, user);
            }
          },
        };
      }
      const waitMs = limiter.begin(client, user);
      if (waitMs > 0) return { waitMs, finish: NOTHING };
      return {
        waitMs,
        finish(outcome) {
          if (outcome === 'success') known.add(credential, client, user);
          limiter.finish(client, user, outcome === 'failure');
        },
      };
    },
    usedBy: (client, credential, user) => known.add(credential, client, user),
    usersChanged(withdrawn) {
      if (withdrawn === undefined) known.clear();
      else known.forgetUsers(withdrawn);
    },
  };
}
