// Child processes of the real control plane: each one's output goes to its own log file (read
// when something fails), and start-up waits for a state the process reports, never a sleep.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, readFileSync } from 'node:fs';

export interface ManagedProcess {
  name: string;
  child: ChildProcess;
  logFile: string;
  /** The last lines of its output, for error messages. */
  tail(lines?: number): string;
  running(): boolean;
  /** Sends `signal` and waits for the exit (SIGKILL after 10 s). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function startProcess(name: string, command: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): ManagedProcess {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  const exited = once(child, 'exit').then(() => log.end());
  child.on('error', () => undefined);
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    child,
    logFile,
    running,
    tail(lines = 20) {
      try {
        return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
    async stop(signal = 'SIGTERM') {
      if (!running()) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Polls `ready` until it resolves true; fails early if the process exits, with its log tail. */
export async function waitUntilReady(proc: ManagedProcess, what: string, ready: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.running()) throw new Error(`${proc.name} exited before ${what}:\n${proc.tail()}`);
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${proc.name}: no ${what} within ${timeoutMs / 1000} s:\n${proc.tail()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Resolves with the first stdout line matching `pattern`, or rejects if the process exits first. */
export function waitForLine(proc: ManagedProcess, pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString();
      const match = pattern.exec(buffered);
      if (match) done(() => resolve(match));
    };
    const onExit = () => done(() => reject(new Error(`${proc.name} exited before printing ${pattern}:\n${proc.tail()}`)));
    const timer = setTimeout(() => done(() => reject(new Error(`${proc.name} did not print ${pattern} within ${timeoutMs / 1000} s:\n${proc.tail()}`))), timeoutMs);
    const done = (settle: () => void) => {
      clearTimeout(timer);
      proc.child.stdout?.off('data', onData);
      proc.child.off('exit', onExit);
      settle();
    };
    proc.child.stdout?.on('data', onData);
    proc.child.once('exit', onExit);
  });
}

export { freePort } from '../helpers/ports.js';
