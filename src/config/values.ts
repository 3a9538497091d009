// From a setting's valid raw value to the value Config holds: addresses, URLs, durations, TLS
// names. Each takes `label`, how the error line names the setting (the flag, the environment
// variable, or the config file and key: whichever the operator wrote).

import { isIP } from 'node:net';
import { openSslCipherList } from './tls-ciphers.js';
import { ConfigError } from './errors.js';

export interface ListenAddress {
  host: string;
  port: number;
}

export function parseListen(value: string, label: string): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new ConfigError(`${label}: "${value}" is not host:port (e.g. 0.0.0.0:8443 or [::]:8443)`);
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}

/** "" turns the listener off. */
export function optionalListen(value: string, label: string): ListenAddress | undefined {
  return value === '' ? undefined : parseListen(value, label);
}

/** "" turns off what the file is for (client certificates, basic auth, revocation, the log file). */
export function noneIfEmpty(path: string): string | undefined {
  return path === '' ? undefined : path;
}

export function parseUpstreams(values: string[], label: string): URL[] {
  return values.map((value) => parseUpstream(value, label));
}

function parseUpstream(value: string, label: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${label}: "${value}" is not a URL (e.g. https://10.0.0.1:6443)`);
  }
  // The identity headers are only trusted over mutual TLS; plain HTTP would send them to anyone.
  if (url.protocol !== 'https:') throw new ConfigError(`${label}: "${value}" must be https://`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username) {
    throw new ConfigError(`${label}: "${value}" must be scheme://host:port with no path, query or credentials`);
  }
  return url;
}

/** "10.0.0.7", "10.0.0.0/8", "fd00::/8": checked here so a typo stops start-up; kept as given. */
export function parseAddressRanges(values: string[], label: string): string[] {
  return values.map((value) => {
    const [address, bits, extra] = value.split('/');
    const family = address ? isIP(address) : 0;
    const prefix = bits === undefined ? undefined : Number(bits);
    const maxBits = family === 6 ? 128 : 32;
    if (!family || extra !== undefined || (prefix !== undefined && (!/^\d+$/.test(bits ?? '') || prefix > maxBits))) {
      throw new ConfigError(`${label}: "${value}" is not an IP address or CIDR (e.g. 10.0.0.0/8)`);
    }
    return value;
  });
}

/** kube-apiserver's names for TLS versions, as Node names them. */
export function tlsVersion(name: 'VersionTLS12' | 'VersionTLS13'): 'TLSv1.2' | 'TLSv1.3' {
  return name === 'VersionTLS13' ? 'TLSv1.3' : 'TLSv1.2';
}

/** IANA suite names (as kube-apiserver takes them) to the OpenSSL cipher string Node takes. */
export function tls12CipherString(names: string[], label: string): string {
  try {
    return openSslCipherList(names);
  } catch (err) {
    throw new ConfigError(`${label}: ${(err as Error).message}`);
  }
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "500ms", "30s", "5m", "1h", or a bare number of seconds; 0 is allowed (it means "none" where a row says so). */
export function milliseconds(value: string | number, label: string): number {
  if (typeof value === 'number' && value >= 0) return value * 1000;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(value).trim());
  if (!match) throw new ConfigError(`${label}: "${value}" is not a duration (e.g. 500ms, 30s, 5m)`);
  return Math.round(Number(match[1]) * (DURATION_UNITS_MS[match[2] ?? 's'] ?? 1000));
}

/** A duration that must not be 0: an interval or a timeout that would fire at once. */
export function positiveMilliseconds(value: string | number, label: string): number {
  const ms = milliseconds(value, label);
  if (ms <= 0) throw new ConfigError(`${label}: must be more than 0`);
  return ms;
}
