// Failed-login limits: password guesses are counted per client address and per claimed user
// name, and past --auth-failure-limit within --auth-failure-window both are refused (429)
// before bcrypt runs. The address limit stops one host; the user limit stops many hosts
// sharing out the guesses for one account.
//
// Each counter is a fixed window opened by its first failure: `limit` failures, then refusals
// until the window that began with the first one ends. Attempts refused here are not counted:
// they test nothing, and counting them would let a flood extend the lock forever.
//
// Checks still running count too (`begin` .. `finish`): otherwise a client with 200 connections
// could start 200 guesses before the first one failed. The caller starts one check per distinct
// credential (BasicAuthenticator shares concurrent identical ones), so kubectl's parallel
// discovery requests are one attempt, not twenty.
//
// Memory is bounded: each map holds at most `maxEntries` counters, least recently updated
// dropped first. Counters are created by attempts that reach bcrypt and kept only when they
// fail, so they grow no faster than bcrypt runs (a few hundred a second on a big machine)
// and a window's worth stays well under the cap; an attacker cycling through addresses or
// names cannot grow the maps, only push out the oldest counters.

import { createHash } from 'node:crypto';
import { limitKey } from './client-address.js';

export interface FailureLimiterOptions {
  /** Failures allowed per address and per user within the window (> 0). */
  limit: number;
  windowMs: number;
  /** Counters kept per map (addresses, users); default 50,000. */
  maxEntries?: number;
  now?: () => number;
}

interface Counter {
  key: string;
  failures: number;
  /** When the first failure of the current window happened. */
  windowStart: number;
  /** Checks begun and not finished. */
  pending: number;
  /** Neighbours in update order (a Map's own order would need iterating, which is slow after deletes). */
  older: Counter | undefined;
  newer: Counter | undefined;
}

/** Counters by key, in a list from least to most recently updated: every operation O(1). */
class CounterMap {
  private readonly byKey = new Map<string, Counter>();
  private oldest: Counter | undefined;
  private newest: Counter | undefined;

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Counter | undefined {
    return this.byKey.get(key);
  }

  first(): Counter | undefined {
    return this.oldest;
  }

  /** A new counter, as the most recently updated. */
  add(key: string, now: number): Counter {
    const counter: Counter = { key, failures: 0, windowStart: now, pending: 0, older: undefined, newer: undefined };
    this.byKey.set(key, counter);
    this.append(counter);
    return counter;
  }

  /** Marks `counter` the most recently updated. */
  bump(counter: Counter): void {
    if (this.newest === counter) return;
    this.unlink(counter);
    this.append(counter);
  }

  delete(counter: Counter): void {
    if (this.byKey.get(counter.key) !== counter) return;
    this.byKey.delete(counter.key);
    this.unlink(counter);
  }

  private append(counter: Counter): void {
    counter.older = this.newest;
    counter.newer = undefined;
    if (this.newest) this.newest.newer = counter;
    else this.oldest = counter;
    this.newest = counter;
  }

  private unlink(counter: Counter): void {
    if (counter.older) counter.older.newer = counter.newer;
    else this.oldest = counter.newer;
    if (counter.newer) counter.newer.older = counter.older;
    else this.newest = counter.older;
    counter.older = counter.newer = undefined;
  }
}

/** Retry-After for a refusal caused only by checks still running: they take milliseconds. */
export const PENDING_RETRY_MS = 1000;
/** Longer claimed names are counted under a hash, so a key costs at most this much memory. */
const MAX_NAME_KEY = 128;
/** Expired counters at the old end of a map removed per update (amortised clean-up). */
const SWEEP = 4;

/**
 * How one counter stands, for the copies of the refusals kept in other processes (--workers):
 * `until` is 0 when open, WHILE_CHECKS_RUN when refused because checks are still running, or
 * the time (ms since the epoch) its lock ends.
 */
export interface KeyState {
  scope: 'address' | 'user';
  key: string;
  until: number;
}
export const WHILE_CHECKS_RUN = -1;

export class FailureLimiter {
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly addresses = new CounterMap();
  private readonly users = new CounterMap();

  constructor(options: FailureLimiterOptions) {
    if (!(options.limit > 0)) throw new RangeError('FailureLimiter: limit must be positive (0 = no limiter at all)');
    if (!(options.windowMs > 0)) throw new RangeError('FailureLimiter: windowMs must be positive');
    this.limit = options.limit;
    this.windowMs = options.windowMs;
    this.maxEntries = Math.max(1, options.maxEntries ?? 50_000);
    this.now = options.now ?? Date.now;
  }

  /** Counters held (for tests and memory checks). */
  get size(): { addresses: number; users: number } {
    return { addresses: this.addresses.size, users: this.users.size };
  }

  /** Milliseconds until `address` and `user` may try again; 0 when allowed. Reserves nothing. */
  blockedForMs(address: string, user: string | undefined): number {
    const now = this.now();
    const byAddress = this.wait(this.addresses.get(limitKey(address)), now);
    const byUser = user === undefined ? 0 : this.wait(this.users.get(userKey(user)), now);
    return Math.max(byAddress, byUser);
  }

  /**
   * Before a password check: the milliseconds to refuse it for, or 0, in which case the check
   * is counted as running until `finish` is called with the same arguments.
   */
  begin(address: string, user: string | undefined): number {
    const now = this.now();
    const aKey = limitKey(address);
    const uKey = user === undefined ? undefined : userKey(user);
    const blocked = Math.max(this.wait(this.addresses.get(aKey), now), uKey === undefined ? 0 : this.wait(this.users.get(uKey), now));
    if (blocked > 0) return blocked;
    this.touch(this.addresses, aKey, now).pending++;
    if (uKey !== undefined) this.touch(this.users, uKey, now).pending++;
    return 0;
  }

  /** A check `begin` let through is over; `failed`: it was a wrong password or unknown user. */
  finish(address: string, user: string | undefined, failed: boolean): void {
    const now = this.now();
    this.settle(this.addresses, limitKey(address), now, failed, true);
    if (user !== undefined) this.settle(this.users, userKey(user), now, failed, true);
  }

  /** A failed login that was not announced with `begin`. */
  recordFailure(address: string, user: string | undefined): void {
    const now = this.now();
    this.settle(this.addresses, limitKey(address), now, true, false);
    if (user !== undefined) this.settle(this.users, userKey(user), now, true, false);
  }

  /** The counters of `address` and `user` as KeyStates (the address first). */
  keyStates(address: string, user: string | undefined): KeyState[] {
    const now = this.now();
    const aKey = limitKey(address);
    const states: KeyState[] = [{ scope: 'address', key: aKey, until: this.until(this.addresses.get(aKey), now) }];
    if (user !== undefined) {
      const uKey = userKey(user);
      states.push({ scope: 'user', key: uKey, until: this.until(this.users.get(uKey), now) });
    }
    return states;
  }

  private until(counter: Counter | undefined, now: number): number {
    const wait = this.wait(counter, now);
    if (wait === 0) return 0;
    return counter !== undefined && !this.expired(counter, now) && counter.failures >= this.limit ? now + wait : WHILE_CHECKS_RUN;
  }

  private wait(counter: Counter | undefined, now: number): number {
    if (counter === undefined) return 0;
    const failures = this.expired(counter, now) ? 0 : counter.failures;
    if (failures >= this.limit) return counter.windowStart + this.windowMs - now;
    return failures + counter.pending >= this.limit ? PENDING_RETRY_MS : 0;
  }

  private settle(map: CounterMap, key: string, now: number, failed: boolean, began: boolean): void {
    // The counter may have been pushed out meanwhile: a failure then starts a new one.
    const counter = failed ? this.touch(map, key, now) : map.get(key);
    if (counter === undefined) return;
    if (began && counter.pending > 0) counter.pending--;
    if (failed) {
      if (counter.failures++ === 0) counter.windowStart = now;
    } else if (counter.pending === 0 && this.expired(counter, now)) {
      map.delete(counter);
    }
  }

  /** The counter for `key`, an expired window reset, marked the most recently updated. */
  private touch(map: CounterMap, key: string, now: number): Counter {
    const counter = map.get(key);
    if (counter !== undefined) {
      if (this.expired(counter, now)) counter.failures = 0;
      map.bump(counter);
      return counter;
    }
    this.sweep(map, now);
    if (map.size >= this.maxEntries) {
      const oldest = map.first();
      if (oldest !== undefined) map.delete(oldest);
    }
    return map.add(key, now);
  }

  /** Drops a few expired counters from the old end, so the maps shrink back after an attack. */
  private sweep(map: CounterMap, now: number): void {
    for (let i = 0; i < SWEEP; i++) {
      const first = map.first();
      if (first === undefined || first.pending > 0 || !this.expired(first, now)) return;
      map.delete(first);
    }
  }

  private expired(counter: Counter, now: number): boolean {
    return counter.failures === 0 || now - counter.windowStart >= this.windowMs;
  }
}

/** A claimed user name as a map key: as it is, or hashed when it is long (names come from clients). */
export function userKey(user: string): string {
  return user.length <= MAX_NAME_KEY ? user : `sha256:${createHash('sha256').update(user).digest('base64')}`;
}
