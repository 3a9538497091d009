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

/** A sonic-boom destination (pino.destination()), as far as flushing it at exit goes. */
export interface BufferedLog {
  flush(cb?: (err?: Error) => unknown): void;
  destroy(): void;
}

/**
 * Puts stdout in non-blocking mode if it is a pipe or a socket (Node does so the first time
 * process.stdout is used; a file or a terminal is left as it is). The workers of --workers N
 * share that open file with the primary, and its mode with it: forking one makes it blocking
 * (libuv does so to a child's stdio), and so does a worker's exit (Node restores the mode it
 * found at its start). So the primary calls this again after each.
 */
export function stdoutNeverBlocks(): void {
  const stdout = process.stdout as NodeJS.WriteStream & { _handle?: { setBlocking?: (blocking: boolean) => number } };
  // Not public, but the way to it pino documents (with true); a no-op for files.
  if (stdout.isTTY !== true) stdout._handle?.setBlocking?.(false);
}

/** Writes what `logs` holds, waiting at most `budgetMs` for it (a stdout nobody reads). */
export async function flushLogsWithin(logs: BufferedLog, budgetMs: number): Promise<void> {
  if (isClosed(logs)) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    new Promise<void>((resolve) => {
      try {
        logs.flush(() => resolve());
      } catch {
        resolve();
      }
    }),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, budgetMs)))),
  ]);
  clearTimeout(timer);
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
