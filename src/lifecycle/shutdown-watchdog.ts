// The last resort of a stopping process: a small process of its own that kills it (and the
// processes given) should it still be there at a deadline. Not a timer in the process itself, nor
// a thread of it: a main thread stuck in a write that never returns runs no timer, and an exit
// stuck joining a thread-pool thread that is blocked in write(2) (stdout a blocking pipe nobody
// reads, a hung NFS traffic log) has already stopped every worker thread. Started only once
// shutdown has begun; it leaves as soon as this process exits (its stdin closes).

import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';

// Plain JavaScript for `node -e`: no loader, a few tens of ms to start.
const WATCHDOG = `
const { readFileSync } = require('node:fs');
const [killAt, parent, ...children] = process.argv.slice(1).map(Number);
const parentOf = (pid) => {
  try {
    const stat = readFileSync('/proc/' + pid + '/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
};
setTimeout(() => {
  for (const pid of children) {
    // Only while it is still the stopping process's child: its number has not been reused.
    const ppid = parentOf(pid);
    if (ppid === undefined || ppid === parent) try { process.kill(pid, 'SIGKILL'); } catch {}
  }
  try { process.kill(parent, 'SIGKILL'); } catch {}
  process.exit(0);
}, Math.max(0, killAt - Date.now()));
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
`;

/** At `killAt` (ms since the epoch), SIGKILL `children`, then this process, unless it has exited. */
export function startWatchdog(killAt: number, children: number[]): void {
  try {
    // An absolute time: the clock runs while the watchdog starts.
    const watchdog = spawn(process.execPath, ['-e', WATCHDOG, String(killAt), String(process.pid), ...children.map(String)], { stdio: ['pipe', 'ignore', 'ignore'], env: {} });
    watchdog.on('error', () => {});
    watchdog.unref();
    (watchdog.stdin as Socket | null)?.on('error', () => {});
    (watchdog.stdin as Socket | null)?.unref();
  } catch {
    // Without it the process's own deadline (shutdown.ts) still holds, unless its thread is stuck.
  }
}
