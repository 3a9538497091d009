// Child processes of the benchmark: started with their output in files (so the load generator
// spends no CPU reading their logs and a slow reader never blocks the proxy), always killed on
// exit, and sampled for CPU time through /proc.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';

export interface Child {
  name: string;
  pid: number;
  /** Throws (with the tail of its stderr) if the process has exited. */
  assertAlive(): void;
  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<ChildProcess>();

/** Kills every child on any way out: normal exit, an uncaught error, Ctrl-C, SIGTERM. */
export function installCleanup(): void {
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      process.stderr.write(`bench: ${signal}, stopping children\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  }
}

/** Spawns `node ARGS` with stdout and stderr going to `<logDir>/<name>.{out,err}`. */
export function spawnNode(name: string, args: string[], logDir: string, cwd: string): Child & { stdoutFile: string } {
  const stdoutFile = join(logDir, `${name}.out`);
  const stderrFile = join(logDir, `${name}.err`);
  const out = openSync(stdoutFile, 'w');
  const err = openSync(stderrFile, 'w');
  const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', out, err] });
  closeSync(out);
  closeSync(err);
  if (child.pid === undefined) throw new Error(`${name}: could not start node ${args.join(' ')}`);
  running.add(child);
  child.once('exit', () => running.delete(child));

  const exitInfo = (): string => {
    const tail = readFileSync(stderrFile, 'utf8').trim().split('\n').slice(-20).join('\n');
    return `${name} exited (code ${child.exitCode}, signal ${child.signalCode})${tail ? `:\n${tail}` : ''}`;
  };
  return {
    name,
    pid: child.pid,
    stdoutFile,
    assertAlive() {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(exitInfo());
    },
    async stop(graceMs = 5_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Polls a child's stdout file for the first JSON line that `match` accepts. */
export async function waitForJsonLine<T>(child: Child & { stdoutFile: string }, match: (line: Record<string, unknown>) => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    child.assertAlive();
    for (const text of readFileSync(child.stdoutFile, 'utf8').split('\n')) {
      if (!text.startsWith('{')) continue;
      const found = match(JSON.parse(text) as Record<string, unknown>);
      if (found !== undefined) return found;
    }
    await sleep(50);
  }
  throw new Error(`${child.name} did not report ready within ${timeoutMs} ms (see ${child.stdoutFile})`);
}

const CLOCK_TICKS_PER_SECOND = clockTicks();

function clockTicks(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** User + system CPU seconds of a process so far, all its threads included (bcrypt workers too). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name (which may hold spaces): state is field 3,
  // utime field 14, stime field 15 (proc(5)).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** `pid` and its descendants (the proxy's workers with --workers N > 1; bcrypt workers are threads). */
export function processTree(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const visit = (p: number): void => {
    out.push(p);
    for (const c of parents.get(p) ?? []) visit(c);
  };
  visit(pid);
  return out;
}

/** CPU seconds of a process and its live descendants (a --workers proxy's CPU is in its workers). */
export function treeCpuSeconds(pid: number): number {
  return processTree(pid).reduce((sum, p) => {
    try {
      return sum + cpuSeconds(p);
    } catch {
      return sum; // exited meanwhile
    }
  }, 0);
}

/** CPU seconds all processes on the machine have used since boot (user, nice, system, irq). */
export function machineBusySeconds(): number {
  const [, user, nice, system, , , irq, softirq] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0)) / CLOCK_TICKS_PER_SECOND;
}

/** The proxy runs from dist/, as operators run it: compile the current sources first. */
export function buildProxy(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: PROJECT_ROOT, stdio: 'inherit' });
}
