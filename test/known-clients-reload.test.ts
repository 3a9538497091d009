// The "known client" exemption from the failed-login limits survives reloads: an attacker who
// locks a user's name by guessing its password must not lock the owner's working kubectl out at
// the next routine reload (SIGHUP, a certificate or CRL rotation, a users file rewritten). It is
// dropped for the credentials a reload withdraws: a user whose password hash changed, or who was
// removed. With one process and with --workers 2 (where the primary keeps the record and each
// worker reloads on its own); every request on a fresh connection from its own loopback address,
// so they land on alternate workers.
import { basename, dirname } from 'node:path';
import t from 'tap';
import { Agent } from 'undici';
import { FailureLimiter } from '../src/auth/failure-limiter.js';
import type { UserTable } from '../src/auth/htpasswd.js';
import { KnownClients } from '../src/auth/known-clients.js';
import { localLoginLimiter, withdrawnUsers, type LoginAdmission } from '../src/auth/login-limiter.js';
import { LoginLimitsAuthority } from '../src/workers/login-limits-authority.js';
import { basicAuth, call } from './helpers/clients.js';
import type { ProxyProcess } from './helpers/proxy.js';
import { RELOADED, waitFor } from './helpers/reload.js';
import { ALICE, bcryptLine, startStack, writeUsersFile, type TestUser } from './helpers/setup.js';

const LIMIT = 3;
const ERIN: TestUser = { name: 'erin', password: 'erin-before', groups: ['devs'] };
const ERIN_NEW: TestUser = { ...ERIN, password: 'erin-after' };
const GUS: TestUser = { name: 'gus', password: 'gus-password', groups: [] };

/** Sends SIGHUP and waits until each of the `workers` processes has reloaded (each reads the files itself). */
async function reloadEverywhere(proxy: ProxyProcess, workers: number): Promise<void> {
  const from = proxy.logs.length;
  proxy.child.kill('SIGHUP');
  await waitFor(
    `${workers} reload lines`,
    () =>
      new Set(
        proxy.logs
          .slice(from)
          .filter((l) => l.msg === RELOADED)
          .map((l) => l.pid),
      ).size >= workers,
  );
}

for (const workers of [1, 2]) {
  t.test(`--workers ${workers}: the owners of credentials that still hold stay let in across reloads; changed ones do not`, async (t) => {
    const lines = { alice: bcryptLine(ALICE), erin: bcryptLine(ERIN), gus: bcryptLine(GUS) };
    const { proxy, pki, usersFile } = await startStack(t, {
      users: [lines.alice, lines.erin, lines.gus],
      // Only SIGHUP reloads, so each reload happens exactly when the test sends it.
      flags: ['--workers', String(workers), '--auth-failure-limit', String(LIMIT), '--auth-failure-window', '10m', '--auth-failure-delay', '0', '--reload-interval', '1h'],
    });

    /** One request on a fresh connection from `localAddress`: the next one lands on the other worker. */
    const once = async (localAddress: string, user: TestUser) => {
      const agent = new Agent({ localAddress, connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' }, connections: 1 });
      try {
        return (await call(agent, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(user) } })).status;
      } finally {
        await agent.close();
      }
    };
    /** As many requests as there are workers, so each worker answers one. */
    const onEveryWorker = async (localAddress: string, user: TestUser) => {
      const statuses: number[] = [];
      for (let i = 0; i < workers; i++) statuses.push(await once(localAddress, user));
      return statuses;
    };
    const all = (status: number) => Array<number>(workers).fill(status);

    // Each user's kubectl logs in from its own address before the attack.
    const kubectl = { alice: '127.0.0.51', erin: '127.0.0.52', gus: '127.0.0.53' };
    t.same(await onEveryWorker(kubectl.alice, ALICE), all(200), "alice's kubectl logs in");
    t.same(await onEveryWorker(kubectl.erin, ERIN), all(200), "erin's kubectl logs in");
    t.same(await onEveryWorker(kubectl.gus, GUS), all(200), "gus's kubectl logs in");

    // The attack: guesses for each name from addresses of their own, until the names are locked.
    for (const user of [ALICE, ERIN, GUS]) {
      const guesses: number[] = [];
      for (let i = 0; i <= LIMIT; i++) guesses.push(await once(`127.0.1.${10 + i}`, { ...user, password: `guess-${i}` }));
      t.same(guesses, [...Array<number>(LIMIT).fill(401), 429], `${user.name}'s name is locked after ${LIMIT} guesses`);
    }
    t.equal(await once('127.0.1.99', ALICE), 429, "alice's right password from a client that never used it: refused (no oracle)");
    t.same(await onEveryWorker(kubectl.alice, ALICE), all(200), "alice's kubectl keeps working while her name is locked");

    // A routine reload: nothing changed.
    await reloadEverywhere(proxy, workers);
    t.same(await onEveryWorker(kubectl.alice, ALICE), all(200), "SIGHUP: alice's kubectl is still let in");
    t.same(await onEveryWorker(kubectl.erin, ERIN), all(200), "and erin's");
    t.equal(await once('127.0.1.98', ALICE), 429, 'while a new client with her password is still refused');

    // The users file rewritten: erin's password changes, gus is removed, alice's line stays as it is.
    writeUsersFile(dirname(usersFile), [lines.alice, bcryptLine(ERIN_NEW)], basename(usersFile));
    await reloadEverywhere(proxy, workers);
    t.same(await onEveryWorker(kubectl.alice, ALICE), all(200), 'users file rewritten: alice (unchanged) is still let in');
    t.same(await onEveryWorker(kubectl.erin, ERIN), all(429), "erin's old password, from her kubectl: refused, her name is still locked and she is known no more");
    t.same(await onEveryWorker(kubectl.erin, ERIN_NEW), all(429), "her new password is a new credential: it waits for the lock like anyone's");
    t.same(await onEveryWorker(kubectl.gus, GUS), all(429), 'gus (removed): refused');
  });
}

// ---------------------------------------------------------------------------------------------
// The pieces on their own.

t.test('withdrawnUsers: removed users and new password hashes withdraw; new groups and new users do not', async (t) => {
  const table = (...entries: [string, string, string[]][]): UserTable => ({ users: new Map(entries.map(([name, hash, groups]) => [name, { name, hash, groups }])), maxCost: 4 });
  const before = table(['alice', 'h1', ['devs']], ['erin', 'h2', []], ['gus', 'h3', []]);
  const after = table(['alice', 'h1', ['devs', 'ops']], ['erin', 'h2-new', []], ['hank', 'h4', []]);
  t.same(withdrawnUsers(before, after).sort(), ['erin', 'gus']);
  t.same(withdrawnUsers(before, before), [], 'the same file: nothing');
  t.same(withdrawnUsers(undefined, after), [], 'no file before: nothing known to withdraw');
});

t.test('one process: a known client whose credential no longer holds is let try once, then counted and known no more', async (t) => {
  const limiter = new FailureLimiter({ limit: 1, windowMs: 60_000 });
  const known = new KnownClients();
  const login = localLoginLimiter(limiter, known);
  const first = login.begin('192.0.2.1', 'erin', 'erin-old') as LoginAdmission;
  first.finish('success');
  t.ok(known.has('erin-old', '192.0.2.1'), 'known after a success');
  limiter.recordFailure('198.51.100.1', 'erin');
  t.equal(login.blockedForMs('192.0.2.9', 'erin', 'erin-old'), limiter.blockedForMs('192.0.2.9', 'erin'), 'the name is locked for others');
  t.equal(login.blockedForMs('192.0.2.1', 'erin', 'erin-old'), 0, 'not for the known client');
  login.usersChanged([]);
  t.ok(known.has('erin-old', '192.0.2.1'), 'a reload that withdraws nobody keeps it');
  // Her hash changed, but the reload did not say so: her old password fails its check.
  const stale = login.begin('192.0.2.1', 'erin', 'erin-old') as LoginAdmission;
  t.equal(stale.waitMs, 0, 'let through, once');
  stale.finish('failure');
  t.notOk(known.has('erin-old', '192.0.2.1'), 'known no more');
  t.ok(limiter.blockedForMs('192.0.2.1', undefined) > 0, 'and the failure counted against the address');
  t.ok((login.begin('192.0.2.1', 'erin', 'erin-old') as LoginAdmission).waitMs > 0, 'the next try is refused');

  known.add('gus-pw', '192.0.2.2', 'gus');
  known.add('alice-pw', '192.0.2.3', 'alice');
  known.add('unnamed', '192.0.2.4');
  login.usersChanged(['gus']);
  t.same([known.has('gus-pw', '192.0.2.2'), known.has('alice-pw', '192.0.2.3'), known.has('unnamed', '192.0.2.4')], [false, true, false], "a withdrawn user's credential goes, and one whose user is not known");
  login.usersChanged();
  t.equal(known.size, 0, 'without the list, everything goes');
});

t.test('--workers: the primary keeps known clients across a reload that withdraws nobody, and drops a credential that fails', async (t) => {
  const limiter = new FailureLimiter({ limit: 1, windowMs: 60_000 });
  const authority = new LoginLimitsAuthority(limiter, () => {});
  const answers: number[] = [];
  const reply = (message: { kfp: string; waitMs?: number }) => message.kfp === 'login-answer' && answers.push(message.waitMs as number);
  authority.handle(1, { kfp: 'login-begin', id: 1, client: '192.0.2.1', user: 'alice', credential: 'c' }, reply);
  authority.handle(1, { kfp: 'login-finish', id: 1, outcome: 'success' }, reply);
  authority.handle(2, { kfp: 'login-begin', id: 2, client: '198.51.100.1', user: 'alice', credential: 'guess' }, reply);
  authority.handle(2, { kfp: 'login-finish', id: 2, outcome: 'failure' }, reply);
  authority.handle(2, { kfp: 'login-forget', users: [] }, reply);
  authority.handle(2, { kfp: 'login-check', id: 3, client: '192.0.2.1', user: 'alice', credential: 'c' }, reply);
  t.equal(answers.at(-1), 0, "after a reload that withdraws nobody, alice's client is still known");
  authority.handle(1, { kfp: 'login-begin', id: 4, client: '192.0.2.1', user: 'alice', credential: 'c' }, reply);
  authority.handle(1, { kfp: 'login-finish', id: 4, outcome: 'failure' }, reply);
  authority.handle(2, { kfp: 'login-check', id: 5, client: '192.0.2.1', user: 'alice', credential: 'c' }, reply);
  t.ok((answers.at(-1) as number) > 0, 'once her credential fails, she is known no more and waits for the lock');
  // bob's name locked by someone else's guess; his own client is known (login-used names him).
  authority.handle(2, { kfp: 'login-begin', id: 6, client: '198.51.100.2', user: 'bob', credential: 'guess' }, reply);
  authority.handle(2, { kfp: 'login-finish', id: 6, outcome: 'failure' }, reply);
  const bobCheck = (id: number) => authority.handle(2, { kfp: 'login-check', id, client: '192.0.2.7', user: 'bob', credential: 'd' }, reply);
  authority.handle(1, { kfp: 'login-used', client: '192.0.2.7', credential: 'd', user: 'bob' }, reply);
  bobCheck(7);
  t.equal(answers.at(-1), 0, "bob's client is known");
  authority.handle(1, { kfp: 'login-forget', users: ['alice'] }, reply);
  bobCheck(8);
  t.equal(answers.at(-1), 0, 'a reload that withdraws alice keeps him');
  authority.handle(1, { kfp: 'login-forget', users: ['bob'] }, reply);
  bobCheck(9);
  t.ok((answers.at(-1) as number) > 0, 'one that withdraws him does not');
  authority.handle(1, { kfp: 'login-used', client: '192.0.2.7', credential: 'd', user: 'bob' }, reply);
  authority.handle(1, { kfp: 'login-forget' }, reply);
  bobCheck(10);
  t.ok((answers.at(-1) as number) > 0, 'a worker that sends no list has every known client forgotten (as before)');
});
