// Work that outlives its request: watches and log follows (forward.ts) and tunnels (upgrade.ts).
// Each is registered here with the way to end it, so that the drain ends them all in one place,
// and a reload that withdrew a credential ends what that credential opened.

import type { Identity } from '../auth/identity.js';

/** A watch or log follow relayed by forwarding, or a tunnel (exec, attach, port-forward). */
export type LongLivedKind = 'stream' | 'tunnel';

/** One registered piece of work, as its owner holds it. */
export interface LongLivedEntry {
  /**
   * Names who opened it (a tunnel is registered on arrival, before it is authenticated). Work
   * whose credential a reload withdrew in the meantime is ended, as the reload's sweep would
   * have ended it, once the caller has finished wiring it up.
   */
  openedBy(identity: Identity): void;
  /** It ended on its own: no longer listed. */
  forget(): void;
}

interface Entry {
  kind: LongLivedKind;
  end: () => void;
  /** Undefined until openedBy (a tunnel still being authenticated): no reload sweep ends it then. */
  identity: Identity | undefined;
}

export class LongLivedWork {
  private readonly open = new Set<Entry>();

  /** `stillHolds`: whether an identity would be let in under the material in force now (Authenticator.stillHolds). */
  constructor(private readonly stillHolds: (identity: Identity) => boolean) {}

  /** Registers work that `end` ends (idempotent, and safe after it ended on its own); `identity` if already known. */
  add(kind: LongLivedKind, end: () => void, identity?: Identity): LongLivedEntry {
    const entry: Entry = { kind, end, identity: undefined };
    this.open.add(entry);
    const registered: LongLivedEntry = {
      openedBy: (who) => {
        entry.identity = who;
        if (this.open.has(entry) && !this.stillHolds(who)) {
          this.open.delete(entry);
          queueMicrotask(end);
        }
      },
      forget: () => this.open.delete(entry),
    };
    if (identity) registered.openedBy(identity);
    return registered;
  }

  /** How many of `kind` are open (tunnels: also those still being authenticated or answered). */
  count(kind: LongLivedKind): number {
    let count = 0;
    for (const entry of this.open) if (entry.kind === kind) count++;
    return count;
  }

  /** The drain: ends everything (fastify.close() would otherwise wait for it for hours). */
  endAll(): void {
    const all = [...this.open];
    this.open.clear();
    for (const entry of all) entry.end();
  }

  /** After a reload: ends the work whose credential no longer holds; returns its users, per kind. */
  endWithdrawn(): Record<LongLivedKind, string[]> {
    const users: Record<LongLivedKind, string[]> = { stream: [], tunnel: [] };
    for (const entry of [...this.open]) {
      if (entry.identity === undefined || this.stillHolds(entry.identity)) continue;
      this.open.delete(entry);
      users[entry.kind].push(entry.identity.user);
      entry.end();
    }
    return users;
  }
}
