// A worker of --workers N shares its primary's stdout, and with it the file's mode: a blocking
// stdout is a write that never returns once the pipe is full (a primary whose workers had just
// exited was killed by its watchdog instead of exiting). Two ways a child made it blocking, each
// checked here with the guard and without it (the second case of each shows the test can fail):
// - its start: libuv makes a child's stdio blocking. stdoutOfItsOwn() gives the child an open
//   file of its own on the same pipe (only a pipe can be opened anew);
// - its exit: Node restores the mode it found at its start. leaveStdoutModeAtExit() stops that.
// Each probe runs in a process of its own whose stdout is a pipe (a socket pair, as the tests'
// proxies have, or a shell's pipe, as a container runtime's FIFO) and reads O_NONBLOCK from
// /proc/self/fdinfo/1 before and after the child.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import t from 'tap';

const LOG_FLUSH = new URL('../src/observe/log-flush.ts', import.meta.url).href;
const NON_BLOCKING = `(parseInt(/^flags:\\s*(\\d+)/m.exec(readFileSync('/proc/self/fdinfo/1', 'utf8'))[1], 8) & 0o4000) !== 0`;

const startProbe = (guarded: boolean) => `
  import { spawnSync } from 'node:child_process';
  import { readFileSync } from 'node:fs';
  import { stdoutNeverBlocks, stdoutOfItsOwn } from '${LOG_FLUSH}';
  stdoutNeverBlocks();
  const before = ${NON_BLOCKING};
  const own = ${guarded ? 'stdoutOfItsOwn()' : 'undefined'};
  spawnSync(process.execPath, ['-e', ''], { stdio: ['ignore', own ?? 'inherit', 'ignore'] });
  process.stderr.write(JSON.stringify({ before, after: ${NON_BLOCKING}, own: own !== undefined }));
`;

// The child starts while the file is blocking (as a worker does when it gets there before its
// primary has undone the fork's blocking), makes it non-blocking, and exits when told.
const exitProbe = (guarded: boolean) => `
  import { spawn } from 'node:child_process';
  import { readFileSync } from 'node:fs';
  process.stdout._handle.setBlocking(true);
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', \`
    import { leaveStdoutModeAtExit, stdoutNeverBlocks } from '${LOG_FLUSH}';
    ${guarded ? 'leaveStdoutModeAtExit();' : ''}
    stdoutNeverBlocks();
    process.stderr.write('up');
    process.stdin.once('data', () => process.exit(0));
  \`], { stdio: ['pipe', 'inherit', 'pipe'] });
  child.stderr.once('data', () => {
    process.stdout._handle.setBlocking(false);
    const before = ${NON_BLOCKING};
    child.once('exit', () => process.stderr.write(JSON.stringify({ before, after: ${NON_BLOCKING} })));
    child.stdin.write('x');
  });
`;

interface Seen {
  before: boolean;
  after: boolean;
  own?: boolean;
}

/** Runs `probe` with its stdout a socket pair, or with `shellPipe` a pipe into cat. */
async function run(probe: string, shellPipe = false): Promise<Seen> {
  const node = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', probe];
  const child = shellPipe ? spawn('/bin/sh', ['-c', '"$@" | cat >/dev/null', 'sh', ...node], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(node[0] as string, node.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (chunk: Buffer) => (err += chunk.toString()));
  child.stdout?.resume();
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`probe exited with ${code}: ${err}`);
  return JSON.parse(err) as Seen;
}

t.test('a child started with a stdout of its own leaves this process’s stdout non-blocking', async (t) => {
  const seen = await run(startProbe(true), true);
  t.ok(seen.own, 'the pipe is opened anew');
  t.ok(seen.before, 'non-blocking before the child');
  t.ok(seen.after, 'and still after it');
});

t.test('a child started on this process’s stdout makes it blocking', async (t) => {
  const seen = await run(startProbe(false), true);
  t.ok(seen.before, 'non-blocking before the child');
  t.notOk(seen.after, 'blocking after it');
});

t.test('a child that leaves the mode alone at exit leaves this process’s stdout non-blocking', async (t) => {
  const seen = await run(exitProbe(true));
  t.ok(seen.before, 'non-blocking while the child runs');
  t.ok(seen.after, 'and still after its exit');
});

t.test('a child that does not makes it blocking at its exit', async (t) => {
  const seen = await run(exitProbe(false));
  t.ok(seen.before, 'non-blocking while the child runs');
  t.notOk(seen.after, 'blocking after its exit');
});
