// A worker's side of the failed-login limits under --workers: the counters live in the primary
// (login-limits-authority.ts); this asks it before each password check and keeps a copy of the
// keys it refuses, so that a cached credential presented by a new client costs a round trip only
// while its address or name is refused.
//
// If the primary does not answer in time, the login gets no verdict (503, not counted): never
// let through unchecked. A check the primary let through after we gave up on it is released at
// once, or its place would stay taken.

import { PENDING_RETRY_MS, WHILE_CHECKS_RUN, userKey, type KeyState } from '../auth/failure-limiter.js';
import { limitKey } from '../auth/client-address.js';
import { LimiterUnavailableError, type LoginAdmission, type LoginLimiter, type LoginOutcome } from '../auth/login-limiter.js';
import type { LimitsReply, LimitsRequest } from './messages.js';

export interface SharedLoginLimiterOptions {
  /** How long to wait for the primary (default 2 s; it answers in well under a millisecond). */
  timeoutMs?: number;
  now?: () => number;
}

interface Waiting {
  resolve: (waitMs: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Refused keys copied at most (the primary keeps 50,000 counters per map). */
const MAX_COPIED = 100_000;
/** Timed-out begins remembered at most, awaiting a late answer to release. */
const MAX_ABANDONED = 10_000;
const NOTHING = (): void => {};

export class SharedLoginLimiter implements LoginLimiter {
  private nextId = 1;
  private readonly waiting = new Map<number, Waiting>();
  private readonly abandoned = new Set<number>();
  /** `${scope} ${key}` -> until, as KeyState: the primary's refused keys. */
  private readonly refused = new Map<string, number>();
  private readonly timeoutMs: number;
  private readonly now: () => number;

  constructor(
    private readonly send: (message: LimitsRequest) => void,
    options: SharedLoginLimiterOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.now = options.now ?? Date.now;
  }

  /** A message from the primary. */
  receive(message: LimitsReply): void {
    if (message.kfp === 'login-keys') {
      for (const state of message.states) this.copy(state);
      return;
    }
    const waiting = this.waiting.get(message.id);
    if (waiting !== undefined) {
      this.waiting.delete(message.id);
      clearTimeout(waiting.timer);
      waiting.resolve(message.waitMs);
    } else if (this.abandoned.delete(message.id) && message.waitMs === 0) {
      this.send({ kfp: 'login-finish', id: message.id, outcome: 'no-verdict' });
    }
  }

  /** The primary is gone: nothing waiting will be answered. */
  disconnected(): void {
    for (const [id, waiting] of this.waiting) {
      clearTimeout(waiting.timer);
      this.waiting.delete(id);
      waiting.reject(new LimiterUnavailableError('the primary process is gone'));
    }
  }

  blockedForMs(client: string, user: string, credential: string): number | Promise<number> {
    if (this.copiedWait(client, user) === 0) return 0;
    // Refused here, but the primary may know this client uses this credential (on another worker).
    return this.ask((id) => ({ kfp: 'login-check', id, client, user, credential }), false);
  }

  begin(client: string, user: string, credential: string): Promise<LoginAdmission> {
    let id = 0;
    return this.ask((next) => ({ kfp: 'login-begin', id: (id = next), client, user, credential }), true).then((waitMs) => ({
      waitMs,
      finish: waitMs > 0 ? NOTHING : (outcome: LoginOutcome) => this.send({ kfp: 'login-finish', id, outcome }),
    }));
  }

  usedBy(client: string, credential: string, user?: string): void {
    this.send(user === undefined ? { kfp: 'login-used', client, credential } : { kfp: 'login-used', client, credential, user });
  }

  usersChanged(withdrawn?: readonly string[]): void {
    // Each worker reads the files and says so itself: the primary drops what any of them withdraws.
    this.send(withdrawn === undefined ? { kfp: 'login-forget' } : { kfp: 'login-forget', users: [...withdrawn] });
  }

  /** Milliseconds the copy says `client` / `user` are refused for; 0 when neither is. */
  private copiedWait(client: string, user: string): number {
    if (this.refused.size === 0) return 0;
    return Math.max(this.wait(`address ${limitKey(client)}`), this.wait(`user ${userKey(user)}`));
  }

  private wait(id: string): number {
    const until = this.refused.get(id);
    if (until === undefined) return 0;
    if (until === WHILE_CHECKS_RUN) return PENDING_RETRY_MS;
    const left = until - this.now();
    if (left <= 0) this.refused.delete(id);
    return Math.max(0, left);
  }

  private copy(state: KeyState): void {
    const id = `${state.scope} ${state.key}`;
    this.refused.delete(id);
    if (state.until === 0) return;
    if (this.refused.size >= MAX_COPIED) {
      const oldest = this.refused.keys().next().value;
      if (oldest !== undefined) this.refused.delete(oldest);
    }
    this.refused.set(id, state.until);
  }

  /** `begin`: a login-begin, whose late "let through" must be released. */
  private ask(request: (id: number) => LimitsRequest, begin: boolean): Promise<number> {
    const id = this.nextId++;
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        if (begin) {
          if (this.abandoned.size >= MAX_ABANDONED) this.abandoned.delete(this.abandoned.values().next().value as number);
          this.abandoned.add(id);
        }
        reject(new LimiterUnavailableError());
      }, this.timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      this.send(request(id));
    });
  }
}
