// A long-running kubectl (get -w, logs -f, attach) whose output the test waits on line by line.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';

export interface RunningKubectl {
  /** Everything printed to stdout so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout matches `pattern` (rejects if kubectl exits first or after `timeoutMs`). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  write(data: string): void;
  endInput(): void;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

export function spawnKubectl(kubeconfig: string, args: string[], env: NodeJS.ProcessEnv = {}): RunningKubectl {
  const dir = dirname(kubeconfig);
  const child = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], {
    env: { ...process.env, HOME: dir, KUBECONFIG: kubeconfig, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  const notify = () => waiters.forEach((w) => w());
  child.stdout.on('data', (d: Buffer) => ((out += d.toString()), notify()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = once(child, 'exit').then(([code]) => (notify(), code as number | null));
  return {
    stdout: () => out,
    stderr: () => err,
    waitFor(pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => finish(() => reject(new Error(`kubectl ${args.join(' ')}: no ${pattern} within ${timeoutMs / 1000} s; stdout: ${out}; stderr: ${err}`))), timeoutMs);
        const check = () => {
          const match = pattern.exec(out);
          if (match) finish(() => resolve(match));
          else if (child.exitCode !== null || child.signalCode !== null) finish(() => reject(new Error(`kubectl ${args.join(' ')} exited (${child.exitCode}) before ${pattern}; stdout: ${out}; stderr: ${err}`)));
        };
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        check();
      });
    },
    write: (data) => child.stdin.write(data),
    endInput: () => child.stdin.end(),
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
