// Everything the proxy reads from disk at start-up, checked before it listens: a proxy that
// starts with an unusable certificate fails later, on a user's request, far from the cause.

import { readFileSync } from 'node:fs';
import { RevocationListError, parseRevocationList, type RevocationList } from '../auth/crl.js';
import { HtpasswdError, parseHtpasswd, type UserTable } from '../auth/htpasswd.js';
import { TrustedCas } from '../auth/trusted-cas.js';
import { commonName, loadCaBundle, loadKeyPair, type KeyPair } from './certfiles.js';
import { ConfigError, fileErrorText, settingLabel, type Config } from '../config/index.js';
import type { UpstreamTls } from '../upstream/tls.js';

export interface Material {
  serving: KeyPair;
  /** CA bundle for user certificates, or undefined when certificate auth is off. */
  clientCa: Buffer | undefined;
  /** The same CAs parsed, for checking connections opened before a reload; undefined with clientCa. */
  clientCas: TrustedCas | undefined;
  /** Revoked client certificates, or undefined when no --client-crl-file is set. */
  clientCrl: RevocationList | undefined;
  /** Users for basic auth, or undefined when basic auth is off. */
  users: UserTable | undefined;
  upstream: UpstreamTls;
  /** CN of the front-proxy client certificate, for the start-up line. */
  proxyClientName: string;
}

export function loadUsers(path: string): UserTable {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${settingLabel('htpasswdFile')} ${path}: ${fileErrorText(err)}`);
  }
  try {
    return parseHtpasswd(text);
  } catch (err) {
    if (err instanceof HtpasswdError) throw new ConfigError(`${settingLabel('htpasswdFile')} ${path}: ${err.message}`);
    throw err;
  }
}

/**
 * Reads and checks --client-crl-file against the client CA bundle; throws ConfigError with one
 * line naming the flag, the file and the problem.
 */
export function loadRevocationList(path: string, clientCa: Buffer | undefined, now = new Date()): RevocationList {
  const fail = (problem: string): never => {
    throw new ConfigError(`${settingLabel('--client-crl-file')} ${path}: ${problem}`);
  };
  if (clientCa === undefined) return fail('needs --client-ca-file: CRLs are checked against the client CAs');
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    return fail(fileErrorText(err));
  }
  try {
    return parseRevocationList(data, clientCa, now);
  } catch (err) {
    if (err instanceof RevocationListError) return fail(err.message);
    throw err;
  }
}

export function loadMaterial(config: Config): Material {
  const serving = loadKeyPair({ flag: '--tls-cert-file', path: config.tlsCertFile }, { flag: '--tls-private-key-file', path: config.tlsPrivateKeyFile }, 'server');
  const clientCa = config.clientCaFile ? loadCaBundle({ flag: '--client-ca-file', path: config.clientCaFile }) : undefined;
  const clientCas = clientCa ? new TrustedCas(clientCa) : undefined;
  const clientCrl = config.clientCrlFile ? loadRevocationList(config.clientCrlFile, clientCa) : undefined;
  const users = config.htpasswdFile ? loadUsers(config.htpasswdFile) : undefined;
  const upstreamCa = loadCaBundle({ flag: '--upstream-ca-file', path: config.upstreamCaFile });
  const proxyClient = loadKeyPair({ flag: '--proxy-client-cert-file', path: config.proxyClientCertFile }, { flag: '--proxy-client-key-file', path: config.proxyClientKeyFile }, 'client');
  return {
    serving,
    clientCa,
    clientCas,
    clientCrl,
    users,
    upstream: { ca: upstreamCa, cert: proxyClient.cert, key: proxyClient.key, serverName: config.upstreamServerName },
    proxyClientName: commonName(proxyClient.leaf),
  };
}
