// Each row of the settings table (src/config/settings.ts) through each of its three sources: the
// flag (parsed by the same commander options as serve's), the environment variable and the
// config-file key give the same Config value, and flag > environment > config file > default
// holds. Driven by the table: a new row is tested without a new test (if none of the sample
// values below suits it, the test says so).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import t from 'tap';
import { SETTINGS, envVarName, loadConfig, type Config } from '../src/config/index.js';
import { addSettingOptions, configSources } from '../src/config/command-line.js';
import type { Setting, SettingKind } from '../src/config/settings.js';
import { tempDir } from './helpers/temp.js';

type Value = string | number | boolean | string[];

/** Values written as an operator would; each row uses those its validation accepts. */
const SAMPLES: Record<SettingKind, Value[]> = {
  string: ['/etc/a.pem', '/etc/b.pem', '127.0.0.1:1234', '[::1]:9999', 'round-robin', 'least-outstanding', 'VersionTLS13', 'VersionTLS12', 'audit', 'json', 'debug', 'warn'],
  list: [
    ['https://10.0.0.1:6443', 'https://10.0.0.2:6443'],
    ['https://10.0.0.3:6443'],
    ['10.0.0.0/8', 'fd00::/8'],
    ['192.168.1.1'],
    ['TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384', 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256'],
    ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
  ],
  duration: ['7s', '250ms', '3m'],
  integer: [3, 5, 2048, 4096],
  boolean: [true, false],
};

const dir = tempDir('kfp-settings-');
let files = 0;

/** Enough for start-up, less the row under test: two auth methods, so that either may be the row. */
function baseFlags(row: Setting): Record<string, unknown> {
  const base: Record<string, unknown> = { tlsCertFile: '/x/tls.crt', tlsPrivateKeyFile: '/x/tls.key', htpasswdFile: '/x/users', clientCaFile: '/x/ca.crt' };
  delete base[row.key];
  return base;
}

interface Layers {
  flag?: Value;
  env?: Value;
  file?: Value;
}

/** The row's Config value with the row set through the given sources (the other settings by flag). */
function load(row: Setting, layers: Layers): unknown {
  const argv = layers.flag === undefined ? [] : (Array.isArray(layers.flag) ? layers.flag : [layers.flag]).map((v) => `--${row.flag}=${String(v)}`);
  const command = new Command().exitOverride();
  addSettingOptions(command);
  command.parse(argv, { from: 'user' });
  const env = layers.env === undefined ? {} : { [envVarName(row)]: Array.isArray(layers.env) ? layers.env.join(',') : String(layers.env) };
  const sources = configSources(command.opts(), env);
  if (layers.file !== undefined) {
    sources.configFile = join(dir, `settings-${files++}.yaml`);
    writeFileSync(sources.configFile, `${row.key}: ${JSON.stringify(layers.file)}\n`);
  }
  const config = loadConfig({ ...sources, flags: { ...baseFlags(row), ...sources.flags } });
  return config[row.field as keyof Config];
}

/**
 * The row's Config value, as JSON (URL objects have no own properties for a deep comparison to
 * see), or the error line when loading fails.
 */
function outcome(row: Setting, layers: Layers): string {
  try {
    return JSON.stringify(load(row, layers), (_key, v: unknown) => (v instanceof URL ? v.href : v)) ?? 'undefined';
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

/** The samples this row accepts, one per distinct Config value. */
function samplesFor(row: Setting): Value[] {
  const seen = new Set<string>();
  return SAMPLES[row.kind].filter((value) => {
    const result = outcome(row, { file: value });
    if (result.startsWith('error:') || seen.has(result)) return false;
    seen.add(result);
    return true;
  });
}

t.test('each setting reads the same through its flag, environment variable and config-file key', async (t) => {
  for (const row of SETTINGS) {
    const unset = outcome(row, {});
    const value = samplesFor(row).find((v) => outcome(row, { file: v }) !== unset);
    if (value === undefined) {
      t.fail(`--${row.flag}: no sample of kind ${row.kind} is valid and not the default: add one to SAMPLES`);
      continue;
    }
    const fromFile = outcome(row, { file: value });
    t.equal(outcome(row, { flag: value }), fromFile, `--${row.flag} ${JSON.stringify(value)} gives ${row.field} as the file's ${row.key} does`);
    t.equal(outcome(row, { env: value }), fromFile, `${envVarName(row)} ${JSON.stringify(value)} gives ${row.field} as the file's ${row.key} does`);
  }
});

t.test('flag > environment > config file > default, for each setting', async (t) => {
  for (const row of SETTINGS) {
    const unset = outcome(row, {});
    if (row.default !== undefined) {
      const declared = JSON.stringify((row.toConfig as Setting['toConfig'])(row.default, `--${row.flag}`), (_key, v: unknown) => (v instanceof URL ? v.href : v));
      t.equal(unset, declared, `--${row.flag}: unset, the declared default is used`);
    } else if ('required' in row) t.match(unset, `error: --${row.flag}: required`, `--${row.flag}: unset, start-up stops`);
    else if (row.defaultText === 'none') t.equal(unset, 'undefined', `--${row.flag}: unset, ${row.field} is undefined`);
    // Each source is given a value that differs from the one below it, so that each win shows.
    const samples = samplesFor(row);
    const file = samples.find((v) => outcome(row, { file: v }) !== unset);
    const env = file === undefined ? undefined : samples.find((v) => outcome(row, { file: v }) !== outcome(row, { file }));
    if (file === undefined || env === undefined) {
      t.fail(`--${row.flag}: needs two valid samples of kind ${row.kind} that give different values: add them to SAMPLES`);
      continue;
    }
    const flag = file;
    t.not(outcome(row, { file }), unset, `--${row.flag}: the config file beats the default`);
    t.equal(outcome(row, { file, env }), outcome(row, { file: env }), `--${row.flag}: the environment beats the config file`);
    t.equal(outcome(row, { file, env, flag }), outcome(row, { file: flag }), `--${row.flag}: the flag beats the environment`);
  }
});

t.test('the table: names follow their rules and are unique, and --help shows each row', async (t) => {
  const command = new Command();
  addSettingOptions(command);
  for (const field of ['key', 'flag', 'field'] as const) {
    const names = SETTINGS.map((row) => row[field]);
    t.same(
      names.filter((name, i) => names.indexOf(name) !== i),
      [],
      `no two rows share a ${field}`,
    );
  }
  for (const row of SETTINGS) {
    t.match(row.flag, /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/, `--${row.flag} is kebab-case`);
    t.match(row.key, /^[a-z][a-zA-Z0-9]*$/, `${row.key} is camelCase`);
    t.equal(envVarName(row), `KUBE_FRONT_PROXY_${row.flag.toUpperCase().replaceAll('-', '_')}`, `--${row.flag}: its environment variable is the flag in upper snake case`);
    const option = command.options.find((o) => o.long === `--${row.flag}`);
    t.equal(option?.description, `${row.help} (default: ${row.defaultText}; env ${envVarName(row)})`, `--${row.flag} in --help`);
  }
});
