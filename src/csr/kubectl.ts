// The cluster is reached through the real kubectl, run as a child process with the admin's
// kubeconfig: it already speaks every kubeconfig credential form (client certificates, tokens,
// exec plugins such as cloud IAM, OIDC), which a Node client would have to re-implement. The
// price is that `user request-cert` and `user list-certs` need kubectl on PATH (any version
// that has certificates.k8s.io/v1, 1.19 on); the proxy itself never does.

import { execFile } from 'node:child_process';

export class CsrError extends Error {
  override name = 'CsrError';
}

export interface KubectlRun {
  code: number;
  stdout: string;
  stderr: string;
}

export class Kubectl {
  constructor(
    private readonly kubeconfig: string,
    private readonly binary = process.env.KUBE_FRONT_PROXY_KUBECTL ?? 'kubectl',
  ) {}

  run(args: string[], stdin?: string): Promise<KubectlRun> {
    return new Promise((resolve, reject) => {
      const child = execFile(this.binary, ['--kubeconfig', this.kubeconfig, ...args], { maxBuffer: 64 * 1024 * 1024, timeout: 60_000, env: { ...process.env, KUBECONFIG: this.kubeconfig } }, (error, stdout, stderr) => {
        if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') {
          reject(new CsrError(`${this.binary}: not found on PATH (user request-cert and list-certs run kubectl with --kubeconfig)`));
          return;
        }
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
      child.stdin?.end(stdin ?? '');
    });
  }

  /** Runs and parses JSON output; a failure is a CsrError of one line, prefixed with `what`. */
  async json<T>(what: string, args: string[], stdin?: string): Promise<T> {
    const result = await this.run([...args, '-o', 'json'], stdin);
    if (result.code !== 0) throw new CsrError(`${what}: ${kubectlMessage(result.stderr)}`);
    try {
      return JSON.parse(result.stdout) as T;
    } catch {
      throw new CsrError(`${what}: kubectl printed no JSON`);
    }
  }
}

/** kubectl's error, on one line, without its "Error from server (Reason): " prefix. */
export function kubectlMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^W\d{4} /.test(l) && !/^I\d{4} /.test(l));
  const text = (lines.length ? lines : ['kubectl failed without a message']).join(' ');
  return text.replace(/^error: /, '').replace(/^Error from server \(\w+\): /, '');
}
