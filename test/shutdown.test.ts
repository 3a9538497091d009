// SIGTERM always ends the process tree (issue 20, part 5). Whatever the proxy is doing when the
// signal comes (idle, a request held open past the grace, a watch, a tunnel, admin connections
// kept alive or half-closed, a stdout whose reader has gone or has stopped reading), the primary
// and every worker are gone within --shutdown-grace plus a second, with --workers 1 and 2. A
// second SIGTERM or SIGINT during the drain ends it at once, and so does a signal that arrives
// while the proxy is still starting.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import t from 'tap';
import { request } from 'undici';
import { startApiServer, type ApiServer } from '../standin/apiserver.js';
import { openWatch, proxyClient } from './helpers/clients.js';
import { createTestPki } from './helpers/pki.js';
import { cliArgs, descendants, hasExited, PROJECT_ROOT, startProxy, type ProxyProcess } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, writeUsersFile, type TapTest } from './helpers/setup.js';
import { openEchoTunnel } from './helpers/tunnel.js';

const GRACE_MS = 1000;
/** What the issue asks: the whole tree gone within the grace plus a second. */
const LIMIT_MS = GRACE_MS + 1000;
/**
 * How long a test waits before it kills what is left and fails: keeps every test bounded.
 * (KFP_GIVE_UP_EXTRA_MS=12000 shows how long a hang would last, when looking for one.)
 */
const GIVE_UP_MS = LIMIT_MS + Number(process.env.KFP_GIVE_UP_EXTRA_MS ?? 2000);

// Two dozen proxies start one after another; each start costs seconds on a loaded machine.
t.setTimeout(420_000);

const pki = await createTestPki();
const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)]);

async function standIn(t: TapTest): Promise<ApiServer> {
  const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert, clientCA: pki.pem['cluster-ca'].cert });
  t.teardown(() => apiserver.close());
  return apiserver;
}

function flags(apiserver: ApiServer, workers: number, graceMs = GRACE_MS, extra: string[] = []): string[] {
  return [...proxyFlags(pki, { upstream: apiserver.url, usersFile }), '--workers', String(workers), '--shutdown-grace', `${graceMs}ms`, '--auth-failure-limit', '0', ...extra];
}

/** Whatever is still running when the test ends is killed, so one hang does not hold the others. */
function killTreeAtEnd(t: TapTest, child: ChildProcess): void {
  const tree = new Set<number>();
  const note = () => {
    if (child.pid !== undefined) for (const pid of [child.pid, ...descendants(child.pid)]) tree.add(pid);
  };
  const timer = setInterval(note, 50);
  note();
  t.teardown(() => {
    clearInterval(timer);
    for (const pid of tree) if (!hasExited(pid)) process.kill(pid, 'SIGKILL');
  });
}

/** A proxy process (a worker), not a helper of the test's TypeScript loader (esbuild). */
function isProxyProcess(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cli.ts');
  } catch {
    return false;
  }
}

/** The proxy, and every process below it (the workers, and esbuild, which tsx runs in each). */
async function proxyFor(t: TapTest, apiserver: ApiServer, workers: number, graceMs = GRACE_MS, extra: string[] = []): Promise<{ proxy: ProxyProcess; tree: number[] }> {
  const proxy = await startProxy(flags(apiserver, workers, graceMs, extra));
  killTreeAtEnd(t, proxy.child);
  const below = descendants(proxy.child.pid as number);
  const workerPids = below.filter(isProxyProcess);
  t.equal(workerPids.length, workers === 1 ? 0 : workers, `the tree: primary ${proxy.child.pid}, workers [${workerPids.join(', ')}]`);
  return { proxy, tree: below };
}

interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** From `since` to the primary's exit event, and to the last process of the tree gone. */
  primaryMs: number;
  treeMs: number;
}

/**
 * Waits for the primary's exit event and for `others` (the processes below it, not our children:
 * no event reaches us for them, so their /proc entries are watched) to be gone. Past GIVE_UP_MS from
 * `since`, what is left is killed and reported as still running (Infinity).
 */
async function treeEnded(child: ChildProcess, others: number[], since: number): Promise<Ended> {
  const exit: Promise<[number | null, NodeJS.Signals | null]> =
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve([child.exitCode, child.signalCode]) : (once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>);
  let giveUp: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<'gave up'>((resolve) => (giveUp = setTimeout(() => resolve('gave up'), Math.max(0, since + GIVE_UP_MS - Date.now()))));
  const first = await Promise.race([exit, gaveUp]);
  let primaryMs = Date.now() - since;
  if (first === 'gave up') {
    primaryMs = Infinity;
    child.kill('SIGKILL');
  }
  const [code, signal] = await exit;
  let treeMs = primaryMs;
  for (;;) {
    const left = others.filter((pid) => !hasExited(pid));
    if (left.length === 0) break;
    if (Date.now() - since > GIVE_UP_MS) {
      for (const pid of left) process.kill(pid, 'SIGKILL');
      treeMs = Infinity;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
    treeMs = Date.now() - since;
  }
  clearTimeout(giveUp);
  return { code, signal, primaryMs, treeMs };
}

const shown = (ms: number) => (ms === Infinity ? `still running after ${GIVE_UP_MS} ms` : `${ms} ms`);

/** SIGTERM, then the whole tree must be gone within LIMIT_MS. */
async function sigtermEndsTree(t: TapTest, proxy: ProxyProcess, tree: number[], expectCode: number | null = 0): Promise<Ended> {
  const signalledAt = Date.now();
  const mark = proxy.logs.length;
  proxy.child.kill('SIGTERM');
  const ended = await treeEnded(proxy.child, tree, signalledAt);
  t.comment(`primary exited ${shown(ended.primaryMs)} after SIGTERM (code ${ended.code}, signal ${ended.signal}), the whole tree gone after ${shown(ended.treeMs)}`);
  if (expectCode !== null && ended.code !== expectCode) {
    t.comment(
      `what it logged since: ${proxy.logs
        .slice(mark)
        .map((l) => `${String(l.time).slice(11)} ${String(l.pid)} ${l.msg}`)
        .join(' | ')}`,
    );
  }
  t.ok(ended.treeMs <= LIMIT_MS, `every process gone within grace + 1 s (${shown(ended.treeMs)}, limit ${LIMIT_MS} ms)`);
  if (expectCode !== null) t.equal(ended.code, expectCode, `exit code ${expectCode}`);
  return ended;
}

/** Resolves with the first log line, from now on, that `match` accepts. */
function logLine(proxy: ProxyProcess, match: (msg: string) => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (!proxy.logs.some((l) => match(l.msg))) return;
      proxy.child.stdout?.off('data', check);
      resolve();
    };
    proxy.child.stdout?.on('data', check);
    check();
  });
}

/** A PUT whose body never ends: the stand-in echoes it as it comes, so the request stays open. */
async function requestHeldOpen(t: TapTest, proxy: ProxyProcess): Promise<void> {
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.destroy());
  const body = new Readable({ read() {} });
  body.push(Buffer.alloc(1024, 0x61));
  const res = await request(`${proxy.url}/test/echo`, { dispatcher: client, method: 'PUT', body, headers: { 'content-type': 'application/octet-stream' } });
  t.equal(res.statusCode, 200, 'the request is in flight (the echo has begun)');
  res.body.on('error', () => {});
  res.body.resume();
}

/** An HTTP/1.1 connection to the admin port with one request answered, left open. */
async function adminKeptAlive(t: TapTest, proxy: ProxyProcess): Promise<Socket> {
  const { port } = new URL(proxy.adminUrl as string);
  const socket = tcpConnect(Number(port), '127.0.0.1');
  t.teardown(() => socket.destroy());
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
  let received = '';
  await new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (!/\r\n\r\nok$/.test(received)) return;
      socket.off('data', onData);
      socket.pause();
      resolve();
    };
    socket.on('data', onData);
  });
  t.match(received, /^HTTP\/1\.1 200 /, 'the admin connection was answered and kept alive');
  t.notMatch(received, /connection: close/i);
  return socket;
}

/** About 2 MiB of request lines (the path is in each): several times what a pipe holds. */
async function fillStdout(t: TapTest, proxy: ProxyProcess): Promise<void> {
  proxy.child.stdout?.pause();
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());
  const path = `/api/v1/namespaces/default/configmaps/${'x'.repeat(16 * 1024)}`;
  for (let round = 0; round < 16; round++) {
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        const res = await request(`${proxy.url}${path}`, { dispatcher: client });
        await res.body.dump();
      }),
    );
  }
}

interface State {
  name: string;
  flags?: string[];
  before: (t: TapTest, proxy: ProxyProcess, apiserver: ApiServer) => Promise<void>;
  /** null: not checked (the process may have had to be killed). */
  expectCode?: number | null;
  atLeastGrace?: boolean;
}

const states: State[] = [
  { name: 'idle', before: async () => {} },
  {
    name: 'a request held open past the grace',
    before: (t, proxy) => requestHeldOpen(t, proxy),
    atLeastGrace: true,
  },
  {
    name: 'an open watch',
    before: async (t, proxy, apiserver) => {
      const watcher = proxyClient(pki, { cert: 'user-alice' });
      t.teardown(() => watcher.destroy());
      const watch = await openWatch(watcher, `${proxy.url}/api/v1/namespaces/default/pods?watch=true`);
      t.equal(watch.statusCode, 200, 'the watch is open');
      for (let i = 0; apiserver.openWatches() === 0 && i < 200; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      t.equal(apiserver.openWatches(), 1, 'and reached the apiserver');
    },
  },
  {
    name: 'an open tunnel',
    before: async (t, proxy) => {
      const { tunnel } = await openEchoTunnel(t, proxy.port, pki, { protocol: 'SPDY/3.1', identity: { cert: 'user-alice' } });
      t.teardown(() => tunnel.socket.destroy());
      tunnel.socket.on('error', () => {});
    },
  },
  {
    name: 'an admin connection kept alive',
    before: async (t, proxy) => {
      await adminKeptAlive(t, proxy);
    },
  },
  {
    name: 'an admin connection half-closed by its client, the answer unread',
    before: async (t, proxy) => {
      const socket = await adminKeptAlive(t, proxy);
      // A second request, then the client's FIN; nothing more is read (socket paused).
      socket.end('GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await once(socket, 'finish');
    },
  },
  {
    name: "stdout's reader gone",
    before: async (t, proxy) => {
      proxy.child.stdout?.destroy();
      // Something to write, so the proxy meets the closed pipe before the signal.
      const client = proxyClient(pki, { cert: 'user-alice' });
      t.teardown(() => client.close());
      const res = await request(`${proxy.url}/test/identity`, { dispatcher: client });
      await res.body.dump();
    },
  },
  { name: "stdout's reader alive but not reading (the pipe full)", before: fillStdout },
  {
    // The audit-format traffic log has a stdout writer of its own, which the drain flushes with
    // a synchronous write that retries for ever (src/observe/accesslog.ts): the process cannot
    // end itself, its primary or its watchdog kills it.
    name: 'stdout not read, the audit-format traffic log on it',
    flags: ['--access-log-format', 'audit'],
    before: fillStdout,
    expectCode: null,
  },
];

for (const workers of [1, 2]) {
  for (const state of states) {
    t.test(`--workers ${workers}, ${state.name}: SIGTERM ends every process within grace + 1 s`, async (t) => {
      const apiserver = await standIn(t);
      const { proxy, tree } = await proxyFor(t, apiserver, workers, GRACE_MS, state.flags);
      await state.before(t, proxy, apiserver);
      const ended = await sigtermEndsTree(t, proxy, tree, state.expectCode === undefined ? 0 : state.expectCode);
      if (state.atLeastGrace) t.ok(ended.primaryMs >= GRACE_MS - 50, `the held request was given its grace (${shown(ended.primaryMs)})`);
    });
  }

  for (const second of ['SIGTERM', 'SIGINT'] as const) {
    t.test(`--workers ${workers}: a ${second} during the drain exits at once`, async (t) => {
      const apiserver = await standIn(t);
      // A long grace, held by a request that never finishes: only the second signal ends it early.
      const { proxy, tree } = await proxyFor(t, apiserver, workers, 30_000);
      await requestHeldOpen(t, proxy);
      const draining = logLine(proxy, (msg) => msg.startsWith('shutting down'));
      proxy.child.kill('SIGTERM');
      await draining;
      t.equal(proxy.child.exitCode, null, 'the first SIGTERM drains: the request holds it');
      const signalledAt = Date.now();
      proxy.child.kill(second);
      const ended = await treeEnded(proxy.child, tree, signalledAt);
      t.comment(`primary exited ${shown(ended.primaryMs)} after the ${second} (code ${ended.code}), the whole tree gone after ${shown(ended.treeMs)}`);
      t.ok(ended.treeMs <= 1000, `every process gone within a second of the ${second} (${shown(ended.treeMs)})`);
      t.not(ended.code, 0, 'a cut-short drain does not exit 0');
    });
  }

  t.test(`--workers ${workers}: a SIGTERM during start-up ends every process`, async (t) => {
    const apiserver = await standIn(t);
    const child = spawn(process.execPath, cliArgs(['serve', '--listen', '127.0.0.1:0', ...flags(apiserver, workers)]), { cwd: PROJECT_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    killTreeAtEnd(t, child);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    // With workers, once they exist (starting, not yet ready): the primary handles signals from
    // before the first fork. Alone, at once: the signal may come before Node has loaded the proxy
    // (then it simply kills the process) or while the proxy starts. Nothing to wait on but /proc.
    await once(child, 'spawn');
    // The tree as read when the workers were seen: a second read of /proc may catch it mid-change.
    let tree = descendants(child.pid as number);
    const starting = () => tree.filter(isProxyProcess).length === workers;
    for (let i = 0; i < 2000 && workers > 1 && child.exitCode === null && !starting(); i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      tree = descendants(child.pid as number);
    }
    if (workers > 1) t.equal(tree.filter(isProxyProcess).length, workers, `signalled while its ${workers} workers start`);
    const signalledAt = Date.now();
    child.kill('SIGTERM');
    const ended = await treeEnded(child, tree, signalledAt);
    t.comment(`primary exited ${shown(ended.primaryMs)} after SIGTERM (code ${ended.code}, signal ${ended.signal}), the whole tree gone after ${shown(ended.treeMs)}; stderr: ${stderr.trim() || '(none)'}`);
    t.ok(ended.treeMs <= LIMIT_MS, `every process gone within grace + 1 s (${shown(ended.treeMs)})`);
    if (workers > 1) t.equal(ended.code, 0, 'exit code 0: stopped as asked, nothing served');
    t.equal(stderr, '', 'nothing on stderr');
  });
}
