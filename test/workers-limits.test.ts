// --workers 2: one proxy, one set of limits. The failed-login counters (per client address and
// per user name), the "known client" exemption and --max-connections-per-client hold for the
// proxy as a whole, whichever worker a connection lands on.
//
// The primary hands connections to the workers in turn, so consecutive fresh connections land
// on alternate workers; each test checks which worker served what from the log lines' pid
// instead of assuming it.
import { connect as tcpConnect } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { Agent } from 'undici';
import { basicAuth, call } from './helpers/clients.js';
import type { LogLine, ProxyProcess } from './helpers/proxy.js';
import { ALICE, CAROL, bcryptLine, startStack } from './helpers/setup.js';

const LIMIT = 4;

/** Resolves once `count` log lines match (lines reach us through the child's stdout, batched). */
function linesOf(proxy: ProxyProcess, predicate: (line: LogLine) => boolean, count: number): Promise<LogLine[]> {
  return new Promise((resolve, reject) => {
    const stdout = proxy.child.stdout;
    const timer = setTimeout(() => {
      stdout?.off('data', look);
      reject(new Error(`${proxy.logs.filter(predicate).length} of ${count} log lines after 10 s`));
    }, 10_000);
    // Runs after the helper's own 'data' listener has parsed the chunk into proxy.logs.
    function look() {
      const found = proxy.logs.filter(predicate);
      if (found.length < count) return;
      clearTimeout(timer);
      stdout?.off('data', look);
      resolve(found);
    }
    stdout?.on('data', look);
    look();
  });
}

t.test('failed-login limits: one set of counters for both workers', async (t) => {
  const { proxy, pki } = await startStack(t, { users: [bcryptLine(ALICE), bcryptLine(CAROL)], flags: ['--workers', '2', '--auth-failure-limit', String(LIMIT), '--auth-failure-delay', '0'] });

  /** One request on a fresh connection from `localAddress`, closed afterwards: the next lands on the other worker. */
  const once = async (localAddress: string, authorization: string) => {
    const agent = new Agent({ localAddress, connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' }, connections: 1 });
    try {
      return (await call(agent, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization } })).status;
    } finally {
      await agent.close();
    }
  };
  const failuresFrom = (client: string, count: number) => linesOf(proxy, (l) => l.msg === 'authentication failed' && l.client === client, count);
  const servedFor = (client: string, count: number) => linesOf(proxy, (l) => l.msg === 'request' && l.client === client, count);

  // Alice's kubectl logs in before the attack, on one worker.
  const kubectl = '127.0.0.33';
  t.equal(await once(kubectl, basicAuth(ALICE)), 200, "alice's kubectl logs in");
  const [warm] = await servedFor(kubectl, 1);

  // The attack: guesses for alice from one address, on fresh connections (alternate workers).
  const attacker = '127.0.0.31';
  const statuses: number[] = [];
  for (let i = 0; i < LIMIT + 2; i++) statuses.push(await once(attacker, basicAuth({ name: ALICE.name, password: `guess-${i}` })));
  t.same(statuses, [...Array<number>(LIMIT).fill(401), 429, 429], `${LIMIT} wrong passwords answered 401, then 429 on both workers`);
  const failures = await failuresFrom(attacker, LIMIT);
  const workers = new Set(failures.map((l) => l.pid));
  t.equal(workers.size, 2, `the ${LIMIT} failures were counted on both workers (pids ${[...workers].join(', ')})`);

  t.same([await once(attacker, basicAuth(ALICE)), await once(attacker, basicAuth(ALICE))], [429, 429], 'the right password from the attacking address is refused on both workers');
  t.same([await once('127.0.0.34', basicAuth(ALICE)), await once('127.0.0.34', basicAuth(ALICE))], [429, 429], 'her right password from a client that never used it is refused on both workers (no oracle)');

  // Her kubectl opens new connections: one lands on the worker that verified her password, the
  // other on the worker that never saw it, which asks the primary whether the client is known.
  t.same([await once(kubectl, basicAuth(ALICE)), await once(kubectl, basicAuth(ALICE))], [200, 200], "alice's kubectl keeps working on both workers while her name is locked");
  const served = await servedFor(kubectl, 3);
  t.same(new Set(served.map((l) => l.pid)), workers, 'served by both workers');
  t.ok(
    served.slice(1).some((l) => l.pid !== warm?.pid),
    'including the one that had not verified her password',
  );

  // Per user name across addresses: carol's guesses come from a new address each time.
  const carol: number[] = [];
  for (let i = 0; i < LIMIT + 2; i++) carol.push(await once(`127.0.1.${i + 1}`, basicAuth({ name: CAROL.name, password: `guess-${i}` })));
  t.same(carol, [...Array<number>(LIMIT).fill(401), 429, 429], 'the name is locked after exactly the limit, from any address and worker');
  t.equal(await once('127.0.1.200', basicAuth(CAROL)), 429, "and carol's right password from another new address too");

  const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
  const refused = /^kube_front_proxy_authentications_total\{method="basic",outcome="rate-limited"\} (\d+)$/m.exec(metrics);
  t.equal(Number(refused?.[1]), 9, `the workers' refusals add up in /metrics (${refused?.[0]})`);
});

/** A TLS connection from `localAddress` with bob's certificate, one request answered on it, kept open. */
function holdConnection(port: number, pki: Awaited<ReturnType<typeof startStack>>['pki'], localAddress: string): Promise<{ socket: TLSSocket; status: number } | { refused: string }> {
  return new Promise((resolve) => {
    const socket = connect({ socket: tcpConnect({ host: '127.0.0.1', port, localAddress }), ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-bob'].cert, key: pki.pem['user-bob'].key, ALPNProtocols: ['http/1.1'] });
    let received = '';
    socket.once('secureConnect', () => socket.write('GET /test/identity HTTP/1.1\r\nHost: localhost\r\n\r\n'));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})/.exec(received);
      if (match && received.includes('\r\n\r\n')) resolve({ socket, status: Number(match[1]) });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ refused: err.code ?? err.message }));
    socket.once('close', () => resolve({ refused: 'closed' }));
  });
}

t.test('--max-connections-per-client counts the connections of both workers', async (t) => {
  const { proxy, pki } = await startStack(t, { users: [bcryptLine(ALICE)], flags: ['--workers', '2', '--max-connections-per-client', '2'] });
  const client = '127.0.0.41';
  const first = await holdConnection(proxy.port, pki, client);
  const second = await holdConnection(proxy.port, pki, client);
  t.teardown(() => [first, second].forEach((c) => 'socket' in c && c.socket.destroy()));
  t.match(first, { status: 200 });
  t.match(second, { status: 200 });
  const lines = await linesOf(proxy, (l) => l.msg === 'request' && l.client === client, 2);
  t.equal(new Set(lines.map((l) => l.pid)).size, 2, 'the two connections are on different workers');

  t.match(await holdConnection(proxy.port, pki, client), { refused: /ECONNRESET|closed/ }, 'a third from the same address is reset before TLS, though each worker holds only one');
  const other = await holdConnection(proxy.port, pki, '127.0.0.42');
  t.match(other, { status: 200 }, 'another address is not limited');
  if ('socket' in other) other.socket.destroy();

  const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
  t.match(metrics, /^kube_front_proxy_connections_refused_total 1$/m, 'the refusal is counted in /metrics');

  // A closed connection gives its place back (the worker tells the primary when it closes).
  if ('socket' in first) first.socket.end();
  let again: Awaited<ReturnType<typeof holdConnection>> | undefined;
  for (let attempt = 0; attempt < 100 && !(again && 'socket' in again); attempt++) again = await holdConnection(proxy.port, pki, client);
  t.match(again, { status: 200 }, 'after one closes, the address may open another');
  if (again && 'socket' in again) again.socket.destroy();
});
