// Certificate rotation without a restart: the files behind the proxy's material are polled
// (stat through symlinks, so kubeadm's rewrites and Kubernetes' symlink swaps are both seen) and
// SIGHUP forces a reload. A reload that reads a broken file keeps the old material and says so
// in one line.

import { statSync } from 'node:fs';
import type { FastifyBaseLogger } from 'fastify';
import { ConfigError, type Config } from '../config/index.js';
import { loadMaterial, type Material } from './material.js';

/** Files whose change means a reload. */
export function materialFiles(config: Config): string[] {
  const files = [config.tlsCertFile, config.tlsPrivateKeyFile, config.clientCaFile, config.clientCrlFile, config.htpasswdFile, config.upstreamCaFile, config.proxyClientCertFile, config.proxyClientKeyFile];
  return [...new Set(files.filter((path): path is string => typeof path === 'string' && path !== ''))];
}

/** What a file looks like on disk; any difference means it was replaced or rewritten. */
export type FileSignatures = Map<string, string>;

export function fileSignatures(files: string[]): FileSignatures {
  const signatures: FileSignatures = new Map();
  for (const file of files) {
    try {
      const s = statSync(file);
      signatures.set(file, `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`);
    } catch {
      signatures.set(file, 'missing');
    }
  }
  return signatures;
}

export interface Reloader {
  /** Re-reads everything now; returns whether the new material was applied. */
  reload(cause: string): boolean;
  stop(): void;
}

/**
 * Polls `files` against `baseline`, which the caller took *before* it read the material it is
 * serving: a change made while the proxy was starting is then still a change.
 */
export function startReloader(config: Config, baseline: FileSignatures, apply: (next: Material) => void, logger: FastifyBaseLogger): Reloader {
  const files = [...baseline.keys()];
  let known = baseline;
  const reload = (cause: string): boolean => {
    known = fileSignatures(files);
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
  // Several files usually change together (certificate, then key): a change is acted on once
  // two polls agree, so a half-written pair is not read.
  let seen: FileSignatures | undefined;
  const poll = () => {
    const now = fileSignatures(files);
    const changed = files.filter((f) => now.get(f) !== known.get(f));
    if (changed.length === 0) {
      seen = undefined;
      return;
    }
    if (seen && files.every((f) => now.get(f) === seen?.get(f))) {
      seen = undefined;
      reload(`${changed.join(', ')} changed`);
      return;
    }
    seen = now;
  };
  const timer = setInterval(poll, config.reloadIntervalMs);
  timer.unref();
  return {
    reload,
    stop: () => clearInterval(timer),
  };
}
