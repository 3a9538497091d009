// `kube-front-proxy serve`: every setting as a flag, then start-up, reload and drain.

import type { Command } from 'commander';
import cluster from 'node:cluster';
import { closeSync, openSync } from 'node:fs';
import type { Socket } from 'node:net';
import { pino, stdTimeFunctions, type Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import { adminSink, createAdminServer, poolReadiness, type AdminConnections } from '../lifecycle/admin.js';
import { batchedDestination } from '../observe/destination.js';
import { ConfigError, SETTINGS, envVarName, fileErrorText, loadConfig, type Config } from '../config/index.js';
import { addSettingOptions, configSources } from '../config/command-line.js';
import { bindAll, type GatedListener, type ListenerSpec } from '../edge/listeners.js';
import { loadMaterial, type Material } from '../material/material.js';
import { fileSignatures, materialFiles, startReloader, type FileSignatures } from '../material/reload.js';
import { createProxyServer, type ProxyServer, type SharedState } from '../server.js';
import { logPreflight } from '../upstream/preflight.js';
import { Shutdown } from '../lifecycle/shutdown.js';
import { leaveStdoutModeAtExit, stdoutNeverBlocks } from '../observe/log-flush.js';
import { CREDENTIAL_KEY_ENV, runSupervisor, type Listeners } from '../workers/supervisor.js';
import { SharedLoginLimiter } from '../workers/login-limits-client.js';
import { onPrimaryMessage, tellPrimary } from '../workers/messages.js';
import { escapingHooks } from '../observe/accesslog.js';

export function registerServe(program: Command): void {
  const serve = program
    .command('serve')
    .description('run the proxy')
    .addHelpText(
      'after',
      `\nEvery setting can also be set in the YAML file given by --config (camelCase keys, e.g.\ntlsCertFile, upstreams: [..]) or by an environment variable (e.g. ${envVarName(SETTINGS[1])}).\nPrecedence: flag > environment > config file > default.`,
    );
  addSettingOptions(serve);
  serve.action(async (options: Record<string, unknown>) => {
    await serveCommand(loadConfig(configSources(options, process.env)));
  });
}

async function serveCommand(config: Config): Promise<void> {
  // Taken before the files are read, so that a change made during start-up is still seen.
  const baseline = fileSignatures(materialFiles(config));
  // Read and checked here in the primary too: a bad file stops start-up with one line, once.
  const material = loadMaterial(config);
  checkAccessLog(config);
  // Before the first line and before any worker is forked (see shutdown-logs.ts).
  stdoutNeverBlocks();
  // Asynchronous, batched writes: a line per request must not cost a blocking write each (the
  // buffer is flushed, within a bound, before the process exits: shutdown.ts).
  const destination = batchedDestination({ dest: 1 });
  // Client-controlled strings (user names, paths) reach these lines too: escaped like the traffic log's.
  const logger = pino({ level: config.logLevel, base: { pid: process.pid }, timestamp: stdTimeFunctions.isoTime, hooks: escapingHooks }, destination);
  if (cluster.isWorker) leaveStdoutModeAtExit();
  // SIGTERM and SIGINT are ours before start-up goes any further: a signal now ends start-up.
  const shutdown = new Shutdown({ graceMs: config.shutdownGraceMs, worker: cluster.isWorker, logger, logs: destination });
  shutdown.listen();
  if (config.workers > 1 && cluster.isPrimary) {
    await runSupervisor(config, logger, shutdown, {
      bind: () => bindListeners(config, true),
      announce: ({ user, admin }) => {
        announce(logger, config, { ...startupSummary(config, material, user, admin), workers: config.workers }, `${startupLine(config, material, user)}; ${config.workers} workers`);
        // Once per start, here in the primary rather than in every worker.
        void logPreflight(config.upstreams, material.upstream, logger);
      },
    });
    return;
  }
  await serveProxy(config, material, baseline, logger, shutdown);
}

/**
 * The traffic log file is opened for appending later, asynchronously: a path that cannot be
 * written would end the proxy after it had started serving. Checked with the other files.
 */
function checkAccessLog(config: Config): void {
  if (!config.accessLog) return;
  try {
    closeSync(openSync(config.accessLog, 'a'));
  } catch (err) {
    const missingDirectory = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new ConfigError(`--access-log ${config.accessLog}: ${missingDirectory ? 'no such directory' : fileErrorText(err)}`);
  }
}

/**
 * The user-facing listener and the admin one, bound, gates closed (listeners.ts). `handOff`:
 * their connections go to other processes (the primary of --workers), so they arrive unread.
 */
async function bindListeners(config: Config, handOff: boolean): Promise<Listeners> {
  const specs: ListenerSpec[] = [{ address: config.listen, flag: '--listen', pause: handOff }];
  if (config.adminListen) specs.push({ address: config.adminListen, flag: '--admin-listen' });
  const [user, admin] = await bindAll(specs);
  return { user: user as GatedListener, admin };
}

/** The start-up line is printed whatever the log level: it says where and how the proxy runs. */
function announce(logger: Logger, config: Config, fields: object, line: string): void {
  logger.level = 'info';
  logger.info(fields, line);
  logger.level = config.logLevel;
}

/** A worker's share of what the primary keeps for the whole proxy (failed-login limits, connection counts). */
function sharedWithPrimary(config: Config): { state: SharedState; limiter: SharedLoginLimiter | undefined } {
  const key = process.env[CREDENTIAL_KEY_ENV];
  delete process.env[CREDENTIAL_KEY_ENV];
  if (!key) throw new Error(`worker started without ${CREDENTIAL_KEY_ENV}`);
  const limiter = config.authFailureLimit > 0 ? new SharedLoginLimiter((message) => tellPrimary(message)) : undefined;
  return { state: { loginLimiter: limiter, credentialKey: Buffer.from(key, 'base64') }, limiter };
}

/** One proxy process: the only one (--workers 1) or a worker of the supervisor. */
async function serveProxy(config: Config, material: Material, baseline: FileSignatures, logger: Logger, shutdown: Shutdown): Promise<void> {
  const worker = cluster.isWorker;
  const shared = worker ? sharedWithPrimary(config) : undefined;
  let proxy: ProxyServer;
  try {
    proxy = await createProxyServer(config, material, logger, shared?.state);
  } catch (err) {
    if (!worker || !(err instanceof ConfigError)) throw err;
    // The primary prints the line, once for all workers.
    tellPrimary({ kfp: 'start-error', message: err.message });
    process.exit(2);
  }
  // Workers serve no admin listener: the primary answers for all of them.
  const admin = config.adminListen && !worker ? createAdminServer({ readiness: () => poolReadiness(proxy.pool), metrics: registryMetrics(proxy), draining: () => shutdown.stopping }, logger) : undefined;
  let listeners: Listeners | undefined;
  let adminConnections: AdminConnections | undefined;
  if (worker) {
    // Answer the primary's /metrics requests with this worker's registry (the constructor is
    // what installs prom-client's worker-side message listener).
    AggregatorRegistry.setRegistries([proxy.metrics.registry]);
    new AggregatorRegistry();
  } else {
    // Every port bound before any is served; a port in use ends start-up having answered nothing.
    try {
      listeners = await bindListeners(config, false);
    } catch (err) {
      await proxy.close(0);
      throw err;
    }
    adminConnections = admin ? await adminSink(admin) : undefined;
    // Stopped during start-up: the exit under way ends the process; serve nothing.
    if (shutdown.stopping) return;
    listeners.user.open((socket) => proxy.accept(socket));
    if (adminConnections) listeners.admin?.open(adminConnections.accept);
    announce(logger, config, startupSummary(config, material, listeners.user, listeners.admin), startupLine(config, material, listeners.user));
    // In the background: serving does not wait for it, and what it finds is only logged.
    void logPreflight(config.upstreams, material.upstream, logger);
  }

  const reloader = startReloader(config, baseline, (next) => proxy.applyMaterial(next), logger);
  // Then the process exits (shutdown.ts), by the grace plus 550 ms whatever this awaits.
  shutdown.serving(async (signal) => {
    reloader.stop();
    // No new connections (under --workers the primary stops accepting).
    listeners?.user.close();
    logger.info({ signal, graceMs: config.shutdownGraceMs, streams: proxy.longLived.count('stream'), tunnels: proxy.longLived.count('tunnel') }, 'shutting down: no new connections, ending watches and tunnels, letting requests finish');
    await proxy.close();
    // The admin listener said "shutting down" all along; now its port and connections go too.
    listeners?.admin?.close();
    adminConnections?.closeAll();
    await admin?.close();
    logger.info('stopped');
  });
  // Stopped while the proxy was starting: it never served; the exit is under way.
  if (shutdown.stopping) return;
  process.on('SIGHUP', () => reloader.reload('SIGHUP'));
  // logrotate moved the traffic log: continue in a new file at the configured path.
  process.on('SIGUSR1', () => proxy.accessLog.reopen());
  if (worker) {
    onPrimaryMessage((message, handle) => {
      switch (message.kfp) {
        case 'connection': {
          const socket = handle as Socket | undefined;
          if (!socket) return;
          // The primary counts this client's connections until told this one closed.
          socket.once('close', () => tellPrimary({ kfp: 'connection-closed', id: message.id }));
          proxy.accept(socket);
          return;
        }
        case 'connection-refused':
          proxy.metrics.connectionRefused();
          return;
        case 'login-answer':
        case 'login-keys':
          shared?.limiter?.receive(message);
          return;
        case 'shutdown':
          shutdown.stop('primary');
          return;
        case 'reload':
          reloader.reload('SIGHUP');
          return;
        case 'reopen':
          proxy.accessLog.reopen();
          return;
        case 'readiness':
          tellPrimary({ kfp: 'readiness', id: message.id, ...poolReadiness(proxy.pool) });
          return;
      }
    });
    // The primary is gone (killed): nobody hands us connections or answers for the limits any more.
    const primaryGone = () => {
      shared?.limiter?.disconnected();
      shutdown.stop('primary gone');
    };
    process.once('disconnect', primaryGone);
    // It may have gone while this worker was starting, before anyone listened for it.
    if (!process.connected) {
      primaryGone();
      return;
    }
    tellPrimary({ kfp: 'ready' });
  }
}

function registryMetrics(proxy: ProxyServer): () => Promise<{ contentType: string; text: string }> {
  return async () => ({ contentType: proxy.metrics.registry.contentType, text: await proxy.metrics.registry.metrics() });
}

function authMethods(material: Material): string[] {
  const methods: string[] = [];
  const userCount = material.users?.users.size ?? 0;
  if (material.users) methods.push(`basic (${userCount} user${userCount === 1 ? '' : 's'})`);
  if (material.clientCa) methods.push('x509 client certificates');
  return methods;
}

function startupSummary(config: Config, material: Material, listener: GatedListener, admin: GatedListener | undefined): Record<string, unknown> {
  return {
    listen: listener.url('https'),
    admin: admin?.url('http'),
    auth: authMethods(material),
    upstreams: config.upstreams.map((u) => u.origin),
    proxyClient: material.proxyClientName,
  };
}

function startupLine(config: Config, material: Material, listener: GatedListener): string {
  return `listening on ${listener.url('https')}; auth: ${authMethods(material).join(', ')}; upstreams: ${config.upstreams.map((u) => u.origin).join(', ')} as ${material.proxyClientName}`;
}
