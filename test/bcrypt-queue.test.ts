// bcrypt is bounded twice: a fixed number of worker threads, and --bcrypt-queue-limit checks
// waiting for them. Past the limit a new password check is answered at once with 503 and
// Retry-After instead of queueing; cached logins and certificates do not queue at all.
import t from 'tap';
import { basicAuth, call, proxyClient } from './helpers/clients.js';
import { ALICE, bcryptLine, startStack, type TestUser } from './helpers/setup.js';

// Cost 12: ~300-400 ms of CPU per compare here, so three guesses fill one worker and a queue of 2.
const SLOW: TestUser = { name: 'slow', password: 'expensive-to-check', groups: [] };

const { apiserver, pki, proxy } = await startStack(t, {
  users: [bcryptLine(ALICE), bcryptLine(SLOW, 12)],
  // Failure limits off: this test is about the queue, not about guess counting.
  flags: ['--bcrypt-workers', '1', '--bcrypt-queue-limit', '2', '--auth-failure-limit', '0'],
});
const client = proxyClient(pki);
t.teardown(() => client.close());

const identityOf = (user: Pick<TestUser, 'name' | 'password'>) => call(client, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(user) } });

t.test('a full queue answers 503 with Retry-After at once; cached and certificate users keep flowing', async (t) => {
  t.equal((await identityOf(ALICE)).status, 200, 'alice logs in first (her credential is now cached)');
  const forwardedBefore = apiserver.requests.length;

  const started = performance.now();
  const guesses = Array.from({ length: 8 }, (_, i) => identityOf({ name: 'slow', password: `guess-${i}` }).then((res) => ({ res, ms: performance.now() - started })));
  await new Promise((resolve) => setTimeout(resolve, 50));

  const cert = proxyClient(pki, { cert: 'user-bob' });
  t.teardown(() => cert.close());
  for (let i = 0; i < 3; i++) {
    const s = performance.now();
    t.equal((await identityOf(ALICE)).status, 200, 'a cached login is served while the queue is full');
    t.equal((await call(cert, `${proxy.url}/test/identity`)).status, 200, 'a certificate login is served while the queue is full');
    t.ok(performance.now() - s < 300, `both answered without waiting for bcrypt (${(performance.now() - s).toFixed(0)} ms)`);
  }

  const results = await Promise.all(guesses);
  const shed = results.filter(({ res }) => res.status === 503);
  const checked = results.filter(({ res }) => res.status === 401);
  t.equal(shed.length + checked.length, 8, 'every guess got 401 (checked) or 503 (shed)');
  t.equal(checked.length, 3, 'one running plus two queued were checked');
  t.equal(shed.length, 5, 'the rest were shed');
  for (const { res, ms } of shed) {
    t.match(res.body, { kind: 'Status', reason: 'ServiceUnavailable', code: 503 }, 'a shed login gets a Status');
    t.equal(res.headers['retry-after'], '1', 'with Retry-After');
    t.ok(ms < 300, `shed at once (${ms.toFixed(0)} ms), not after the queue drained`);
  }
  const forwarded = apiserver.requests.slice(forwardedBefore).filter((r) => r.user?.username === 'slow');
  t.equal(forwarded.length, 0, 'no guess reached the apiserver');
});
