// After an HTTP/2 guard ends a connection for abuse, the address's new connections are reset at
// accept for a while. Ending the connection bounds what one connection costs; an attacker that
// reconnects at once and starts again would still cost a TLS handshake and a burst each time
// (measured: a reconnecting PING flood took another client's p99 from 19 to 582 ms, a rapid
// reset to 724 ms). A reset before TLS costs next to nothing. Trusted proxies, which carry many
// clients, are exempt.

import type { Server, Socket } from 'node:net';

/** How long an address that abused HTTP/2 is refused. */
const COOLDOWN_MS = 10_000;
/** Addresses remembered before the expired ones are swept out. */
const SWEEP_AT = 10_000;

export interface AbuserCooldownOptions {
  isExempt: (address: string) => boolean;
  onRefused: (address: string) => void;
}

export class AbuserCooldown {
  /** Address -> when its cooldown ends. */
  private readonly until = new Map<string, number>();

  constructor(private readonly options: AbuserCooldownOptions) {}

  /** Resets connections from cooling-down addresses before anything else sees them. */
  attach(server: Server): void {
    server.prependListener('connection', (socket: Socket) => {
      const address = socket.remoteAddress ?? '';
      const until = this.until.get(address);
      if (until === undefined) return;
      if (Date.now() >= until) {
        this.until.delete(address);
        return;
      }
      socket.resetAndDestroy();
      this.options.onRefused(address);
    });
  }

  /** A connection from `address` was ended for abuse. */
  abused(address: string): void {
    if (address === '' || this.options.isExempt(address)) return;
    if (this.until.size >= SWEEP_AT) {
      const now = Date.now();
      for (const [known, until] of this.until) if (until <= now) this.until.delete(known);
      // Still full: the memory stays bounded, and these abusers are only disconnected.
      if (this.until.size >= SWEEP_AT) return;
    }
    this.until.set(address, Date.now() + COOLDOWN_MS);
  }
}
