// HTTP basic auth against the users file. kubectl sends the password on every request, so a
// verified credential is remembered for a short time (keyed by an HMAC under a per-process
// random key, never the password) and bcrypt runs once per credential, not once per request.
// Failed-login limits (FailureLimiter) are applied here too, because whether a request is a
// guess depends on the cache: see verify().

import { createHmac, randomBytes } from 'node:crypto';
import { BcryptOverloadedError, type BcryptPool } from './bcrypt-pool.js';
import { costWarning, type UserEntry, type UserTable } from './htpasswd.js';
import type { AuthFailureReason, Identity } from './identity.js';
import { LimiterUnavailableError, type LoginAdmission, type LoginLimiter } from './login-limiter.js';

export type BasicAuthResult =
  | { ok: true; identity: Identity }
  | { ok: false; reason: Extract<AuthFailureReason, 'unknown-user' | 'bad-password'> }
  /** `ownShare`: the client's own checks were filling the bcrypt queue (bcrypt-pool.ts); counted as a failure. */
  | { ok: false; reason: 'overloaded'; ownShare?: boolean }
  | { ok: false; reason: 'rate-limited'; retryAfterMs: number };

export interface BasicAuthOptions {
  cacheTtlMs: number;
  cacheSize: number;
  /**
   * The key credentials are hashed under (default: random per process). --workers share one, so
   * that the limits' proxy-wide record of who used which credential names the same one in each.
   */
  credentialKey?: Buffer;
  now?: () => number;
  /**
   * Told once per users file (at construction and each setUsers) when its users have more than
   * one bcrypt cost: pass the logger's warn (`(fields, msg) => logger.warn(fields, msg)`).
   */
  warn?: (fields: Record<string, unknown>, msg: string) => void;
}

/** Clients remembered per verified credential (a user's laptop, CI, a second kubeconfig...). */
const CLIENTS_PER_CREDENTIAL = 8;

/** A credential bcrypt has verified, and the client addresses that have presented it since. */
class VerifiedCredential {
  readonly result: BasicAuthResult;
  readonly clients: string[];

  constructor(
    identity: Identity,
    readonly expiresAt: number,
    clients: string[],
  ) {
    this.result = { ok: true, identity };
    this.clients = clients;
  }

  usedFrom(client: string): boolean {
    return this.clients.includes(client);
  }

  addClient(client: string): void {
    if (this.clients.includes(client)) return;
    if (this.clients.length >= CLIENTS_PER_CREDENTIAL) this.clients.shift();
    this.clients.push(client);
  }
}

/** A failed login for the limits: a wrong guess, or a client crowding the bcrypt queue with its own. */
function countsAsFailure(result: BasicAuthResult): boolean {
  return !result.ok && (result.reason === 'bad-password' || result.reason === 'unknown-user' || (result.reason === 'overloaded' && result.ownShare === true));
}

/**
 * A well-formed bcrypt hash of nothing: comparing against it costs what a real user of that cost
 * costs. Unknown users are compared with one of the users file's decoyCost (htpasswd.ts): the
 * cost most of its users have.
 */
function decoyHash(cost: number): string {
  return `$2b$${String(cost).padStart(2, '0')}$C6UzMDM.H6dfI/f/IKxGhuWAKr4fHYpBe7XeVd4KUQrbfWr6qu9ZG`;
}

export class BasicAuthenticator {
  private table: UserTable;
  private decoy: string;
  /**
   * Insertion-ordered: the first key is the least recently used. Expired entries stay until
   * re-verified or pushed out: they still say which clients have used the credential.
   */
  private readonly cache = new Map<string, VerifiedCredential>();
  /** Concurrent requests with the same credential (kubectl's parallel discovery) share one bcrypt. */
  private readonly inflight = new Map<string, { client: string; result: Promise<BasicAuthResult> }>();
  private readonly hmacKey: Buffer;
  private generation = 0;
  private readonly now: () => number;

  constructor(
    table: UserTable,
    private readonly pool: BcryptPool,
    private readonly options: BasicAuthOptions,
  ) {
    this.table = table;
    this.decoy = decoyHash(table.decoyCost ?? table.maxCost);
    this.warnMixedCosts(table);
    this.now = options.now ?? Date.now;
    this.hmacKey = options.credentialKey ?? randomBytes(32);
  }

  /** New users file: forget every verified credential so removed users and changed passwords take effect. */
  setUsers(table: UserTable): void {
    this.table = table;
    this.decoy = decoyHash(table.decoyCost ?? table.maxCost);
    this.warnMixedCosts(table);
    this.cache.clear();
    this.inflight.clear();
    this.generation++;
  }

  private warnMixedCosts(table: UserTable): void {
    const warning = costWarning(table);
    if (warning) this.options.warn?.({ bcryptCosts: warning.costs, decoyCost: warning.decoyCost }, warning.msg);
  }

  /**
   * Whether the users file in force still lists `entry` (what a password was verified against)
   * unchanged: a removed user, a new password hash or new groups withdraw what it let in.
   */
  stillHolds(entry: UserEntry): boolean {
    const current = this.table.users.get(entry.name);
    if (current === undefined) return false;
    return current === entry || (current.hash === entry.hash && current.groups.length === entry.groups.length && current.groups.every((group, i) => group === entry.groups[i]));
  }

  /**
   * Checks a password. With `limiter`, failed logins are limited per `client` and user name,
   * except for a client that has presented this very credential since bcrypt verified it: that
   * is the user's own working kubectl, not a guess, and it keeps working while someone else's
   * guesses lock the name (also past the cache TTL: its re-check runs without the limiter).
   *
   * Any other client gets the same answer for the right password as for a wrong one whenever
   * the limiter refuses: were a cached right password let through while wrong ones get 429,
   * 429-or-200 would be a free, unlimited oracle for exactly the accounts in active use.
   */
  verify(username: string, password: string, client = '', limiter?: LoginLimiter): Promise<BasicAuthResult> {
    return this.verifyAs(username, password, client, limiter, true);
  }

  // The limiter may answer at once (one process) or later (--workers: the primary keeps the
  // counters); a known client on a cached credential never asks it at all.
  private verifyAs(username: string, password: string, client: string, limiter: LoginLimiter | undefined, mayRetry: boolean): Promise<BasicAuthResult> {
    const key = this.keyOf(username, password);
    const entry = this.cache.get(key);
    const known = entry !== undefined && entry.usedFrom(client);
    const limited = limiter !== undefined && !known;
    if (entry !== undefined && entry.expiresAt > this.now()) {
      if (!limited) return Promise.resolve(this.hit(key, entry));
      return afterLimits(limiter.blockedForMs(client, username, key), (wait) => {
        if (wait > 0) return rateLimited(wait);
        // Emptied meanwhile (the users file changed while the primary was asked): check again.
        if (this.cache.get(key) !== entry) return this.verifyAs(username, password, client, limiter, mayRetry);
        if (!entry.usedFrom(client)) {
          entry.addClient(client);
          limiter.usedBy(client, key, username);
        }
        return this.hit(key, entry);
      });
    }
    const running = this.inflight.get(key);
    if (running) {
      // Joining a check of the same credential is no new guess, but it must be refused whenever
      // a different password would be, or its result would leak through the back door.
      const join = () => this.joined(running, username, password, client, limiter, mayRetry);
      if (!limited) return join();
      const wait = limiter.blockedForMs(client, username, key);
      if (typeof wait === 'number') return wait > 0 ? Promise.resolve(rateLimited(wait)) : join();
      return wait.then((w) => (w > 0 ? rateLimited(w) : join()), unavailable);
    }
    let check: Promise<BasicAuthResult>;
    if (limited) {
      const admission = limiter.begin(client, username, key);
      if (!(admission instanceof Promise)) {
        if (admission.waitMs > 0) return Promise.resolve(rateLimited(admission.waitMs));
        check = this.admitted(admission, key, username, password, client);
      } else {
        // Shared with identical requests from the start (kubectl's parallel discovery is one attempt).
        check = admission.then((a) => (a.waitMs > 0 ? rateLimited(a.waitMs) : this.admitted(a, key, username, password, client)), unavailable);
      }
    } else {
      // Not limited: a known client, whose re-verification goes first in the bcrypt queue.
      check = this.check(key, username, password, client, known);
    }
    const shared = check.finally(() => {
      if (this.inflight.get(key)?.result === shared) this.inflight.delete(key);
    });
    this.inflight.set(key, { client, result: shared });
    return shared;
  }

  /**
   * The result of a running check of the same credential. One refused for its own client's sake
   * (under --workers a check can be refused after it was shared: its address is locked) says
   * nothing about another client, which asks again for itself, once.
   */
  private joined(running: { client: string; result: Promise<BasicAuthResult> }, username: string, password: string, client: string, limiter: LoginLimiter | undefined, mayRetry: boolean): Promise<BasicAuthResult> {
    if (running.client === client || !mayRetry) return running.result;
    return running.result.then((result) => (result.ok || result.reason !== 'rate-limited' ? result : this.verifyAs(username, password, client, limiter, false)));
  }

  /** A cached credential's answer; it becomes the most recently used. */
  private hit(key: string, entry: VerifiedCredential): BasicAuthResult {
    // Re-inserted only if still cached (a reload may have emptied the cache meanwhile).
    if (this.cache.get(key) === entry) {
      this.cache.delete(key);
      this.cache.set(key, entry);
    }
    return entry.result;
  }

  /** The check a limiter let through, and its outcome told to it. */
  private admitted(admission: LoginAdmission, key: string, username: string, password: string, client: string): Promise<BasicAuthResult> {
    return this.check(key, username, password, client).then(
      (result) => {
        admission.finish(result.ok ? 'success' : countsAsFailure(result) ? 'failure' : 'no-verdict');
        return result;
      },
      (err: unknown) => {
        admission.finish('no-verdict');
        throw err;
      },
    );
  }

  private keyOf(username: string, password: string): string {
    return createHmac('sha256', this.hmacKey).update(username).update('\0').update(password).digest('base64');
  }

  private async check(key: string, username: string, password: string, client: string, knownClient = false): Promise<BasicAuthResult> {
    const generation = this.generation;
    const entry = this.table.users.get(username);
    let match: boolean;
    try {
      // An unknown user still costs one bcrypt, so response time does not reveal which names exist.
      match = await this.pool.compare(password, entry?.hash ?? this.decoy, { client, knownClient });
    } catch (err) {
      if (err instanceof BcryptOverloadedError) return { ok: false, reason: 'overloaded', ownShare: err.ownShare };
      throw err;
    }
    if (!entry) return { ok: false, reason: 'unknown-user' };
    if (!match) return { ok: false, reason: 'bad-password' };
    // The file was reloaded during the bcrypt: a login against an entry withdrawn meanwhile must
    // not get in (nor open a watch or tunnel after the reload has swept them).
    if (generation !== this.generation && !this.stillHolds(entry)) return { ok: false, reason: this.table.users.has(username) ? 'bad-password' : 'unknown-user' };
    const identity: Identity = { method: 'basic', user: entry.name, groups: entry.groups, extra: {}, upstreamAuth: 'front-proxy', credential: { method: 'basic', entry } };
    if (generation === this.generation && this.options.cacheSize > 0 && this.options.cacheTtlMs > 0) {
      return this.remember(key, identity, client).result;
    }
    return { ok: true, identity };
  }

  private remember(key: string, identity: Identity, client: string): VerifiedCredential {
    // A re-verified credential keeps the clients that used it before.
    const previous = this.cache.get(key);
    this.cache.delete(key);
    while (this.cache.size >= this.options.cacheSize) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    const entry = new VerifiedCredential(identity, this.now() + this.options.cacheTtlMs, previous ? previous.clients : []);
    entry.addClient(client);
    this.cache.set(key, entry);
    return entry;
  }
}

function rateLimited(waitMs: number): BasicAuthResult {
  return { ok: false, reason: 'rate-limited', retryAfterMs: waitMs };
}

/** The limits gave no verdict (--workers: the primary did not answer): no login, and no count. */
function unavailable(err: unknown): BasicAuthResult {
  if (err instanceof LimiterUnavailableError) return { ok: false, reason: 'overloaded' };
  throw err;
}

/** `then` for an answer that may come at once or as a promise. */
function afterLimits(wait: number | Promise<number>, next: (wait: number) => BasicAuthResult | Promise<BasicAuthResult>): Promise<BasicAuthResult> {
  return typeof wait === 'number' ? Promise.resolve(next(wait)) : wait.then(next, unavailable);
}
