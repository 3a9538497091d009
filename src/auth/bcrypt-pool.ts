// bcrypt off the event loop. bcryptjs costs ~90 ms of CPU per compare at cost 10 and its async
// API still runs on the main thread, so a flood of wrong passwords would stall every request in
// flight. A fixed number of worker threads bounds the CPU that bcrypt can take; a bounded queue
// bounds the memory and the wait.
//
// The queue is shared fairly: checks wait in one line per client address, served in turn, so a
// hundred addresses keeping it full delay a new login by one turn each, not by the whole queue;
// when it is full, the address with the most checks waiting gives up its latest for a newcomer.
// Clients re-verifying a credential they have used before (a known client past the cache TTL)
// go first: a flood of guesses must not log out the users already working.

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
  /**
   * @param ownShare the client's own checks were filling the queue (its latest was dropped, or
   *   it already had one waiting): a cost of its own making, counted against it like a failure.
   */
  constructor(readonly ownShare: boolean) {
    super('too many password checks queued');
    this.name = 'BcryptOverloadedError';
  }
}

/** Who a check is for: its client address, and whether it re-verifies a credential that client has used. */
export interface CompareFor {
  client: string;
  knownClient: boolean;
}

interface Task {
  request: CompareRequest;
  resolve: (match: boolean) => void;
  reject: (err: Error) => void;
}

/** Tasks waiting in one line per client, the lines served in turn (a Map keeps the turn order). */
class FairQueue {
  private readonly lines = new Map<string, Task[]>();
  size = 0;

  waiting(client: string): number {
    return this.lines.get(client)?.length ?? 0;
  }

  push(client: string, task: Task): void {
    const line = this.lines.get(client);
    if (line) line.push(task);
    else this.lines.set(client, [task]);
    this.size++;
  }

  /** The next client's first task; that client goes to the back of the turn. */
  shift(): Task | undefined {
    for (const [client, line] of this.lines) {
      const task = line.shift();
      this.lines.delete(client);
      if (line.length > 0) this.lines.set(client, line);
      if (task) {
        this.size--;
        return task;
      }
    }
    return undefined;
  }

  /** The latest task of the client with the most waiting, if it has more than `than`. */
  dropLatestOfLongest(than: number): Task | undefined {
    let longest: Task[] | undefined;
    for (const line of this.lines.values()) if (!longest || line.length > longest.length) longest = line;
    if (!longest || longest.length <= than) return undefined;
    this.size--;
    return longest.pop();
  }

  drain(): Task[] {
    const all = [...this.lines.values()].flat();
    this.lines.clear();
    this.size = 0;
    return all;
  }
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
  /** Known clients' re-verifications, served before anyone else's checks. */
  private readonly first: Task[] = [];
  private readonly queue = new FairQueue();
  private nextId = 1;
  private closed = false;

  constructor(
    workers: number,
    /** Checks waiting at most, in each of the two queues. */
    private readonly maxQueued = 1024,
  ) {
    for (let i = 0; i < workers; i++) this.slots.push(this.spawn());
  }

  compare(password: string, hash: string, owner: CompareFor = { client: '', knownClient: false }): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error('bcrypt pool closed'));
    return new Promise((resolve, reject) => {
      const task: Task = { request: { id: this.nextId++, password, hash }, resolve, reject };
      if (owner.knownClient) {
        if (this.first.length >= this.maxQueued) return reject(new BcryptOverloadedError(false));
        this.first.push(task);
      } else {
        if (this.queue.size >= this.maxQueued) {
          const mine = this.queue.waiting(owner.client);
          // Room is made only by a client with at least two more waiting than this one would have.
          const dropped = this.queue.dropLatestOfLongest(mine + 1);
          if (!dropped) return reject(new BcryptOverloadedError(mine > 0));
          dropped.reject(new BcryptOverloadedError(true));
        }
        this.queue.push(owner.client, task);
      }
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const task of [...this.first.splice(0), ...this.queue.drain()]) task.reject(new Error('bcrypt pool closed'));
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
      const task = this.first.shift() ?? this.queue.shift();
      if (!task) return;
      slot.task = task;
      slot.worker.postMessage(task.request);
    }
  }
}
