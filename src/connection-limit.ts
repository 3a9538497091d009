// A cap on concurrent connections per client address, applied to the raw TCP socket before
// the TLS handshake: one host opening thousands of connections costs us a file descriptor and a
// handshake each, and would starve everyone else. Trusted proxies carry many clients on their
// connections and are exempt.

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
    server.prependListener('connection', (socket: Socket) => this.admit(socket));
  }

  /** Open connections from `address` (for tests and metrics). */
  count(address: string): number {
    return this.open.get(address) ?? 0;
  }

  private admit(socket: Socket): void {
    const address = socket.remoteAddress ?? '';
    if (this.options.isExempt(address)) return;
    const current = this.open.get(address) ?? 0;
    if (current >= this.options.perClient) {
      // No bytes to send before TLS: a reset is the answer a TCP client understands.
      socket.resetAndDestroy();
      this.options.onRefused(address);
      return;
    }
    this.open.set(address, current + 1);
    socket.once('close', () => {
      const left = (this.open.get(address) ?? 1) - 1;
      if (left <= 0) this.open.delete(address);
      else this.open.set(address, left);
    });
  }
}
