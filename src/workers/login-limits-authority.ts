// The one authority for failed-login limits under --workers, in the primary: the counters per
// client address and per user name (FailureLimiter) and the record of which client has used
// which credential successfully (KnownClients). With one set for the whole proxy the lockout
// comes at exactly --auth-failure-limit, whatever the number of workers.
//
// Workers ask only where the answer can be a refusal: before each bcrypt (login-begin), and
// for a cached credential from a client they have not seen use it while their copy of the
// refused keys says its address or name is refused (login-check). So each counted failure costs
// one round trip, and a request with a credential the worker has verified costs none. What the
// workers copy is pushed to them (login-keys) whenever a key starts or stops being refused.

import type { FailureLimiter, KeyState } from '../auth/failure-limiter.js';
import { KnownClients } from '../auth/known-clients.js';
import type { LoginOutcome } from '../auth/login-limiter.js';
import type { LimitsReply, LimitsRequest } from './messages.js';

interface RunningCheck {
  client: string;
  user: string;
  credential: string;
  /** False for a known client's check: let through without counting. */
  counted: boolean;
}

/** Refused keys kept for the workers' copies at most (the limiter keeps 50,000 counters per map). */
const MAX_PUBLISHED = 100_000;
/** Expired locks at the old end of the published keys dropped per change (amortised clean-up). */
const SWEEP = 4;

export class LoginLimitsAuthority {
  private readonly known = new KnownClients();
  /** Checks let through and not finished, per worker: a worker that dies releases its own. */
  private readonly running = new Map<number, Map<number, RunningCheck>>();
  /** The refused keys as the workers were told, the least recently changed first. */
  private readonly published = new Map<string, KeyState>();

  constructor(
    private readonly limiter: FailureLimiter,
    /** To every worker. */
    private readonly broadcast: (message: LimitsReply) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** A request from worker `worker`; `reply` answers that worker. */
  handle(worker: number, message: LimitsRequest, reply: (message: LimitsReply) => void): void {
    switch (message.kfp) {
      case 'login-begin': {
        const { id, client, user, credential } = message;
        if (this.known.has(credential, client)) {
          this.track(worker, id, { client, user, credential, counted: false });
          reply({ kfp: 'login-answer', id, waitMs: 0 });
          return;
        }
        const waitMs = this.limiter.begin(client, user);
        if (waitMs === 0) this.track(worker, id, { client, user, credential, counted: true });
        reply({ kfp: 'login-answer', id, waitMs });
        this.publish(client, user);
        return;
      }
      case 'login-check': {
        const { id, client, user, credential } = message;
        reply({ kfp: 'login-answer', id, waitMs: this.known.has(credential, client) ? 0 : this.limiter.blockedForMs(client, user) });
        return;
      }
      case 'login-finish': {
        const checks = this.running.get(worker);
        const check = checks?.get(message.id);
        if (check === undefined) return;
        checks?.delete(message.id);
        this.settle(check, message.outcome);
        return;
      }
      case 'login-used':
        this.known.add(message.credential, message.client, message.user);
        return;
      case 'login-forget':
        // A reload keeps the clients of credentials that still hold (known-clients.ts).
        if (message.users === undefined) this.known.clear();
        else this.known.forgetUsers(message.users);
        return;
    }
  }

  /** Worker `worker` is gone: the checks it was running end without a verdict. */
  workerGone(worker: number): void {
    const checks = this.running.get(worker);
    this.running.delete(worker);
    for (const check of checks?.values() ?? []) this.settle(check, 'no-verdict');
  }

  /** Every key refused now: what a starting worker's copy begins with. */
  snapshot(): LimitsReply {
    const now = this.now();
    return { kfp: 'login-keys', states: [...this.published.values()].filter((state) => !expired(state, now)) };
  }

  private track(worker: number, id: number, check: RunningCheck): void {
    let checks = this.running.get(worker);
    if (checks === undefined) this.running.set(worker, (checks = new Map<number, RunningCheck>()));
    checks.set(id, check);
  }

  private settle(check: RunningCheck, outcome: LoginOutcome): void {
    if (outcome === 'success') this.known.add(check.credential, check.client, check.user);
    if (!check.counted) {
      if (outcome !== 'failure') return;
      // A known client's credential failed: its entry changed since (a reload), so the client
      // is known no more and this counts as any failed login does.
      this.known.forget(check.credential);
      this.limiter.recordFailure(check.client, check.user);
      this.publish(check.client, check.user);
      return;
    }
    this.limiter.finish(check.client, check.user, outcome === 'failure');
    this.publish(check.client, check.user);
  }

  /** Tells the workers about the keys of `client` and `user` whose refusal changed. */
  private publish(client: string, user: string): void {
    const now = this.now();
    const changed: KeyState[] = [];
    for (const state of this.limiter.keyStates(client, user)) {
      const id = `${state.scope} ${state.key}`;
      const before = this.published.get(id);
      const was = before === undefined || expired(before, now) ? 0 : before.until;
      if (was === state.until) {
        // An expired lock: the workers' copies expire it on their own.
        if (before !== undefined && state.until === 0) this.published.delete(id);
        continue;
      }
      this.published.delete(id);
      if (state.until !== 0) this.published.set(id, state);
      changed.push(state);
    }
    if (changed.length === 0) return;
    this.sweep(now);
    this.broadcast({ kfp: 'login-keys', states: changed });
  }

  private sweep(now: number): void {
    let examined = 0;
    for (const [id, state] of this.published) {
      if (this.published.size > MAX_PUBLISHED || expired(state, now)) this.published.delete(id);
      else if (++examined >= SWEEP) return;
    }
  }
}

/** A lock whose time is up (a refusal while checks run has no time: it ends when they do). */
function expired(state: KeyState, now: number): boolean {
  return state.until > 0 && state.until <= now;
}
