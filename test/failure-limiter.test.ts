// Failed-login counters (FailureLimiter) with an injected clock, their memory bound, and how
// BasicAuthenticator applies them: a credential it has verified is no guess for the client that
// used it, and never an oracle for anyone else.
import t from 'tap';
import { BasicAuthenticator } from '../src/auth/basic.js';
import type { BcryptPool } from '../src/auth/bcrypt-pool.js';
import { FailureLimiter } from '../src/auth/failure-limiter.js';
import type { UserTable } from '../src/auth/htpasswd.js';

function clock(start = 1_000_000) {
  const c = { now: start, fn: () => c.now };
  return c;
}

function failTimes(limiter: FailureLimiter, n: number, address: string, user: string | undefined) {
  for (let i = 0; i < n; i++) limiter.recordFailure(address, user);
}

t.test('limit failures per address within the window, then refused until it ends', async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 3, windowMs: 60_000, now: c.fn });
  t.equal(limiter.blockedForMs('192.0.2.1', 'alice'), 0);
  limiter.recordFailure('192.0.2.1', 'u1');
  c.now += 10_000;
  limiter.recordFailure('192.0.2.1', 'u2');
  t.equal(limiter.blockedForMs('192.0.2.1', 'u9'), 0, 'below the limit');
  limiter.recordFailure('192.0.2.1', 'u3');
  t.equal(limiter.blockedForMs('192.0.2.1', 'u9'), 50_000, 'at the limit: until the window that began with the first failure ends');
  t.equal(limiter.begin('192.0.2.1', 'u9'), 50_000, 'begin refuses too');
  c.now += 49_999;
  t.equal(limiter.blockedForMs('192.0.2.1', 'u9'), 1);
  c.now += 1;
  t.equal(limiter.blockedForMs('192.0.2.1', 'u9'), 0, 'the window is over');
  limiter.recordFailure('192.0.2.1', 'u4');
  t.equal(limiter.blockedForMs('192.0.2.1', 'u9'), 0, 'a new window starts from nothing');
});

t.test('per user name, across addresses', async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 3, windowMs: 60_000, now: c.fn });
  limiter.recordFailure('192.0.2.1', 'alice');
  limiter.recordFailure('192.0.2.2', 'alice');
  limiter.recordFailure('2001:db8::1', 'alice');
  t.equal(limiter.blockedForMs('198.51.100.1', 'alice'), 60_000, 'alice is locked for everyone');
  t.equal(limiter.blockedForMs('198.51.100.1', 'bob'), 0, 'another user from another address is not');
  t.equal(limiter.blockedForMs('192.0.2.1', 'bob'), 0, 'the addresses that guessed once each are not');
  t.equal(limiter.blockedForMs('198.51.100.1', undefined), 0);
  t.equal(limiter.blockedForMs('198.51.100.1', 'Alice'), 0, 'names are exact');
});

t.test('per address, across user names; independent of each other', async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 2, windowMs: 60_000, now: c.fn });
  limiter.recordFailure('192.0.2.1', 'a');
  limiter.recordFailure('192.0.2.1', 'b');
  t.ok(limiter.blockedForMs('192.0.2.1', 'carol') > 0, 'the address is locked for every name');
  t.equal(limiter.blockedForMs('192.0.2.2', 'a'), 0, 'the names it tried are not');
  limiter.recordFailure('192.0.2.9', undefined);
  limiter.recordFailure('192.0.2.9', undefined);
  t.ok(limiter.blockedForMs('192.0.2.9', undefined) > 0, 'no claimed name: the address still counts');
  t.same(limiter.size, { addresses: 2, users: 2 });
});

t.test('IPv6 clients are counted by /64; mapped IPv4 as IPv4', async (t) => {
  const limiter = new FailureLimiter({ limit: 2, windowMs: 60_000 });
  limiter.recordFailure('2001:db8:1:2::1', undefined);
  limiter.recordFailure('2001:db8:1:2:ffff::9', undefined);
  t.ok(limiter.blockedForMs('2001:db8:1:2:1234::77', undefined) > 0, 'another address in the same /64 is locked');
  t.equal(limiter.blockedForMs('2001:db8:1:3::1', undefined), 0, 'the next /64 is not');
  limiter.recordFailure('::ffff:192.0.2.7', undefined);
  limiter.recordFailure('192.0.2.7', undefined);
  t.ok(limiter.blockedForMs('192.0.2.7', undefined) > 0);
});

t.test('checks still running count: a client cannot start more guesses than the limit at once', async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 3, windowMs: 60_000, now: c.fn });
  t.equal(limiter.begin('192.0.2.1', 'alice'), 0);
  t.equal(limiter.begin('192.0.2.1', 'bob'), 0);
  t.equal(limiter.begin('192.0.2.1', 'carol'), 0);
  t.equal(limiter.begin('192.0.2.1', 'dave'), 1000, 'a fourth at once: retry in a second');
  t.equal(limiter.blockedForMs('192.0.2.1', 'dave'), 1000);
  limiter.finish('192.0.2.1', 'bob', false);
  t.equal(limiter.begin('192.0.2.1', 'dave'), 0, 'a success frees its place');
  limiter.finish('192.0.2.1', 'alice', true);
  limiter.finish('192.0.2.1', 'carol', true);
  limiter.finish('192.0.2.1', 'dave', true);
  t.equal(limiter.blockedForMs('192.0.2.1', 'erin'), 60_000, 'three failures: locked for the window');
  t.equal(limiter.blockedForMs('192.0.2.2', 'alice'), 0, 'each name failed once');
  c.now += 60_000;
  t.equal(limiter.begin('192.0.2.1', 'erin'), 0);
  limiter.finish('192.0.2.1', 'erin', false);
  t.same(limiter.size, { addresses: 0, users: 0 }, 'a success after an expired window leaves nothing behind');
});

t.test('memory: 100,000 distinct addresses and names stay within the cap', async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 10, windowMs: 60_000, now: c.fn });
  let refused = 0;
  for (let i = 0; i < 100_000; i++) {
    const address = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    refused += limiter.begin(address, `user-${i}`) > 0 ? 1 : 0;
    limiter.finish(address, `user-${i}`, true);
  }
  t.equal(refused, 0, 'each was a first failure');
  t.same(limiter.size, { addresses: 50_000, users: 50_000 }, 'the default cap of 50,000 per map');
  for (let i = 0; i < 100_000; i++) limiter.recordFailure(`2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`, 'x'.repeat(1000) + i);
  t.same(limiter.size, { addresses: 50_000, users: 50_000 }, 'IPv6 /64s and very long names too');
  for (let i = 0; i < 1000; i++) limiter.begin(`192.0.2.${i & 255}`, undefined);
  t.equal(limiter.size.addresses, 50_000);
});

t.test('the least recently updated counter goes first; expired ones are dropped', async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 2, windowMs: 60_000, maxEntries: 3, now: c.fn });
  failTimes(limiter, 1, '192.0.2.1', undefined);
  failTimes(limiter, 1, '192.0.2.2', undefined);
  failTimes(limiter, 1, '192.0.2.3', undefined);
  failTimes(limiter, 1, '192.0.2.1', undefined); // updated: now the most recent
  failTimes(limiter, 1, '192.0.2.4', undefined); // pushes out .2
  t.equal(limiter.size.addresses, 3);
  t.ok(limiter.blockedForMs('192.0.2.1', undefined) > 0, 'the recently updated counter survived');
  failTimes(limiter, 1, '192.0.2.2', undefined);
  t.equal(limiter.blockedForMs('192.0.2.2', undefined), 0, 'the pushed-out one starts again from one');
  c.now += 60_000;
  failTimes(limiter, 1, '192.0.2.9', undefined);
  t.equal(limiter.size.addresses, 1, 'expired counters are swept from the old end');
});

t.test('refuses a nonsensical configuration', async (t) => {
  t.throws(() => new FailureLimiter({ limit: 0, windowMs: 1000 }));
  t.throws(() => new FailureLimiter({ limit: 1, windowMs: 0 }));
});

// BasicAuthenticator with a stand-in bcrypt: 'right' is alice's password, and every compare is counted.
const TABLE = { users: new Map([['alice', { name: 'alice', hash: 'right', groups: ['devs'] }]]), maxCost: 4 } as unknown as UserTable;

function fakePool() {
  const pool = {
    compares: 0,
    delayMs: 0,
    async compare(password: string, hash: string): Promise<boolean> {
      pool.compares++;
      if (pool.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, pool.delayMs));
      return password === hash;
    },
  };
  return pool;
}

function setup(limit = 3) {
  const c = clock();
  const pool = fakePool();
  const limiter = new FailureLimiter({ limit, windowMs: 60_000, now: c.fn });
  const basic = new BasicAuthenticator(TABLE, pool as unknown as BcryptPool, { cacheTtlMs: 10_000, cacheSize: 100, now: c.fn });
  return { c, pool, limiter, basic };
}

t.test('basic auth: failures are counted, then refused without bcrypt', async (t) => {
  const { pool, limiter, basic } = setup();
  for (let i = 0; i < 3; i++) t.match(await basic.verify('alice', `wrong-${i}`, '192.0.2.1', limiter), { ok: false, reason: 'bad-password' });
  t.equal(pool.compares, 3);
  t.match(await basic.verify('alice', 'right', '192.0.2.1', limiter), { ok: false, reason: 'rate-limited', retryAfterMs: 60_000 }, 'even the right password');
  t.match(await basic.verify('nobody', 'x', '192.0.2.1', limiter), { ok: false, reason: 'rate-limited' });
  t.equal(pool.compares, 3, 'no bcrypt for refused attempts');
  t.match(await basic.verify('alice', 'right', '192.0.2.2', limiter), { ok: false, reason: 'rate-limited' }, 'the name is locked from everywhere');
  t.match(await basic.verify('nobody', 'x', '192.0.2.2', limiter), { ok: false, reason: 'unknown-user' }, 'unknown names count like real ones');
});

t.test('basic auth: the client that used a verified credential keeps it while the name is locked', async (t) => {
  const { c, pool, limiter, basic } = setup();
  t.match(await basic.verify('alice', 'right', '192.0.2.10', limiter), { ok: true, identity: { user: 'alice' } });
  for (let i = 0; i < 3; i++) await basic.verify('alice', `guess-${i}`, `198.51.100.${i}`, limiter);
  t.ok(limiter.blockedForMs('203.0.113.1', 'alice') > 0, 'someone else locked the name');
  const compares = pool.compares;
  t.match(await basic.verify('alice', 'right', '192.0.2.10', limiter), { ok: true }, 'her kubectl still works');
  t.equal(pool.compares, compares, 'from the cache');
  t.match(await basic.verify('alice', 'right', '198.51.100.77', limiter), { ok: false, reason: 'rate-limited' }, 'the right password from a new client is refused like a wrong one: no oracle');
  t.match(await basic.verify('alice', 'wrong', '198.51.100.77', limiter), { ok: false, reason: 'rate-limited' });
  c.now += 10_001; // the cache entry expires; the lock (60 s) does not
  t.match(await basic.verify('alice', 'right', '192.0.2.10', limiter), { ok: true }, 'past the cache TTL: re-checked, not refused');
  t.equal(pool.compares, compares + 1, 'with one bcrypt');
  t.match(await basic.verify('alice', 'wrong', '192.0.2.10', limiter), { ok: false, reason: 'rate-limited' }, 'her address guessing another password is a guess');
});

t.test('basic auth: a cached credential from a new client that is not locked is admitted and remembered', async (t) => {
  const { pool, limiter, basic } = setup();
  await basic.verify('alice', 'right', '192.0.2.10', limiter);
  t.match(await basic.verify('alice', 'right', '192.0.2.11', limiter), { ok: true });
  t.equal(pool.compares, 1);
  for (let i = 0; i < 3; i++) await basic.verify('alice', `guess-${i}`, `198.51.100.${i}`, limiter);
  t.match(await basic.verify('alice', 'right', '192.0.2.11', limiter), { ok: true }, 'the second client is known now');
});

t.test('basic auth: concurrent identical credentials are one check and one count', async (t) => {
  const { pool, limiter, basic } = setup(2);
  pool.delayMs = 20;
  const same = await Promise.all(Array.from({ length: 20 }, () => basic.verify('alice', 'right', '192.0.2.1', limiter)));
  t.ok(same.every((r) => r.ok), "twenty parallel discovery requests with the right password: all pass, none refused as 'in flight'");
  t.equal(pool.compares, 1);
  const wrong = await Promise.all(Array.from({ length: 5 }, () => basic.verify('alice', 'same-wrong', '192.0.2.2', limiter)));
  t.ok(wrong.every((r) => !r.ok && r.reason === 'bad-password'));
  t.equal(limiter.blockedForMs('192.0.2.2', undefined), 0, 'one failure, not five');
  const distinct = await Promise.all(Array.from({ length: 5 }, (_, i) => basic.verify(`nobody-${i}`, 'w', '192.0.2.3', limiter)));
  t.same(distinct.map((r) => r.ok === false && r.reason), ['unknown-user', 'unknown-user', 'rate-limited', 'rate-limited', 'rate-limited'], 'distinct guesses at once: only as many as the limit are checked');
});

t.test('basic auth: an overloaded check is not a failure', async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 1, windowMs: 60_000, now: c.fn });
  const { BcryptOverloadedError } = await import('../src/auth/bcrypt-pool.js');
  const pool = { compare: async () => Promise.reject(new BcryptOverloadedError()) };
  const basic = new BasicAuthenticator(TABLE, pool as unknown as BcryptPool, { cacheTtlMs: 10_000, cacheSize: 100, now: c.fn });
  for (let i = 0; i < 3; i++) t.match(await basic.verify('alice', 'x', '192.0.2.1', limiter), { ok: false, reason: 'overloaded' });
  t.equal(limiter.blockedForMs('192.0.2.1', 'alice'), 0);
  t.same(limiter.size, { addresses: 0, users: 0 });
});

t.test('basic auth without a limiter is unchanged', async (t) => {
  const { pool, basic } = setup();
  for (let i = 0; i < 20; i++) t.match(await basic.verify('alice', `wrong-${i}`, '192.0.2.1'), { reason: 'bad-password' });
  t.match(await basic.verify('alice', 'right', '192.0.2.1'), { ok: true });
  t.equal(pool.compares, 21);
});
