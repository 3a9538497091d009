// bcrypt is bounded twice: a fixed number of worker threads, and --bcrypt-queue-limit checks
// waiting for them. Past the limit a new password check is answered at once with 503 and
// Retry-After instead of queueing; cached logins and certificates do not queue at all. The queue
// is shared fairly between client addresses, and known clients' re-verifications go first.
import t from 'tap';
import { Agent } from 'undici';
import { basicAuth, call, proxyClient } from './helpers/clients.js';
import { waitFor } from './helpers/reload.js';
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
  let settled = 0;
  const guesses = Array.from({ length: 8 }, (_, i) => identityOf({ name: 'slow', password: `guess-${i}` }).then((res) => (settled++, { res, ms: performance.now() - started })));
  // The five shed guesses are answered at once; three checks then take ~1 s of bcrypt.
  await waitFor('the shed guesses are answered', () => settled >= 5);

  const cert = proxyClient(pki, { cert: 'user-bob' });
  t.teardown(() => cert.close());
  for (let i = 0; i < 3; i++) {
    const s = performance.now();
    t.equal((await identityOf(ALICE)).status, 200, 'a cached login is served while the queue is full');
    t.equal((await call(cert, `${proxy.url}/test/identity`)).status, 200, 'a certificate login is served while the queue is full');
    t.ok(settled < 8, `both answered while the checks were still running (${(performance.now() - s).toFixed(0)} ms)`);
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

t.test('a full queue is shared: a newcomer and a known client past the cache TTL are checked, not shed, ahead of the flood', async (t) => {
  const KNOWN: TestUser = { name: 'known', password: 'has-used-this-before', groups: [] };
  const fair = await startStack(t, {
    pki,
    users: [bcryptLine(SLOW, 12), bcryptLine(KNOWN, 12)],
    // A cache TTL shorter than one cost-12 check, so that it has passed once the flood's first check is done.
    flags: ['--bcrypt-workers', '1', '--bcrypt-queue-limit', '3', '--auth-failure-limit', '0', '--auth-cache-ttl', '100ms'],
  });
  const from = (localAddress: string) => {
    const agent = new Agent({ localAddress, connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' } });
    t.teardown(() => agent.close());
    return (user: Pick<TestUser, 'name' | 'password'>) => call(agent, `${fair.proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(user) } });
  };
  const flooder = from('127.0.0.30');
  const known = from('127.0.0.31');
  const newcomer = from('127.0.0.32');
  t.equal((await known(KNOWN)).status, 200, 'the known client logs in before the flood');

  const order: string[] = [];
  let settled = 0;
  const guess = (i: number) => flooder({ name: 'slow', password: `guess-${i}` }).then((res) => (settled++, order.push(`flood ${res.status}`), res.status));
  // 1 running, 3 waiting, 4 shed at once.
  const flood = Array.from({ length: 8 }, (_, i) => guess(i));
  await waitFor('the flood fills the queue', () => settled >= 4);
  // One check takes longer than the cache TTL: once it is done, the known client's credential must be checked again.
  await waitFor('the first check is done', () => order.includes('flood 401'), 20_000);
  // The flooder fills the queue again (one more waits, three are shed).
  flood.push(...Array.from({ length: 4 }, (_, i) => guess(8 + i)));
  await waitFor('the queue is full again', () => settled >= 8);
  const newcomerLogin = newcomer(SLOW).then((res) => (order.push('newcomer'), res.status));
  const knownAgain = known(KNOWN).then((res) => (order.push('known'), res.status));
  t.equal(await knownAgain, 200, 'the known client is checked again and let in, not shed');
  t.equal(await newcomerLogin, 200, 'the newcomer is checked and let in, not shed');
  const statuses = await Promise.all(flood);
  t.comment(`order of answers: ${order.join(', ')}`);
  t.equal(statuses.filter((s) => s === 401).length, 4, 'the flooder gave up its latest waiting check for the newcomer');
  const checked = order.map((o, i) => (o === 'flood 401' ? i : -1)).filter((i) => i >= 0);
  t.ok(order.indexOf('known') < checked.at(-2)!, "the known client was checked before the flood's waiting checks");
  t.ok(order.indexOf('newcomer') < checked.at(-1)!, "the newcomer was checked in turn, before the flood's last waiting check");
});
