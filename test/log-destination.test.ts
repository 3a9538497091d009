// The batched log destination (src/observe/destination.ts) keeps its batch as bytes: every line,
// a string or bytes, from pino or from the traffic log, reaches the file whole, in the order it
// was written, as UTF-8, and once.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { batchedDestination } from '../src/observe/destination.js';
import { flushLogsWithin } from '../src/observe/log-flush.js';
import { tempDir } from './helpers/temp.js';

t.test('strings, bytes and pino lines arrive whole, in order, as UTF-8', async (t) => {
  const file = join(tempDir('kfp-log-destination-'), 'traffic.log');
  const destination = batchedDestination({ dest: file, append: true, mkdir: false });
  await once(destination, 'ready');
  const logger = pino({ base: null, timestamp: false }, destination);
  const expected: string[] = [];
  // Beyond one 32 KiB batch, so that more than one write is made, with lines of one, two, three and four UTF-8 bytes per character.
  for (let i = 0; i < 400; i++) {
    const text = `${i} José ✓ 𝄞 ${'x'.repeat(i % 97)}`;
    if (i % 3 === 0) {
      destination.write(`${JSON.stringify({ text })}\n`);
      expected.push(JSON.stringify({ text }));
    } else if (i % 3 === 1) {
      destination.write(Buffer.from(`${JSON.stringify({ text, bytes: true })}\n`));
      expected.push(JSON.stringify({ text, bytes: true }));
    } else {
      logger.info({ text }, 'pino');
      expected.push(JSON.stringify({ level: 30, text, msg: 'pino' }));
    }
  }
  await flushLogsWithin(destination, 5000);
  const lines = readFileSync(file, 'utf8').split('\n');
  t.equal(lines.pop(), '', 'the file ends with a whole line');
  t.same(lines, expected, 'every line once, in order, with its characters');
  destination.destroy();
});
