// Under --workers the primary accepts every client connection and sends its socket to a worker,
// in turn (round-robin, as node:cluster would), but only to workers that are ready: a worker
// still starting gets none. Accepting them here is what lets one count per client address
// for the whole proxy (--max-connections-per-client): a worker tells us when each one closes.

import type { Worker } from 'node:cluster';
import type { Socket } from 'node:net';
import type { ConnectionLimit } from '../edge/connection-limit.js';
import type { ToWorker } from './messages.js';

export class ConnectionDispatcher {
  private readonly ready: Worker[] = [];
  private next = 0;
  private nextId = 1;
  /** Per worker, its open connections: id -> client address. */
  private readonly open = new Map<Worker, Map<number, string>>();

  constructor(private readonly limit: ConnectionLimit) {}

  /** `worker` is ready: it gets connections from now on. */
  add(worker: Worker): void {
    this.ready.push(worker);
    this.open.set(worker, new Map());
  }

  /** `worker` exited: its connections died with it. */
  remove(worker: Worker): void {
    const index = this.ready.indexOf(worker);
    if (index !== -1) this.ready.splice(index, 1);
    for (const address of this.open.get(worker)?.values() ?? []) this.limit.release(address);
    this.open.delete(worker);
  }

  /** `worker` says connection `id` closed. */
  closed(worker: Worker, id: number): void {
    const connections = this.open.get(worker);
    const address = connections?.get(id);
    if (address === undefined) return;
    connections?.delete(id);
    this.limit.release(address);
  }

  /** A new client connection (paused, nothing read): counted, then sent to the next worker. */
  dispatch = (socket: Socket): void => {
    const address = socket.remoteAddress ?? '';
    // No bytes to send before TLS: a reset is the answer a TCP client understands.
    if (!this.limit.admit(address)) {
      socket.resetAndDestroy();
      return;
    }
    const worker = this.pick();
    if (worker === undefined) {
      this.limit.release(address);
      socket.resetAndDestroy();
      return;
    }
    const id = this.nextId++;
    this.open.get(worker)?.set(id, address);
    worker.send({ kfp: 'connection', id } satisfies ToWorker, socket, (err: Error | null) => {
      if (!err) return;
      // The worker is going away: the connection never reached it.
      socket.destroy();
      this.closed(worker, id);
    });
  };

  /** A worker to count a refused connection in its metrics (the primary keeps none). */
  anyWorker(): Worker | undefined {
    return this.ready[this.next % Math.max(1, this.ready.length)];
  }

  private pick(): Worker | undefined {
    for (let tries = 0; tries < this.ready.length; tries++) {
      const worker = this.ready[this.next++ % this.ready.length];
      if (worker?.isConnected()) return worker;
    }
    return undefined;
  }
}
