// --token-passthrough against the stand-in, whose union authenticates bearer tokens only when
// requestheader and x509 found nobody (as kube-apiserver's does): a bearer token with no
// certificate or password reaches the apiserver as it is, with no X-Remote-* header, over a
// connection that presents no client certificate; a certificate or a password wins over a token,
// which is then never forwarded; WebSocket bearer subprotocols follow the same rules; without the
// flag, nothing changes (401 from the proxy).
import t from 'tap';
import { bearerToken, websocketBearerToken } from '../src/auth/index.js';
import type { Identity } from '../src/auth/identity.js';
import { upstreamRequestHeaders, withoutBearerSubprotocols } from '../src/proxy/headers.js';
import { basicAuth, rawRequest, type RawResponse } from './helpers/clients.js';
import { waitFor } from './helpers/reload.js';
import { ALICE, startStack } from './helpers/setup.js';
import { sendUpgrade } from './helpers/tunnel.js';

const TOKEN = 'ci-bot-token.abc_DEF-123';
const BAD_TOKEN = 'not-a-token-anyone-issued';
const TOKENS = { [TOKEN]: { username: 'system:serviceaccount:default:ci-bot', groups: ['system:serviceaccounts', 'system:serviceaccounts:default'] } };
/** Requests the tests sent (the stand-in keeps the proxy's health checks apart). */
const sent = (apiserver: { requests: unknown[] }) => apiserver.requests.length;
const wsBearer = (token: string) => `base64url.bearer.authorization.k8s.io.${Buffer.from(token).toString('base64url')}`;

/** A response header's first value (rawRequest keeps the lines as received). */
function header(res: RawResponse, name: string): string | undefined {
  const line = res.headerLines.find((l) => l.toLowerCase().startsWith(`${name}:`));
  return line?.slice(line.indexOf(':') + 1).trim();
}

function head(path: string, extra: string[]): string {
  return [`GET ${path} HTTP/1.1`, 'Host: localhost', 'Connection: close', ...extra].join('\r\n');
}

t.test('header rules (pure functions)', async (t) => {
  t.equal(bearerToken(`Bearer ${TOKEN}`), TOKEN);
  t.equal(bearerToken(`bearer ${TOKEN}`), TOKEN, '"bearer" in any case, as the apiserver reads it');
  t.equal(bearerToken('Bearer  two-spaces'), undefined, 'two spaces: the apiserver would read no token (anonymous), so it is not passed');
  t.equal(bearerToken('Bearer '), undefined);
  t.equal(bearerToken('Bearer a b'), undefined, 'a third part would be cut off by the apiserver');
  t.equal(bearerToken('Basic YTpi'), undefined);
  t.equal(websocketBearerToken(`v5.channel.k8s.io, ${wsBearer(TOKEN)}`), Buffer.from(TOKEN).toString('base64url'));
  t.equal(websocketBearerToken(wsBearer(TOKEN)), undefined, 'no other subprotocol: the apiserver refuses it');
  t.equal(websocketBearerToken(`v5.channel.k8s.io, ${wsBearer('a')}, ${wsBearer('b')}`), undefined, 'two tokens');
  t.equal(websocketBearerToken('v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.'), undefined, 'empty token');
  t.equal(websocketBearerToken('v5.channel.k8s.io'), undefined);

  t.same(withoutBearerSubprotocols(`v5.channel.k8s.io, ${wsBearer(TOKEN)}, v4.channel.k8s.io`), 'v5.channel.k8s.io, v4.channel.k8s.io');
  t.equal(withoutBearerSubprotocols(wsBearer(TOKEN)), undefined);
  t.same(withoutBearerSubprotocols(['v5.channel.k8s.io', 'v4.channel.k8s.io']), ['v5.channel.k8s.io', 'v4.channel.k8s.io'], 'unchanged without a token');

  const policy = { allowImpersonation: true };
  const incoming = {
    authorization: `Bearer ${TOKEN}`,
    'proxy-authorization': 'Basic cm9vdDpyb290',
    'x-remote-user': 'root',
    'x-remote-group': 'system:masters',
    'x-remote-extra-scopes': 'admin',
    'sec-websocket-protocol': `v5.channel.k8s.io, ${wsBearer(TOKEN)}`,
    'impersonate-user': 'someone',
    accept: 'application/json',
  };
  const bearer: Identity = { method: 'bearer', user: '', groups: [], extra: {}, upstreamAuth: 'client-token', credential: { method: 'bearer', key: 'k' } };
  const passed = upstreamRequestHeaders(incoming, bearer, '10.0.0.1', policy, 'audit-1');
  t.same(
    passed,
    {
      authorization: `Bearer ${TOKEN}`,
      'sec-websocket-protocol': `v5.channel.k8s.io, ${wsBearer(TOKEN)}`,
      'impersonate-user': 'someone',
      accept: 'application/json',
      'audit-id': 'audit-1',
      'x-forwarded-for': '10.0.0.1',
    },
    'bearer: the token and its subprotocol go, no X-Remote-* header at all, no Proxy-Authorization',
  );

  const alice: Identity = { method: 'basic', user: 'alice', groups: ['devs'], extra: {}, upstreamAuth: 'front-proxy' };
  const vouched = upstreamRequestHeaders(incoming, alice, undefined, policy);
  t.notOk('authorization' in vouched, 'a user the proxy vouches for: no Authorization');
  t.equal(vouched['sec-websocket-protocol'], 'v5.channel.k8s.io', 'and no bearer subprotocol');
  t.equal(vouched['x-remote-user'], 'alice');
});

t.test('flag off: unchanged', async (t) => {
  const { apiserver, pki, proxy } = await startStack(t, { apiserver: { tokens: TOKENS } });
  const forwarded = () => apiserver.requests.length;
  const before = forwarded();
  const res = await rawRequest(proxy.port, pki, head('/test/identity', [`Authorization: Bearer ${TOKEN}`]));
  t.equal(res.statusCode, 401, 'the proxy refuses a token');
  t.match(JSON.parse(res.body.toString()), { kind: 'Status', reason: 'Unauthorized' });
  t.match(header(res, 'www-authenticate'), /^Basic/);
  const ws = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'websocket', headers: [`Sec-WebSocket-Protocol: v5.channel.k8s.io, ${wsBearer(TOKEN)}`] });
  t.equal(ws.statusCode, 401, 'a WebSocket bearer subprotocol is no credential either');
  ws.socket.destroy();
  t.equal(forwarded(), before, 'nothing reached the apiserver');

  // A password user who also offers a token subprotocol: the token is stripped.
  const alice = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'websocket', headers: [`Authorization: ${basicAuth(ALICE)}`, `Sec-WebSocket-Protocol: v5.channel.k8s.io, ${wsBearer(TOKEN)}`] });
  t.equal(alice.statusCode, 101);
  alice.socket.destroy();
  const seen = apiserver.requests.at(-1)!;
  t.same(
    seen.rawHeaders.filter(([n]) => n.toLowerCase() === 'sec-websocket-protocol').map(([, v]) => v),
    ['v5.channel.k8s.io'],
    'the bearer subprotocol is stripped',
  );
  t.equal(seen.user?.username, 'alice');
});

t.test('flag on', async (t) => {
  const { apiserver, pki, proxy } = await startStack(t, { apiserver: { tokens: TOKENS }, flags: ['--token-passthrough=true', '--auth-failure-limit=3', '--auth-failure-delay=0s'] });

  t.test('a good token: the apiserver authenticates it, no X-Remote-*, no client certificate upstream', async (t) => {
    const res = await rawRequest(proxy.port, pki, head('/test/identity', [`Authorization: Bearer ${TOKEN}`, 'X-Remote-User: root', 'X-Remote-Group: system:masters', 'Proxy-Authorization: Basic cm9vdDpyb290']));
    t.equal(res.statusCode, 200);
    t.same(JSON.parse(res.body.toString()), { authn: 'token', user: { username: TOKENS[TOKEN].username, groups: [...TOKENS[TOKEN].groups, 'system:authenticated'], extra: {} } });
    const seen = apiserver.requests.at(-1)!;
    t.same(
      seen.rawHeaders.filter(([n]) => /^x-remote-/i.test(n)),
      [],
      "no X-Remote-* header: neither the client's nor the proxy's",
    );
    t.same(
      seen.rawHeaders.filter(([n]) => /^authorization$/i.test(n)).map(([, v]) => v),
      [`Bearer ${TOKEN}`],
      'the token, once',
    );
    t.notOk(seen.rawHeaders.some(([n]) => /^proxy-authorization$/i.test(n)));
    t.equal(seen.peerCN, null, 'the connection presents no client certificate (never the front-proxy one)');
    t.match(header(res, 'audit-id'), /.+/);
  });

  t.test('a watch with a token goes over the certificate-less connection too', async (t) => {
    const res = await rawRequest(proxy.port, pki, head('/test/identity?watch=1', [`Authorization: Bearer ${TOKEN}`]));
    t.equal(res.statusCode, 200);
    t.equal(apiserver.requests.at(-1)!.peerCN, null);
  });

  t.test("a bad token: the apiserver's 401, counted against the client address", async (t) => {
    for (let i = 0; i < 3; i++) {
      const res = await rawRequest(proxy.port, pki, head('/api/v1/namespaces/default/pods', [`Authorization: Bearer ${BAD_TOKEN}${i}`]));
      t.equal(res.statusCode, 401, 'the apiserver refused it');
      t.equal(apiserver.requests.at(-1)!.authn, 'rejected', "the apiserver's answer, not the proxy's");
      t.notOk(header(res, 'www-authenticate'), 'the apiserver sends no Basic challenge');
    }
    const before = sent(apiserver);
    const locked = await rawRequest(proxy.port, pki, head('/api/v1/namespaces/default/pods', [`Authorization: Bearer ${TOKEN}`]));
    t.equal(locked.statusCode, 429, 'the address is locked after --auth-failure-limit refused tokens');
    const password = await rawRequest(proxy.port, pki, head('/test/identity', [`Authorization: ${basicAuth(ALICE)}`]));
    t.equal(password.statusCode, 429, 'for passwords too: one failed-login count per address');
    t.equal(sent(apiserver), before, 'nothing forwarded while locked');
  });
});

t.test('flag on: credentials the proxy checks win over a token', async (t) => {
  const { apiserver, pki, proxy } = await startStack(t, { apiserver: { tokens: TOKENS }, flags: ['--token-passthrough=true'] });

  t.test('a client certificate and a token: the certificate user, no token forwarded', async (t) => {
    const res = await rawRequest(proxy.port, pki, head('/test/identity', [`Authorization: Bearer ${TOKEN}`]), '', { cert: 'user-bob' });
    t.equal(res.statusCode, 200);
    t.equal(JSON.parse(res.body.toString()).user.username, 'bob');
    const seen = apiserver.requests.at(-1)!;
    t.equal(seen.authn, 'requestheader');
    t.notOk(
      seen.rawHeaders.some(([n]) => /^authorization$/i.test(n)),
      'the token is dropped',
    );
    t.equal(seen.peerCN, 'front-proxy-client');
  });

  t.test('a token line before a password line: the password user, no Authorization forwarded', async (t) => {
    const res = await rawRequest(proxy.port, pki, head('/test/identity', [`Authorization: Bearer ${TOKEN}`, `Authorization: ${basicAuth(ALICE)}`]));
    t.equal(res.statusCode, 200);
    t.equal(JSON.parse(res.body.toString()).user.username, 'alice');
    const seen = apiserver.requests.at(-1)!;
    t.equal(seen.authn, 'requestheader');
    t.notOk(
      seen.rawHeaders.some(([n]) => /^authorization$/i.test(n)),
      'neither line is forwarded',
    );
  });

  t.test('a password and a WebSocket token: the password user, the subprotocol stripped', async (t) => {
    const res = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'websocket', headers: [`Authorization: ${basicAuth(ALICE)}`, `Sec-WebSocket-Protocol: v5.channel.k8s.io, ${wsBearer(TOKEN)}`] });
    t.equal(res.statusCode, 101);
    res.socket.destroy();
    const seen = apiserver.requests.at(-1)!;
    t.equal(seen.user?.username, 'alice');
    t.same(
      seen.rawHeaders.filter(([n]) => n.toLowerCase() === 'sec-websocket-protocol').map(([, v]) => v),
      ['v5.channel.k8s.io'],
    );
  });

  t.test('a WebSocket upgrade with only a bearer subprotocol: passed through, no client certificate', async (t) => {
    const res = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'websocket', headers: [`Sec-WebSocket-Protocol: v5.channel.k8s.io, ${wsBearer(TOKEN)}`] });
    t.equal(res.statusCode, 101);
    res.socket.destroy();
    const seen = apiserver.requests.at(-1)!;
    t.equal(seen.authn, 'token');
    t.equal(seen.user?.username, TOKENS[TOKEN].username);
    t.equal(seen.peerCN, null);
    t.same(
      seen.rawHeaders.filter(([n]) => /^x-remote-/i.test(n)),
      [],
    );
  });

  t.test("an upgrade with a bad token: the apiserver's 401, relayed", async (t) => {
    const res = await sendUpgrade(proxy.port, pki, { path: '/test/upgrade-echo', protocol: 'SPDY/3.1', headers: [`Authorization: Bearer ${BAD_TOKEN}`] });
    t.equal(res.statusCode, 401);
    res.socket.destroy();
    const seen = apiserver.requests.at(-1)!;
    t.equal(seen.authn, 'rejected');
    t.equal(seen.peerCN, null, 'over the certificate-less connection');
  });

  t.test('a malformed bearer value is refused by the proxy, not taken as anonymous upstream', async (t) => {
    const before = sent(apiserver);
    const res = await rawRequest(proxy.port, pki, head('/test/identity', ['Authorization: Bearer  two-spaces']));
    t.equal(res.statusCode, 401);
    t.equal(sent(apiserver), before);
  });

  t.test('traffic log says bearer, never the token; metrics count it', async (t) => {
    await rawRequest(proxy.port, pki, head('/api/v1/namespaces/default/pods', [`Authorization: Bearer ${TOKEN}`]));
    await rawRequest(proxy.port, pki, head('/api/v1/namespaces/default/pods', [`Authorization: Bearer ${BAD_TOKEN}`]));
    // Written once each answer has gone, and batched: wait for both.
    await waitFor('both request lines', () => proxy.logs.filter((l) => l.msg === 'request' && l.auth === 'bearer').length >= 2 && proxy.logs.some((l) => l.msg === 'request' && l.auth === 'bearer' && l.status === 401));
    const lines = proxy.logs.filter((l) => l.msg === 'request' && l.auth === 'bearer');
    t.ok(lines.length >= 2, 'request lines with auth "bearer"');
    t.ok(lines.some((l) => l.status === 401));
    const all = JSON.stringify(proxy.logs) + proxy.stderr();
    t.notOk(all.includes(TOKEN) || all.includes(BAD_TOKEN) || all.includes(Buffer.from(TOKEN).toString('base64url')), 'no token bytes in any log line');
    if (proxy.adminUrl) {
      const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
      t.match(metrics, /authentications_total\{method="bearer",outcome="passthrough"\} [1-9]/);
      t.match(metrics, /authentications_total\{method="bearer",outcome="token-rejected"\} [1-9]/);
    } else t.fail('no admin listener for /metrics');
  });
});
