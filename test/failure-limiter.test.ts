// Failed-login counters (FailureLimiter) with an injected clock, their memory bound, and how
// BasicAuthenticator applies them: a credential it has verified is no guess for the client that
// used it, and never an oracle for anyone else. Then the same shared by --workers through the
// primary (LoginLimitsAuthority and SharedLoginLimiter).
import t from 'tap';
import { BasicAuthenticator } from '../src/auth/basic.js';
import type { BcryptPool } from '../src/auth/bcrypt-pool.js';
import { FailureLimiter } from '../src/auth/failure-limiter.js';
import type { UserTable } from '../src/auth/htpasswd.js';
import { localLoginLimiter } from '../src/auth/login-limiter.js';
import { LoginLimitsAuthority } from '../src/workers/login-limits-authority.js';
import { SharedLoginLimiter } from '../src/workers/login-limits-client.js';
import type { LimitsRequest } from '../src/workers/messages.js';

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
  return { c, pool, limiter, login: localLoginLimiter(limiter), basic };
}

t.test('basic auth: failures are counted, then refused without bcrypt', async (t) => {
  const { pool, limiter, login, basic } = setup();
  for (let i = 0; i < 3; i++) t.match(await basic.verify('alice', `wrong-${i}`, '192.0.2.1', login), { ok: false, reason: 'bad-password' });
  t.equal(pool.compares, 3);
  t.match(await basic.verify('alice', 'right', '192.0.2.1', login), { ok: false, reason: 'rate-limited', retryAfterMs: 60_000 }, 'even the right password');
  t.match(await basic.verify('nobody', 'x', '192.0.2.1', login), { ok: false, reason: 'rate-limited' });
  t.equal(pool.compares, 3, 'no bcrypt for refused attempts');
  t.match(await basic.verify('alice', 'right', '192.0.2.2', login), { ok: false, reason: 'rate-limited' }, 'the name is locked from everywhere');
  t.match(await basic.verify('nobody', 'x', '192.0.2.2', login), { ok: false, reason: 'unknown-user' }, 'unknown names count like real ones');
});

t.test('basic auth: the client that used a verified credential keeps it while the name is locked', async (t) => {
  const { c, pool, limiter, login, basic } = setup();
  t.match(await basic.verify('alice', 'right', '192.0.2.10', login), { ok: true, identity: { user: 'alice' } });
  for (let i = 0; i < 3; i++) await basic.verify('alice', `guess-${i}`, `198.51.100.${i}`, login);
  t.ok(limiter.blockedForMs('203.0.113.1', 'alice') > 0, 'someone else locked the name');
  const compares = pool.compares;
  t.match(await basic.verify('alice', 'right', '192.0.2.10', login), { ok: true }, 'her kubectl still works');
  t.equal(pool.compares, compares, 'from the cache');
  t.match(await basic.verify('alice', 'right', '198.51.100.77', login), { ok: false, reason: 'rate-limited' }, 'the right password from a new client is refused like a wrong one: no oracle');
  t.match(await basic.verify('alice', 'wrong', '198.51.100.77', login), { ok: false, reason: 'rate-limited' });
  c.now += 10_001; // the cache entry expires; the lock (60 s) does not
  t.match(await basic.verify('alice', 'right', '192.0.2.10', login), { ok: true }, 'past the cache TTL: re-checked, not refused');
  t.equal(pool.compares, compares + 1, 'with one bcrypt');
  t.match(await basic.verify('alice', 'wrong', '192.0.2.10', login), { ok: false, reason: 'rate-limited' }, 'her address guessing another password is a guess');
});

t.test('basic auth: a cached credential from a new client that is not locked is admitted and remembered', async (t) => {
  const { pool, limiter, login, basic } = setup();
  await basic.verify('alice', 'right', '192.0.2.10', login);
  t.match(await basic.verify('alice', 'right', '192.0.2.11', login), { ok: true });
  t.equal(pool.compares, 1);
  for (let i = 0; i < 3; i++) await basic.verify('alice', `guess-${i}`, `198.51.100.${i}`, login);
  t.match(await basic.verify('alice', 'right', '192.0.2.11', login), { ok: true }, 'the second client is known now');
});

t.test('basic auth: concurrent identical credentials are one check and one count', async (t) => {
  const { pool, limiter, login, basic } = setup(2);
  pool.delayMs = 20;
  const same = await Promise.all(Array.from({ length: 20 }, () => basic.verify('alice', 'right', '192.0.2.1', login)));
  t.ok(
    same.every((r) => r.ok),
    "twenty parallel discovery requests with the right password: all pass, none refused as 'in flight'",
  );
  t.equal(pool.compares, 1);
  const wrong = await Promise.all(Array.from({ length: 5 }, () => basic.verify('alice', 'same-wrong', '192.0.2.2', login)));
  t.ok(wrong.every((r) => !r.ok && r.reason === 'bad-password'));
  t.equal(limiter.blockedForMs('192.0.2.2', undefined), 0, 'one failure, not five');
  const distinct = await Promise.all(Array.from({ length: 5 }, (_, i) => basic.verify(`nobody-${i}`, 'w', '192.0.2.3', login)));
  t.same(
    distinct.map((r) => r.ok === false && r.reason),
    ['unknown-user', 'unknown-user', 'rate-limited', 'rate-limited', 'rate-limited'],
    'distinct guesses at once: only as many as the limit are checked',
  );
});

t.test("basic auth: a check shed because the bcrypt queue is full of others' is not a failure", async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 1, windowMs: 60_000, now: c.fn });
  const { BcryptOverloadedError } = await import('../src/auth/bcrypt-pool.js');
  const pool = { compare: async () => Promise.reject(new BcryptOverloadedError(false)) };
  const basic = new BasicAuthenticator(TABLE, pool as unknown as BcryptPool, { cacheTtlMs: 10_000, cacheSize: 100, now: c.fn });
  const login = localLoginLimiter(limiter);
  for (let i = 0; i < 3; i++) t.match(await basic.verify('alice', 'x', '192.0.2.1', login), { ok: false, reason: 'overloaded' });
  t.equal(limiter.blockedForMs('192.0.2.1', 'alice'), 0);
  t.same(limiter.size, { addresses: 0, users: 0 });
});

t.test("basic auth: a check shed because the client's own checks fill the bcrypt queue is a failure", async (t) => {
  const c = clock();
  const limiter = new FailureLimiter({ limit: 2, windowMs: 60_000, now: c.fn });
  const { BcryptOverloadedError } = await import('../src/auth/bcrypt-pool.js');
  const pool = { compare: async () => Promise.reject(new BcryptOverloadedError(true)) };
  const basic = new BasicAuthenticator(TABLE, pool as unknown as BcryptPool, { cacheTtlMs: 10_000, cacheSize: 100, now: c.fn });
  const login = localLoginLimiter(limiter);
  for (let i = 0; i < 2; i++) t.match(await basic.verify('alice', `x${i}`, '192.0.2.1', login), { ok: false, reason: 'overloaded' });
  t.match(await basic.verify('alice', 'x2', '192.0.2.1', login), { ok: false, reason: 'rate-limited' }, 'locked after the limit');
});

t.test('basic auth without a limiter is unchanged', async (t) => {
  const { pool, basic } = setup();
  for (let i = 0; i < 20; i++) t.match(await basic.verify('alice', `wrong-${i}`, '192.0.2.1'), { reason: 'bad-password' });
  t.match(await basic.verify('alice', 'right', '192.0.2.1'), { ok: true });
  t.equal(pool.compares, 21);
});

// --workers: the counters and the known clients live in the primary (LoginLimitsAuthority);
// each worker's BasicAuthenticator asks it through a SharedLoginLimiter. Here the IPC channel is
// a queue delivered on setImmediate, in order, as node:cluster's is; it can be held to play a
// primary that does not answer.
const SHARED_KEY = Buffer.alloc(32, 7);

/** Lets every message in the simulated channel arrive (each hop is one setImmediate). */
async function delivered(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

function sharedSetup(limit = 3, timeoutMs = 2000) {
  const c = clock();
  const pool = fakePool();
  const limiter = new FailureLimiter({ limit, windowMs: 60_000, now: c.fn });
  let held: (() => void)[] | undefined;
  const deliver = (fn: () => void) => (held ? held.push(fn) : setImmediate(fn));
  const clients: SharedLoginLimiter[] = [];
  const authority = new LoginLimitsAuthority(limiter, (message) => clients.forEach((client) => deliver(() => client.receive(message))), c.fn);
  const worker = (id: number) => {
    const sent: LimitsRequest[] = [];
    const client: SharedLoginLimiter = new SharedLoginLimiter(
      (message) => {
        sent.push(message);
        deliver(() => authority.handle(id, message, (reply) => deliver(() => client.receive(reply))));
      },
      { now: c.fn, timeoutMs },
    );
    clients.push(client);
    const basic = new BasicAuthenticator(TABLE, pool as unknown as BcryptPool, { cacheTtlMs: 10_000, cacheSize: 100, credentialKey: SHARED_KEY, now: c.fn });
    return { id, client, basic, sent, verify: (user: string, password: string, from: string) => basic.verify(user, password, from, client) };
  };
  return {
    c,
    pool,
    limiter,
    authority,
    w1: worker(1),
    w2: worker(2),
    /** The primary stops answering (messages wait) until release(). */
    hold: () => (held = []),
    release: () => {
      const waiting = held ?? [];
      held = undefined;
      waiting.forEach((fn) => setImmediate(fn));
    },
  };
}

t.test('workers: failures on either worker count toward one limit, and both refuse at exactly the limit', async (t) => {
  const { pool, w1, w2 } = sharedSetup(3);
  t.match(await w1.verify('alice', 'guess-1', '192.0.2.1'), { reason: 'bad-password' });
  t.match(await w2.verify('alice', 'guess-2', '192.0.2.1'), { reason: 'bad-password' });
  t.match(await w1.verify('alice', 'guess-3', '192.0.2.1'), { reason: 'bad-password' });
  t.match(await w2.verify('nobody', 'x', '192.0.2.1'), { reason: 'rate-limited', retryAfterMs: 60_000 }, 'the fourth, on the other worker, is refused');
  t.match(await w1.verify('alice', 'right', '192.0.2.1'), { reason: 'rate-limited' }, 'and on the first');
  t.match(await w2.verify('alice', 'right', '192.0.2.9'), { reason: 'rate-limited' }, 'the name too, from anywhere');
  t.equal(pool.compares, 3, 'no bcrypt for refusals');
});

t.test('workers: guesses running at once on both workers count too', async (t) => {
  const { pool, w1, w2 } = sharedSetup(3);
  pool.delayMs = 20;
  const results = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => (i % 2 ? w2 : w1).verify(`nobody-${i}`, 'x', '192.0.2.1')));
  t.equal(results.filter((r) => !r.ok && r.reason === 'unknown-user').length, 3, 'as many checked as the limit');
  t.equal(results.filter((r) => !r.ok && r.reason === 'rate-limited').length, 3, 'the rest refused while those run');
  t.equal(pool.compares, 3);
});

t.test('workers: a client known to use a credential keeps it on every worker; nobody else gets an oracle', async (t) => {
  const { pool, w1, w2 } = sharedSetup(3);
  t.match(await w1.verify('alice', 'right', '192.0.2.10'), { ok: true }, "alice's kubectl logs in on worker 1");
  for (let i = 0; i < 3; i++) await (i % 2 ? w2 : w1).verify('alice', `guess-${i}`, `198.51.100.${i}`);
  t.match(await w2.verify('alice', 'right', '192.0.2.10'), { ok: true }, 'on worker 2, which never saw her password, too');
  t.match(await w1.verify('alice', 'right', '192.0.2.10'), { ok: true }, 'and on worker 1');
  t.match(await w1.verify('alice', 'right', '198.51.100.77'), { reason: 'rate-limited' }, 'her password from a new client is refused where it is cached');
  t.match(await w2.verify('alice', 'right', '198.51.100.78'), { reason: 'rate-limited' }, 'and where it is not');
  t.equal(pool.compares, 5, "one bcrypt per worker for alice's password, and the three guesses");
});

t.test('workers: a request with a verified credential makes no round trip', async (t) => {
  const { w1 } = sharedSetup(3);
  await w1.verify('alice', 'right', '192.0.2.10');
  const before = w1.sent.length;
  for (let i = 0; i < 100; i++) t.equal((await w1.verify('alice', 'right', '192.0.2.10')).ok, true);
  t.equal(w1.sent.length, before, 'from the client that logged in: nothing sent');
  const fromNew = w1.basic.verify('alice', 'right', '192.0.2.11', w1.client);
  t.same(
    w1.sent.slice(before).map((m) => m.kfp),
    ['login-used'],
    'from a new client while nothing is locked: one message, no answer awaited',
  );
  t.equal((await fromNew).ok, true);
  t.same(
    w1.sent.slice(before).map((m) => m.kfp),
    ['login-used'],
  );
});

t.test('workers: a worker starting late gets the refused keys', async (t) => {
  const { c, authority, w1, w2 } = sharedSetup(3);
  for (let i = 0; i < 3; i++) await w1.verify('alice', `guess-${i}`, '192.0.2.1');
  await delivered();
  // Nobody answers this one: what matters is whether it asks (a promise) or answers at once (0).
  const late = new SharedLoginLimiter(() => {}, { now: c.fn, timeoutMs: 1 });
  const asks = (answer: number | Promise<number>) => (answer instanceof Promise ? (answer.catch(() => {}), true) : answer);
  t.equal(asks(late.blockedForMs('192.0.2.1', 'bob', 'c')), 0, 'a new worker knows nothing...');
  late.receive(authority.snapshot());
  t.equal(asks(late.blockedForMs('192.0.2.1', 'bob', 'c')), true, '... until the snapshot: then it asks');
  t.equal(asks(late.blockedForMs('192.0.2.2', 'alice', 'c')), true, 'for the name too');
  t.equal(asks(late.blockedForMs('192.0.2.2', 'bob', 'c')), 0, 'and not for others');
  t.equal(asks(w2.client.blockedForMs('192.0.2.1', 'bob', 'c')), true, 'a running worker learned it as it happened');
});

t.test('workers: the checks of a worker that dies are released', async (t) => {
  const { pool, authority, limiter, w1, w2 } = sharedSetup(2);
  pool.delayMs = 50;
  const dying = [w1.verify('nobody-1', 'x', '192.0.2.1'), w1.verify('nobody-2', 'x', '192.0.2.1')];
  await new Promise((resolve) => setTimeout(resolve, 10));
  t.match(await w2.verify('nobody-3', 'x', '192.0.2.1'), { reason: 'rate-limited' }, 'two checks running: the limit is taken');
  authority.workerGone(1);
  t.equal(limiter.blockedForMs('192.0.2.1', undefined), 0, 'worker 1 is gone: its places are free');
  await Promise.all(dying);
  t.match(await w2.verify('nobody-4', 'x', '192.0.2.1'), { reason: 'unknown-user' }, 'and the next guess is checked');
});

t.test('workers: a primary that does not answer gives no verdict (503), and a late admission is released', async (t) => {
  const { pool, limiter, w1, hold, release } = sharedSetup(3, 50);
  hold();
  t.match(await w1.verify('alice', 'right', '192.0.2.1'), { ok: false, reason: 'overloaded' }, 'no login without the limits');
  t.equal(pool.compares, 0, 'and no bcrypt');
  release();
  await delivered();
  t.same(limiter.size, { addresses: 0, users: 0 }, 'the admission that came too late was handed back');
  t.match(await w1.verify('alice', 'right', '192.0.2.1'), { ok: true }, 'once it answers, logins work');
  w1.client.disconnected();
});

t.test('workers: a changed users file forgets the known clients', async (t) => {
  const { w1, w2 } = sharedSetup(3);
  await w1.verify('alice', 'right', '192.0.2.10');
  for (let i = 0; i < 3; i++) await w1.verify('alice', `guess-${i}`, `198.51.100.${i}`);
  w2.client.usersChanged();
  t.match(await w2.verify('alice', 'right', '192.0.2.10'), { reason: 'rate-limited' }, 'after a reload, a worker that never verified it treats the client as new');
});

t.test('workers: a request joining a check refused for another client asks for itself', async (t) => {
  const { w1 } = sharedSetup(3);
  for (let i = 0; i < 3; i++) await w1.verify(`nobody-${i}`, 'x', '192.0.2.66');
  const [locked, other] = await Promise.all([w1.verify('alice', 'right', '192.0.2.66'), w1.verify('alice', 'right', '192.0.2.10')]);
  t.match(locked, { reason: 'rate-limited' }, 'the locked address is refused');
  t.match(other, { ok: true }, 'the same credential at the same moment from another address is not');
});
