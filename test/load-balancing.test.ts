// Several apiservers behind one proxy: requests spread over all, an apiserver stopped under load
// costs no client request and is taken out, rejoins after it restarts; a hung one does not
// hang requests; watches on a stopped one end cleanly and come back elsewhere.
import { once } from 'node:events';
import { createServer as createTlsServer } from 'node:tls';
import t from 'tap';
import { request } from 'undici';
import { startApiServer, type ApiServer } from '../standin/apiserver.js';
import { call, proxyClient } from './helpers/clients.js';
import { createTestPki } from './helpers/pki.js';
import { pollUntil } from './helpers/raw-tls.js';
import { startProxy } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, withFlag, writeUsersFile } from './helpers/setup.js';

const pki = await createTestPki();
const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)]);
const client = proxyClient(pki, { cert: 'user-alice' });
t.teardown(() => client.close());

const HEALTH = ['--health-interval', '200ms', '--health-timeout', '500ms', '--unhealthy-threshold', '2', '--healthy-threshold', '2'];

function standIn(port = 0): Promise<ApiServer> {
  return startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert, port });
}

async function poolProxy(t: { teardown(fn: () => unknown): void }, upstreams: string[], extra: string[] = []) {
  const flags = withFlag(proxyFlags(pki, { upstream: upstreams[0] as string, usersFile }), '--upstream', undefined);
  const proxy = await startProxy([...flags, ...upstreams.flatMap((u) => ['--upstream', u]), ...HEALTH, ...extra]);
  t.teardown(() => proxy.stop());
  return proxy;
}

/** Requests each stand-in served as alice. */
function served(servers: ApiServer[], from: number[] = servers.map(() => 0)): number[] {
  return servers.map((s, i) => s.requests.slice(from[i]).filter((r) => r.user?.username === 'alice').length);
}

/** Waits until `condition` holds (checked every 20 ms), for at most `timeoutMs`; says whether it did. */
const until = (condition: () => boolean, timeoutMs: number): Promise<boolean> => pollUntil(condition, (held) => held, timeoutMs, 20);

t.test('requests spread across all apiservers', async (t) => {
  const servers = await Promise.all([standIn(), standIn(), standIn()]);
  t.teardown(() => Promise.all(servers.map((s) => s.close())));
  const proxy = await poolProxy(
    t,
    servers.map((s) => s.url),
  );
  await Promise.all(Array.from({ length: 60 }, () => call(client, `${proxy.url}/api/v1/namespaces/default/pods/pod-0`)));
  const counts = served(servers);
  t.equal(
    counts.reduce((a, b) => a + b, 0),
    60,
  );
  t.ok(
    counts.every((c) => c >= 10),
    `each apiserver served a share: ${counts.join(', ')}`,
  );
  // Host names the apiserver the request went to, as it would for a client talking to it directly.
  const hosts = servers.map((s) => [...new Set(s.requests.filter((r) => r.user?.username === 'alice').map((r) => r.rawHeaders.find(([n]) => n.toLowerCase() === 'host')?.[1]))]);
  t.same(
    hosts,
    servers.map((s) => [new URL(s.url).host]),
    'each apiserver got its own Host',
  );
  const checks = servers.map((s) => s.healthChecks.filter((r) => r.url === '/readyz' && r.user?.username === 'kube-front-proxy:health-check').length);
  t.ok(
    checks.every((c) => c > 0),
    `each got GET /readyz health checks as the health-check user: ${checks.join(', ')}`,
  );
});

t.test('one apiserver stopped under steady load: no client request fails; it rejoins after restart', async (t) => {
  const servers = await Promise.all([standIn(), standIn(), standIn()]);
  t.teardown(() => Promise.all(servers.map((s) => s.close())));
  const proxy = await poolProxy(
    t,
    servers.map((s) => s.url),
  );
  let failures = 0;
  let total = 0;
  let running = true;
  const failuresSeen: string[] = [];
  const loops = Array.from({ length: 8 }, async () => {
    while (running) {
      const res = await call(client, `${proxy.url}/api/v1/namespaces/default/pods/pod-0`).catch((err: Error) => ({ status: 0, text: err.message }));
      total++;
      if (res.status !== 200) {
        failures++;
        failuresSeen.push(`${res.status} ${res.text.slice(0, 200)}`);
      }
    }
  });
  t.ok(await until(() => served(servers).every((c) => c >= 10), 10_000), `the load reaches every apiserver: ${served(servers).join(', ')}`);
  const victim = servers[1] as ApiServer;
  const victimPort = victim.port;
  await victim.close();
  const stoppedAt = Date.now();
  const isEjection = (msg: unknown) => msg === 'upstream ejected' || msg === 'upstream failed its health checks';
  t.ok(await until(() => proxy.logs.some((l) => isEjection(l.msg)), 10_000), 'the proxy takes it out');
  const afterStop = served(servers);
  const totalAfterStop = total;
  t.ok(await until(() => total >= totalAfterStop + 200, 10_000), `the load goes on (${total - totalAfterStop} more requests)`);
  t.equal(served(servers)[1], afterStop[1] ?? -1, 'the stopped apiserver gets nothing more');
  // Restart on the same address: health checks bring it back.
  const revived = await standIn(victimPort);
  t.teardown(() => revived.close());
  const revivedAt = Date.now();
  await until(() => (served([revived])[0] ?? 0) > 0, 5000);
  running = false;
  await Promise.all(loops);
  t.equal(failures, 0, `no client-visible errors in ${total} requests (${failuresSeen.slice(0, 3).join(' | ')})`);
  t.ok((served([revived])[0] ?? 0) > 0, `it rejoined ${Date.now() - revivedAt} ms after restarting`);
  const ejected = proxy.logs.find((l) => isEjection(l.msg));
  t.ok(ejected, 'the proxy logged taking it out');
  t.ok(Date.parse(String(ejected?.time)) - stoppedAt < 1000, 'taken out within one health interval of stopping');
  // Log lines are written in batches (at most 100 ms late): the line may trail the rejoin.
  await until(() => proxy.logs.some((l) => l.msg === 'upstream healthy again'), 2000);
  t.ok(
    proxy.logs.some((l) => l.msg === 'upstream healthy again'),
    'and logged bringing it back',
  );
});

t.test('a hung apiserver does not hang requests beyond the header timeout', async (t) => {
  const good = await standIn();
  t.teardown(() => good.close());
  // Accepts TLS with the apiserver certificate, then never answers.
  const hung = createTlsServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key }, (socket) => {
    socket.on('error', () => {});
    socket.resume();
  });
  hung.listen(0, '127.0.0.1');
  await once(hung, 'listening');
  t.teardown(() => hung.close());
  const hungUrl = `https://127.0.0.1:${(hung.address() as { port: number }).port}`;
  const proxy = await poolProxy(t, [hungUrl, good.url], ['--upstream-header-timeout', '1s', '--upstream-strategy', 'round-robin']);
  const timings: number[] = [];
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) {
    const started = performance.now();
    const res = await call(client, `${proxy.url}/api/v1/namespaces/default/pods/pod-0`);
    timings.push(performance.now() - started);
    statuses.push(res.status);
  }
  t.ok(Math.max(...timings) < 2000, `slowest request ${Math.max(...timings).toFixed(0)} ms (header timeout 1 s)`);
  t.ok(
    statuses.every((s) => s === 200 || s === 504),
    `answers: ${statuses.join(',')}`,
  );
  t.equal(statuses.slice(-4).filter((s) => s === 200).length, 4, 'once the health checks have taken it out, every request succeeds');
});

t.test('a watch on a stopped apiserver ends cleanly, and a new watch lands on a healthy one', async (t) => {
  const servers = await Promise.all([standIn(), standIn()]);
  t.teardown(() => Promise.all(servers.map((s) => s.close())));
  const proxy = await poolProxy(
    t,
    servers.map((s) => s.url),
  );
  const watch = await request(`${proxy.url}/api/v1/namespaces/default/pods?watch=true`, { dispatcher: client });
  t.equal(watch.statusCode, 200);
  await until(() => servers.some((s) => s.openWatches() > 0), 5000);
  const host = servers.find((s) => s.openWatches() > 0);
  t.ok(host, 'the watch is open on one apiserver');
  let errored = false;
  const ended = new Promise<void>((resolve) => {
    watch.body.on('end', resolve).on('error', () => {
      errored = true;
      resolve();
    });
    watch.body.resume();
  });
  await host?.close();
  await ended;
  t.notOk(errored, 'the client saw the stream end, not break');
  const other = servers.find((s) => s !== host) as ApiServer;
  const again = await request(`${proxy.url}/api/v1/namespaces/default/pods?watch=true`, { dispatcher: client });
  t.equal(again.statusCode, 200, 'a new watch succeeds');
  await until(() => other.openWatches() === 1, 5000);
  t.equal(other.openWatches(), 1, 'on the healthy apiserver');
  again.body.destroy();
});

t.test('every apiserver down: an immediate 503 naming each', async (t) => {
  const servers = await Promise.all([standIn(), standIn()]);
  const urls = servers.map((s) => s.url);
  await Promise.all(servers.map((s) => s.close()));
  const proxy = await poolProxy(t, urls);
  const started = performance.now();
  const res = await call(client, `${proxy.url}/api/v1/namespaces/default/pods`);
  t.equal(res.status, 503);
  t.match(res.body, {
    kind: 'Status',
    reason: 'ServiceUnavailable',
    message: /^no healthy apiserver: https:\/\/127\.0\.0\.1:\d+ \((?:GET \/readyz failed: )?ECONNREFUSED.*\), https:\/\/127\.0\.0\.1:\d+ \((?:GET \/readyz failed: )?ECONNREFUSED.*\)$/,
  });
  // (The reason is the failed request's or, if a health check got there first, the check's.)
  t.ok(performance.now() - started < 1000, 'at once');
  const readyz = await fetch(`${proxy.adminUrl}/readyz`);
  t.equal(readyz.status, 503, 'the admin /readyz says not ready');
});

t.test('a request with a body to an apiserver gone since its last health check gets the 503 Status a GET gets, not a reset', async (t) => {
  const server = await standIn();
  // No health check between the apiserver going away and the requests: forwarding finds out.
  const proxy = await poolProxy(t, [server.url], ['--health-interval', '1h']);
  t.equal((await call(client, `${proxy.url}/api/v1/namespaces/default/pods`)).status, 200, 'served while it is up');
  await server.close();
  for (const [method, body] of [
    ['POST', Buffer.alloc(200_000, 0x61)],
    ['PUT', '{"kind":"ConfigMap"}'],
  ] as const) {
    const res = await request(`${proxy.url}/api/v1/namespaces/default/configmaps`, { dispatcher: client, method, body, headers: { 'content-type': 'application/json' } });
    t.equal(res.statusCode, 503, `${method}: 503`);
    t.match(await res.body.json(), { kind: 'Status', reason: 'ServiceUnavailable', message: /ECONNREFUSED/ }, `${method}: a Status saying why`);
  }
});
