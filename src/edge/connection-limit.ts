// A cap on concurrent connections per client address, applied to the raw TCP socket before
// the TLS handshake: one host opening thousands of connections costs us a file descriptor and a
// handshake each, and would starve everyone else. Trusted proxies carry many clients on their
// connections and are exempt.
//
// One process counts its own sockets (attach); under --workers the primary, which accepts every
// connection, counts them for the whole proxy (admit / release, workers/connections.ts).

import type { Server } from 'node:net';
import type { Socket } from 'node:net';

export interface ConnectionLimitOptions {
  /** Connections one address may hold; 0 = no limit. */
  perClient: number;
  isExempt: (address: string) => boolean;
  onRefused: (address: string) => void;
}

export class ConnectionLimit {
  /** Open connections per address; an address leaves the map with its last connection. */
  private readonly open = new Map<string, number>();

  constructor(private readonly options: ConnectionLimitOptions) {}

  /** Installs the limit as the first 'connection' listener, so a refused socket never reaches TLS. */
  attach(server: Server): void {
    if (this.options.perClient <= 0) return;
    server.prependListener('connection', (socket: Socket) => {
      const address = socket.remoteAddress ?? '';
      if (!this.admit(address)) {
        // No bytes to send before TLS: a reset is the answer a TCP client understands.
        socket.resetAndDestroy();
        return;
      }
      socket.once('close', () => this.release(address));
    });
  }

  /** Open connections from `address` (for tests and metrics). */
  count(address: string): number {
    return this.open.get(address) ?? 0;
  }

  /**
   * A new connection from `address`: false (counted as refused, onRefused called) when the
   * address already holds its cap; otherwise it counts until release(address).
   */
  admit(address: string): boolean {
    if (this.options.perClient <= 0 || this.options.isExempt(address)) return true;
    const current = this.open.get(address) ?? 0;
    if (current >= this.options.perClient) {
      this.options.onRefused(address);
      return false;
    }
    this.open.set(address, current + 1);
    return true;
  }

  /** A connection admit(address) let in has closed (exempt addresses were never counted). */
  release(address: string): void {
    const current = this.open.get(address);
    if (current === undefined) return;
    if (current <= 1) this.open.delete(address);
    else this.open.set(address, current - 1);
  }
}
