// Certificate rotation without a restart: the files behind the proxy's material are polled
// (stat, so kubeadm's rewrites and Kubernetes' symlink swaps are both seen) and SIGHUP forces a
// reload. A reload that reads a broken file keeps the old material and says so in one line.

import { unwatchFile, watchFile } from 'node:fs';
import type { FastifyBaseLogger } from 'fastify';
import { ConfigError, type Config } from './config.js';
import { loadMaterial, type Material } from './material.js';

/** Files whose change means a reload. */
export function materialFiles(config: Config): string[] {
  return [config.tlsCertFile, config.tlsPrivateKeyFile, config.clientCaFile, config.htpasswdFile, config.upstreamCaFile, config.proxyClientCertFile, config.proxyClientKeyFile].filter(
    (path): path is string => typeof path === 'string' && path !== '',
  );
}

export interface Reloader {
  /** Re-reads everything now; returns whether the new material was applied. */
  reload(cause: string): boolean;
  stop(): void;
}

export function startReloader(config: Config, apply: (next: Material) => void, logger: FastifyBaseLogger): Reloader {
  // Several files usually change together (certificate, then key): wait for the writes to settle.
  let pending: NodeJS.Timeout | undefined;
  const reload = (cause: string): boolean => {
    let next: Material;
    try {
      next = loadMaterial(config);
    } catch (err) {
      const message = err instanceof ConfigError ? err.message : String(err);
      logger.error({ cause }, `reload failed, still serving with the previous certificates and users: ${message}`);
      return false;
    }
    apply(next);
    logger.info({ cause }, 'reloaded certificates, keys and users');
    return true;
  };
  const files = [...new Set(materialFiles(config))];
  const onChange = (file: string) => () => {
    clearTimeout(pending);
    pending = setTimeout(() => reload(`${file} changed`), 200);
    pending.unref();
  };
  const listeners = files.map((file) => {
    const listener = onChange(file);
    watchFile(file, { interval: config.reloadIntervalMs, persistent: false }, listener);
    return { file, listener };
  });
  return {
    reload,
    stop() {
      clearTimeout(pending);
      for (const { file, listener } of listeners) unwatchFile(file, listener);
    },
  };
}
