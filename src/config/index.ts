// The proxy's settings. One table declares each setting (config/settings.ts); config/load.ts
// reads the flags, environment and config file by it, with one precedence rule (flag >
// environment > config file > default), and validates the result once; it is passed down from
// there and nothing deeper reads process.env or the command line.

export { ConfigError, fileErrorText } from './errors.js';
export { KUBEADM_PKI, SETTINGS, envVarName, flagName, type Config, type RawSettings } from './settings.js';
export { loadConfig, parseDuration, settingLabel, type ConfigSources } from './load.js';
export type { ListenAddress } from './values.js';
