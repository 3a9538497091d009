// Failed-login limits end to end: a real proxy process in front of the stand-in apiserver, and
// clients on different loopback addresses (Linux routes all of 127/8 to lo, so each source
// address is a different client to the proxy). The limit is the default 10; the window is short
// so the test can see it end.
import { once } from 'node:events';
import { connect as http2Connect } from 'node:http2';
import t from 'tap';
import { Agent, request } from 'undici';
import { basicAuth, call, rawRequest, type JsonResponse } from './helpers/clients.js';
import type { PkiName } from './helpers/pki.js';
import { ALICE, CAROL, startStack } from './helpers/setup.js';

const WINDOW_S = 3;
const LB = '127.0.0.5';
// Refusals are answered at once here (the delay has its own test at the end).
const { apiserver, pki, proxy } = await startStack(t, { flags: ['--auth-failure-window', `${WINDOW_S}s`, '--trusted-proxies', LB, '--auth-failure-delay', '0'] });

const agents = new Map<string, Agent>();
/** A client whose connections come from `localAddress` (and present `cert`, if given). */
function from(localAddress: string, cert?: PkiName): Agent {
  const name = `${localAddress} ${cert ?? ''}`;
  let agent = agents.get(name);
  if (!agent) {
    const tls = cert ? { cert: pki.pem[cert].cert, key: pki.pem[cert].key } : {};
    agent = new Agent({ localAddress, connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...tls } });
    agents.set(name, agent);
  }
  return agent;
}
t.teardown(() => Promise.all([...agents.values()].map((a) => a.close())));

function get(client: Agent, headers: Record<string, string> = {}): Promise<JsonResponse> {
  return call(client, `${proxy.url}/test/identity`, { method: 'GET', headers });
}

/** Log lines reach us through the child's stdout, a little after the response. */
async function logged(predicate: (line: (typeof proxy.logs)[number]) => boolean): Promise<boolean> {
  for (let i = 0; i < 40; i++) {
    if (proxy.logs.some(predicate)) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

const WRONG = { name: ALICE.name, password: 'not-her-password' };

t.test('a trusted proxy: failures are counted per the client it names, and the chain goes upstream', async (t) => {
  const lb = from(LB);
  for (let i = 0; i < 10; i++) {
    const res = await get(lb, { authorization: basicAuth({ name: `nobody-${i}`, password: 'x' }), 'x-forwarded-for': '198.51.100.20' });
    t.equal(res.status, 401, `guess ${i + 1} through the balancer: 401`);
  }
  const locked = await get(lb, { authorization: basicAuth(CAROL), 'x-forwarded-for': '198.51.100.20' });
  t.equal(locked.status, 429, 'the client behind the balancer is locked, even with a right password');

  const before = apiserver.requests.length;
  const other = await get(lb, { authorization: basicAuth(CAROL), 'x-forwarded-for': '203.0.113.1, 198.51.100.21' });
  t.equal(other.status, 200, 'another client behind the same balancer is not');
  t.equal(apiserver.requests.length, before + 1);
  const seen = apiserver.requests
    .at(-1)
    ?.rawHeaders.filter(([name]) => name.toLowerCase() === 'x-forwarded-for')
    .map(([, value]) => value);
  t.same(seen, [`203.0.113.1, 198.51.100.21, ${LB}`], 'the stand-in sees the chain with the balancer appended');

  const direct = await get(lb, { authorization: basicAuth(CAROL) });
  t.equal(direct.status, 200, 'the balancer itself is not locked');
  t.ok(await logged((l) => l.msg === 'authentication failed' && l.reason === 'unknown-user' && l.client === '198.51.100.20'), 'the log names the client, not the balancer');
});

t.test('an untrusted peer cannot choose the address it is counted under', async (t) => {
  const peer = from('127.0.0.6');
  for (let i = 0; i < 10; i++) await get(peer, { authorization: basicAuth({ name: `nobody-${i}`, password: 'x' }), 'x-forwarded-for': `192.0.2.${i}` });
  const res = await get(peer, { authorization: basicAuth(CAROL), 'x-forwarded-for': '192.0.2.200' });
  t.equal(res.status, 429, 'ten failures with ten made-up X-Forwarded-For values are ten from this peer');
});

t.test('after 10 wrong passwords alice is refused without bcrypt or upstream; nobody else is', async (t) => {
  const attacker = from('127.0.0.1');
  const alicesKubectl = from('127.0.0.3');
  const warm = await get(alicesKubectl, { authorization: basicAuth(ALICE) });
  t.equal(warm.status, 200, "alice's kubectl logs in before the attack");

  const before = apiserver.requests.length;
  const statuses: number[] = [];
  for (let i = 0; i < 11; i++) statuses.push((await get(attacker, { authorization: basicAuth(WRONG) })).status);
  t.same(statuses, [...Array<number>(10).fill(401), 429], '10 wrong passwords answered 401, the 11th attempt 429');

  // The right password from the attacking address, and at the same moment another user from elsewhere.
  const [right, carol] = await Promise.all([get(attacker, { authorization: basicAuth(ALICE) }), get(from('127.0.0.2'), { authorization: basicAuth(CAROL) })]);
  t.equal(right.status, 429, 'the right password is refused too');
  t.match(right.body, { kind: 'Status', status: 'Failure', reason: 'TooManyRequests', code: 429 });
  const retryAfter = Number(right.headers['retry-after']);
  t.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= WINDOW_S, `Retry-After is the seconds left of the window (${right.headers['retry-after']})`);
  t.equal(carol.status, 200, 'carol from 127.0.0.2 logs in normally');
  t.match(carol.body, { user: { username: 'carol' } });
  t.equal(apiserver.requests.length, before + 1, "the stand-in saw only carol's request");

  const spoofed = await get(attacker, { authorization: basicAuth(CAROL), 'x-forwarded-for': '203.0.113.9' });
  t.equal(spoofed.status, 429, 'a spoofed X-Forwarded-For does not unlock the address');
  const again = await get(attacker, { authorization: basicAuth(CAROL) });
  t.equal(again.status, 429, '... nor reset its count');

  const kubectl = await get(alicesKubectl, { authorization: basicAuth(ALICE) });
  t.equal(kubectl.status, 200, "alice's kubectl keeps working from its cached credential while the name is locked");
  t.match(kubectl.body, { user: { username: 'alice' } });
  const elsewhere = await get(from('127.0.0.4'), { authorization: basicAuth(ALICE) });
  t.equal(elsewhere.status, 429, 'her right password from a client that never used it is refused like a guess (else 429-or-200 would be an oracle)');

  const bob = await get(from('127.0.0.1', 'user-bob'));
  t.equal(bob.status, 200, 'a client-certificate user from the locked address is never limited');
  t.match(bob.body, { user: { username: 'bob' } });

  const exec = await rawRequest(
    proxy.port,
    pki,
    [
      'GET /api/v1/namespaces/default/pods/pod-0/exec?command=sh HTTP/1.1',
      'Host: localhost',
      'Connection: Upgrade',
      'Upgrade: websocket',
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
      `Authorization: ${basicAuth(CAROL)}`,
    ].join('\r\n'),
  );
  t.equal(exec.statusCode, 429, 'an upgrade (kubectl exec) from the locked address is refused the same way');
  t.ok(exec.headerLines.some((line) => /^retry-after: \d+$/i.test(line)));

  const metrics = await request(`${proxy.adminUrl}/metrics`);
  const text = await metrics.body.text();
  const line = /^kube_front_proxy_authentications_total\{method="basic",outcome="rate-limited"\} (\d+)$/m.exec(text);
  t.ok(line && Number(line[1]) >= 5, `metrics count the refusals as rate-limited (${line?.[0]})`);
  t.ok(await logged((l) => l.msg === 'authentication failed' && l.reason === 'bad-password' && l.client === '127.0.0.1' && l.claimedUser === 'alice'), 'the failures that led to the lockout are logged');
  // Under a flood the refusals come by thousands a second: counted above, logged only at debug.
  t.notOk(
    proxy.logs.some((l) => l.reason === 'rate-limited'),
    'the refusals during the lockout are not logged at info',
  );

  // The window began with the first failure: wait it out.
  await new Promise((resolve) => setTimeout(resolve, retryAfter * 1000 + 100));
  const later = await get(attacker, { authorization: basicAuth(ALICE) });
  t.equal(later.status, 200, 'after the window alice logs in from the same address');
  t.match(later.body, { user: { username: 'alice' } });
});

t.test('a refused login waits --auth-failure-delay for its 429; other users do not wait', async (t) => {
  const slow = await startStack(t, { pki, flags: ['--auth-failure-delay', '800ms'] });
  const client = new Agent({ localAddress: '127.0.0.9', connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' } });
  t.teardown(() => client.close());
  const at = (auth: string) => call(client, `${slow.proxy.url}/test/identity`, { method: 'GET', headers: { authorization: auth } });
  for (let i = 0; i < 10; i++) t.equal((await at(basicAuth({ name: `nobody-${i}`, password: 'x' }))).status, 401);
  const started = performance.now();
  const refused = await at(basicAuth(CAROL));
  const waited = performance.now() - started;
  t.equal(refused.status, 429);
  t.ok(waited >= 750, `the 429 came after the delay (${waited.toFixed(0)} ms)`);
  const other = new Agent({ localAddress: '127.0.0.10', connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' } });
  t.teardown(() => other.close());
  const s2 = performance.now();
  t.equal((await call(other, `${slow.proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(CAROL) } })).status, 200);
  t.ok(performance.now() - s2 < 500, 'a login from another address is not delayed');
});

t.test('refusals are paced per connection: over HTTP/2, concurrent refused logins get one 429 per delay', async (t) => {
  const DELAY_MS = 150;
  const STREAMS = 8;
  const paced = await startStack(t, { pki, flags: ['--auth-failure-delay', `${DELAY_MS}ms`, '--auth-failure-limit', '2'] });
  const session = http2Connect(paced.proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' });
  t.teardown(() => session.destroy());
  const get = async (auth: string): Promise<{ status: number; at: number }> => {
    const stream = session.request({ ':path': '/test/identity', authorization: auth });
    stream.resume();
    const [headers] = (await once(stream, 'response')) as [Record<string, number>];
    await once(stream, 'end');
    return { status: headers[':status']!, at: performance.now() };
  };
  for (let i = 0; i < 2; i++) t.equal((await get(basicAuth({ name: 'alice', password: `guess-${i}` }))).status, 401);
  const started = performance.now();
  const answers = await Promise.all(Array.from({ length: STREAMS }, (_, i) => get(basicAuth({ name: 'alice', password: `guess-more-${i}` }))));
  t.same(
    answers.map((a) => a.status),
    Array(STREAMS).fill(429),
    'every one refused',
  );
  const spread = Math.max(...answers.map((a) => a.at)) - started;
  t.comment(`${STREAMS} refusals on one connection took ${spread.toFixed(0)} ms (delay ${DELAY_MS} ms)`);
  // At most one answer per delay: the last comes after STREAMS delays (before, all came after one).
  t.ok(spread >= STREAMS * DELAY_MS * 0.95, 'one refusal per delay on the connection');
});
