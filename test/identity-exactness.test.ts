// Identity exactness (issue 20, part 1): the user, groups and extra the apiserver derives through
// the proxy are those it derives from the same credential presented directly, byte for byte, or
// the proxy refuses with a 401 Status saying why. End to end: the real proxy process in front of
// the stand-in, which reads certificates and headers as Go and k8s.io/apiserver do.
//
// Certificates are built from raw DER, with the corpus of subjects, in helpers/raw-certificates.ts;
// the readings expected there were checked against Go's crypto/x509 (ParseCertificate on the
// same DER) and against the real kube-apiserver (test/cluster/identity-differential.test.ts).
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { connect as http2Connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { Agent, request } from 'undici';
import { HtpasswdError, parseHtpasswd } from '../src/auth/htpasswd.js';
import type { SeenRequest, UserInfo } from '../standin/apiserver.js';
import { basicAuth, call } from './helpers/clients.js';
import { createTestPki } from './helpers/pki.js';
import { AUTHENTICATED, clientCertificate, EXACT, REFUSED, type ClientCert, type Seen } from './helpers/raw-certificates.js';
import { runCli } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, startStack, type TestUser } from './helpers/setup.js';

// ---------------------------------------------------------------------------------------------
// One proxy and one stand-in that trust the same user CA, so a certificate can be presented to
// either: directly to the stand-in (its x509 authenticator) or through the proxy (requestheader).

const JOSE: TestUser = { name: 'josé', password: 'ñandú-pässword', groups: ['开发', 'Ωmega'] };
const pki = await createTestPki();
const { apiserver, proxy } = await startStack(t, { pki, users: [bcryptLine(ALICE), bcryptLine(JOSE)], apiserver: { clientCA: pki.pem['user-ca'].cert } });
const userCa = pki.pem['user-ca'];

async function withAgent<T>(agent: Agent, use: (agent: Agent) => Promise<T>): Promise<T> {
  try {
    return await use(agent);
  } finally {
    await agent.destroy();
  }
}

/**
 * 'handshake failed' for the ways a TLS handshake ends: the server's alert, the connection cut
 * right after it, or the client's OpenSSL refusing to load the certificate at all; anything else (a timeout on a busy machine, a bug) is thrown as it is, so that
 * a failing case shows its real error instead of passing for a refused certificate.
 */
function handshakeFailure(err: unknown): 'handshake failed' {
  const code = (err as { code?: string }).code ?? '';
  const cause = (err as { cause?: { code?: string } }).cause?.code ?? '';
  const handshakeCodes = ['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'];
  if (handshakeCodes.includes(code) || handshakeCodes.includes(cause) || /^ERR_(SSL|OSSL)_/.test(code) || /^ERR_(SSL|OSSL)_/.test(cause)) return 'handshake failed';
  throw err;
}

/** The stand-in's reading of `cert` presented to it directly, or 'handshake failed'. */
function direct(cert: ClientCert): Promise<Seen | 'handshake failed'> {
  const agent = new Agent({ connect: { ca: pki.pem['cluster-ca'].cert, servername: 'localhost', cert: cert.cert, key: cert.key }, keepAliveTimeout: 10 });
  return withAgent(agent, async () => {
    try {
      return (await call(agent, `${apiserver.url}/test/identity`)).body as Seen;
    } catch (err) {
      return handshakeFailure(err);
    }
  });
}

interface Proxied {
  status: number;
  body: { authn?: string; user?: UserInfo; message?: string; reason?: string };
}

function proxied(cert: ClientCert | undefined, path = '/test/identity', headers: Record<string, string> = {}): Promise<Proxied | 'handshake failed'> {
  const agent = new Agent({ connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...(cert ?? {}) }, keepAliveTimeout: 10 });
  return withAgent(agent, async () => {
    try {
      const res = await call(agent, `${proxy.url}${path}`, { method: 'GET', headers });
      return { status: res.status, body: res.body as Proxied['body'] };
    } catch (err) {
      return handshakeFailure(err);
    }
  });
}

/** The stand-in's record of the next request it sees from the proxy after `action`. */
async function recordOf(action: () => Promise<unknown>): Promise<SeenRequest> {
  const before = apiserver.requests.length;
  await action();
  for (let waited = 0; apiserver.requests.length === before && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
  const record = apiserver.requests[before];
  if (!record) throw new Error('the stand-in saw no request');
  return record;
}

/** A watch through the proxy (long-running: the proxy carries it over HTTP/2 upstream), ended once seen. */
function watchRecord(identity: { cert?: ClientCert; headers?: Record<string, string> }): Promise<SeenRequest> {
  const agent = new Agent({ connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...(identity.cert ?? {}) }, keepAliveTimeout: 10 });
  return withAgent(agent, async () => {
    let body: { destroy(): void } | undefined;
    const record = await recordOf(async () => {
      const res = await request(`${proxy.url}/api/v1/namespaces/default/pods?watch=1`, { dispatcher: agent, headers: identity.headers ?? {} });
      body = res.body;
    });
    body?.destroy();
    return record;
  });
}

/** An upgrade (SPDY, the exec path) through the proxy on a raw TLS connection: its status line and the stand-in's record. */
async function upgradeRecord(identity: { cert?: ClientCert; headers?: string[] }): Promise<{ statusLine: string; record: SeenRequest }> {
  let statusLine = '';
  const record = await recordOf(async () => {
    const socket = tlsConnect({ host: '127.0.0.1', port: proxy.port, ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...(identity.cert ?? {}) });
    await once(socket, 'secureConnect');
    socket.write(['POST /test/upgrade-echo HTTP/1.1', 'Host: localhost', 'Connection: Upgrade', 'Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: v4.channel.k8s.io', ...(identity.headers ?? []), '', ''].join('\r\n'));
    let head = '';
    while (!head.includes('\r\n')) head += ((await once(socket, 'data')) as [Buffer])[0].toString('latin1');
    statusLine = head.slice(0, head.indexOf('\r\n'));
    socket.destroy();
  });
  return { statusLine, record };
}

// ---------------------------------------------------------------------------------------------
// Certificates: forwarded exactly...

t.test('certificates: the proxy forwards the identity kube-apiserver derives directly', async (t) => {
  for (const c of EXACT) {
    const cert = clientCertificate(userCa, c.subject);
    const seenDirect = await direct(cert);
    const expectedGroups = c.groups.includes(AUTHENTICATED) ? c.groups : [...c.groups, AUTHENTICATED];
    t.match(seenDirect, { authn: 'x509', user: { username: c.user, groups: expectedGroups } }, `${c.name}: the stand-in reads it as Go does`);
    const through = await proxied(cert);
    t.equal(through !== 'handshake failed' && through.status, 200, `${c.name}: 200 through the proxy`);
    if (through === 'handshake failed' || seenDirect === 'handshake failed') continue;
    t.equal(through.body.authn, 'requestheader', `${c.name}: through the front-proxy headers`);
    t.same(through.body.user, seenDirect.user, `${c.name}: the same user, groups and extra (credential id) as directly`);
  }
});

t.test('certificates: the identity is exact on the HTTP/2 upstream (watch) and upgrade (exec) paths too', async (t) => {
  const cert = clientCertificate(userCa, [
    ['CN', 'José'],
    ['O', '开发'],
    ['O', 'Ωmega'],
  ]);
  const seenDirect = await direct(cert);
  if (seenDirect === 'handshake failed') return t.fail('direct handshake failed');
  const watch = await watchRecord({ cert });
  t.equal(watch.httpVersion, '2.0', 'the watch went over HTTP/2');
  t.same(watch.user, seenDirect.user, 'watch: the same identity');
  const upgrade = await upgradeRecord({ cert });
  t.match(upgrade.statusLine, /^HTTP\/1\.1 101 /, 'upgrade: switched');
  t.same(upgrade.record.user, seenDirect.user, 'upgrade: the same identity');
});

// ...or refused, saying why.

t.test('certificates: an identity the headers cannot carry exactly is refused with a 401 Status saying why', async (t) => {
  for (const c of REFUSED) {
    const cert = clientCertificate(userCa, c.subject);
    t.match(await direct(cert), c.direct, `${c.name}: what kube-apiserver derives directly`);
    const before = apiserver.requests.length;
    const through = await proxied(cert);
    if (c.opensslRefuses) {
      t.equal(through, 'handshake failed', `${c.name}: refused in the TLS handshake`);
      t.equal(apiserver.requests.length, before, `${c.name}: nothing reached the apiserver`);
      continue;
    }
    if (through === 'handshake failed') {
      t.fail(`${c.name}: the proxy's TLS handshake failed`);
      continue;
    }
    t.equal(through.status, 401, `${c.name}: 401`);
    t.match(through.body, { kind: 'Status', reason: 'Unauthorized', code: 401, message: c.message }, `${c.name}: says why`);
    t.equal(apiserver.requests.length, before, `${c.name}: nothing reached the apiserver`);
  }
});

// ---------------------------------------------------------------------------------------------
// Users-file identities: exact, with non-ASCII names and groups, on every path.

t.test('users file: non-ASCII names and groups reach the apiserver as the same UTF-8', async (t) => {
  const expected = { username: JOSE.name, groups: [...JOSE.groups, AUTHENTICATED], extra: {} };
  const headers = { authorization: basicAuth(JOSE) };
  const plain = await proxied(undefined, '/test/identity', headers);
  t.match(plain, { status: 200, body: { authn: 'requestheader' } }, 'plain request: 200');
  t.same(plain !== 'handshake failed' && plain.body.user, expected, 'plain request: the same user and groups');
  t.same((await watchRecord({ headers })).user, expected, 'watch (HTTP/2 upstream): the same');
  const upgrade = await upgradeRecord({ headers: [`Authorization: ${basicAuth(JOSE)}`] });
  t.match(upgrade.statusLine, /^HTTP\/1\.1 101 /, 'upgrade: switched');
  t.same(upgrade.record.user, expected, 'upgrade: the same');
});

t.test('users file: an entry the headers cannot carry exactly is refused when the file is loaded, naming file and line', async (t) => {
  const line = (name: string, groups = '') => `${name}:$2b$04$C6UzMDM.H6dfI/f/IKxGhuWAKr4fHYpBe7XeVd4KUQrbfWr6qu9ZG${groups}`;
  const cases: [string, string, RegExp][] = [
    // (A group cannot hold ':', the field separator: no system:masters here.)
    ['padded group', line('alice', ':devs, ops'), /^line 2: user "alice": group ' ops' has leading or trailing whitespace$/],
    ['group with a tab', line('alice', ':devs,\tops'), /^line 2: user "alice": group '\\u0009ops' contains a control character \(U\+0009\)$/],
    ['empty group', line('alice', ':devs,,ops'), /^line 2: user "alice": group '' is empty$/],
    ['padded name', line(' alice'), /^line 2: user name ' alice' has leading or trailing whitespace$/],
    ['name that was not UTF-8', line('al\ufffdce'), /^line 2: user name 'al\ufffdce' is not valid UTF-8/],
    ['hash with a trailing space', `${line('alice')} `, /^line 2: user "alice": the hash has spaces or tabs around it$/],
  ];
  for (const [name, text, message] of cases) {
    t.throws(() => parseHtpasswd(`# users\n${text}\n`), message, name);
  }
  t.throws(() => parseHtpasswd(line('a', ': b')), HtpasswdError, 'an HtpasswdError');
  // What stays fine: comments (indented too), CRLF, a BOM, non-ASCII, no groups, an empty group field.
  const table = parseHtpasswd(`\ufeff${line('josé', ':开发,Ωmega')}\r\n  # comment\r\n\t\r\n${line('bob', ':')}\r\n${line('carol')}`);
  t.same(
    [...table.users.values()].map((u) => [u.name, u.groups]),
    [
      ['josé', ['开发', 'Ωmega']],
      ['bob', []],
      ['carol', []],
    ],
  );

  // At start-up: one line naming the flag, the file, the line and the problem, and exit 2.
  const path = join(pki.dir, 'padded-group.htpasswd');
  writeFileSync(path, `${bcryptLine(ALICE)}\n${bcryptLine({ ...ALICE, name: 'mallory' }).replace(/:devs,ops$/, ':devs, admins')}\n`, { mode: 0o600 });
  const result = await runCli(['serve', '--listen', '127.0.0.1:0', ...proxyFlags(pki, { upstream: apiserver.url, usersFile: path })]);
  t.equal(result.code, 2, 'exit 2');
  t.equal(result.stderr.trim(), `kube-front-proxy: --htpasswd-file ${path}: line 2: user "mallory": group ' admins' has leading or trailing whitespace`);
});

// ---------------------------------------------------------------------------------------------
// Headers the client sends: separate over HTTP/2, no address claims.

function openSession(): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

function h2Get(session: ClientHttp2Session, path: string, headers: Record<string, string | string[]>, endAfterHeaders = false): Promise<IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'GET', ':path': path, ...headers });
    stream.on('response', (h) => {
      resolve(h);
      if (endAfterHeaders) stream.close();
    });
    stream.resume();
    stream.on('error', reject);
  });
}

const linesOf = (record: SeenRequest, prefix: string) => record.rawHeaders.filter(([name]) => name.toLowerCase().startsWith(prefix)).map(([name, value]) => [name.toLowerCase(), value]);

t.test('HTTP/2 clients: repeated Impersonate-* fields reach the apiserver as separate lines', async (t) => {
  const session = await openSession();
  t.teardown(() => session.close());
  const impersonation = { 'impersonate-user': 'bob', 'impersonate-group': ['a', 'b'], 'impersonate-extra-scopes': ['x', 'y'] };
  const sent = [
    ['impersonate-user', 'bob'],
    ['impersonate-group', 'a'],
    ['impersonate-group', 'b'],
    ['impersonate-extra-scopes', 'x'],
    ['impersonate-extra-scopes', 'y'],
  ];
  const headers = { authorization: basicAuth(ALICE), ...impersonation };
  const plain = await recordOf(() => h2Get(session, '/test/identity', headers));
  t.same(linesOf(plain, 'impersonate-'), sent, 'plain request (HTTP/1.1 upstream)');
  const watch = await recordOf(() => h2Get(session, '/api/v1/namespaces/default/pods?watch=1', headers, true));
  t.equal(watch.httpVersion, '2.0', 'the watch went over HTTP/2 upstream');
  t.same(linesOf(watch, 'impersonate-'), sent, 'watch (HTTP/2 upstream)');
});

t.test("X-Real-Ip and Forwarded from the client do not reach the apiserver; X-Forwarded-For is the proxy's", async (t) => {
  const record = await recordOf(() => proxied(undefined, '/test/identity', { authorization: basicAuth(ALICE), 'x-real-ip': '10.9.9.9', forwarded: 'for=10.9.9.9', 'x-forwarded-for': '10.8.8.8' }));
  t.same(linesOf(record, 'x-real-ip'), [], 'no X-Real-Ip');
  t.same(linesOf(record, 'forwarded'), [], 'no Forwarded');
  t.same(linesOf(record, 'x-forwarded-for'), [['x-forwarded-for', '127.0.0.1']], 'X-Forwarded-For: the client address, as before');
});
