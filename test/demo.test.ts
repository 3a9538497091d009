// `npm run demo`: its banner says what its apiserver is and can do, kubectl works with the
// kubeconfigs it prints, and a second demo refuses before touching the first one's files or port.
// (The stand-in upstream here; with the real control plane built, `npm run demo` uses that.)
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { kubectl, requireKubectl } from './helpers/kubectl.js';
import { freePort } from './helpers/ports.js';
import { PROJECT_ROOT } from './helpers/proxy.js';

requireKubectl();

interface Demo {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

function startDemo(env: NodeJS.ProcessEnv): Demo {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/demo.ts'], { cwd: PROJECT_ROOT, env: { ...process.env, DEMO_UPSTREAM: 'standin', ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, output: () => output, exited };
}

async function banner(demo: Demo, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (!demo.output().includes('Ctrl-C stops it all.')) {
    if (demo.child.exitCode !== null) throw new Error(`the demo exited (${demo.child.exitCode}): ${demo.output()}`);
    if (Date.now() > deadline) throw new Error(`no banner within ${timeoutMs} ms: ${demo.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return demo.output();
}

t.test('a demo, and a second one beside it', { timeout: 120_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'kfp-demo-test-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, 'demo');
  const listen = `127.0.0.1:${await freePort()}`;
  const first = startDemo({ DEMO_DIR: dir, DEMO_LISTEN: listen });
  t.teardown(() => {
    // The demo and the proxy it started (its process group: this test started it).
    try {
      process.kill(-(first.child.pid as number), 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const text = await banner(first);
  t.match(text, /upstream: the tests' kube-apiserver stand-in at https:\/\/127\.0\.0\.1:\d+/, 'the banner names its apiserver');
  t.match(text, /not there: deployments/, 'and what it cannot do');
  t.match(text, /test\/cluster\/build\.sh/, 'and how to get a real one');

  const basic = join(dir, 'basic.kubeconfig');
  const whoami = await kubectl(basic, ['auth', 'whoami']);
  t.equal(whoami.code, 0, whoami.stderr);
  t.match(whoami.stdout, /Username\s+alice/);
  t.equal(statSync(basic).mode & 0o777, 0o600, 'the kubeconfig is 0600');
  const before = readFileSync(basic, 'utf8');

  // A second demo on the same files: refused before anything is written.
  const second = startDemo({ DEMO_DIR: dir, DEMO_LISTEN: `127.0.0.1:${await freePort()}` });
  t.equal(await second.exited, 1, 'the second demo exits 1');
  t.match(second.output(), new RegExp(`another demo \\(pid ${first.child.pid}\\) is running on .*nothing was changed`));
  t.equal(readFileSync(basic, 'utf8'), before, "the first demo's kubeconfig is unchanged");

  // Another folder, the same port: refused before its folder exists.
  const elsewhere = join(root, 'elsewhere');
  const third = startDemo({ DEMO_DIR: elsewhere, DEMO_LISTEN: listen });
  t.equal(await third.exited, 1);
  t.match(third.output(), new RegExp(`${listen.replaceAll('.', '\\.')} is in use.*nothing was changed`));
  t.notOk(existsSync(elsewhere), 'nothing written');
  t.notOk(existsSync(`${elsewhere}.lock`), 'its lock is released');

  t.equal((await kubectl(basic, ['get', 'pods'])).code, 0, 'the first demo still serves');

  // Ctrl-C in a terminal signals the whole foreground process group: the demo and its children.
  process.kill(-(first.child.pid as number), 'SIGINT');
  t.equal(await first.exited, 0, 'Ctrl-C stops it');
  t.notOk(existsSync(`${dir}.lock`), 'and releases its lock');
});
