// Every setting of `serve` (and `check`), declared once. A row gives the flag, the config-file
// key, the validation (kind and zod schema), the default, the --help text, and the Config field
// and value it becomes. Derived from the rows: the environment variable (KUBE_FRONT_PROXY_ and
// the flag in upper snake case), the file schema, the flag, environment and file readers
// (load.ts), the commander options (command-line.ts) and the RawSettings type.
// A new setting: one row here, one field in Config below (the compiler checks they agree), and
// the reference row in docs/configuration.md (test/config.test.ts checks it is there).

import { z } from 'zod';
import { DEFAULT_TLS12_CIPHER_SUITES } from './tls-ciphers.js';
import { milliseconds, noneIfEmpty, optionalListen, parseAddressRanges, parseListen, parseUpstreams, positiveMilliseconds, tls12CipherString, tlsVersion, type ListenAddress } from './values.js';

/** kubeadm's paths on a control-plane node: with no flags the proxy runs beside kubeadm's apiserver. */
export const KUBEADM_PKI = '/etc/kubernetes/pki';

/** How a value is written as a flag or environment variable (the config file has YAML's types). */
export type SettingKind = 'string' | 'list' | 'duration' | 'integer' | 'boolean';

/** What each kind holds once read; a row's schema may narrow it (an enum, a range), not change it. */
interface KindValue {
  string: string;
  /** Repeated flags, or comma-separated in the environment; a YAML list in the file. */
  list: string[];
  /** "500ms", "30s", "5m", "1h"; in the file also a number of seconds. */
  duration: string | number;
  integer: number;
  boolean: boolean;
}

/** A duration's Config field carries its unit: healthInterval becomes healthIntervalMs. */
type FieldName<K extends string, Kind extends SettingKind> = Kind extends 'duration' ? `${K}Ms` : K;

export interface Setting<K extends string = string, Kind extends SettingKind = SettingKind, S extends z.ZodType = z.ZodType, C = unknown, F extends string = string> {
  /** camelCase key in the config file. */
  key: K;
  /** kebab-case flag, without the leading dashes; the environment variable is derived from it. */
  flag: string;
  kind: Kind;
  /** What a value must be (for every source); zod's message is the problem in the error line. */
  schema: S;
  help: string;
  /** Used when no flag, environment variable or file sets the setting. */
  default?: z.output<S>;
  /** The default as --help shows it. */
  defaultText: string;
  /** Set for a setting the proxy cannot start without: the rest of the "required" error line. */
  required?: string;
  /** The Config field it becomes: the key, or for a duration the key + Ms, unless the row names another. */
  field: F;
  /** Config's value from a valid one (by default the same value; a duration in ms); `label` names the setting in an error line. */
  toConfig: (value: z.output<S>, label: string) => C;
}

/** A row as written in the table: field, toConfig and defaultText follow from the rest unless given. */
type SettingRow<K extends string, Kind extends SettingKind, S extends z.ZodType, C, F extends string> = Omit<Setting<K, Kind, S, C, F>, 'field' | 'toConfig' | 'defaultText'> & {
  field?: F;
  toConfig?: (value: z.output<S>, label: string) => C;
  /** Only where the default value does not say it (computed defaults, long lists). */
  defaultText?: string;
};

function setting<const K extends string, const Kind extends SettingKind, S extends z.ZodType<KindValue[Kind]>, C = Kind extends 'duration' ? number : z.output<S>, const F extends string = FieldName<K, Kind>>(
  row: SettingRow<K, Kind, S, C, F>,
): Setting<K, Kind, S, C, F> {
  const field = row.field ?? (row.kind === 'duration' ? `${row.key}Ms` : row.key);
  const sameValue = (value: z.output<S>) => value;
  const toConfig = row.toConfig ?? (row.kind === 'duration' ? milliseconds : sameValue);
  // The generic defaults above give field and C the types of these runtime defaults.
  return { ...row, field: field as F, toConfig: toConfig as Setting<K, Kind, S, C, F>['toConfig'], defaultText: row.defaultText ?? describeDefault(row) };
}

/** --help's "(default: ...)" for a row that declares no defaultText. */
function describeDefault(row: { default?: unknown; required?: string }): string {
  if (row.required) return 'required';
  if (row.default === undefined) return 'none';
  if (Array.isArray(row.default)) return row.default.length ? row.default.join(',') : 'none';
  return String(row.default);
}

/** A path; its existence and contents are checked when the files are read (material.ts). */
const file = z.string();
/** Parsed by the row's conversion, so that its error names the setting as the operator wrote it. */
const duration = z.union([z.string(), z.number()]);

export const SETTINGS = [
  setting({ key: 'listen', flag: 'listen', kind: 'string', schema: z.string(), default: '0.0.0.0:8443', toConfig: parseListen, help: 'host:port of the user-facing HTTPS listener' }),
  setting({
    key: 'tlsCertFile',
    flag: 'tls-cert-file',
    kind: 'string',
    schema: file,
    required: "the proxy's serving certificate (see `kube-front-proxy serve --help`)",
    help: "the proxy's serving certificate (PEM; may include intermediates)",
  }),
  setting({ key: 'tlsPrivateKeyFile', flag: 'tls-private-key-file', kind: 'string', schema: file, required: "the serving certificate's key", help: "the serving certificate's private key (PEM)" }),
  // Computed default: kubeadmClientCa() in load.ts.
  setting({
    key: 'clientCaFile',
    flag: 'client-ca-file',
    kind: 'string',
    schema: file,
    defaultText: `${KUBEADM_PKI}/ca.crt if readable`,
    toConfig: noneIfEmpty,
    help: 'CA bundle for user client certificates; enables client-certificate auth',
  }),
  setting({
    key: 'clientCrlFile',
    flag: 'client-crl-file',
    kind: 'string',
    schema: file,
    toConfig: noneIfEmpty,
    help: 'certificate revocation lists (PEM or DER; one CRL per issuing CA); a client certificate listed by its issuer is refused',
  }),
  setting({ key: 'htpasswdFile', flag: 'htpasswd-file', kind: 'string', schema: file, toConfig: noneIfEmpty, help: 'users for basic auth (htpasswd bcrypt lines, optional third field: groups); enables basic auth' }),
  setting({ key: 'upstreams', flag: 'upstream', kind: 'list', schema: z.array(z.string()).min(1), default: ['https://127.0.0.1:6443'], toConfig: parseUpstreams, help: 'kube-apiserver URL (repeatable; env and file take a list)' }),
  setting({ key: 'upstreamCaFile', flag: 'upstream-ca-file', kind: 'string', schema: file, default: `${KUBEADM_PKI}/ca.crt`, help: "CA that signed the apiserver's serving certificate" }),
  setting({ key: 'upstreamServerName', flag: 'upstream-server-name', kind: 'string', schema: z.string().min(1), default: 'kubernetes', help: "name checked against the apiserver's certificate (SNI and verification)" }),
  setting({ key: 'proxyClientCertFile', flag: 'proxy-client-cert-file', kind: 'string', schema: file, default: `${KUBEADM_PKI}/front-proxy-client.crt`, help: 'front-proxy client certificate presented to the apiserver' }),
  setting({ key: 'proxyClientKeyFile', flag: 'proxy-client-key-file', kind: 'string', schema: file, default: `${KUBEADM_PKI}/front-proxy-client.key`, help: 'front-proxy client key' }),
  setting({
    key: 'upstreamStrategy',
    flag: 'upstream-strategy',
    kind: 'string',
    schema: z.enum(['least-outstanding', 'round-robin']),
    default: 'least-outstanding',
    help: 'how requests are spread over upstreams: least-outstanding (round-robin among equals) or round-robin',
  }),
  setting({ key: 'healthInterval', flag: 'health-interval', kind: 'duration', schema: duration, default: '5s', toConfig: positiveMilliseconds, help: 'how often each upstream gets GET /readyz' }),
  setting({ key: 'healthTimeout', flag: 'health-timeout', kind: 'duration', schema: duration, default: '2s', toConfig: positiveMilliseconds, help: 'how long a health check may take' }),
  setting({ key: 'unhealthyThreshold', flag: 'unhealthy-threshold', kind: 'integer', schema: z.number().int().min(1), default: 2, help: 'consecutive failed checks that take an upstream out' }),
  setting({ key: 'healthyThreshold', flag: 'healthy-threshold', kind: 'integer', schema: z.number().int().min(1), default: 2, help: 'consecutive passed checks that bring it back' }),
  setting({
    key: 'upstreamHeaderTimeout',
    flag: 'upstream-header-timeout',
    kind: 'duration',
    schema: duration,
    default: 0,
    help: "longest wait for the apiserver's response headers (0 = none); never limits a response body, so watches and logs -f are not cut",
  }),
  setting({ key: 'upstreamHttp2', flag: 'upstream-http2', kind: 'boolean', schema: z.boolean(), default: true, help: 'carry watches and log follows to the apiserver over HTTP/2 (multiplexed); false: one HTTP/1.1 connection each' }),
  setting({ key: 'allowImpersonation', flag: 'allow-impersonation', kind: 'boolean', schema: z.boolean(), default: true, help: 'pass Impersonate-* headers on for the apiserver to authorize against the user; false drops them' }),
  setting({
    key: 'tokenPassthrough',
    flag: 'token-passthrough',
    kind: 'boolean',
    schema: z.boolean(),
    default: false,
    help: 'forward a request that has Authorization: Bearer (or a WebSocket bearer subprotocol) and no client certificate or password to the apiserver as it is, for the apiserver to authenticate (ServiceAccount tokens); sent over a connection without the front-proxy certificate and with no X-Remote-* headers',
  }),
  setting({ key: 'authCacheTtl', flag: 'auth-cache-ttl', kind: 'duration', schema: duration, default: '60s', help: 'how long a verified password is trusted before bcrypt runs again' }),
  setting({ key: 'authCacheSize', flag: 'auth-cache-size', kind: 'integer', schema: z.number().int().min(0), default: 10_000, help: 'most verified credentials kept' }),
  // One process by default: beside the apiserver (a sidecar) a second one costs 1.2-1.9x the CPU
  // per request and lowers throughput (docs/performance.md); one carries several apiservers' load.
  setting({
    key: 'workers',
    flag: 'workers',
    kind: 'integer',
    schema: z.number().int().min(1).max(64),
    default: 1,
    help: 'proxy processes sharing the listener (1 = a single process); more only on a host whose cores the proxy has to itself',
  }),
  // Computed default: bcryptWorkersPerProcess() in load.ts.
  setting({
    key: 'bcryptWorkers',
    flag: 'bcrypt-workers',
    kind: 'integer',
    schema: z.number().int().min(1).max(64),
    defaultText: 'half the CPUs shared over the workers, at least 1',
    help: 'threads per proxy process that run bcrypt (bounds the CPU a password flood can take)',
  }),
  setting({
    key: 'bcryptQueueLimit',
    flag: 'bcrypt-queue-limit',
    kind: 'integer',
    schema: z.number().int().min(1),
    default: 1024,
    help: 'password checks that may wait for a bcrypt worker; beyond that, new logins get 503 (cached logins and certificates are unaffected)',
  }),
  setting({
    key: 'authFailureLimit',
    flag: 'auth-failure-limit',
    kind: 'integer',
    schema: z.number().int().min(0),
    default: 10,
    help: 'failed logins allowed per client address, and per user name, within --auth-failure-window; then 429 until the window passes (0 = no limit)',
  }),
  setting({ key: 'authFailureWindow', flag: 'auth-failure-window', kind: 'duration', schema: duration, default: '1m', toConfig: positiveMilliseconds, help: 'the period failed logins are counted over' }),
  setting({
    key: 'authFailureDelay',
    flag: 'auth-failure-delay',
    kind: 'duration',
    schema: duration,
    default: '1s',
    help: 'how long a login refused by the limits waits for its 429: a guessing client gets one answer per connection per delay, not thousands a second',
  }),
  setting({
    key: 'trustedProxies',
    flag: 'trusted-proxies',
    kind: 'list',
    schema: z.array(z.string()),
    default: [],
    toConfig: parseAddressRanges,
    help: 'addresses or CIDRs of load balancers in front of the proxy: only from these peers is X-Forwarded-For believed',
  }),
  setting({
    key: 'requestHeaderTimeout',
    flag: 'request-header-timeout',
    kind: 'duration',
    schema: duration,
    default: '10s',
    toConfig: positiveMilliseconds,
    help: "longest a client may take for the TLS handshake and for each request's headers",
  }),
  setting({ key: 'keepAliveTimeout', flag: 'keep-alive-timeout', kind: 'duration', schema: duration, default: '90s', toConfig: positiveMilliseconds, help: 'an idle keep-alive client connection is closed after this' }),
  setting({
    key: 'maxConnectionsPerClient',
    flag: 'max-connections-per-client',
    kind: 'integer',
    schema: z.number().int().min(0),
    default: 256,
    help: 'open connections one client address may hold; trusted proxies are exempt (0 = no limit)',
  }),
  setting({
    key: 'maxRequestHeaderBytes',
    flag: 'max-request-header-bytes',
    kind: 'integer',
    schema: z
      .number()
      .int()
      .min(1024)
      .max(1024 * 1024),
    default: 32 * 1024,
    help: 'largest request header block accepted; larger gets 431',
  }),
  setting({
    key: 'http2MaxStreamsPerConnection',
    flag: 'http2-max-streams-per-connection',
    kind: 'integer',
    schema: z.number().int().min(1),
    default: 1000,
    help: "concurrent HTTP/2 streams one client connection may open (each watch holds one), as kube-apiserver's flag of the same name",
  }),
  setting({
    key: 'tlsMinVersion',
    flag: 'tls-min-version',
    kind: 'string',
    schema: z.enum(['VersionTLS12', 'VersionTLS13']),
    default: 'VersionTLS12',
    toConfig: tlsVersion,
    help: 'oldest TLS version offered to clients: VersionTLS12 or VersionTLS13',
  }),
  setting({
    key: 'tlsCipherSuites',
    flag: 'tls-cipher-suites',
    kind: 'list',
    schema: z.array(z.string()).min(1),
    default: [...DEFAULT_TLS12_CIPHER_SUITES],
    defaultText: 'ECDHE with AES-GCM or ChaCha20-Poly1305',
    field: 'tlsCiphers',
    toConfig: tls12CipherString,
    help: 'TLS 1.2 cipher suites, IANA names as kube-apiserver takes them (TLS 1.3 suites are always on)',
  }),
  setting({ key: 'adminListen', flag: 'admin-listen', kind: 'string', schema: z.string(), default: '127.0.0.1:9443', toConfig: optionalListen, help: 'host:port of the plain-HTTP admin listener (/healthz, /readyz); "" turns it off' }),
  setting({
    key: 'reloadInterval',
    flag: 'reload-interval',
    kind: 'duration',
    schema: duration,
    default: '2s',
    toConfig: positiveMilliseconds,
    help: 'how often certificate, key and users files are checked for changes (SIGHUP reloads at once)',
  }),
  setting({ key: 'shutdownGrace', flag: 'shutdown-grace', kind: 'duration', schema: duration, default: '30s', help: 'on SIGTERM/SIGINT, how long in-flight requests may take to finish' }),
  setting({
    key: 'accessLog',
    flag: 'access-log',
    kind: 'string',
    schema: file,
    defaultText: 'stdout',
    toConfig: noneIfEmpty,
    help: 'file the traffic log is appended to (reopened on SIGUSR1, for logrotate); default: stdout with the other logs',
  }),
  setting({
    key: 'accessLogFormat',
    flag: 'access-log-format',
    kind: 'string',
    schema: z.enum(['json', 'audit']),
    default: 'json',
    help: 'json (one line per request, with the other logs) or audit (Kubernetes audit.k8s.io/v1 Events, level Metadata)',
  }),
  setting({ key: 'logLevel', flag: 'log-level', kind: 'string', schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']), default: 'info', help: 'fatal, error, warn, info, debug or trace' }),
] as const;

type SettingOfTable = (typeof SETTINGS)[number];
export type SettingKey = SettingOfTable['key'];

/** What a config file, the environment or the flags may set (all optional, before defaults). */
export const rawSettingsSchema = z
  .object(Object.fromEntries(SETTINGS.map((row) => [row.key, row.schema])) as { [R in SettingOfTable as R['key']]: R['schema'] })
  .partial()
  .strict();

export type RawSettings = z.infer<typeof rawSettingsSchema>;

/** The declared defaults (computed ones are filled in by load.ts). */
export const DEFAULTS: RawSettings = Object.fromEntries(SETTINGS.flatMap((row) => (row.default === undefined ? [] : [[row.key, row.default]])));

export function envVarName(spec: { flag: string }): string {
  return `KUBE_FRONT_PROXY_${spec.flag.replaceAll('-', '_').toUpperCase()}`;
}

export function flagName(key: keyof RawSettings): string {
  return `--${SETTINGS.find((s) => s.key === key)?.flag ?? key}`;
}

export function settingOf(keyOrFlag: string): Setting | undefined {
  return SETTINGS.find((s) => s.key === keyOrFlag || `--${s.flag}` === keyOrFlag);
}

/** The settings as the proxy uses them: validated, defaults applied, converted (durations in ms). */
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

// Config is written out for its comments; this keeps it true to the table. Each row's field must
// be a Config field of the type its toConfig returns, and each Config field must have a row.
// (Whether a field may be undefined is the loader's business: defaults, required, computed.)
type ConfigOfTable = { [R in SettingOfTable as R['field']]: NonNullable<ReturnType<R['toConfig']>> };
type Defined<T> = { [K in keyof T]: NonNullable<T[K]> };
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const configMatchesTable: Same<Defined<Config>, ConfigOfTable> = true;
void configMatchesTable;
