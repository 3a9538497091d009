// A users file whose hashes have different bcrypt costs: one warning at load naming the costs and
// how many users have each, none for a file with one cost; and an unknown user's password is
// compared with a decoy hash of the cost most users have (checked on the hash, not by timing).
import bcrypt from 'bcryptjs';
import t from 'tap';
import { BasicAuthenticator } from '../src/auth/basic.js';
import type { BcryptPool } from '../src/auth/bcrypt-pool.js';
import { costWarning, decoyCost, parseHtpasswd } from '../src/auth/htpasswd.js';

const hashes = new Map<number, string>();
function line(name: string, cost: number): string {
  let hash = hashes.get(cost);
  if (hash === undefined) {
    hash = bcrypt.hashSync('pw', cost);
    hashes.set(cost, hash);
  }
  return `${name}:${hash}`;
}
const file = (...users: [string, number][]) => `# users\n${users.map(([name, cost]) => line(name, cost)).join('\n')}\n`;

/** A pool that records the hashes it is asked to compare with, and runs the real compare. */
function recordingPool(): { pool: BcryptPool; seen: string[] } {
  const seen: string[] = [];
  const pool = {
    compare(password: string, hash: string): Promise<boolean> {
      seen.push(hash);
      return Promise.resolve(bcrypt.compareSync(password, hash));
    },
  } as unknown as BcryptPool;
  return { pool, seen };
}

t.test('decoyCost: the cost most users have, the higher one on a tie', async (t) => {
  t.equal(decoyCost(new Map([[10, 1]])), 10);
  t.equal(
    decoyCost(
      new Map([
        [4, 100],
        [14, 1],
      ]),
    ),
    4,
    'not the maximum: one admin at 14 does not expose 100 users at 4',
  );
  t.equal(
    decoyCost(
      new Map([
        [12, 2],
        [4, 5],
        [10, 3],
      ]),
    ),
    4,
  );
  t.equal(
    decoyCost(
      new Map([
        [10, 2],
        [12, 2],
      ]),
    ),
    12,
    'a tie: the higher',
  );
  t.equal(decoyCost(new Map()), 10, 'no users: the default cost');
});

t.test('one cost: no warning; the decoy has that cost', async (t) => {
  const table = parseHtpasswd(file(['alice', 5], ['bob', 5]));
  t.same([...(table.costs ?? [])], [[5, 2]]);
  t.equal(table.decoyCost, 5);
  t.equal(costWarning(table), undefined);
  const warned: unknown[] = [];
  const { pool, seen } = recordingPool();
  const basic = new BasicAuthenticator(table, pool, { cacheTtlMs: 1000, cacheSize: 10, warn: (...args) => warned.push(args) });
  t.same(warned, [], 'nothing logged at load');
  t.match(await basic.verify('nobody', 'pw'), { ok: false, reason: 'unknown-user' });
  t.equal(bcrypt.getRounds(seen[0] ?? ''), 5, 'the decoy compare is at cost 5');
  basic.setUsers(parseHtpasswd(file(['carol', 4])));
  t.same(warned, [], 'nor at a reload to another uniform file');
});

t.test('mixed costs: one warning naming each cost and its users; the decoy at the most common cost', async (t) => {
  const table = parseHtpasswd(file(['a', 4], ['b', 4], ['c', 4], ['admin', 6]));
  t.equal(table.maxCost, 6);
  t.equal(table.decoyCost, 4);
  const warned: Array<[Record<string, unknown>, string]> = [];
  const { pool, seen } = recordingPool();
  const basic = new BasicAuthenticator(table, pool, { cacheTtlMs: 1000, cacheSize: 10, warn: (fields, msg) => warned.push([fields, msg]) });
  t.equal(warned.length, 1, 'one warning line');
  const [fields, msg] = warned[0] ?? [{}, ''];
  t.same(fields, { bcryptCosts: { '4': 3, '6': 1 }, decoyCost: 4 });
  t.match(msg, /cost 4: 3 users, cost 6: 1 user/, 'names the costs and the users per cost');
  t.match(msg, /--cost 4/, 'recommends one cost');

  t.match(await basic.verify('nobody', 'pw'), { ok: false, reason: 'unknown-user' });
  t.match(await basic.verify('also-nobody', 'other'), { ok: false, reason: 'unknown-user' });
  t.equal(seen.length, 2);
  for (const hash of seen) {
    t.equal(bcrypt.getRounds(hash), 4, 'unknown users: a decoy of cost 4, what 3 of the 4 users cost');
    t.notOk(
      [...table.users.values()].some((u) => u.hash === hash),
      'a hash of no user',
    );
  }
  t.match(await basic.verify('a', 'pw'), { ok: true });
  t.equal(bcrypt.getRounds(seen[2] ?? ''), 4, 'a known user at cost 4: the same cost as a stranger');
  t.match(await basic.verify('admin', 'wrong'), { ok: false, reason: 'bad-password' });
  t.equal(bcrypt.getRounds(seen[3] ?? ''), 6, 'the minority-cost user still costs their own: what the warning is for');

  basic.setUsers(parseHtpasswd(file(['a', 4], ['x', 6], ['y', 6])));
  t.equal(warned.length, 2, 'warned again at a reload that still mixes costs');
  t.same(warned[1]?.[0], { bcryptCosts: { '4': 1, '6': 2 }, decoyCost: 6 });
  await basic.verify('nobody', 'pw');
  t.equal(bcrypt.getRounds(seen.at(-1) ?? ''), 6, 'the decoy follows the new file');
});

t.test('the decoy hash is well formed at every cost: compared, never thrown on', async (t) => {
  const { pool, seen } = recordingPool();
  const basic = new BasicAuthenticator(parseHtpasswd(file(['a', 4])), pool, { cacheTtlMs: 1000, cacheSize: 10 });
  await basic.verify('nobody', '');
  t.equal(bcrypt.compareSync('', seen[0] ?? ''), false);
  t.equal(bcrypt.compareSync('pw', seen[0] ?? ''), false);
});

t.test('a table built without costs (older callers): the decoy at maxCost, no warning', async (t) => {
  const { pool, seen } = recordingPool();
  const users = parseHtpasswd(file(['a', 4])).users;
  const warned: unknown[] = [];
  const basic = new BasicAuthenticator({ users, maxCost: 5 }, pool, { cacheTtlMs: 1000, cacheSize: 10, warn: (...args) => warned.push(args) });
  await basic.verify('nobody', 'pw');
  t.equal(bcrypt.getRounds(seen[0] ?? ''), 5);
  t.same(warned, []);
});
