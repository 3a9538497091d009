// The upstream pool on its own: balancing, passive ejection, health thresholds and the errors a
// request gets when no apiserver is left. No network: the health check is a function of the test.
import t from 'tap';
import { pino } from 'pino';
import { NoHealthyUpstreamError, ProxyIdentityRefusedError } from '../src/upstream/failures.js';
import { UpstreamPool, type BalancingStrategy, type HealthFailure, type HealthPolicy, type UpstreamTarget } from '../src/upstream/pool.js';

const ORIGINS = ['https://a.test:6443', 'https://b.test:6443', 'https://c.test:6443'];

interface LogLine {
  level: number;
  msg: string;
  upstream?: string;
  reason?: string;
}

/** A pool over `count` upstreams whose health checks answer what `verdicts` holds for each origin (healthy when absent). */
function poolOf(count: number, strategy: BalancingStrategy, policy: Partial<HealthPolicy> = {}) {
  const verdicts = new Map<string, HealthFailure | Error>();
  const checked: string[] = [];
  const lines: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  const check = async (target: UpstreamTarget): Promise<HealthFailure | undefined> => {
    checked.push(target.origin);
    const verdict = verdicts.get(target.origin);
    if (verdict instanceof Error) throw verdict;
    return verdict;
  };
  const urls = ORIGINS.slice(0, count).map((origin) => new URL(origin));
  const pool = new UpstreamPool(urls, strategy, { intervalMs: 3_600_000, timeoutMs: 1000, unhealthyThreshold: 2, healthyThreshold: 2, ...policy }, check, logger);
  const [a, b, c] = pool.targets as [UpstreamTarget, UpstreamTarget, UpstreamTarget];
  /** One round of health checks, recorded: start() checks every upstream at once (the interval is an hour). */
  const round = async (): Promise<void> => {
    pool.start();
    pool.stop();
    // The fake check settles without I/O: every promise of the round has run before the next turn of the event loop.
    await new Promise<void>((resolve) => setImmediate(resolve));
  };
  const messages = () => lines.filter((line) => line.level >= 30).map((line) => `${line.msg} ${line.upstream ?? ''}`);
  return { pool, a, b, c, verdicts, checked, round, messages };
}

t.test('least-outstanding: the upstream with the fewest requests in flight, ties taken in turn', async (t) => {
  const { pool, a, b, c } = poolOf(3, 'least-outstanding');
  const picks: UpstreamTarget[] = [];
  for (let i = 0; i < 3; i++) {
    const target = pool.pick() as UpstreamTarget;
    pool.acquire(target);
    picks.push(target);
  }
  t.same(
    picks.map((p) => p.origin),
    [a.origin, b.origin, c.origin],
    'all idle: each in turn',
  );
  pool.release(b);
  t.equal(pool.pick(), b, 'the one that finished its request');
  pool.acquire(b);
  pool.acquire(b);
  pool.release(a);
  pool.release(c);
  // a and c are idle, b has two: the turn after b's last pick is c.
  t.equal(pool.pick(), c);
  t.equal(pool.pick(), a);
  t.equal(b.outstanding, 2);
});

t.test('round-robin: each upstream in turn, whatever is in flight', async (t) => {
  const { pool, a, b, c } = poolOf(3, 'round-robin');
  pool.acquire(a);
  pool.acquire(a);
  const picks = Array.from({ length: 6 }, () => (pool.pick() as UpstreamTarget).origin);
  t.same(
    picks,
    [a, b, c, a, b, c].map((p) => p.origin),
  );
});

t.test('pick skips the upstreams a retry has tried and those ejected; none left is undefined', async (t) => {
  for (const strategy of ['least-outstanding', 'round-robin'] as const) {
    const { pool, a, b, c } = poolOf(3, strategy);
    t.equal(pool.pick(new Set([a])), b, `${strategy}: a tried`);
    pool.eject(b, 'ECONNREFUSED: connect ECONNREFUSED');
    t.equal(pool.pick(new Set([a])), c, `${strategy}: a tried, b out`);
    t.equal(pool.pick(new Set([a, c])), undefined, `${strategy}: nothing left`);
  }
});

t.test('release never takes outstanding below zero', async (t) => {
  const { pool, a } = poolOf(1, 'least-outstanding');
  pool.acquire(a);
  pool.release(a);
  pool.release(a);
  t.equal(a.outstanding, 0);
});

t.test('eject takes an upstream out at once, says why, and logs only the change', async (t) => {
  const { pool, a, messages } = poolOf(2, 'least-outstanding');
  pool.eject(a, 'ECONNRESET: socket hang up');
  t.equal(a.healthy, false);
  t.equal(a.lastError, 'ECONNRESET: socket hang up');
  t.equal(pool.healthyCount, 1);
  pool.eject(a, 'ECONNREFUSED: connect ECONNREFUSED');
  t.equal(a.lastError, 'ECONNREFUSED: connect ECONNREFUSED', 'the latest reason is kept');
  t.same(messages(), [`upstream ejected ${a.origin}`], 'one warning, not one per failed request');
});

t.test('health checks take an upstream out after --unhealthy-threshold failures and bring it back after --healthy-threshold passes', async (t) => {
  const { pool, a, b, verdicts, round, messages } = poolOf(2, 'least-outstanding');
  verdicts.set(a.origin, { reason: 'readyz answered 500' });
  await round();
  t.equal(a.healthy, true, 'one failed check is a blip');
  await round();
  t.equal(a.healthy, false, 'two in a row take it out');
  t.equal(a.lastError, 'readyz answered 500');
  t.equal(pool.pick(), b);

  verdicts.delete(a.origin);
  await round();
  t.equal(a.healthy, false, 'one passed check is not enough');
  verdicts.set(a.origin, { reason: 'readyz answered 500' });
  await round();
  verdicts.delete(a.origin);
  await round();
  t.equal(a.healthy, false, 'a failure in between starts the count again');
  await round();
  t.equal(a.healthy, true, 'two passed checks in a row bring it back');
  t.equal(a.lastError, undefined);
  t.same(messages(), [`upstream failed its health checks ${a.origin}`, `upstream healthy again ${a.origin}`]);
});

t.test('an ejected upstream comes back through the health checks', async (t) => {
  const { pool, a, round } = poolOf(1, 'round-robin');
  pool.eject(a, 'ECONNREFUSED: connect ECONNREFUSED');
  t.equal(pool.pick(), undefined);
  await round();
  await round();
  t.equal(pool.pick(), a);
});

t.test('a check that throws counts as a failed check', async (t) => {
  const { a, verdicts, round } = poolOf(1, 'round-robin', { unhealthyThreshold: 1 });
  verdicts.set(a.origin, new Error('boom'));
  await round();
  t.equal(a.healthy, false);
  t.equal(a.lastError, 'Error: boom');
});

t.test("an apiserver refusing the proxy's identity is out at the first check, logged once", async (t) => {
  const { pool, a, b, verdicts, round, messages } = poolOf(2, 'least-outstanding', { unhealthyThreshold: 3 });
  verdicts.set(a.origin, { reason: 'refuses', identityRefused: true });
  await round();
  t.equal(a.healthy, false);
  await round();
  t.same(messages(), [`upstream refuses the proxy's identity ${a.origin}`]);
  t.type(pool.exhausted(new Set(), undefined), NoHealthyUpstreamError, 'one of two refusing: an outage, not the misconfiguration');

  verdicts.set(b.origin, { reason: 'refuses', identityRefused: true });
  await round();
  const error = pool.exhausted(new Set(), undefined);
  t.type(error, ProxyIdentityRefusedError, 'every apiserver refusing: the misconfiguration, named');
  t.same((error as ProxyIdentityRefusedError).origins, [a.origin, b.origin]);
  t.type(pool.outage(), ProxyIdentityRefusedError);
});

t.test('confirmIdentityRefused: a check begun after the request answers for it, and is shared', async (t) => {
  const { pool, a, verdicts, checked } = poolOf(1, 'round-robin');
  verdicts.set(a.origin, { reason: 'refuses', identityRefused: true });
  const sentAt = performance.now();
  const [first, second] = await Promise.all([pool.confirmIdentityRefused(a.origin, sentAt), pool.confirmIdentityRefused(a.origin, sentAt)]);
  t.same([first, second], [true, true]);
  t.equal(checked.length, 1, 'one check for both requests');
  t.equal(await pool.confirmIdentityRefused(a.origin, sentAt), true, 'settled, and still begun after the request: no new check');
  t.equal(checked.length, 1);
  verdicts.delete(a.origin);
  t.equal(await pool.confirmIdentityRefused(a.origin, performance.now() + 1), false, 'a later request gets a fresh check');
  t.equal(await pool.confirmIdentityRefused('https://elsewhere.test:6443', sentAt), false, 'not one of ours');
});

t.test('outage: undefined while an upstream is healthy, else a 503 naming each and why', async (t) => {
  const { pool, a, b } = poolOf(2, 'least-outstanding');
  pool.eject(a, 'ECONNREFUSED: connect ECONNREFUSED');
  t.equal(pool.outage(), undefined);
  pool.eject(b, 'CERT_HAS_EXPIRED: certificate has expired');
  const outage = pool.outage();
  t.type(outage, NoHealthyUpstreamError);
  t.equal((outage as NoHealthyUpstreamError).outage, `${a.origin} (ECONNREFUSED: connect ECONNREFUSED), ${b.origin} (CERT_HAS_EXPIRED: certificate has expired)`);
});

t.test('exhausted: one apiserver tried keeps its own error; several, or none, get the outage', async (t) => {
  const { pool, a, b } = poolOf(2, 'least-outstanding');
  const refused = new Error('connect ECONNREFUSED');
  pool.eject(a, 'ECONNREFUSED: connect ECONNREFUSED');
  t.equal(pool.exhausted(new Set([a]), refused), refused, 'one tried: its failure (a TLS error stays a 502)');
  pool.eject(b, 'ECONNREFUSED: connect ECONNREFUSED');
  t.type(pool.exhausted(new Set([a, b]), refused), NoHealthyUpstreamError, 'two tried');
  t.type(pool.exhausted(new Set(), undefined), NoHealthyUpstreamError, 'none healthy to begin with');
});
