// The real kubectl as a test client: a kubeconfig per user, isolated from ~/.kube.

import { execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { dirname, join } from 'node:path';
import { buildKubeconfig, type KubeconfigCredentials } from '../../src/pki/kubeconfig.js';
import { tempDir } from './temp.js';

export function requireKubectl(): void {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
  } catch {
    throw new Error('kubectl was not found on PATH: these tests need the real kubectl (v1.32) installed');
  }
}

/** Writes a kubeconfig for the proxy in its own directory (which also holds kubectl's caches). */
export function writeKubeconfig(server: string, caPem: string, credentials: KubeconfigCredentials): string {
  const dir = tempDir('kfp-kubectl-');
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

/** `kubectl port-forward pod/pod-0 :80`, running until stop(); resolves once it listens. */
export async function portForward(kubeconfig: string, env: Record<string, string>) {
  const dir = dirname(kubeconfig);
  const child = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', `${dir}/cache`, 'port-forward', '--address', '127.0.0.1', 'pod/pod-0', ':80'], {
    env: { ...process.env, HOME: dir, KUBECONFIG: kubeconfig, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = once(child, 'exit');
  const deadline = Date.now() + 10_000;
  let port = 0;
  while (!port) {
    port = Number(/Forwarding from 127\.0\.0\.1:(\d+) -> 80/.exec(out)?.[1] ?? 0);
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`kubectl port-forward did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Sends `payload` to a local TCP port, half-closes, and returns everything read back. */
export async function echoOverTcp(port: number, payload: Buffer): Promise<Buffer> {
  const socket = netConnect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.end(payload);
  await once(socket, 'close');
  return Buffer.concat(chunks);
}
