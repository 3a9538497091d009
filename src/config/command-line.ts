// The settings as commander options, one per row of the table (serve's, which check copies), and
// commander's answer back as loadConfig's sources.

import { InvalidArgumentError, Option, type Command } from 'commander';
import type { ConfigSources } from './load.js';
import { SETTINGS, envVarName, type RawSettings } from './settings.js';

/** The config file's own variable: it is no setting of the file. */
const CONFIG_FILE_ENV = 'KUBE_FRONT_PROXY_CONFIG';

export function addSettingOptions(command: Command): void {
  command.option('--config <file>', `YAML config file (env ${CONFIG_FILE_ENV})`);
  for (const spec of SETTINGS) {
    const help = `${spec.help} (default: ${spec.defaultText}; env ${envVarName(spec)})`;
    const option =
      spec.kind === 'boolean'
        ? new Option(`--${spec.flag} [bool]`, help).argParser(parseBooleanFlag)
        : spec.kind === 'list'
          ? new Option(`--${spec.flag} <value>`, help).argParser((v: string, previous: string[] | undefined) => [...(previous ?? []), ...splitList(v)])
          : new Option(`--${spec.flag} <value>`, help);
    command.addOption(option);
  }
}

/** What commander parsed (options named by the camelCased flag), as loadConfig takes it. */
export function configSources(options: Record<string, unknown>, env: NodeJS.ProcessEnv): ConfigSources {
  const flags: Partial<Record<keyof RawSettings, unknown>> = {};
  for (const spec of SETTINGS) {
    const value = options[camelCase(spec.flag)];
    if (value !== undefined) flags[spec.key] = value;
  }
  const configFile = (options.config as string | undefined) ?? env[CONFIG_FILE_ENV];
  return { configFile, flags, env };
}

/** List flags repeat or take commas, as kube-apiserver's do (--tls-cipher-suites a,b). */
function splitList(value: string): string[] {
  return value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
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
