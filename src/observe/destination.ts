// Where log lines are written: pino's sonic-boom, in batches of bytes. With one write() per line
// a busy proxy spent ~4 µs of each request in the write system call; buffered up to 32 KiB
// (about 50 request lines) and flushed at least every 100 ms, a tail (or `kube-front-proxy logs
// -f`) still sees a line at once. A reader that stops reading (a stdout pipe nobody drains)
// cannot grow the buffer past MAX_BUFFERED_BYTES: lines beyond it are dropped, and counted.

import { pino } from 'pino';

const BATCH_BYTES = 32 * 1024;
const FLUSH_EVERY_MS = 100;
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;

/** Lines dropped because the destination was not taking them (MAX_BUFFERED_BYTES waiting). */
export let droppedLogLines = 0;

/** sonic-boom, which takes the bytes of a line as well as its text. */
export type LogDestination = Omit<ReturnType<typeof pino.destination>, 'write'> & { write(data: string | Buffer): boolean };

export function batchedDestination(options: { dest: number | string; append?: boolean; mkdir?: boolean }): LogDestination {
  const destination = pino.destination({ ...options, sync: false, minLength: BATCH_BYTES, maxWrite: 2 * BATCH_BYTES, maxLength: MAX_BUFFERED_BYTES, contentMode: 'buffer' });
  // In its text mode sonic-boom grows its batch as one string and measures that string's UTF-8
  // length on every write, which flattens it again: 5-10 µs a line at 32 KiB, on every request.
  // Its buffer mode keeps a list of lines; each line is turned into bytes once, here (pino and
  // the traffic log write strings).
  const writeBytes = destination.write.bind(destination) as unknown as (data: Buffer) => boolean;
  destination.write = (data: string | Buffer) => writeBytes(typeof data === 'string' ? Buffer.from(data) : data);
  destination.on('drop', () => droppedLogLines++);
  const timer = setInterval(() => {
    try {
      destination.flush();
    } catch {
      // not open yet, or closed: the next tick (or flushSync at exit) writes it
    }
  }, FLUSH_EVERY_MS);
  timer.unref();
  destination.once('close', () => clearInterval(timer));
  return destination;
}
