// The real kubectl as a test client: a kubeconfig per user, isolated from ~/.kube.

import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';

export function requireKubectl(): void {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
  } catch {
    throw new Error('kubectl was not found on PATH: these tests need the real kubectl (v1.32) installed');
  }
}

export interface KubeconfigUser {
  username?: string;
  password?: string;
  /** PEM */
  clientCertificate?: string;
  clientKey?: string;
}

const b64 = (pem: string) => Buffer.from(pem).toString('base64');

/** Writes a kubeconfig in its own directory (which also holds kubectl's caches) and returns it. */
export function writeKubeconfig(server: string, caPem: string, user: KubeconfigUser): string {
  const dir = mkdtempSync(join(process.env.TMPDIR ?? '/tmp', 'kfp-kubectl-'));
  const path = join(dir, 'kubeconfig');
  const credentials: Record<string, string> = {};
  if (user.username !== undefined) credentials.username = user.username;
  if (user.password !== undefined) credentials.password = user.password;
  if (user.clientCertificate) credentials['client-certificate-data'] = b64(user.clientCertificate);
  if (user.clientKey) credentials['client-key-data'] = b64(user.clientKey);
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'proxy', cluster: { server, 'certificate-authority-data': b64(caPem) } }],
    users: [{ name: 'user', user: credentials }],
    contexts: [{ name: 'proxy', context: { cluster: 'proxy', user: 'user', namespace: 'default' } }],
    'current-context': 'proxy',
  };
  writeFileSync(path, stringify(config), { mode: 0o600 });
  return path;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs kubectl against `kubeconfig`; never throws on a non-zero exit. */
export function kubectl(kubeconfig: string, args: string[], timeoutMs = 20_000): Promise<KubectlResult> {
  const dir = join(kubeconfig, '..');
  return new Promise((resolve) => {
    execFile(
      'kubectl',
      ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args],
      // HOME keeps kubectl away from the real ~/.kube.
      { env: { ...process.env, HOME: dir, KUBECONFIG: kubeconfig }, timeout: timeoutMs },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
