// The failover loop on its own (src/upstream/failover.ts): which failures take an apiserver out,
// which are tried again and where, and what a request gets when none is left. No network: the
// attempts are functions of the test, the pool's health check is never run.
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { failover, type Attempt, type AttemptFailure, type FailoverPolicy } from '../src/upstream/failover.js';
import { NoHealthyUpstreamError, REFUSED_STREAM, type UpstreamError } from '../src/upstream/failures.js';
import { UpstreamPool, type UpstreamTarget } from '../src/upstream/pool.js';

/** A pool that counts, per upstream, what the loop acquired and released. */
class CountingPool extends UpstreamPool {
  readonly acquired = new Map<string, number>();
  readonly released = new Map<string, number>();

  override acquire(target: UpstreamTarget): void {
    this.acquired.set(target.origin, (this.acquired.get(target.origin) ?? 0) + 1);
    super.acquire(target);
  }

  override release(target: UpstreamTarget): void {
    this.released.set(target.origin, (this.released.get(target.origin) ?? 0) + 1);
    super.release(target);
  }
}

function poolOf(count: number): CountingPool {
  const urls = ['https://a.test:6443', 'https://b.test:6443', 'https://c.test:6443'].slice(0, count).map((u) => new URL(u));
  return new CountingPool(urls, 'round-robin', { intervalMs: 3_600_000, timeoutMs: 1000, unhealthyThreshold: 1, healthyThreshold: 1 }, async () => undefined, pino({ level: 'silent' }));
}

function failure(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}

const BEFORE_ANSWER: AttemptFailure = { committed: false, clientGone: false };

/**
 * Runs one request through the loop. `outcome(attempt, n)` decides each attempt: an error it
 * fails with (and how), or undefined for an answer (released at once, as a finished response is).
 */
function run(pool: UpstreamPool, policy: FailoverPolicy, outcome: (n: number) => [Error, AttemptFailure?] | undefined) {
  const attempts: string[] = [];
  let failed: UpstreamError | undefined;
  let failedCalls = 0;
  failover(
    pool,
    policy,
    (attempt: Attempt) => {
      const result = outcome(attempts.length);
      attempts.push(attempt.target.origin);
      if (!result) {
        attempt.release();
        return;
      }
      attempt.failed(result[0], result[1] ?? BEFORE_ANSWER);
    },
    (error) => {
      failedCalls++;
      failed = error;
    },
  );
  return { attempts, failed, failedCalls };
}

/** Every attempt released exactly once, every upstream's count back at zero. */
function releasedOnce(t: Test, pool: CountingPool): void {
  t.same(Object.fromEntries(pool.released), Object.fromEntries(pool.acquired), 'each attempt released once');
  t.ok(
    pool.targets.every((target) => target.outstanding === 0),
    'nothing left outstanding',
  );
}

t.test('an answer on the first upstream: one attempt, released once, no failure', async (t) => {
  const pool = poolOf(3);
  const { attempts, failedCalls } = run(pool, { replayable: true }, () => undefined);
  t.same(attempts, ['https://a.test:6443']);
  t.equal(failedCalls, 0);
  releasedOnce(t, pool);
});

t.test('(a) a connection failure before the answer ejects the upstream; (b) a replayable request goes to the next', async (t) => {
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID']) {
    const pool = poolOf(3);
    const { attempts, failedCalls } = run(pool, { replayable: true }, (n) => (n === 0 ? [failure(code, 'it broke')] : undefined));
    t.same(attempts, ['https://a.test:6443', 'https://b.test:6443'], `${code}: tried again elsewhere`);
    t.equal(failedCalls, 0, `${code}: the client gets the answer`);
    t.equal(pool.targets[0]?.healthy, false, `${code}: ejected`);
    t.equal(pool.targets[0]?.lastError, `${code}: it broke`, `${code}: with the reason`);
    releasedOnce(t, pool);
  }
});

t.test('(b) a request that is not replayable is ejected from but not sent again: its own error', async (t) => {
  const pool = poolOf(3);
  const refused = failure('ECONNRESET');
  const { attempts, failed, failedCalls } = run(pool, { replayable: false }, () => [refused]);
  t.same(attempts, ['https://a.test:6443']);
  t.equal(failedCalls, 1);
  t.equal(failed, refused);
  t.equal(failed?.upstream, 'https://a.test:6443', 'named for the apiserver that failed');
  t.equal(pool.targets[0]?.healthy, false, 'still ejected: the connection failed');
  releasedOnce(t, pool);
});

t.test("a failure once the attempt is committed (the answer began) is the request's: no ejection, no retry", async (t) => {
  const pool = poolOf(3);
  const reset = failure('ECONNRESET');
  const { attempts, failed } = run(pool, { replayable: true }, () => [reset, { committed: true, clientGone: false }]);
  t.same(attempts, ['https://a.test:6443']);
  t.equal(failed, reset);
  t.equal(pool.healthyCount, 3);
  releasedOnce(t, pool);
});

t.test('a failure that says nothing about the connection is neither ejected nor retried', async (t) => {
  for (const error of [failure('UND_ERR_HEADERS_TIMEOUT'), failure('ERR_HTTP2_STREAM_ERROR'), failure('EMFILE'), new Error('no code at all')]) {
    const pool = poolOf(3);
    const { attempts, failed } = run(pool, { replayable: true }, () => [error]);
    t.same(attempts, ['https://a.test:6443'], error.message);
    t.equal(failed, error, error.message);
    t.equal(pool.healthyCount, 3, `${error.message}: not ejected`);
    releasedOnce(t, pool);
  }
});

t.test("(c) the client went away: not the apiserver's fault, no ejection, no retry", async (t) => {
  const pool = poolOf(3);
  const aborted = failure('ECONNRESET', 'aborted');
  const { attempts, failed } = run(pool, { replayable: true }, () => [aborted, { committed: false, clientGone: true }]);
  t.same(attempts, ['https://a.test:6443']);
  t.equal(failed, aborted, 'the error goes back, for the transport to drop');
  t.equal(pool.healthyCount, 3);
  releasedOnce(t, pool);
});

t.test('(d) HTTP/2 "not processed" is sent again, to the same apiserver too, up to 2 times, never ejected', async (t) => {
  for (const code of [REFUSED_STREAM, 'ERR_HTTP2_GOAWAY_SESSION', 'ERR_HTTP2_INVALID_SESSION', 'ERR_HTTP2_OUT_OF_STREAMS']) {
    const pool = poolOf(1);
    const third = failure(code, 'third');
    const { attempts, failed } = run(pool, { replayable: true }, (n) => [n === 2 ? third : failure(code)]);
    t.same(attempts, ['https://a.test:6443', 'https://a.test:6443', 'https://a.test:6443'], `${code}: the only apiserver, three times`);
    t.equal(failed, third, `${code}: the third refusal is the request's answer`);
    t.equal(pool.healthyCount, 1, `${code}: not ejected`);
    releasedOnce(t, pool);
  }
  // The HTTP/2 spec guarantees such a stream reached no handler: safe whatever the request.
  const pool = poolOf(1);
  const { attempts, failedCalls } = run(pool, { replayable: false }, (n) => (n === 0 ? [failure(REFUSED_STREAM)] : undefined));
  t.equal(attempts.length, 2, 'sent again even when not replayable');
  t.equal(failedCalls, 0);
});

t.test('"not processed" retries are counted per request, across apiservers, and mix with failover', async (t) => {
  const pool = poolOf(3);
  // a refuses, a again (it is not excluded), then refuses a third time (over the limit): the request fails.
  const script = [failure(REFUSED_STREAM), failure(REFUSED_STREAM), failure(REFUSED_STREAM, 'over the limit')];
  const { attempts, failed } = run(pool, { replayable: true }, (n) => [script[n] as Error]);
  t.equal(attempts.length, 3);
  t.equal(failed?.message, 'over the limit');

  const mixed = poolOf(2);
  const steps = [failure(REFUSED_STREAM), failure('ECONNREFUSED')];
  const result = run(mixed, { replayable: true }, (n) => (n < steps.length ? [steps[n] as Error] : undefined));
  t.equal(result.attempts.length, 3, 'refused, then a connection failure, then an answer');
  t.equal(result.failedCalls, 0);
  t.equal(mixed.healthyCount, 1, 'only the connection failure ejected');
  releasedOnce(t, mixed);
});

t.test('a retry goes only to upstreams not tried yet; with none left, several tried: the outage (503)', async (t) => {
  const pool = poolOf(3);
  const { attempts, failed, failedCalls } = run(pool, { replayable: true }, () => [failure('ECONNREFUSED')]);
  t.same(attempts, ['https://a.test:6443', 'https://b.test:6443', 'https://c.test:6443'], 'each once');
  t.equal(failedCalls, 1);
  t.type(failed, NoHealthyUpstreamError);
  t.match(failed?.message, /a\.test.*ECONNREFUSED.*b\.test.*c\.test/);
  releasedOnce(t, pool);
});

t.test('exhausted with one apiserver tried: its own failure (a TLS error stays a 502)', async (t) => {
  const pool = poolOf(1);
  const tls = failure('CERT_HAS_EXPIRED');
  const { failed } = run(pool, { replayable: true }, () => [tls]);
  t.equal(failed, tls);
  t.equal(failed?.upstream, 'https://a.test:6443');
});

t.test('no healthy upstream to begin with: no attempt, the outage', async (t) => {
  const pool = poolOf(2);
  for (const target of pool.targets) pool.eject(target, 'ECONNREFUSED: connect ECONNREFUSED');
  const { attempts, failed } = run(pool, { replayable: true }, () => undefined);
  t.same(attempts, []);
  t.type(failed, NoHealthyUpstreamError);
});

t.test('release is idempotent: released by the transport and by the failure, counted once', async (t) => {
  const pool = poolOf(2);
  failover(
    pool,
    { replayable: true },
    (attempt) => {
      attempt.release();
      attempt.release();
      if (attempt.target === pool.targets[0]) attempt.failed(failure('ECONNRESET'), BEFORE_ANSWER);
    },
    () => t.fail('the second upstream answered'),
  );
  t.same(Object.fromEntries(pool.acquired), { 'https://a.test:6443': 1, 'https://b.test:6443': 1 });
  releasedOnce(t, pool);
});

t.test('an attempt that ends later is counted outstanding until it does', async (t) => {
  const pool = poolOf(1);
  let pending: Attempt | undefined;
  failover(
    pool,
    { replayable: true },
    (attempt) => (pending = attempt),
    () => t.fail('no failure'),
  );
  t.equal(pool.targets[0]?.outstanding, 1, 'a watch or tunnel in flight');
  pending?.release();
  t.equal(pool.targets[0]?.outstanding, 0);
  releasedOnce(t, pool);
});
