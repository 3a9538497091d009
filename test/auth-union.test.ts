// Authentication as a list of methods (auth/union.ts), on its own with fake methods: the first
// method that answers decides, "not mine" asks the next, a refusal ends the chain, and a request
// no method reads is refused as carrying no credential. Then the proxy's own list (auth/index.ts)
// where it needs no TLS, and the HTTP answer to each kind of refusal (refusals.ts).
import t from 'tap';
import type { TLSSocket } from 'node:tls';
import type { Credential, Identity } from '../src/auth/identity.js';
import { Authenticator } from '../src/auth/index.js';
import { LimiterUnavailableError, type LoginLimiter } from '../src/auth/login-limiter.js';
import { NOT_MINE, type AuthRefusal, type AuthRequest, type MethodVerdict, type RequestAuthenticator } from '../src/auth/method.js';
import { TokenPassthroughMethod } from '../src/auth/token-passthrough.js';
import { AuthenticatorUnion } from '../src/auth/union.js';
import { refusalStatus } from '../src/request/refusals.js';

const MESSAGES = { noCredentials: 'present something', malformedAuthorization: 'cannot read that' };

function request(authorization?: string): AuthRequest {
  return { connection: {} as TLSSocket, authorization, clientAddress: '192.0.2.1' };
}

function identity(method: 'basic' | 'x509', user: string): Identity {
  return { method, user, groups: [], extra: {}, upstreamAuth: 'front-proxy', credential: method === 'basic' ? { method, entry: { name: user, hash: 'h', groups: [] } } : { method, connection: {} as TLSSocket } };
}

/** A method that answers `verdict` (at once, or as a promise) and records that it was asked. */
function fake(method: 'basic' | 'x509', verdict: MethodVerdict, asked: string[], options: { async?: boolean; holds?: boolean } = {}): RequestAuthenticator {
  return {
    method,
    authenticate() {
      asked.push(method);
      return options.async ? Promise.resolve(verdict) : verdict;
    },
    stillHolds: (credential: Credential) => credential.method === method && options.holds === true,
  };
}

t.test('the first method that answers decides, in list order', async (t) => {
  const asked: string[] = [];
  const cert = identity('x509', 'from-cert');
  const union = new AuthenticatorUnion([fake('x509', { ok: true, identity: cert }, asked), fake('basic', { ok: true, identity: identity('basic', 'from-password') }, asked)], MESSAGES);
  const outcome = await union.authenticate(request('Basic YTpi'));
  t.same(outcome, { ok: true, identity: cert }, "the first method's identity");
  t.same(asked, ['x509'], 'the second method is never asked');
});

t.test('"not mine" asks the next method', async (t) => {
  const asked: string[] = [];
  const alice = identity('basic', 'alice');
  const union = new AuthenticatorUnion([fake('x509', NOT_MINE, asked), fake('basic', { ok: true, identity: alice }, asked, { async: true })], MESSAGES);
  t.same(await union.authenticate(request('Basic YTpi')), { ok: true, identity: alice });
  t.same(asked, ['x509', 'basic'], 'both asked, in order');
});

t.test('a refusal ends the chain, even when a later method would let the request in', async (t) => {
  const asked: string[] = [];
  const refused = { ok: false as const, method: 'x509' as const, reason: 'cert-expired' as const, message: 'client certificate has expired', claimedUser: 'eve' };
  const union = new AuthenticatorUnion([fake('x509', refused, asked, { async: true }), fake('basic', { ok: true, identity: identity('basic', 'eve') }, asked)], MESSAGES);
  t.same(await union.authenticate(request('Basic YTpi')), refused, 'the refusal as the method gave it');
  t.same(asked, ['x509'], 'the password is never checked');
});

t.test('no method answers: no credentials, or a malformed Authorization value', async (t) => {
  const asked: string[] = [];
  const union = new AuthenticatorUnion([fake('x509', NOT_MINE, asked), fake('basic', NOT_MINE, asked, { async: true })], MESSAGES);
  const none = { ok: false, method: undefined, reason: 'no-credentials', message: 'present something', claimedUser: undefined };
  t.same(await union.authenticate(request(undefined)), none, 'no Authorization');
  t.same(await union.authenticate(request('')), none, 'an empty Authorization is none');
  t.same(asked, ['x509', 'basic', 'x509', 'basic'], 'every method asked each time');
  t.same(await union.authenticate(request('Digest abc')), { ok: false, method: undefined, reason: 'malformed-authorization', message: 'cannot read that', claimedUser: undefined }, 'an Authorization value no method took');
  t.same(await new AuthenticatorUnion([], MESSAGES).authenticate(request(undefined)), none, 'an empty list lets nobody in');
});

t.test('stillHolds asks the method that let the identity in', async (t) => {
  const union = new AuthenticatorUnion([fake('x509', NOT_MINE, [], { holds: false }), fake('basic', NOT_MINE, [], { holds: true })], MESSAGES);
  t.equal(union.stillHolds(identity('basic', 'alice')), true, 'the password method vouches');
  t.equal(union.stillHolds(identity('x509', 'bob')), false, 'the certificate method does not');
  t.equal(union.stillHolds({ ...identity('basic', 'alice'), credential: undefined }), false, 'no credential: never holds');
  t.equal(union.stillHolds(null), false, 'no identity: never holds');
  t.equal(new AuthenticatorUnion([fake('x509', NOT_MINE, [], { holds: true })], MESSAGES).stillHolds(identity('basic', 'alice')), false, 'no listed method set it: never holds');
});

t.test("the proxy's list without certificates or users: token passthrough only where nothing else answers", async (t) => {
  const socket = {} as TLSSocket;
  const tokens = new Authenticator({ certificates: false, basic: undefined, revocations: undefined, failures: undefined, tokenPassthrough: true });
  const passed = await tokens.authenticate(socket, 'Bearer abc.def', '192.0.2.1');
  t.match(passed, { ok: true, identity: { method: 'bearer', user: '', upstreamAuth: 'client-token', credential: { method: 'bearer' } } }, "a bearer token goes to the apiserver as the client's own");
  t.equal(tokens.stillHolds(passed.ok ? passed.identity : undefined), true, 'and holds across reloads');
  t.same(
    await tokens.authenticate(socket, 'Basic YTpi', '192.0.2.1'),
    { ok: false, method: 'basic', reason: 'basic-auth-disabled', message: 'authentication required: present a bearer token', claimedUser: 'a' },
    'a password without a users file is refused, not passed over',
  );
  t.same(
    await tokens.authenticate(socket, 'Bearer  two-spaces', '192.0.2.1'),
    { ok: false, method: undefined, reason: 'malformed-authorization', message: 'authentication required: present a bearer token', claimedUser: undefined },
    'a token the apiserver would not read',
  );
  t.match(await tokens.authenticate(socket, undefined, '192.0.2.1', 'v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.YWJj'), { ok: true, identity: { upstreamAuth: 'client-token' } }, 'a WebSocket token with no Authorization');
  t.match(await tokens.authenticate(socket, 'Digest x', '192.0.2.1', 'v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.YWJj'), { ok: false, reason: 'malformed-authorization' }, 'but not beside an Authorization value');

  const off = new Authenticator({ certificates: true, basic: undefined, revocations: undefined, failures: undefined });
  t.same(
    await off.authenticate({ getPeerCertificate: () => ({}) } as unknown as TLSSocket, 'Bearer abc', '192.0.2.1'),
    { ok: false, method: undefined, reason: 'malformed-authorization', message: 'authentication required: present a client certificate', claimedUser: undefined },
    'without --token-passthrough a token is no credential',
  );
  t.equal(off.stillHolds(passed.ok ? passed.identity : undefined), false, 'nor does a passed-through identity hold there');
});

t.test('each refusal becomes the Status sent for it', async (t) => {
  const unauthorized = refusalStatus({ ok: false, method: 'basic', reason: 'bad-password', message: 'invalid username or password', claimedUser: 'alice' });
  t.match(unauthorized, { code: 401, reason: 'Unauthorized', message: 'invalid username or password', headers: { 'www-authenticate': 'Basic realm="kube-front-proxy", charset="UTF-8"' } });
  const limited = refusalStatus({ ok: false, method: 'basic', reason: 'rate-limited', message: 'too many failed logins; try again in 3 s', claimedUser: 'alice', retryAfterMs: 2001 });
  t.match(limited, { code: 429, reason: 'TooManyRequests', message: 'too many failed logins; try again in 3 s' });
  t.same(limited.headers, { 'retry-after': '3' });
  t.same(refusalStatus({ ok: false, method: 'bearer', reason: 'rate-limited', message: 'm', claimedUser: undefined, retryAfterMs: 10 }).headers, { 'retry-after': '1' }, 'never less than a second');
  const overloaded = refusalStatus({ ok: false, method: 'basic', reason: 'overloaded', message: 'too many logins are being checked; retry shortly', claimedUser: 'alice' });
  t.match(overloaded, { code: 503, reason: 'ServiceUnavailable' });
  t.same(overloaded.headers, { 'retry-after': '1' });
});

t.test('a passed-through token: the failed-login limits decide, and limits that give no verdict refuse it as overloaded', async (t) => {
  const limiter = (blockedForMs: () => number | Promise<number>) => ({ blockedForMs }) as unknown as LoginLimiter;
  const bearer = request('Bearer some-token');
  t.match(await new TokenPassthroughMethod(limiter(() => 0)).authenticate(bearer), { ok: true, identity: { method: 'bearer', upstreamAuth: 'client-token' } }, 'not locked: handed on');
  t.match(await new TokenPassthroughMethod(limiter(() => 5000)).authenticate(bearer), { ok: false, reason: 'rate-limited', retryAfterMs: 5000 }, 'locked: refused');
  // --workers with the primary gone: as a password gets 503, not a 500.
  const gone = await new TokenPassthroughMethod(limiter(() => Promise.reject(new LimiterUnavailableError('the primary process is gone')))).authenticate(bearer);
  t.match(gone, { ok: false, method: 'bearer', reason: 'overloaded' });
  t.equal(refusalStatus(gone as AuthRefusal).code, 503);
  await t.rejects(new TokenPassthroughMethod(limiter(() => Promise.reject(new Error('a bug')))).authenticate(bearer), /a bug/, 'any other error is not hidden');
});
