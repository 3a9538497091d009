// How a proxy process stops, whatever it is doing: SIGTERM or SIGINT (or, in a worker, the
// primary's word) starts the drain; the process exits when the drain is done, and by
// --shutdown-grace plus 550 ms whatever the drain is waiting for; a second signal exits at once.
// The handlers are installed before start-up begins: a signal then ends start-up (the workers
// are killed, nothing has been served). Every exit goes through exit() here: the
// processes this one is responsible for (the workers of --workers N) are killed, the last log
// lines are written within a bound (shutdown-logs.ts), and a process of its own kills them all
// should this one be stuck (shutdown-watchdog.ts).

import type { FastifyBaseLogger } from 'fastify';
import { closeLogs, flushLogsWithin, type BufferedLog } from '../observe/log-flush.js';
import { startWatchdog } from './shutdown-watchdog.js';

// The promise: every process gone by --shutdown-grace plus a second. At the grace the drain cuts
// what is left (server.ts close()); closing those connections takes a few ms, or hundreds on a
// starved CPU (300 ms measured with a load average of 15 on 2 cores), and so does exiting: the
// deadlines leave room for both within the second.
/** After the grace, how long the drain may still take before the process exits anyway. */
const EXIT_AFTER_GRACE_MS = 550;
/** A worker gives up earlier, so that it exits by itself before its primary kills it. */
const WORKER_EXIT_AFTER_GRACE_MS = 400;
/** The watchdog process kills this one this long after its deadline passed without an exit. */
const WATCHDOG_AFTER_DEADLINE_MS = 150;
/** The longest an exit waits for its log lines to be written (a stdout nobody reads). */
const FLUSH_BUDGET_MS = 200;
/** ... and on a second signal, which should feel immediate. */
const SECOND_SIGNAL_FLUSH_BUDGET_MS = 50;

export interface ShutdownOptions {
  graceMs: number;
  /** A worker of --workers N (its primary also kills it, a little later). */
  worker: boolean;
  logger: FastifyBaseLogger;
  /** Where the log lines go: flushed (within a bound) before the process exits. */
  logs: BufferedLog;
}

export class Shutdown {
  private drain: ((reason: string) => Promise<void>) | undefined;
  private children: () => number[] = () => [];
  private begun = false;
  private exiting = false;
  /** When the watchdog will kill the process (ms since the epoch). */
  private killAt = Infinity;
  private readonly exitAfterMs: number;

  constructor(private readonly options: ShutdownOptions) {
    this.exitAfterMs = options.graceMs + (options.worker ? WORKER_EXIT_AFTER_GRACE_MS : EXIT_AFTER_GRACE_MS);
  }

  /** SIGTERM and SIGINT are handled from now on, start-up included. */
  listen(): void {
    process.on('SIGTERM', () => this.signal('SIGTERM'));
    process.on('SIGINT', () => this.signal('SIGINT'));
  }

  /** Processes that must not outlive this one: killed when it exits (the workers). */
  killsWithIt(children: () => number[]): void {
    this.children = children;
  }

  /** Start-up is over: a stop now runs `drain`, then exits 0 (1 if the drain failed). */
  serving(drain: (reason: string) => Promise<void>): void {
    this.drain = drain;
  }

  get stopping(): boolean {
    return this.begun;
  }

  /** A stop asked for without a signal (a worker's primary said so, or is gone); once only. */
  stop(reason: string): void {
    if (!this.begun) this.begin(reason);
  }

  private signal(signal: NodeJS.Signals): void {
    if (!this.begun) {
      this.begin(signal);
      return;
    }
    this.options.logger.warn({ signal }, 'second signal: exiting now');
    this.exit(1, { flushBudgetMs: SECOND_SIGNAL_FLUSH_BUDGET_MS, evenIfExiting: true });
  }

  private begin(reason: string): void {
    this.begun = true;
    const { logger } = this.options;
    // The deadline, first: nothing below may keep the process beyond it.
    setTimeout(() => {
      logger.warn({ afterMs: this.exitAfterMs }, 'shutdown did not finish in time: exiting now');
      this.exit(1);
    }, this.exitAfterMs).unref();
    this.killAt = Date.now() + this.exitAfterMs + WATCHDOG_AFTER_DEADLINE_MS;
    // A worker whose primary is there is killed by the primary's.
    if (!this.options.worker || !process.connected) startWatchdog(this.killAt, this.children());
    if (!this.drain) {
      logger.info({ signal: reason }, 'stopping during start-up');
      this.exit(0);
      return;
    }
    this.drain(reason).then(
      () => this.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'error during shutdown');
        this.exit(1);
      },
    );
  }

  /**
   * Kills the children, writes the last log lines within a bound, exits with `code`.
   * `evenIfExiting`: a second signal while the last lines are being written stops the waiting.
   */
  private exit(code: number, { flushBudgetMs = FLUSH_BUDGET_MS, evenIfExiting = false } = {}): void {
    for (const pid of this.children()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (this.exiting) {
      if (!evenIfExiting) return;
      closeLogs(this.options.logs);
      process.exit(code);
    }
    this.exiting = true;
    // Never up to the watchdog's kill: an exit with a code is better than a SIGKILL.
    const budget = Math.min(flushBudgetMs, this.killAt - Date.now() - 50);
    void flushLogsWithin(this.options.logs, budget).finally(() => {
      closeLogs(this.options.logs);
      process.exit(code);
    });
  }
}
