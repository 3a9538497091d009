// Start-up is all or nothing: every file is checked and every port bound before any port
// serves; a port that is taken or a file that cannot be written ends start-up with exit 2 and
// one line, and no connection made meanwhile was answered. The same with --workers 2, where no
// worker serves before all are ready.
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { ConfigError } from '../src/config/index.js';
import { GatedListener, bindAll } from '../src/edge/listeners.js';
import { createTestPki } from './helpers/pki.js';
import { runCli } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, withFlag, writeUsersFile } from './helpers/setup.js';

type Outcome = 'refused' | 'reset' | 'answered';

/**
 * Connects to `port` (with a TLS handshake when `tls`) and sends a request line: 'answered' if any
 * byte at all comes back (a completed handshake counts), 'refused' or 'reset' otherwise.
 */
function probe(port: number, tls = false): Promise<Outcome> {
  return new Promise((resolve) => {
    let answered = false;
    const got = () => {
      answered = true;
      socket.destroy();
    };
    const socket = tls ? tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }, got) : connect(port, '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    socket.on('data', got);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (!answered) resolve(err.code === 'ECONNREFUSED' ? 'refused' : 'reset');
    });
    socket.once('close', () => resolve(answered ? 'answered' : 'reset'));
  });
}

async function listening(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

/** A port nobody listens on (bound once by us to find it, then let go). */
async function freePort(): Promise<number> {
  const server = createServer();
  const port = await listening(server);
  await new Promise((resolve) => server.close(resolve));
  return port;
}

t.test('a listener resets connections until it is opened, then hands them over', async (t) => {
  const listener = await GatedListener.bind({ address: { host: '127.0.0.1', port: 0 }, flag: '--listen' });
  t.teardown(() => listener.close());
  const port = listener.address().port;
  t.equal(await probe(port), 'reset', 'bound but not open: reset, no byte');
  listener.open((socket: Socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n'));
  t.equal(await probe(port), 'answered', 'open: served');
});

t.test('bindAll: when one port is taken, those bound before it are let go and one line names it', async (t) => {
  const busy = createServer();
  const busyPort = await listening(busy);
  t.teardown(() => busy.close());
  const first = await freePort();
  await t.rejects(
    bindAll([
      { address: { host: '127.0.0.1', port: first }, flag: '--listen' },
      { address: { host: '127.0.0.1', port: busyPort }, flag: '--admin-listen' },
    ]),
    new ConfigError(`--admin-listen 127.0.0.1:${busyPort}: address already in use`),
  );
  t.equal(await probe(first), 'refused', 'the first port is closed again');
});

const pki = await createTestPki();
const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)]);
const good = proxyFlags(pki, { upstream: 'https://127.0.0.1:6443', usersFile });
// Whatever reaches it, a port in use by someone else: here a server that accepts and keeps quiet.
const busy = createServer(() => {});
const busyPort = await listening(busy);
t.teardown(() => busy.close());

interface Case {
  name: string;
  workers: number;
  /** The port given the busy one; the other is probed. Undefined: both free, the user port probed. */
  taken?: '--listen' | '--admin-listen';
  flags?: string[];
  line: RegExp;
}
const busyLine = (flag: string) => new RegExp(`^kube-front-proxy: ${flag} 127\\.0\\.0\\.1:${busyPort}: address already in use$`);
const unwritable = `${pki.dir}/no-such-directory/traffic.log`;
const cases: Case[] = [1, 2].flatMap((workers) => [
  { name: `admin port taken, --workers ${workers}`, workers, taken: '--admin-listen' as const, line: busyLine('--admin-listen') },
  { name: `user port taken, --workers ${workers}`, workers, taken: '--listen' as const, line: busyLine('--listen') },
  { name: `traffic log not writable, --workers ${workers}`, workers, flags: ['--access-log', unwritable], line: /^kube-front-proxy: --access-log \S+traffic\.log: no such directory$/ },
]);

/** Starts the proxy as `c` says, probing the port it could have served until it exits. */
async function start(c: Case) {
  const other = await freePort();
  const ports = c.taken === '--listen' ? { listen: busyPort, admin: other } : c.taken === '--admin-listen' ? { listen: other, admin: busyPort } : { listen: other, admin: await freePort() };
  const flags = [...withFlag(withFlag(withFlag(good, '--workers', String(c.workers)), '--listen', `127.0.0.1:${ports.listen}`), '--admin-listen', `127.0.0.1:${ports.admin}`), ...(c.flags ?? [])];
  const outcomes: Outcome[] = [];
  let running = true;
  const result = runCli(['serve', ...flags]).finally(() => (running = false));
  // A client trying that port all through start-up (sampled every few milliseconds).
  while (running) {
    outcomes.push(await probe(other, c.taken !== '--listen'));
    await Promise.race([result, new Promise((resolve) => setTimeout(resolve, 5))]);
  }
  return { ...(await result), outcomes, other };
}

t.test('a port in use or a file that cannot be written: exit 2 with one line, and nothing answered meanwhile', async (t) => {
  // Two at a time: each is a process start (three with --workers 2).
  const results: Awaited<ReturnType<typeof start>>[] = [];
  for (let i = 0; i < cases.length; i += 2) results.push(...(await Promise.all(cases.slice(i, i + 2).map(start))));
  cases.forEach((c, i) => {
    const r = results[i]!;
    t.equal(r.code, 2, `${c.name}: exit code 2`);
    const lines = r.stderr.trimEnd().split('\n');
    t.equal(lines.length, 1, `${c.name}: one line (${r.stderr.trim()})`);
    t.match(lines[0], c.line, `${c.name}: names the setting and the problem`);
    t.equal(r.stdout, '', `${c.name}: no start-up line, no request line`);
    t.ok(r.outcomes.length > 0, `${c.name}: a client tried port ${r.other} during start-up (${r.outcomes.length} times)`);
    t.same(
      r.outcomes.filter((o) => o === 'answered'),
      [],
      `${c.name}: it was refused every time (${[...new Set(r.outcomes)].join(', ')}), never answered`,
    );
  });
});
