// Basic auth through a real proxy process: the apiserver stand-in sees exactly the user and
// groups of the users file, and nothing reaches it for a failed login.
import t from 'tap';
import { Agent } from 'undici';
import { basicAuth, call, proxyClient } from './helpers/clients.js';
import { waitFor } from './helpers/reload.js';
import { ALICE, CAROL, HTPASSWD_USER, apacheHtpasswdLine, bcryptLine, startStack, type TestUser } from './helpers/setup.js';

// Cost 12 is what `kube-front-proxy user add` writes: ~400 ms of CPU per compare here.
const SLOW: TestUser = { name: 'slow', password: 'expensive-to-check', groups: ['slowpokes'] };

const stack = await startStack(t, { users: [bcryptLine(ALICE), bcryptLine(CAROL), apacheHtpasswdLine(HTPASSWD_USER), bcryptLine(SLOW, 12)] });
const { apiserver, pki, proxy } = stack;
const client = proxyClient(pki);
t.teardown(() => client.close());

function identityOf(user: Pick<TestUser, 'name' | 'password'>) {
  return call(client, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(user) } });
}

t.test('the right password: the apiserver sees the user and each group', async (t) => {
  const res = await identityOf(ALICE);
  t.equal(res.status, 200);
  t.same(res.body, { authn: 'requestheader', user: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'], extra: {} } });
  const seen = apiserver.requests.at(-1);
  t.equal(seen?.peerCN, 'front-proxy-client', 'over mTLS with the front-proxy client certificate');
  t.notOk(
    seen?.rawHeaders.some(([name]) => name.toLowerCase() === 'authorization'),
    'the password never reaches the apiserver',
  );
});

t.test('SelfSubjectReview (what kubectl auth whoami asks) answers for the user', async (t) => {
  const res = await call(client, `${proxy.url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    method: 'POST',
    headers: { authorization: basicAuth(ALICE), 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'SelfSubjectReview', apiVersion: 'authentication.k8s.io/v1' }),
  });
  t.equal(res.status, 201);
  t.match(res.body, { kind: 'SelfSubjectReview', status: { userInfo: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] } } });
});

t.test('a hash made by Apache htpasswd -B ($2y$) verifies; a user with no groups gets none', async (t) => {
  const dave = await identityOf(HTPASSWD_USER);
  t.equal(dave.status, 200);
  t.match(dave.body, { user: { username: 'dave', groups: ['admins', 'system:authenticated'] } });
  const carol = await identityOf(CAROL);
  t.equal(carol.status, 200, 'a password with colons: the user name ends at the first colon');
  t.same((carol.body as { user: { groups: string[] } }).user.groups, ['system:authenticated']);
});

t.test('wrong password, unknown user, no credentials, malformed header: 401 Status, nothing forwarded', async (t) => {
  const before = apiserver.requests.length;
  const attempts: [string, Record<string, string>][] = [
    ['wrong password', { authorization: basicAuth({ name: 'alice', password: 'wrong' }) }],
    ['unknown user', { authorization: basicAuth({ name: 'nobody', password: 'whatever' }) }],
    ['no credentials', {}],
    ['a bearer token', { authorization: 'Bearer abc.def.ghi' }],
    ['basic without a colon', { authorization: `Basic ${Buffer.from('alice').toString('base64')}` }],
    ['an empty user name', { authorization: basicAuth({ name: '', password: 'x' }) }],
  ];
  for (const [name, headers] of attempts) {
    const res = await call(client, `${proxy.url}/api/v1/namespaces/default/pods`, { method: 'GET', headers });
    t.equal(res.status, 401, `${name}: 401`);
    t.equal(res.headers['www-authenticate'], 'Basic realm="kube-front-proxy", charset="UTF-8"', `${name}: asks for basic credentials`);
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8');
    t.match(res.body, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401 }, `${name}: a Kubernetes Status`);
  }
  const wrong = await identityOf({ name: 'alice', password: 'wrong' });
  const unknown = await identityOf({ name: 'nobody', password: 'wrong' });
  t.equal((wrong.body as { message: string }).message, (unknown.body as { message: string }).message, 'an unknown user reads exactly like a wrong password');
  t.equal(apiserver.requests.length, before, 'the apiserver saw none of them');
});

t.test('bcrypt runs once per credential: later requests hit the cache', async (t) => {
  const started = performance.now();
  t.equal((await identityOf(SLOW)).status, 200);
  const first = performance.now() - started;
  const later: number[] = [];
  for (let i = 0; i < 10; i++) {
    const s = performance.now();
    t.equal((await identityOf(SLOW)).status, 200);
    later.push(performance.now() - s);
  }
  later.sort((a, b) => a - b);
  t.ok(first > 150, `first request runs bcrypt at cost 12 (${first.toFixed(0)} ms)`);
  t.ok((later[5] ?? Infinity) < first / 4, `cached requests are fast (median ${later[5]?.toFixed(1)} ms vs ${first.toFixed(0)} ms)`);
  const wrong = performance.now();
  t.equal((await identityOf({ name: 'slow', password: 'not-it' })).status, 401);
  t.ok(performance.now() - wrong > 150, 'a wrong password for the same user is not served from the cache');
});

t.test('a flood of wrong passwords does not stall other users', async (t) => {
  // Ten cost-12 checks queue behind one bcrypt worker: several seconds of work. They come from
  // ten addresses for ten names (an unknown name costs a cost-12 bcrypt too), as a distributed
  // flood would: failed-login limits (test/brute-force.test.ts) stop one address or one name.
  const flooders = Array.from({ length: 10 }, (_, i) => new Agent({ localAddress: `127.0.1.${i + 1}`, connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' } }));
  t.teardown(() => Promise.all(flooders.map((a) => a.close())));
  const flood = flooders.map((agent, i) => call(agent, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth({ name: `guesser-${i}`, password: `guess-${i}` }) } }));
  await new Promise((resolve) => setTimeout(resolve, 100));
  const timings: number[] = [];
  for (let i = 0; i < 5; i++) {
    const s = performance.now();
    t.equal((await identityOf(ALICE)).status, 200, 'a cached user is served during the flood');
    const cert = proxyClient(pki, { cert: 'user-bob' });
    t.equal((await call(cert, `${proxy.url}/test/identity`)).status, 200, 'a certificate user is served during the flood');
    await cert.close();
    timings.push(performance.now() - s);
  }
  const results = await Promise.all(flood);
  t.ok(
    results.every((r) => r.status === 401),
    'every guess was refused',
  );
  t.ok(Math.max(...timings) < 500, `other users answered within 500 ms (slowest ${Math.max(...timings).toFixed(0)} ms) while the guesses took seconds`);
});

t.test('one log line per request, failed logins with their reason, never a password or Authorization value', async (t) => {
  // The lines are written once each answer has gone, and batched: wait for the last ones.
  await waitFor('the POST and both failed logins in the log', () => ['/apis/authentication.k8s.io/v1/selfsubjectreviews', 'bad-password', 'unknown-user'].every((mark) => proxy.logs.some((l) => l.path === mark || l.reason === mark)));
  const requests = proxy.logs.filter((l) => l.msg === 'request');
  t.ok(
    requests.some((l) => l.method === 'POST' && l.path === '/apis/authentication.k8s.io/v1/selfsubjectreviews' && l.status === 201 && l.user === 'alice' && l.auth === 'basic'),
    'the POST is logged with its user',
  );
  const failures = proxy.logs.filter((l) => l.msg === 'authentication failed');
  t.ok(failures.some((l) => l.reason === 'bad-password' && l.claimedUser === 'alice'));
  t.ok(failures.some((l) => l.reason === 'unknown-user' && l.claimedUser === 'nobody'));
  const everything = JSON.stringify(proxy.logs) + proxy.stderr();
  for (const secret of [ALICE.password, CAROL.password, HTPASSWD_USER.password, SLOW.password, 'wrong', 'not-it', 'Basic ', 'Bearer ']) {
    t.notOk(everything.includes(secret), `the log never contains ${JSON.stringify(secret)}`);
  }
});
