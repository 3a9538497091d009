// The README's "Five minutes from nothing to kubectl through the proxy", run as written: its
// command blocks are read from README.md and fed, in order, to one bash session in a fresh
// folder, so the README cannot drift from what works. Two changes only, both stated here:
// - `npm ci && npm run build && ` is left out of the first block: `npm test` has just done both
//   (node_modules and dist/ are linked into the folder);
// - the ports 6443, 8443 and 9443 become free ones, so the walk runs beside anything else.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort } from './helpers/ports.js';
import { requireKubectl } from './helpers/kubectl.js';
import { PROJECT_ROOT } from './helpers/proxy.js';

requireKubectl();

const SECTION = '### Five minutes from nothing to kubectl through the proxy';

/** The indented code blocks of one README section, each as its lines. */
function sectionBlocks(readme: string, heading: string): string[][] {
  const start = readme.indexOf(`${heading}\n`);
  if (start === -1) throw new Error(`README.md has no section "${heading}"`);
  const next = readme.indexOf('\n#', start + heading.length);
  const lines = readme.slice(start, next === -1 ? undefined : next).split('\n');
  const blocks: string[][] = [];
  let current: string[] | undefined;
  for (const line of lines) {
    if (line.startsWith('    ')) (current ??= []).push(line.slice(4));
    else if (line.trim() === '' && current) continue;
    else if (current) {
      blocks.push(current);
      current = undefined;
    }
  }
  if (current) blocks.push(current);
  return blocks;
}

/** One bash that keeps its background jobs between blocks; each block's output and status. */
function bashSession(cwd: string) {
  const bash = spawn('bash', ['--norc', '--noprofile'], { cwd, detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, KUBECONFIG: join(cwd, 'no-such-kubeconfig') } });
  let output = '';
  bash.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  bash.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  // Aliases in a non-interactive shell, and stop at the first failing command, as a reader would.
  bash.stdin.write('shopt -s expand_aliases\nset -e\n');
  let exited = false;
  bash.once('exit', () => (exited = true));
  return {
    async run(block: string, timeoutMs: number): Promise<string> {
      const from = output.length;
      const marker = `__block_done_${Math.random().toString(36).slice(2)}__`;
      bash.stdin.write(`${block}\necho ${marker}\n`);
      const deadline = Date.now() + timeoutMs;
      while (!output.includes(marker, from)) {
        if (exited) throw new Error(`the walk stopped at this block (a command failed):\n${block}\n--- output ---\n${output.slice(from)}`);
        if (Date.now() > deadline) throw new Error(`this block did not finish within ${timeoutMs} ms:\n${block}\n--- output ---\n${output.slice(from)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return output.slice(from, output.indexOf(marker, from));
    },
    /** Ends the shell and whatever it left running (its process group: this test started it). */
    stop() {
      bash.stdin.end();
      try {
        process.kill(-(bash.pid as number), 'SIGTERM');
      } catch {
        // already gone
      }
    },
  };
}

t.test('the "Five minutes" walk runs as written and ends at kubectl auth whoami', { timeout: 180_000 }, async (t) => {
  if (!existsSync(join(PROJECT_ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does)');
  const readme = readFileSync(join(PROJECT_ROOT, 'README.md'), 'utf8');
  const blocks = sectionBlocks(readme, SECTION);
  t.ok(blocks.length >= 4, `the section has its command blocks (${blocks.length})`);
  t.match(blocks[0]?.[0], /^npm ci && npm run build && alias kfp='node dist\/cli\.js'$/, 'it starts from a fresh clone');

  const ports = new Map([
    ['6443', String(await freePort())],
    ['8443', String(await freePort())],
    ['9443', String(await freePort())],
  ]);
  const script = blocks.map((lines, index) => {
    let text = lines.join('\n').replace(/127\.0\.0\.1:(6443|8443|9443)\b/g, (_m, port: string) => `127.0.0.1:${ports.get(port)}`);
    if (index === 0) text = text.replace(/^npm ci && npm run build && /, '');
    return text;
  });

  // A fresh clone: the sources, and the installed and built parts linked in.
  const dir = mkdtempSync(join(tmpdir(), 'kfp-readme-walk-'));
  for (const entry of ['node_modules', 'dist', 'src', 'standin', 'scripts', 'test', 'package.json', 'tsconfig.json', '.gitignore']) {
    symlinkSync(join(PROJECT_ROOT, entry), join(dir, entry));
  }
  const before = new Set(readdirSync(dir));
  const session = bashSession(dir);
  t.teardown(() => {
    session.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const outputs: string[] = [];
  const started = performance.now();
  for (const block of script) outputs.push(await session.run(block, 60_000));
  const seconds = (performance.now() - started) / 1000;
  t.ok(seconds < 120, `the walk took ${seconds.toFixed(1)} s`);

  const all = outputs.join('');
  if (process.env.KFP_SHOW_WALK) t.comment(all);
  t.match(all, /\[\+\]https:\/\/127\.0\.0\.1:\d+ ok/, 'the proxy said it was ready');
  t.match(all, /Username\s+alice\n/, 'kubectl auth whoami: alice, by password');
  t.match(all, /Groups\s+\[devs ops system:authenticated\]/);
  t.match(all, /pod-0/, 'bob, by certificate, lists pods');
  t.match(all, /wrote certs\/alice\.kubeconfig \(mode 0600\)/, 'kubeconfig says what it wrote');

  // Everything it wrote is under certs/, which git ignores; every secret is 0600.
  t.same(
    readdirSync(dir).filter((name) => !before.has(name)),
    ['certs'],
    'nothing written outside certs/',
  );
  for (const secret of ['certs/users.htpasswd', 'certs/alice.kubeconfig', 'certs/bob.kubeconfig', 'certs/users/bob.key', 'certs/proxy.key', 'certs/front-proxy-client.key']) {
    t.equal(statSync(join(dir, secret)).mode & 0o777, 0o600, `${secret} is 0600`);
    t.doesNotThrow(() => execFileSync('git', ['-C', PROJECT_ROOT, 'check-ignore', '--no-index', '-q', secret]), `${secret} is ignored by git`);
  }
});
