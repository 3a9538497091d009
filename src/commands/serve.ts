// `kube-front-proxy serve`: every setting as a flag, then start-up, reload and drain.

import { InvalidArgumentError, Option, type Command } from 'commander';
import type { FastifyInstance } from 'fastify';
import cluster from 'node:cluster';
import { pino, stdTimeFunctions, type Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import { createAdminServer, poolReadiness } from '../admin.js';
import { batchedDestination } from '../observe/destination.js';
import { ConfigError, SETTINGS, envVarName, loadConfig, type Config, type ListenAddress, type RawSettings } from '../config.js';
import { loadMaterial, type Material } from '../material.js';
import { fileSignatures, materialFiles, startReloader, type FileSignatures } from '../reload.js';
import { createProxyServer, type ProxyServer } from '../server.js';
import { onPrimaryMessage, runSupervisor, tellPrimary } from '../supervisor.js';

export function registerServe(program: Command): void {
  const serve = program
    .command('serve')
    .description('run the proxy')
    .addHelpText('after', `\nEvery setting can also be set in the YAML file given by --config (camelCase keys, e.g.\ntlsCertFile, upstreams: [..]) or by an environment variable (e.g. ${envVarName(SETTINGS[1]!)}).\nPrecedence: flag > environment > config file > default.`)
    .option('--config <file>', 'YAML config file (env KUBE_FRONT_PROXY_CONFIG)');
  for (const spec of SETTINGS) {
    const help = `${spec.help} (default: ${spec.defaultText ?? 'none'}; env ${envVarName(spec)})`;
    const option =
      spec.kind === 'boolean'
        ? new Option(`--${spec.flag} [bool]`, help).argParser(parseBooleanFlag)
        : spec.kind === 'list'
          ? new Option(`--${spec.flag} <value>`, help).argParser((v: string, previous: string[] | undefined) => [...(previous ?? []), ...splitList(v)])
          : new Option(`--${spec.flag} <value>`, help);
    serve.addOption(option);
  }
  serve.action(async (options: Record<string, unknown>) => {
    const flags: Partial<Record<keyof RawSettings, unknown>> = {};
    for (const spec of SETTINGS) {
      const value = options[camelCase(spec.flag)];
      if (value !== undefined) flags[spec.key] = value;
    }
    const configFile = (options.config as string | undefined) ?? process.env.KUBE_FRONT_PROXY_CONFIG;
    await serveCommand(loadConfig({ configFile, flags, env: process.env }));
  });
}

/** List flags repeat or take commas, as kube-apiserver's do (--tls-cipher-suites a,b). */
function splitList(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter(Boolean);
}

/** `--flag` alone means true; `--flag=false` turns a default-on setting off; anything else is an error. */
function parseBooleanFlag(value: string | undefined): boolean {
  if (value === undefined || /^(true|1|yes)$/i.test(value)) return true;
  if (/^(false|0|no)$/i.test(value)) return false;
  throw new InvalidArgumentError(`"${value}" is not true or false`);
}

function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

async function serveCommand(config: Config): Promise<void> {
  // Taken before the files are read, so that a change made during start-up is still seen.
  const baseline = fileSignatures(materialFiles(config));
  // Read and checked here in the primary too: a bad file stops start-up with one line, once.
  const material = loadMaterial(config);
  // Asynchronous, batched writes: a line per request must not cost a blocking write each (the
  // buffer is flushed before the process exits).
  const destination = batchedDestination({ dest: 1 });
  const logger = pino({ level: config.logLevel, base: { pid: process.pid }, timestamp: stdTimeFunctions.isoTime }, destination);
  process.once('exit', () => destination.flushSync());
  if (config.workers > 1 && cluster.isPrimary) {
    await runSupervisor(config, logger, {
      listenAdmin: (admin) => listenOrFail(admin, config.adminListen as ListenAddress, '--admin-listen', async () => {}),
      announce: (fields, line) => announce(logger, config, fields, line),
    });
    return;
  }
  await serveProxy(config, material, baseline, logger);
}

/** The start-up line is printed whatever the log level: it says where and how the proxy runs. */
function announce(logger: Logger, config: Config, fields: object, line: string): void {
  logger.level = 'info';
  logger.info(fields, line);
  logger.level = config.logLevel;
}

/** One proxy process: the only one (--workers 1) or a worker of the supervisor. */
async function serveProxy(config: Config, material: Material, baseline: FileSignatures, logger: Logger): Promise<void> {
  const worker = cluster.isWorker;
  const proxy = await createProxyServer(config, material, logger);
  let draining = false;
  // Workers serve no admin listener: the primary answers for all of them.
  const admin = config.adminListen && !worker ? createAdminServer({ readiness: () => poolReadiness(proxy.pool), metrics: registryMetrics(proxy), draining: () => draining }, logger) : undefined;
  if (worker) {
    // Answer the primary's /metrics requests with this worker's registry (the constructor is
    // what installs prom-client's worker-side message listener).
    AggregatorRegistry.setRegistries([proxy.metrics.registry]);
    new AggregatorRegistry();
  }
  // fastify logs one "Server listening at" line per interface; ours below says it all once.
  logger.level = 'warn';
  try {
    await listenOrFail(proxy.app, config.listen, '--listen', () => proxy.close(0));
    if (admin && config.adminListen) await listenOrFail(admin, config.adminListen, '--admin-listen', () => proxy.close(0));
  } catch (err) {
    if (!worker || !(err instanceof ConfigError)) throw err;
    // The primary prints the line, once for all workers.
    tellPrimary({ kfp: 'listen-error', message: err.message });
    process.exit(2);
  }
  if (worker) {
    logger.level = config.logLevel;
    tellPrimary({ kfp: 'listening', line: startupLine(config, material, proxy), summary: startupSummary(config, material, proxy, undefined) });
  } else {
    announce(logger, config, startupSummary(config, material, proxy, admin), startupLine(config, material, proxy));
  }

  const reloader = startReloader(config, baseline, (next) => proxy.applyMaterial(next), logger);
  const stop = async (signal: string) => {
    if (draining) {
      if (signal === 'primary') return;
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    draining = true;
    reloader.stop();
    // The last resort: whatever happens below, a stopping proxy is gone shortly after its grace.
    setTimeout(() => process.exit(0), config.shutdownGraceMs + 5_000).unref();
    logger.info({ signal, graceMs: config.shutdownGraceMs, streams: proxy.streams.size, tunnels: proxy.upgrades.open }, 'shutting down: no new connections, ending watches and tunnels, letting requests finish');
    try {
      await proxy.close();
      await admin?.close();
      logger.info('stopped');
      process.exit(0);
    } catch (err) {
      logger.error({ err }, 'error during shutdown');
      process.exit(1);
    }
  };
  process.on('SIGHUP', () => reloader.reload('SIGHUP'));
  // logrotate moved the traffic log: continue in a new file at the configured path.
  process.on('SIGUSR1', () => proxy.accessLog.reopen());
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  if (worker) {
    onPrimaryMessage((message) => {
      if (message.kfp === 'shutdown') void stop('primary');
      else if (message.kfp === 'reload') reloader.reload('SIGHUP');
      else if (message.kfp === 'reopen') proxy.accessLog.reopen();
      else if (message.kfp === 'readiness') tellPrimary({ kfp: 'readiness', id: message.id, ...poolReadiness(proxy.pool) });
    });
    // The primary is gone (killed): nobody hands us connections any more.
    process.once('disconnect', () => void stop('primary'));
  }
}

function registryMetrics(proxy: ProxyServer): () => Promise<{ contentType: string; text: string }> {
  return async () => ({ contentType: proxy.metrics.registry.contentType, text: await proxy.metrics.registry.metrics() });
}

async function listenOrFail(app: FastifyInstance, address: ListenAddress, flag: string, cleanup: () => Promise<void>): Promise<void> {
  try {
    await app.listen({ host: address.host, port: address.port });
  } catch (err) {
    await cleanup();
    const code = (err as NodeJS.ErrnoException).code;
    const problem = code === 'EADDRINUSE' ? 'address already in use' : code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)' : (err as Error).message;
    throw new ConfigError(`${flag} ${address.host}:${address.port}: ${problem}`);
  }
}

function listenUrl(proxy: ProxyServer): string {
  const address = proxy.app.server.address();
  if (address === null || typeof address === 'string') return String(address);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `https://${host}:${address.port}`;
}

function authMethods(material: Material): string[] {
  const methods: string[] = [];
  if (material.users) methods.push(`basic (${material.users.users.size} users)`);
  if (material.clientCa) methods.push('x509 client certificates');
  return methods;
}

function startupSummary(config: Config, material: Material, proxy: ProxyServer, admin: FastifyInstance | undefined): Record<string, unknown> {
  const adminAddress = admin?.server.address();
  return {
    listen: listenUrl(proxy),
    admin: adminAddress && typeof adminAddress === 'object' ? `http://${adminAddress.address}:${adminAddress.port}` : undefined,
    auth: authMethods(material),
    upstreams: config.upstreams.map((u) => u.origin),
    proxyClient: material.proxyClientName,
  };
}

function startupLine(config: Config, material: Material, proxy: ProxyServer): string {
  return `listening on ${listenUrl(proxy)}; auth: ${authMethods(material).join(', ')}; upstreams: ${config.upstreams.map((u) => u.origin).join(', ')} as ${material.proxyClientName}`;
}

