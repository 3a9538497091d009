// bcrypt off the event loop. bcryptjs costs ~90 ms of CPU per compare at cost 10 and its async
// API still runs on the main thread, so a flood of wrong passwords would stall every request in
// flight. A fixed number of worker threads bounds the CPU that bcrypt can take; a bounded queue
// bounds the memory and the wait.

import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

interface CompareRequest {
  id: number;
  password: string;
  hash: string;
}

interface CompareResponse {
  id: number;
  match: boolean;
}

export class BcryptOverloadedError extends Error {
  constructor() {
    super('too many password checks queued');
    this.name = 'BcryptOverloadedError';
  }
}

interface Task {
  request: CompareRequest;
  resolve: (match: boolean) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  task: Task | undefined;
}

// The worker is a few lines of plain CommonJS given as source: a .ts worker file would not load
// under tsx (Node 20 runs no --import loader hooks in worker threads), and this way the built
// and the from-source proxy run the same code. A malformed hash never verifies.
const BCRYPTJS = createRequire(import.meta.url).resolve('bcryptjs');
// The worker lowers its own scheduling priority (on Linux, nice is per thread): under a flood of
// wrong passwords the event loop serving everyone else wins the CPU.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
try { require('node:os').setPriority(19); } catch {}
const bcrypt = require(${JSON.stringify(BCRYPTJS)});
parentPort.on('message', ({ id, password, hash }) => {
  let match = false;
  try { match = bcrypt.compareSync(password, hash); } catch { match = false; }
  parentPort.postMessage({ id, match });
});
`;

export class BcryptPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    workers: number,
    private readonly maxQueued = 1024,
  ) {
    for (let i = 0; i < workers; i++) this.slots.push(this.spawn());
  }

  compare(password: string, hash: string): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error('bcrypt pool closed'));
    if (this.queue.length >= this.maxQueued) return Promise.reject(new BcryptOverloadedError());
    return new Promise((resolve, reject) => {
      this.queue.push({ request: { id: this.nextId++, password, hash }, resolve, reject });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const task of this.queue.splice(0)) task.reject(new Error('bcrypt pool closed'));
    await Promise.all(this.slots.map((slot) => slot.worker.terminate()));
  }

  private spawn(): Slot {
    const slot: Slot = { worker: new Worker(WORKER_SOURCE, { eval: true }), task: undefined };
    slot.worker.on('message', (response: CompareResponse) => {
      const task = slot.task;
      slot.task = undefined;
      if (task && task.request.id === response.id) task.resolve(response.match);
      this.dispatch();
    });
    slot.worker.on('error', (err) => this.replace(slot, err));
    slot.worker.on('exit', (code) => {
      if (!this.closed) this.replace(slot, new Error(`bcrypt worker exited with code ${code}`));
    });
    return slot;
  }

  /** A worker that died fails only its own task; a fresh one takes its place. */
  private replace(slot: Slot, err: Error): void {
    if (this.closed) return;
    const index = this.slots.indexOf(slot);
    if (index === -1) return;
    slot.task?.reject(err);
    slot.worker.removeAllListeners();
    void slot.worker.terminate();
    this.slots[index] = this.spawn();
    this.dispatch();
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.task) continue;
      const task = this.queue.shift();
      if (!task) return;
      slot.task = task;
      slot.worker.postMessage(task.request);
    }
  }
}
