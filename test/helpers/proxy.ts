// Runs the real proxy as a child process (from source, through tsx), the way an operator runs
// it, and reads its JSON log lines from stdout.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export interface ProxyProcess {
  url: string;
  port: number;
  /** http://127.0.0.1:PORT of the admin listener (/healthz, /readyz), if on. */
  adminUrl: string | undefined;
  child: ChildProcess;
  /** Every JSON log line so far. */
  logs: LogLine[];
  stderr(): string;
  /** Sends a signal (default SIGTERM) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function cliArgs(args: string[]): string[] {
  return ['--import', 'tsx', CLI, ...args];
}

const START_TIMEOUT_MS = 20_000;

/** Starts `kube-front-proxy serve ARGS --listen 127.0.0.1:0` and waits for its start-up line. */
export async function startProxy(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ProxyProcess> {
  const child = spawn(process.execPath, cliArgs(['serve', '--listen', '127.0.0.1:0', ...args]), {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  let stderr = '';
  let buffered = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const started = new Promise<LogLine>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) !== -1) {
        const text = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (!text.trim()) continue;
        try {
          const line = JSON.parse(text) as LogLine;
          logs.push(line);
          if (typeof line.msg === 'string' && line.msg.startsWith('listening on')) resolve(line);
        } catch {
          reject(new Error(`proxy wrote a non-JSON line to stdout: ${text}`));
        }
      }
    });
    child.once('exit', (code, signal) => {
      const why = timedOut ? `no start-up line within ${START_TIMEOUT_MS} ms (killed)` : `exited with ${code ?? signal} before listening`;
      // What it had said by then: the place start-up stopped at.
      const said = logs.map((l) => `${String(l.time ?? '').slice(11)} ${String(l.msg)}`).join(' | ');
      reject(new Error(`proxy ${why}: stderr: ${stderr.trim() || '(none)'}; stdout: ${said || '(none)'}${buffered ? ` ${buffered}` : ''}`));
    });
  });
  let timedOut = false;
  const timeout = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, START_TIMEOUT_MS);
  let line: LogLine;
  try {
    line = await started;
  } finally {
    clearTimeout(timeout);
  }
  const url = String(line.listen);
  const port = Number(new URL(url).port);
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    adminUrl: typeof line.admin === 'string' ? line.admin : undefined,
    child,
    logs,
    stderr: () => stderr,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null) return child.exitCode;
      const exited = once(child, 'exit');
      child.kill(signal);
      const [code] = (await exited) as [number | null];
      return code;
    },
  };
}

/** Runs the CLI to completion (start-up failures, --help, the operator commands), with `stdin` piped in if given. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, cliArgs(args), { cwd: PROJECT_ROOT, env: { ...process.env, ...env }, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (stdin !== undefined) child.stdin?.end(stdin);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Every process below `pid` (the workers of --workers N), read from /proc (Linux). */
export function descendants(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const children = tasks.flatMap((task) => {
    try {
      return readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
  return children.flatMap((child) => [child, ...descendants(child)]);
}

/** True once `pid` has ended: gone, or a zombie whose status nobody has collected yet. */
export function hasExited(pid: number): boolean {
  try {
    // The state is the field after the command name, which is in parentheses and may hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}
