// Reading the settings: from the config file, the environment and the flags, merged by one
// precedence rule (flag > environment > config file > default), validated against the table
// (settings.ts) and converted into Config once; nothing deeper reads process.env or the command
// line. Checks that involve more than one setting, and defaults computed from the machine or
// from another setting, are the named functions at the end.

import { accessSync, constants, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { ConfigError, fileErrorText } from './errors.js';
import { DEFAULTS, KUBEADM_PKI, SETTINGS, envVarName, rawSettingsSchema, settingOf, type Config, type RawSettings, type Setting } from './settings.js';
import { milliseconds } from './values.js';

/** Which source gave each setting of the last loadConfig(), so that errors name what the operator wrote. */
let settingSources: { configFile: string | undefined; fromFile: ReadonlySet<string>; fromEnv: ReadonlySet<string> } = { configFile: undefined, fromFile: new Set(), fromEnv: new Set() };

/**
 * How an error line names a setting, given as its key or flag: `--tls-cert-file` when it came from
 * the command line or a default, `KUBE_FRONT_PROXY_TLS_CERT_FILE` from the environment, and
 * `config/sidecar.yaml: tlsCertFile` from the config file (whose key is what to look for there).
 */
export function settingLabel(keyOrFlag: string): string {
  const spec = settingOf(keyOrFlag);
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

/** "500ms", "30s", "5m", "1h", or a bare number of seconds, in milliseconds; errors name the setting. */
export function parseDuration(key: keyof RawSettings, value: string | number): number {
  return milliseconds(value, settingLabel(key));
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
function coerce(spec: Setting, value: string, source: string): unknown {
  switch (spec.kind) {
    case 'list':
      return value
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean);
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

/** The merged settings as Config. The first problem found is the error line, checked in this order: each value, required settings, an auth method, then each conversion in table order. */
function resolve(merged: RawSettings): Config {
  const checked = rawSettingsSchema.safeParse(merged);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const key = (issue?.path[0] ?? '') as keyof RawSettings;
    throw new ConfigError(`${settingLabel(key)}: ${issue?.message}`);
  }
  const settings = checked.data;
  checkRequiredSettings(settings);
  settings.clientCaFile ??= kubeadmClientCa();
  requireAnAuthMethod(settings);
  const config = convertRows(settings);
  return { ...config, bcryptWorkers: config.bcryptWorkers ?? bcryptWorkersPerProcess(config.workers) };
}

/** Config before the defaults computed from other settings (their rows' defaultText says so). */
type ConfigBeforeComputedDefaults = Omit<Config, 'bcryptWorkers'> & { bcryptWorkers: number | undefined };

/** Each row's value through its conversion, in table order; a setting with no value and no default stays undefined. */
function convertRows(settings: RawSettings): ConfigBeforeComputedDefaults {
  const config: Record<string, unknown> = {};
  for (const row of SETTINGS) {
    const value = settings[row.key];
    config[row.field] = value === undefined ? undefined : (row.toConfig as Setting['toConfig'])(value, settingLabel(row.key));
  }
  // settings.ts checks at compile time that the rows' fields and types are Config's.
  return config as ConfigBeforeComputedDefaults;
}

/** The rows marked required; an empty value counts as missing (the reference config file has ""). */
function checkRequiredSettings(settings: RawSettings): void {
  for (const row of SETTINGS) {
    if ('required' in row && !settings[row.key]) throw new ConfigError(`--${row.flag}: required: ${row.required}`);
  }
}

/**
 * Client-certificate auth defaults to kubeadm's cluster CA, but only where that file is
 * readable: on a machine without it the proxy runs with basic auth alone.
 */
function kubeadmClientCa(): string | undefined {
  const path = `${KUBEADM_PKI}/ca.crt`;
  return isReadable(path) ? path : undefined;
}

/** "" turns either method off; at least one must be left. */
function requireAnAuthMethod(settings: RawSettings): void {
  if (!settings.clientCaFile && !settings.htpasswdFile) {
    throw new ConfigError('no authentication method enabled: set --htpasswd-file (basic auth) and/or --client-ca-file (client certificates)');
  }
}

/** Half the CPUs for bcrypt in all, shared out over the workers. */
function bcryptWorkersPerProcess(workers: number): number {
  return Math.max(1, Math.floor(availableParallelism() / 2 / workers));
}

function isReadable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}
