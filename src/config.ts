// The proxy's settings: one table that names each setting's flag, environment variable and
// config-file key, one schema that validates the merged result, and one precedence rule:
// flag > environment > config file > built-in default. The result is validated once here and
// passed down; nothing deeper reads process.env or the command line.

import { accessSync, constants, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_TLS12_CIPHER_SUITES, openSslCipherList } from './tls-ciphers.js';

/** kubeadm's paths on a control-plane node: with no flags the proxy runs beside kubeadm's apiserver. */
export const KUBEADM_PKI = '/etc/kubernetes/pki';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type SettingKind = 'string' | 'list' | 'duration' | 'integer' | 'boolean';

interface SettingSpec {
  /** camelCase key in the config file and in Config. */
  key: keyof RawSettings;
  /** kebab-case flag, without the leading dashes. */
  flag: string;
  kind: SettingKind;
  help: string;
  /** Shown in --help; the real default is in DEFAULTS. */
  defaultText?: string;
}

export const SETTINGS: readonly SettingSpec[] = [
  { key: 'listen', flag: 'listen', kind: 'string', help: 'host:port of the user-facing HTTPS listener', defaultText: '0.0.0.0:8443' },
  { key: 'tlsCertFile', flag: 'tls-cert-file', kind: 'string', help: "the proxy's serving certificate (PEM; may include intermediates)", defaultText: 'required' },
  { key: 'tlsPrivateKeyFile', flag: 'tls-private-key-file', kind: 'string', help: "the serving certificate's private key (PEM)", defaultText: 'required' },
  { key: 'clientCaFile', flag: 'client-ca-file', kind: 'string', help: 'CA bundle for user client certificates; enables client-certificate auth', defaultText: `${KUBEADM_PKI}/ca.crt if readable` },
  { key: 'clientCrlFile', flag: 'client-crl-file', kind: 'string', help: 'certificate revocation lists (PEM or DER; one CRL per issuing CA); a client certificate listed by its issuer is refused', defaultText: 'none' },
  { key: 'htpasswdFile', flag: 'htpasswd-file', kind: 'string', help: 'users for basic auth (htpasswd bcrypt lines, optional third field: groups); enables basic auth', defaultText: 'none' },
  { key: 'upstreams', flag: 'upstream', kind: 'list', help: 'kube-apiserver URL (repeatable; env and file take a list)', defaultText: 'https://127.0.0.1:6443' },
  { key: 'upstreamCaFile', flag: 'upstream-ca-file', kind: 'string', help: "CA that signed the apiserver's serving certificate", defaultText: `${KUBEADM_PKI}/ca.crt` },
  { key: 'upstreamServerName', flag: 'upstream-server-name', kind: 'string', help: "name checked against the apiserver's certificate (SNI and verification)", defaultText: 'kubernetes' },
  { key: 'proxyClientCertFile', flag: 'proxy-client-cert-file', kind: 'string', help: 'front-proxy client certificate presented to the apiserver', defaultText: `${KUBEADM_PKI}/front-proxy-client.crt` },
  { key: 'proxyClientKeyFile', flag: 'proxy-client-key-file', kind: 'string', help: 'front-proxy client key', defaultText: `${KUBEADM_PKI}/front-proxy-client.key` },
  { key: 'upstreamStrategy', flag: 'upstream-strategy', kind: 'string', help: 'how requests are spread over upstreams: least-outstanding (round-robin among equals) or round-robin', defaultText: 'least-outstanding' },
  { key: 'healthInterval', flag: 'health-interval', kind: 'duration', help: 'how often each upstream gets GET /readyz', defaultText: '5s' },
  { key: 'healthTimeout', flag: 'health-timeout', kind: 'duration', help: 'how long a health check may take', defaultText: '2s' },
  { key: 'unhealthyThreshold', flag: 'unhealthy-threshold', kind: 'integer', help: 'consecutive failed checks that take an upstream out', defaultText: '2' },
  { key: 'healthyThreshold', flag: 'healthy-threshold', kind: 'integer', help: 'consecutive passed checks that bring it back', defaultText: '2' },
  { key: 'upstreamHeaderTimeout', flag: 'upstream-header-timeout', kind: 'duration', help: "longest wait for the apiserver's response headers (0 = none); never limits a response body, so watches and logs -f are not cut", defaultText: '0' },
  { key: 'upstreamHttp2', flag: 'upstream-http2', kind: 'boolean', help: 'carry watches and log follows to the apiserver over HTTP/2 (multiplexed); false: one HTTP/1.1 connection each', defaultText: 'true' },
  { key: 'allowImpersonation', flag: 'allow-impersonation', kind: 'boolean', help: 'pass Impersonate-* headers on for the apiserver to authorize against the user; false drops them', defaultText: 'true' },
  { key: 'tokenPassthrough', flag: 'token-passthrough', kind: 'boolean', help: "forward a request that has Authorization: Bearer (or a WebSocket bearer subprotocol) and no client certificate or password to the apiserver as it is, for the apiserver to authenticate (ServiceAccount tokens); sent over a connection without the front-proxy certificate and with no X-Remote-* headers", defaultText: 'false' },
  { key: 'authCacheTtl', flag: 'auth-cache-ttl', kind: 'duration', help: 'how long a verified password is trusted before bcrypt runs again', defaultText: '60s' },
  { key: 'authCacheSize', flag: 'auth-cache-size', kind: 'integer', help: 'most verified credentials kept', defaultText: '10000' },
  { key: 'workers', flag: 'workers', kind: 'integer', help: 'proxy processes sharing the listener (1 = a single process); more only on a host whose cores the proxy has to itself', defaultText: '1' },
  { key: 'bcryptWorkers', flag: 'bcrypt-workers', kind: 'integer', help: 'threads per proxy process that run bcrypt (bounds the CPU a password flood can take)', defaultText: 'half the CPUs shared over the workers, at least 1' },
  { key: 'bcryptQueueLimit', flag: 'bcrypt-queue-limit', kind: 'integer', help: 'password checks that may wait for a bcrypt worker; beyond that, new logins get 503 (cached logins and certificates are unaffected)', defaultText: '1024' },
  { key: 'authFailureLimit', flag: 'auth-failure-limit', kind: 'integer', help: 'failed logins allowed per client address, and per user name, within --auth-failure-window; then 429 until the window passes (0 = no limit)', defaultText: '10' },
  { key: 'authFailureWindow', flag: 'auth-failure-window', kind: 'duration', help: 'the period failed logins are counted over', defaultText: '1m' },
  { key: 'authFailureDelay', flag: 'auth-failure-delay', kind: 'duration', help: 'how long a login refused by the limits waits for its 429: a guessing client gets one answer per connection per delay, not thousands a second', defaultText: '1s' },
  { key: 'trustedProxies', flag: 'trusted-proxies', kind: 'list', help: 'addresses or CIDRs of load balancers in front of the proxy: only from these peers is X-Forwarded-For believed', defaultText: 'none' },
  { key: 'requestHeaderTimeout', flag: 'request-header-timeout', kind: 'duration', help: "longest a client may take for the TLS handshake and for each request's headers", defaultText: '10s' },
  { key: 'keepAliveTimeout', flag: 'keep-alive-timeout', kind: 'duration', help: 'an idle keep-alive client connection is closed after this', defaultText: '90s' },
  { key: 'maxConnectionsPerClient', flag: 'max-connections-per-client', kind: 'integer', help: 'open connections one client address may hold; trusted proxies are exempt (0 = no limit)', defaultText: '256' },
  { key: 'maxRequestHeaderBytes', flag: 'max-request-header-bytes', kind: 'integer', help: 'largest request header block accepted; larger gets 431', defaultText: '32768' },
  { key: 'http2MaxStreamsPerConnection', flag: 'http2-max-streams-per-connection', kind: 'integer', help: 'concurrent HTTP/2 streams one client connection may open (each watch holds one), as kube-apiserver\'s flag of the same name', defaultText: '1000' },
  { key: 'tlsMinVersion', flag: 'tls-min-version', kind: 'string', help: 'oldest TLS version offered to clients: VersionTLS12 or VersionTLS13', defaultText: 'VersionTLS12' },
  { key: 'tlsCipherSuites', flag: 'tls-cipher-suites', kind: 'list', help: 'TLS 1.2 cipher suites, IANA names as kube-apiserver takes them (TLS 1.3 suites are always on)', defaultText: 'ECDHE with AES-GCM or ChaCha20-Poly1305' },
  { key: 'adminListen', flag: 'admin-listen', kind: 'string', help: 'host:port of the plain-HTTP admin listener (/healthz, /readyz); "" turns it off', defaultText: '127.0.0.1:9443' },
  { key: 'reloadInterval', flag: 'reload-interval', kind: 'duration', help: 'how often certificate, key and users files are checked for changes (SIGHUP reloads at once)', defaultText: '2s' },
  { key: 'shutdownGrace', flag: 'shutdown-grace', kind: 'duration', help: 'on SIGTERM/SIGINT, how long in-flight requests may take to finish', defaultText: '30s' },
  { key: 'accessLog', flag: 'access-log', kind: 'string', help: 'file the traffic log is appended to (reopened on SIGUSR1, for logrotate); default: stdout with the other logs', defaultText: 'stdout' },
  { key: 'accessLogFormat', flag: 'access-log-format', kind: 'string', help: 'json (one line per request, with the other logs) or audit (Kubernetes audit.k8s.io/v1 Events, level Metadata)', defaultText: 'json' },
  { key: 'logLevel', flag: 'log-level', kind: 'string', help: 'fatal, error, warn, info, debug or trace', defaultText: 'info' },
];

/** What a config file, the environment or the flags may set (all optional, before defaults). */
const rawSettingsSchema = z
  .object({
    listen: z.string(),
    tlsCertFile: z.string(),
    tlsPrivateKeyFile: z.string(),
    clientCaFile: z.string(),
    clientCrlFile: z.string(),
    htpasswdFile: z.string(),
    upstreams: z.array(z.string()).min(1),
    upstreamCaFile: z.string(),
    upstreamServerName: z.string().min(1),
    proxyClientCertFile: z.string(),
    proxyClientKeyFile: z.string(),
    upstreamStrategy: z.enum(['least-outstanding', 'round-robin']),
    healthInterval: z.union([z.string(), z.number()]),
    healthTimeout: z.union([z.string(), z.number()]),
    unhealthyThreshold: z.number().int().min(1),
    healthyThreshold: z.number().int().min(1),
    upstreamHeaderTimeout: z.union([z.string(), z.number()]),
    upstreamHttp2: z.boolean(),
    allowImpersonation: z.boolean(),
    tokenPassthrough: z.boolean(),
    authCacheTtl: z.union([z.string(), z.number()]),
    authCacheSize: z.number().int().min(0),
    workers: z.number().int().min(1).max(64),
    bcryptWorkers: z.number().int().min(1).max(64),
    bcryptQueueLimit: z.number().int().min(1),
    authFailureLimit: z.number().int().min(0),
    authFailureWindow: z.union([z.string(), z.number()]),
    authFailureDelay: z.union([z.string(), z.number()]),
    trustedProxies: z.array(z.string()),
    requestHeaderTimeout: z.union([z.string(), z.number()]),
    keepAliveTimeout: z.union([z.string(), z.number()]),
    maxConnectionsPerClient: z.number().int().min(0),
    maxRequestHeaderBytes: z.number().int().min(1024).max(1024 * 1024),
    http2MaxStreamsPerConnection: z.number().int().min(1),
    tlsMinVersion: z.enum(['VersionTLS12', 'VersionTLS13']),
    tlsCipherSuites: z.array(z.string()).min(1),
    adminListen: z.string(),
    reloadInterval: z.union([z.string(), z.number()]),
    shutdownGrace: z.union([z.string(), z.number()]),
    accessLog: z.string(),
    accessLogFormat: z.enum(['json', 'audit']),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']),
  })
  .partial()
  .strict();

export type RawSettings = z.infer<typeof rawSettingsSchema>;

export interface ListenAddress {
  host: string;
  port: number;
}

export interface Config {
  listen: ListenAddress;
  tlsCertFile: string;
  tlsPrivateKeyFile: string;
  /** Undefined: client-certificate auth is off. */
  clientCaFile: string | undefined;
  /** Undefined: no revocation list. */
  clientCrlFile: string | undefined;
  /** Undefined: basic auth is off. */
  htpasswdFile: string | undefined;
  upstreams: URL[];
  upstreamCaFile: string;
  upstreamServerName: string;
  proxyClientCertFile: string;
  proxyClientKeyFile: string;
  upstreamStrategy: 'least-outstanding' | 'round-robin';
  healthIntervalMs: number;
  healthTimeoutMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
  /** Milliseconds; 0 = no limit. */
  upstreamHeaderTimeoutMs: number;
  /** Watches and log follows multiplexed over HTTP/2 sessions to the apiserver (else one HTTP/1.1 connection each). */
  upstreamHttp2: boolean;
  allowImpersonation: boolean;
  /** Bearer tokens go to the apiserver for it to authenticate (over a connection without the front-proxy certificate). */
  tokenPassthrough: boolean;
  authCacheTtlMs: number;
  authCacheSize: number;
  workers: number;
  /** bcrypt threads per proxy process. */
  bcryptWorkers: number;
  bcryptQueueLimit: number;
  /** 0 = no limit. */
  authFailureLimit: number;
  authFailureWindowMs: number;
  authFailureDelayMs: number;
  /** Addresses and CIDRs, as given (validated). */
  trustedProxies: string[];
  requestHeaderTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** 0 = no limit. */
  maxConnectionsPerClient: number;
  maxRequestHeaderBytes: number;
  http2MaxStreamsPerConnection: number;
  tlsMinVersion: 'TLSv1.2' | 'TLSv1.3';
  /** OpenSSL cipher string for TLS 1.2. */
  tlsCiphers: string;
  /** Undefined: no admin listener. */
  adminListen: ListenAddress | undefined;
  reloadIntervalMs: number;
  shutdownGraceMs: number;
  /** Undefined: the traffic log goes to stdout with the other logs. */
  accessLog: string | undefined;
  accessLogFormat: 'json' | 'audit';
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
}

const DEFAULTS = {
  listen: '0.0.0.0:8443',
  upstreams: ['https://127.0.0.1:6443'],
  upstreamCaFile: `${KUBEADM_PKI}/ca.crt`,
  upstreamServerName: 'kubernetes',
  proxyClientCertFile: `${KUBEADM_PKI}/front-proxy-client.crt`,
  proxyClientKeyFile: `${KUBEADM_PKI}/front-proxy-client.key`,
  upstreamStrategy: 'least-outstanding',
  healthInterval: '5s',
  healthTimeout: '2s',
  unhealthyThreshold: 2,
  healthyThreshold: 2,
  upstreamHeaderTimeout: 0,
  upstreamHttp2: true,
  allowImpersonation: true,
  tokenPassthrough: false,
  bcryptQueueLimit: 1024,
  authFailureLimit: 10,
  authFailureWindow: '1m',
  authFailureDelay: '1s',
  trustedProxies: [],
  requestHeaderTimeout: '10s',
  keepAliveTimeout: '90s',
  maxConnectionsPerClient: 256,
  maxRequestHeaderBytes: 32 * 1024,
  http2MaxStreamsPerConnection: 1000,
  tlsMinVersion: 'VersionTLS12',
  adminListen: '127.0.0.1:9443',
  reloadInterval: '2s',
  shutdownGrace: '30s',
  authCacheTtl: '60s',
  authCacheSize: 10_000,
  logLevel: 'info',
} satisfies RawSettings;

export function envVarName(spec: SettingSpec): string {
  return `KUBE_FRONT_PROXY_${spec.flag.replaceAll('-', '_').toUpperCase()}`;
}

export function flagName(key: keyof RawSettings): string {
  return `--${SETTINGS.find((s) => s.key === key)?.flag ?? key}`;
}

/** Which source gave each setting of the last loadConfig(), so that errors name what the operator wrote. */
let settingSources: { configFile: string | undefined; fromFile: ReadonlySet<string>; fromEnv: ReadonlySet<string> } = { configFile: undefined, fromFile: new Set(), fromEnv: new Set() };

/**
 * How an error line names a setting, given as its key or flag: `--tls-cert-file` when it came from
 * the command line or a default, `KUBE_FRONT_PROXY_TLS_CERT_FILE` from the environment, and
 * `config/sidecar.yaml: tlsCertFile` from the config file (whose key is what to look for there).
 */
export function settingLabel(keyOrFlag: string): string {
  const spec = SETTINGS.find((s) => s.key === keyOrFlag || `--${s.flag}` === keyOrFlag);
  if (!spec) return keyOrFlag;
  if (settingSources.fromEnv.has(spec.key)) return envVarName(spec);
  if (settingSources.fromFile.has(spec.key) && settingSources.configFile) return `${settingSources.configFile}: ${spec.key}`;
  return `--${spec.flag}`;
}

export interface ConfigSources {
  /** Path given by --config (or KUBE_FRONT_PROXY_CONFIG). */
  configFile?: string | undefined;
  /** Flag values as the command-line parser produced them, keyed by setting key. */
  flags: Partial<Record<keyof RawSettings, unknown>>;
  env: NodeJS.ProcessEnv;
}

/** Merges and validates every source; throws ConfigError with one line naming the setting. */
export function loadConfig(sources: ConfigSources): Config {
  const fromFile = sources.configFile ? readConfigFile(sources.configFile) : {};
  const fromEnv = settingsFromEnv(sources.env);
  const fromFlags = settingsFromFlags(sources.flags);
  const merged: RawSettings = { ...DEFAULTS, ...fromFile, ...fromEnv, ...fromFlags };
  const flagKeys = new Set(Object.keys(fromFlags));
  settingSources = {
    configFile: sources.configFile,
    fromFile: new Set(Object.keys(fromFile).filter((key) => !flagKeys.has(key) && !(key in fromEnv))),
    fromEnv: new Set(Object.keys(fromEnv).filter((key) => !flagKeys.has(key))),
  };
  return resolve(merged);
}

function readConfigFile(path: string): RawSettings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`--config ${path}: ${fileErrorText(err)}`);
  }
  let document: unknown;
  try {
    document = parseYaml(text) ?? {};
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ConfigError(`--config ${path}: not valid YAML: ${detail}`);
  }
  const parsed = rawSettingsSchema.safeParse(document);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : '(top level)';
    const what = issue?.code === 'unrecognized_keys' ? `unknown setting ${issue.keys.join(', ')}` : issue?.message;
    throw new ConfigError(`--config ${path}: ${where}: ${what}`);
  }
  return parsed.data;
}

function settingsFromEnv(env: NodeJS.ProcessEnv): RawSettings {
  const out: Record<string, unknown> = {};
  for (const spec of SETTINGS) {
    const name = envVarName(spec);
    const value = env[name];
    if (value === undefined || value === '') continue;
    out[spec.key] = coerce(spec, value, name);
  }
  return out as RawSettings;
}

function settingsFromFlags(flags: ConfigSources['flags']): RawSettings {
  const out: Record<string, unknown> = {};
  for (const spec of SETTINGS) {
    const value = flags[spec.key];
    if (value === undefined) continue;
    out[spec.key] = Array.isArray(value) || typeof value === 'boolean' ? value : coerce(spec, String(value), `--${spec.flag}`);
  }
  return out as RawSettings;
}

/** Environment and flag values arrive as strings; give them the type the file schema expects. */
function coerce(spec: SettingSpec, value: string, source: string): unknown {
  switch (spec.kind) {
    case 'list':
      return value.split(',').map((v) => v.trim()).filter(Boolean);
    case 'integer': {
      if (!/^\d+$/.test(value)) throw new ConfigError(`${source}: "${value}" is not a whole number`);
      return Number(value);
    }
    case 'boolean': {
      if (/^(true|1|yes)$/i.test(value)) return true;
      if (/^(false|0|no)$/i.test(value)) return false;
      throw new ConfigError(`${source}: "${value}" is not true or false`);
    }
    default:
      return value;
  }
}

function resolve(raw: RawSettings): Config {
  const checked = rawSettingsSchema.safeParse(raw);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const key = (issue?.path[0] ?? '') as keyof RawSettings;
    throw new ConfigError(`${settingLabel(key)}: ${issue?.message}`);
  }
  const s = checked.data;
  if (!s.tlsCertFile) throw new ConfigError('--tls-cert-file: required: the proxy\'s serving certificate (see `kube-front-proxy serve --help`)');
  if (!s.tlsPrivateKeyFile) throw new ConfigError('--tls-private-key-file: required: the serving certificate\'s key');

  // Client-certificate auth defaults to kubeadm's cluster CA, but only where that file is
  // readable: on a machine without it the proxy runs with basic auth alone.
  let clientCaFile = s.clientCaFile;
  if (clientCaFile === undefined && isReadable(`${KUBEADM_PKI}/ca.crt`)) clientCaFile = `${KUBEADM_PKI}/ca.crt`;
  if (clientCaFile === '') clientCaFile = undefined;
  const htpasswdFile = s.htpasswdFile === '' ? undefined : s.htpasswdFile;
  if (!clientCaFile && !htpasswdFile) {
    throw new ConfigError('no authentication method enabled: set --htpasswd-file (basic auth) and/or --client-ca-file (client certificates)');
  }

  // One process by default: beside the apiserver (a sidecar) a second one costs 1.2-1.9x the CPU
  // per request and lowers throughput (README, Performance); one carries several apiservers' load.
  const workers = s.workers ?? 1;
  return {
    listen: parseListen(s.listen ?? DEFAULTS.listen, settingLabel('listen')),
    tlsCertFile: s.tlsCertFile,
    tlsPrivateKeyFile: s.tlsPrivateKeyFile,
    clientCaFile,
    clientCrlFile: s.clientCrlFile === '' ? undefined : s.clientCrlFile,
    htpasswdFile,
    upstreams: (s.upstreams ?? DEFAULTS.upstreams).map(parseUpstream),
    upstreamCaFile: s.upstreamCaFile ?? DEFAULTS.upstreamCaFile,
    upstreamServerName: s.upstreamServerName ?? DEFAULTS.upstreamServerName,
    proxyClientCertFile: s.proxyClientCertFile ?? DEFAULTS.proxyClientCertFile,
    proxyClientKeyFile: s.proxyClientKeyFile ?? DEFAULTS.proxyClientKeyFile,
    upstreamStrategy: s.upstreamStrategy ?? DEFAULTS.upstreamStrategy,
    healthIntervalMs: parsePositiveDuration('healthInterval', s.healthInterval ?? DEFAULTS.healthInterval),
    healthTimeoutMs: parsePositiveDuration('healthTimeout', s.healthTimeout ?? DEFAULTS.healthTimeout),
    unhealthyThreshold: s.unhealthyThreshold ?? DEFAULTS.unhealthyThreshold,
    healthyThreshold: s.healthyThreshold ?? DEFAULTS.healthyThreshold,
    upstreamHeaderTimeoutMs: parseDuration('upstreamHeaderTimeout', s.upstreamHeaderTimeout ?? 0),
    upstreamHttp2: s.upstreamHttp2 ?? DEFAULTS.upstreamHttp2,
    allowImpersonation: s.allowImpersonation ?? DEFAULTS.allowImpersonation,
    tokenPassthrough: s.tokenPassthrough ?? DEFAULTS.tokenPassthrough,
    authCacheTtlMs: parseDuration('authCacheTtl', s.authCacheTtl ?? DEFAULTS.authCacheTtl),
    authCacheSize: s.authCacheSize ?? DEFAULTS.authCacheSize,
    workers,
    // Half the CPUs for bcrypt in all, shared out over the workers.
    bcryptWorkers: s.bcryptWorkers ?? Math.max(1, Math.floor(availableParallelism() / 2 / workers)),
    bcryptQueueLimit: s.bcryptQueueLimit ?? DEFAULTS.bcryptQueueLimit,
    authFailureLimit: s.authFailureLimit ?? DEFAULTS.authFailureLimit,
    authFailureWindowMs: parsePositiveDuration('authFailureWindow', s.authFailureWindow ?? DEFAULTS.authFailureWindow),
    authFailureDelayMs: parseDuration('authFailureDelay', s.authFailureDelay ?? DEFAULTS.authFailureDelay),
    trustedProxies: (s.trustedProxies ?? DEFAULTS.trustedProxies).map(parseAddressRange),
    requestHeaderTimeoutMs: parsePositiveDuration('requestHeaderTimeout', s.requestHeaderTimeout ?? DEFAULTS.requestHeaderTimeout),
    keepAliveTimeoutMs: parsePositiveDuration('keepAliveTimeout', s.keepAliveTimeout ?? DEFAULTS.keepAliveTimeout),
    maxConnectionsPerClient: s.maxConnectionsPerClient ?? DEFAULTS.maxConnectionsPerClient,
    maxRequestHeaderBytes: s.maxRequestHeaderBytes ?? DEFAULTS.maxRequestHeaderBytes,
    http2MaxStreamsPerConnection: s.http2MaxStreamsPerConnection ?? DEFAULTS.http2MaxStreamsPerConnection,
    tlsMinVersion: (s.tlsMinVersion ?? DEFAULTS.tlsMinVersion) === 'VersionTLS13' ? 'TLSv1.3' : 'TLSv1.2',
    tlsCiphers: tls12CipherString(s.tlsCipherSuites),
    adminListen: s.adminListen === '' ? undefined : parseListen(s.adminListen ?? DEFAULTS.adminListen, settingLabel('adminListen')),
    reloadIntervalMs: parsePositiveDuration('reloadInterval', s.reloadInterval ?? DEFAULTS.reloadInterval),
    shutdownGraceMs: parseDuration('shutdownGrace', s.shutdownGrace ?? DEFAULTS.shutdownGrace),
    accessLog: s.accessLog === '' ? undefined : s.accessLog,
    accessLogFormat: s.accessLogFormat ?? 'json',
    logLevel: s.logLevel ?? 'info',
  };
}

/** "10.0.0.7", "10.0.0.0/8", "fd00::/8": checked here so a typo stops start-up. */
function parseAddressRange(value: string): string {
  const [address, bits, extra] = value.split('/');
  const family = address ? isIP(address) : 0;
  const prefix = bits === undefined ? undefined : Number(bits);
  const maxBits = family === 6 ? 128 : 32;
  if (!family || extra !== undefined || (prefix !== undefined && (!/^\d+$/.test(bits ?? '') || (prefix as number) > maxBits))) {
    throw new ConfigError(`${settingLabel('trustedProxies')}: "${value}" is not an IP address or CIDR (e.g. 10.0.0.0/8)`);
  }
  return value;
}

function tls12CipherString(names: string[] | undefined): string {
  try {
    return openSslCipherList(names ?? DEFAULT_TLS12_CIPHER_SUITES);
  } catch (err) {
    throw new ConfigError(`${settingLabel('tlsCipherSuites')}: ${(err as Error).message}`);
  }
}

function parseListen(value: string, flag: string): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new ConfigError(`${flag}: "${value}" is not host:port (e.g. 0.0.0.0:8443 or [::]:8443)`);
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}

function parseUpstream(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${settingLabel('upstreams')}: "${value}" is not a URL (e.g. https://10.0.0.1:6443)`);
  }
  // The identity headers are only trusted over mutual TLS; plain HTTP would send them to anyone.
  if (url.protocol !== 'https:') throw new ConfigError(`${settingLabel('upstreams')}: "${value}" must be https://`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username) {
    throw new ConfigError(`${settingLabel('upstreams')}: "${value}" must be scheme://host:port with no path, query or credentials`);
  }
  return url;
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "500ms", "30s", "5m", "1h", or a bare number of seconds. */
export function parseDuration(key: keyof RawSettings, value: string | number): number {
  if (typeof value === 'number' && value >= 0) return value * 1000;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(value).trim());
  if (!match) throw new ConfigError(`${settingLabel(key)}: "${value}" is not a duration (e.g. 500ms, 30s, 5m)`);
  return Math.round(Number(match[1]) * (DURATION_UNITS_MS[match[2] ?? 's'] ?? 1000));
}

function parsePositiveDuration(key: keyof RawSettings, value: string | number): number {
  const ms = parseDuration(key, value);
  if (ms <= 0) throw new ConfigError(`${settingLabel(key)}: must be more than 0`);
  return ms;
}

function isReadable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** "no such file", "permission denied": the part of a Node fs error a person needs. */
export function fileErrorText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory, not a file';
  return err instanceof Error ? err.message : String(err);
}
