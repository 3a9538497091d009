// HTTP basic auth against the users file. kubectl sends the password on every request, so a
// verified credential is remembered for a short time (keyed by an HMAC under a per-process
// random key, never the password) and bcrypt runs once per credential, not once per request.

import { createHmac, randomBytes } from 'node:crypto';
import { BcryptOverloadedError, type BcryptPool } from './bcrypt-pool.js';
import type { UserTable } from './htpasswd.js';
import type { AuthFailureReason, Identity } from './identity.js';

export type BasicAuthResult =
  | { ok: true; identity: Identity }
  | { ok: false; reason: Extract<AuthFailureReason, 'unknown-user' | 'bad-password' | 'overloaded'> };

export interface BasicAuthOptions {
  cacheTtlMs: number;
  cacheSize: number;
  now?: () => number;
}

interface CacheEntry {
  identity: Identity;
  expiresAt: number;
}

/** A well-formed bcrypt hash of nothing: comparing against it costs what a real user costs. */
function decoyHash(cost: number): string {
  return `$2b$${String(cost).padStart(2, '0')}$C6UzMDM.H6dfI/f/IKxGhuWAKr4fHYpBe7XeVd4KUQrbfWr6qu9ZG`;
}

export class BasicAuthenticator {
  private table: UserTable;
  private decoy: string;
  /** Insertion-ordered: the first key is the least recently used. */
  private readonly cache = new Map<string, CacheEntry>();
  /** Concurrent requests with the same credential (kubectl's parallel discovery) share one bcrypt. */
  private readonly inflight = new Map<string, Promise<BasicAuthResult>>();
  private readonly hmacKey = randomBytes(32);
  private generation = 0;
  private readonly now: () => number;

  constructor(
    table: UserTable,
    private readonly pool: BcryptPool,
    private readonly options: BasicAuthOptions,
  ) {
    this.table = table;
    this.decoy = decoyHash(table.maxCost);
    this.now = options.now ?? Date.now;
  }

  /** New users file: forget every verified credential so removed users and changed passwords take effect. */
  setUsers(table: UserTable): void {
    this.table = table;
    this.decoy = decoyHash(table.maxCost);
    this.cache.clear();
    this.inflight.clear();
    this.generation++;
  }

  verify(username: string, password: string): Promise<BasicAuthResult> {
    const key = createHmac('sha256', this.hmacKey).update(username).update('\0').update(password).digest('base64');
    const cached = this.cache.get(key);
    if (cached) {
      if (cached.expiresAt > this.now()) {
        this.cache.delete(key); // re-insert: most recently used goes last
        this.cache.set(key, cached);
        return Promise.resolve({ ok: true, identity: cached.identity });
      }
      this.cache.delete(key);
    }
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.check(key, username, password).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private async check(key: string, username: string, password: string): Promise<BasicAuthResult> {
    const generation = this.generation;
    const entry = this.table.users.get(username);
    let match: boolean;
    try {
      // An unknown user still costs one bcrypt, so response time does not reveal which names exist.
      match = await this.pool.compare(password, entry?.hash ?? this.decoy);
    } catch (err) {
      if (err instanceof BcryptOverloadedError) return { ok: false, reason: 'overloaded' };
      throw err;
    }
    if (!entry) return { ok: false, reason: 'unknown-user' };
    if (!match) return { ok: false, reason: 'bad-password' };
    const identity: Identity = { method: 'basic', user: entry.name, groups: entry.groups, extra: {} };
    if (generation === this.generation && this.options.cacheSize > 0 && this.options.cacheTtlMs > 0) {
      this.remember(key, identity);
    }
    return { ok: true, identity };
  }

  private remember(key: string, identity: Identity): void {
    while (this.cache.size >= this.options.cacheSize) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    this.cache.set(key, { identity, expiresAt: this.now() + this.options.cacheTtlMs });
  }
}
