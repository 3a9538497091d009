// --workers N: N proxy processes behind one primary (node:cluster for the processes and their
// IPC channels). This primary serves no request itself: it starts the workers, binds the ports
// once every worker is ready (start-up is all or nothing: see listeners.ts), accepts each client
// connection and sends it to a worker (workers/connections.ts, which also counts connections
// per client for the whole proxy), keeps the failed-login counters for the whole proxy
// (workers/login-limits-authority.ts), prints the one start-up line, runs the admin listener for
// all of them, passes signals on (drain, reload, log reopen) and replaces a worker that dies.
// Its exit (shutdown.ts) takes the workers with it: none outlives the primary.

import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { closeSync } from 'node:fs';
import type { FastifyBaseLogger } from 'fastify';
import { AggregatorRegistry } from 'prom-client';
import { adminSink, createAdminServer, type Readiness } from '../lifecycle/admin.js';
import { ClientAddressResolver } from '../auth/client-address.js';
import { FailureLimiter } from '../auth/failure-limiter.js';
import { ConfigError, type Config } from '../config/index.js';
import { ConnectionLimit } from '../edge/connection-limit.js';
import type { GatedListener } from '../edge/listeners.js';
import type { Shutdown } from '../lifecycle/shutdown.js';
import { stdoutNeverBlocks, stdoutOfItsOwn } from '../observe/log-flush.js';
import { ConnectionDispatcher } from './connections.js';
import { LoginLimitsAuthority } from './login-limits-authority.js';
import type { FromWorker, ToWorker } from './messages.js';

/** How a worker learns the key credentials are hashed under (read and removed at its start). */
export const CREDENTIAL_KEY_ENV = 'KFP_WORKER_CREDENTIAL_KEY';

const RESPAWN_DELAY_MS = 1000;
const READINESS_TIMEOUT_MS = 1000;

export interface Listeners {
  user: GatedListener;
  admin: GatedListener | undefined;
}

export interface SupervisorHooks {
  /** Binds every listener, gates closed (throws ConfigError when a port cannot be had). */
  bind: () => Promise<Listeners>;
  /** Prints the start-up line (at any log level). */
  announce: (listeners: Listeners) => void;
}

export async function runSupervisor(config: Config, logger: FastifyBaseLogger, shutdown: Shutdown, hooks: SupervisorHooks): Promise<void> {
  const live = new Set<Worker>();
  /** Those of `live` that have said they are ready (a replacement may still be starting). */
  const ready = new Set<Worker>();
  let draining = false;
  /** Called when the last worker has exited (set while draining). */
  let noWorkersLeft: (() => void) | undefined;
  // From the first fork on: a signal during start-up, a drain cut short, any exit kills them.
  shutdown.killsWithIt(() => [...live].flatMap((worker) => (worker.process.pid === undefined ? [] : [worker.process.pid])));
  let nextReadinessId = 1;
  const pendingReadiness = new Map<number, (answer: Readiness) => void>();
  const credentialKey = randomBytes(32).toString('base64');

  const broadcast = (message: ToWorker) => {
    for (const worker of live) if (worker.isConnected()) worker.send(message);
  };
  const send = (worker: Worker, message: ToWorker) => {
    if (worker.isConnected()) worker.send(message);
  };

  const limits = config.authFailureLimit > 0 ? new LoginLimitsAuthority(new FailureLimiter({ limit: config.authFailureLimit, windowMs: config.authFailureWindowMs }), broadcast) : undefined;
  const clientAddresses = new ClientAddressResolver(config.trustedProxies);
  const connectionLimit = new ConnectionLimit({
    perClient: config.maxConnectionsPerClient,
    isExempt: (address) => clientAddresses.isTrusted(address),
    onRefused: (address) => {
      logger.debug({ client: address }, 'connection refused: --max-connections-per-client reached');
      const counter = dispatcher.anyWorker();
      if (counter) send(counter, { kfp: 'connection-refused' });
    },
  });
  const dispatcher = new ConnectionDispatcher(connectionLimit);

  const onMessage = (worker: Worker, message: FromWorker): void => {
    switch (message.kfp) {
      case 'connection-closed':
        dispatcher.closed(worker, message.id);
        return;
      case 'readiness':
        pendingReadiness.get(message.id)?.({ ready: message.ready, text: message.text.trimEnd().replace(/^/gm, `worker ${worker.process.pid}: `) + '\n' });
        return;
      case 'login-begin':
      case 'login-check':
      case 'login-finish':
      case 'login-used':
      case 'login-forget':
        limits?.handle(worker.id, message, (reply) => send(worker, reply));
        return;
      default:
        return;
    }
  };

  /** From now on `worker` gets connections, with the limits' refused keys as they stand. */
  const serving = (worker: Worker) => {
    ready.add(worker);
    if (limits) send(worker, limits.snapshot());
    dispatcher.add(worker);
  };

  const fork = (): Worker => {
    const stdout = stdoutOfItsOwn();
    cluster.setupPrimary({ stdio: ['inherit', stdout ?? 'inherit', 'inherit', 'ipc'] });
    let worker: Worker;
    try {
      worker = cluster.fork({ [CREDENTIAL_KEY_ENV]: credentialKey });
    } finally {
      if (stdout !== undefined) closeSync(stdout);
    }
    stdoutNeverBlocks();
    live.add(worker);
    worker.on('message', (message: FromWorker) => onMessage(worker, message));
    worker.once('exit', (code, signal) => {
      stdoutNeverBlocks();
      live.delete(worker);
      ready.delete(worker);
      dispatcher.remove(worker);
      limits?.workerGone(worker.id);
      if (live.size === 0) noWorkersLeft?.();
      if (draining || shutdown.stopping) return;
      logger.error({ pid: worker.process.pid, code, signal }, `worker exited unexpectedly; starting a new one in ${RESPAWN_DELAY_MS} ms`);
      setTimeout(() => {
        if (draining || shutdown.stopping) return;
        const next = fork();
        started(next).then(
          () => serving(next),
          (err: unknown) => logger.error({ err }, 'replacement worker failed to start'),
        );
      }, RESPAWN_DELAY_MS);
    });
    return worker;
  };

  /** Resolves once the worker is ready to serve; a start-up error ends start-up. */
  const started = (worker: Worker): Promise<void> =>
    new Promise((resolve, reject) => {
      const listener = (message: FromWorker) => {
        if (message.kfp === 'ready') resolve();
        else if (message.kfp === 'start-error') reject(new ConfigError(message.message));
        else return;
        worker.off('message', listener);
      };
      worker.on('message', listener);
      worker.once('exit', (code) => reject(new Error(`worker exited with code ${code} before it was ready`)));
    });

  // Start-up: every worker ready, then every port bound, then all served at once. Until the
  // ports are bound a client is refused; nothing is answered before the last one is.
  const workers = Array.from({ length: config.workers }, fork);
  let listeners: Listeners;
  try {
    await Promise.all(workers.map(started));
    listeners = await hooks.bind();
  } catch (err) {
    draining = true;
    for (const worker of live) worker.process.kill('SIGKILL');
    // A signal during start-up killed the workers: the exit under way is the answer, not this error.
    if (shutdown.stopping) return new Promise<never>(() => {});
    throw err;
  }

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
            send(worker, { kfp: 'readiness', id });
          }),
      ),
    );
    const ready = answers.length === config.workers && answers.every((a) => a.ready);
    return { ready, text: `${answers.map((a) => a.text).join('')}${ready ? 'ok' : 'not ready'}: ${answers.filter((a) => a.ready).length} of ${config.workers} workers ready\n` };
  };
  const admin = listeners.admin ? createAdminServer({ readiness, metrics: async () => ({ contentType: aggregator.contentType, text: await aggregator.clusterMetrics() }), draining: () => draining }, logger) : undefined;
  const adminConnections = admin ? await adminSink(admin) : undefined;
  // Stopped while the admin server got ready: the exit under way takes the workers.
  if (shutdown.stopping) return new Promise<never>(() => {});

  for (const worker of workers) serving(worker);
  listeners.user.open(dispatcher.dispatch);
  if (adminConnections) listeners.admin?.open(adminConnections.accept);
  hooks.announce(listeners);

  process.on('SIGHUP', () => broadcast({ kfp: 'reload' }));
  process.on('SIGUSR1', () => broadcast({ kfp: 'reopen' }));
  // Each worker drains itself; the primary waits for their exits (shutdown.ts kills any worker
  // still there at its deadline, and exits).
  shutdown.serving(async (signal) => {
    draining = true;
    // No new connections from here on; those already with a worker drain there.
    listeners.user.close();
    logger.info({ signal, graceMs: config.shutdownGraceMs, workers: live.size }, 'shutting down: each worker drains');
    const allGone = new Promise<void>((resolve) => (noWorkersLeft = resolve));
    broadcast({ kfp: 'shutdown' });
    // A replacement still starting does not hear the message yet; it has nothing to drain.
    for (const worker of live) if (!ready.has(worker)) worker.process.kill('SIGTERM');
    if (live.size > 0) await allGone;
    // The admin listener said "shutting down" all along; now its port and connections go too.
    listeners.admin?.close();
    adminConnections?.closeAll();
    await admin?.close();
    logger.info('stopped');
  });
}
