// --workers N: N proxy processes share the listening port (Node's cluster module: this process
// accepts and hands connections round-robin to the workers). This primary process serves no
// traffic: it starts the workers, prints the one start-up line, runs the admin listener for all
// of them, passes signals on (drain, reload, log reopen) and replaces a worker that dies.

import cluster, { type Worker } from 'node:cluster';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { AggregatorRegistry } from 'prom-client';
import { createAdminServer, type Readiness } from './admin.js';
import { ConfigError, type Config } from './config.js';

/** Messages between the primary and its workers (all tagged `kfp`). */
export type ToWorker = { kfp: 'shutdown' } | { kfp: 'reload' } | { kfp: 'reopen' } | { kfp: 'readiness'; id: number };
export type FromWorker =
  | { kfp: 'listening'; line: string; summary: Record<string, unknown> }
  | { kfp: 'listen-error'; message: string }
  | { kfp: 'readiness'; id: number; ready: boolean; text: string };

const RESPAWN_DELAY_MS = 1000;
const READINESS_TIMEOUT_MS = 1000;

export interface SupervisorHooks {
  /** Binds the admin listener (throws ConfigError when it cannot). */
  listenAdmin: (admin: FastifyInstance) => Promise<void>;
  /** Prints the start-up line (at any log level). */
  announce: (fields: object, line: string) => void;
}

export async function runSupervisor(config: Config, logger: FastifyBaseLogger, hooks: SupervisorHooks): Promise<void> {
  const live = new Set<Worker>();
  let draining = false;
  let nextReadinessId = 1;
  const pendingReadiness = new Map<number, (answer: Readiness) => void>();

  const onMessage = (worker: Worker, message: FromWorker): void => {
    if (message.kfp === 'readiness') pendingReadiness.get(message.id)?.({ ready: message.ready, text: message.text.trimEnd().replace(/^/gm, `worker ${worker.process.pid}: `) + '\n' });
  };

  const fork = (): Worker => {
    const worker = cluster.fork();
    live.add(worker);
    worker.on('message', (message: FromWorker) => onMessage(worker, message));
    worker.once('exit', (code, signal) => {
      live.delete(worker);
      if (draining) return;
      logger.error({ pid: worker.process.pid, code, signal }, `worker exited unexpectedly; starting a new one in ${RESPAWN_DELAY_MS} ms`);
      setTimeout(() => {
        if (!draining) started(fork()).catch((err: unknown) => logger.error({ err }, 'replacement worker failed to start'));
      }, RESPAWN_DELAY_MS);
    });
    return worker;
  };

  /** Resolves with the worker's start-up line once it listens; a listen error ends start-up. */
  const started = (worker: Worker): Promise<Extract<FromWorker, { kfp: 'listening' }>> =>
    new Promise((resolve, reject) => {
      const listener = (message: FromWorker) => {
        if (message.kfp === 'listening') resolve(message);
        else if (message.kfp === 'listen-error') reject(new ConfigError(message.message));
        else return;
        worker.off('message', listener);
      };
      worker.on('message', listener);
      worker.once('exit', (code) => reject(new Error(`worker exited with code ${code} before listening`)));
    });

  const first = fork();
  const rest = Array.from({ length: config.workers - 1 }, fork);
  let line: Extract<FromWorker, { kfp: 'listening' }>;
  try {
    [line] = await Promise.all([started(first), ...rest.map(started)]);
  } catch (err) {
    draining = true;
    for (const worker of live) worker.process.kill('SIGKILL');
    throw err;
  }

  const broadcast = (message: ToWorker) => {
    for (const worker of live) if (worker.isConnected()) worker.send(message);
  };

  const aggregator = new AggregatorRegistry();
  const readiness = async (): Promise<Readiness> => {
    const workers = [...live];
    const answers = await Promise.all(
      workers.map(
        (worker) =>
          new Promise<Readiness>((resolve) => {
            const id = nextReadinessId++;
            const timer = setTimeout(() => resolve({ ready: false, text: `worker ${worker.process.pid}: no answer\n` }), READINESS_TIMEOUT_MS);
            pendingReadiness.set(id, (answer) => {
              clearTimeout(timer);
              pendingReadiness.delete(id);
              resolve(answer);
            });
            if (worker.isConnected()) worker.send({ kfp: 'readiness', id } satisfies ToWorker);
          }),
      ),
    );
    const ready = answers.length === config.workers && answers.every((a) => a.ready);
    return { ready, text: `${answers.map((a) => a.text).join('')}${ready ? 'ok' : 'not ready'}: ${answers.filter((a) => a.ready).length} of ${config.workers} workers ready\n` };
  };
  const admin = config.adminListen
    ? createAdminServer({ readiness, metrics: async () => ({ contentType: aggregator.contentType, text: await aggregator.clusterMetrics() }), draining: () => draining }, logger)
    : undefined;
  if (admin) await hooks.listenAdmin(admin);

  const adminAddress = admin?.server.address();
  hooks.announce(
    { ...line.summary, admin: adminAddress && typeof adminAddress === 'object' ? `http://${adminAddress.address}:${adminAddress.port}` : undefined, workers: config.workers },
    `${line.line}; ${config.workers} workers`,
  );

  process.on('SIGHUP', () => broadcast({ kfp: 'reload' }));
  process.on('SIGUSR1', () => broadcast({ kfp: 'reopen' }));
  const stop = (signal: string) => {
    if (draining) {
      logger.warn({ signal }, 'second signal: stopping the workers now');
      for (const worker of live) worker.process.kill('SIGKILL');
      process.exit(1);
    }
    draining = true;
    logger.info({ signal, graceMs: config.shutdownGraceMs, workers: live.size }, 'shutting down: each worker drains');
    broadcast({ kfp: 'shutdown' });
    // A worker stuck past its own last resort is killed; then this process goes too.
    setTimeout(() => {
      for (const worker of live) worker.process.kill('SIGKILL');
      process.exit(1);
    }, config.shutdownGraceMs + 10_000).unref();
    const allGone = () => {
      if (live.size > 0) return;
      void admin?.close();
      logger.info('stopped');
      process.exit(0);
    };
    for (const worker of live) worker.once('exit', allGone);
    allGone();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** The worker side: messages from the primary, and a way to answer. */
export function onPrimaryMessage(handler: (message: ToWorker) => void): void {
  process.on('message', (message: ToWorker) => {
    if (message && typeof message === 'object' && 'kfp' in message) handler(message);
  });
}

export function tellPrimary(message: FromWorker): void {
  process.send?.(message);
}
