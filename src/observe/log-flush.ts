// The log lines on stdout must never keep a stopping process alive. Two ways they did:
//
// - A write to a blocking pipe whose reader has stopped reading (a harness that read the start-up
//   line and no more) never returns. Done on a thread-pool thread, that thread cannot be joined
//   when the process exits, so process.exit() itself hangs: primaries stayed up for 30 minutes,
//   deaf to SIGTERM, their ports still bound.
// - sonic-boom's flushSync(), which pino runs at exit, retries for ever: every 100 ms on EAGAIN
//   (a full non-blocking pipe), and also on EPIPE (the reader gone) when no earlier write had met
//   the closed pipe yet.
//
// So stdout is non-blocking, and the last lines are written asynchronously within a bound; what
// cannot be written by then is dropped.

import { closeSync, constants, fstatSync, openSync } from 'node:fs';

/** A sonic-boom destination (pino.destination()), as far as flushing it at exit goes. */
export interface BufferedLog {
  flush(cb?: (err?: Error) => unknown): void;
  destroy(): void;
}

/**
 * Puts stdout in non-blocking mode if it is a pipe or a socket (Node does so the first time
 * process.stdout is used; a file or a terminal is left as it is). The workers of --workers N
 * share that open file with the primary, and its mode with it, unless stdoutOfItsOwn() gave them
 * one of their own: forking one makes it blocking (libuv does so to a child's stdio), and so may a
 * worker's exit (see leaveStdoutModeAtExit()). So the primary calls this again after each.
 */
export function stdoutNeverBlocks(): void {
  const stdout = process.stdout as NodeJS.WriteStream & { _handle?: { setBlocking?: (blocking: boolean) => number } };
  // Not public, but the way to it pino documents (with true); a no-op for files.
  if (stdout.isTTY !== true) stdout._handle?.setBlocking?.(false);
}

/**
 * For a child process (a worker of --workers N): stdout opened anew when it is a pipe, so that the
 * child gets an open file of its own on the same pipe, and nothing it does to that file's mode
 * (libuv makes a child's stdio blocking; Node restores at exit the mode it found at its start)
 * reaches this process's stdout, which a write would then block on when the pipe is full. Linux
 * opens a pipe again through /proc; non-blocking, so that a pipe without a reader fails (ENXIO)
 * instead of waiting for one. undefined where that cannot be done (a socket, a file, a terminal,
 * no /proc): the child then shares this process's stdout, and stdoutNeverBlocks() after its fork
 * and its exit is what keeps it non-blocking.
 */
export function stdoutOfItsOwn(): number | undefined {
  try {
    if (!fstatSync(1).isFIFO()) return undefined;
    return openSync('/proc/self/fd/1', constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
}

/**
 * For a worker, whose stdout may be its primary's open file and so share its mode: Node restores
 * at exit the mode fd 1 had at its start, which is blocking when the worker started before its
 * primary had made the file non-blocking again after the fork; the primary's next write on a full
 * pipe then never returns. Node leaves the mode alone when fd 1 is no longer open by then
 * (ResetStdio in node.cc), so the worker's last act is to close it. Registered after the logger's
 * destination, whose own exit hook must run first.
 */
export function leaveStdoutModeAtExit(): void {
  process.on('exit', () => {
    try {
      closeSync(1);
    } catch {
      // not open
    }
  });
}

/**
 * Writes what `logs` holds, waiting at most `budgetMs` for it (a stdout nobody reads). One
 * flush() is not enough: sonic-boom calls back once the write in progress is done, and a write
 * leaves what is under its batch size (32 KiB) for later; so it flushes until nothing is left.
 */
export async function flushLogsWithin(logs: BufferedLog, budgetMs: number): Promise<void> {
  const deadline = performance.now() + Math.max(0, budgetMs);
  while (!isClosed(logs)) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => {
        try {
          logs.flush(() => resolve());
        } catch {
          resolve();
        }
      }),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - performance.now())))),
    ]);
    clearTimeout(timer);
    if (unwritten(logs) === 0 || performance.now() >= deadline) return;
  }
}

/** Bytes sonic-boom holds that are not written yet (its own count; 0 for anything else). */
function unwritten(logs: BufferedLog): number {
  const held = (logs as BufferedLog & { _len?: unknown })._len;
  return typeof held === 'number' ? held : 0;
}

/**
 * Drops what is still unwritten, so that nothing at exit (pino's exit hook) tries again with a
 * synchronous write. Only just before process.exit(): a line logged after this would throw.
 */
export function closeLogs(logs: BufferedLog): void {
  if (isClosed(logs)) return;
  try {
    logs.destroy();
  } catch {
    // closed meanwhile
  }
}

function isClosed(logs: BufferedLog): boolean {
  return (logs as BufferedLog & { destroyed?: boolean }).destroyed === true;
}
