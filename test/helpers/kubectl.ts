// The real kubectl as a test client: a kubeconfig per user, isolated from ~/.kube.

import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildKubeconfig, type KubeconfigCredentials } from '../../src/pki/kubeconfig.js';

export function requireKubectl(): void {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
  } catch {
    throw new Error('kubectl was not found on PATH: these tests need the real kubectl (v1.32) installed');
  }
}

/** Writes a kubeconfig for the proxy in its own directory (which also holds kubectl's caches). */
export function writeKubeconfig(server: string, caPem: string, credentials: KubeconfigCredentials): string {
  const dir = mkdtempSync(join(tmpdir(), 'kfp-kubectl-'));
  const path = join(dir, 'kubeconfig');
  const user = credentials.username ?? 'certificate-user';
  writeFileSync(path, buildKubeconfig({ server, certificateAuthority: caPem, user, credentials, namespace: 'default' }), { mode: 0o600 });
  return path;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  /** Written to kubectl's standard input, which is then closed. */
  stdin?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Runs kubectl against `kubeconfig`; never throws on a non-zero exit. */
export function kubectl(kubeconfig: string, args: string[], options: KubectlOptions = {}): Promise<KubectlResult> {
  const dir = join(kubeconfig, '..');
  return new Promise((resolve) => {
    const child = execFile(
      'kubectl',
      ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args],
      // HOME keeps kubectl away from the real ~/.kube.
      { env: { ...process.env, HOME: dir, KUBECONFIG: kubeconfig, ...options.env }, timeout: options.timeoutMs ?? 20_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(options.stdin ?? '');
  });
}
