// Identity spoofing: whatever identity headers a client writes, in any case and any number,
// the apiserver sees only the proxy's. Requests are written byte for byte over raw TLS.
import t from 'tap';
import { basicAuth, rawRequest } from './helpers/clients.js';
import { credentialIdExtra, type PkiName } from './helpers/pki.js';
import { ALICE, startStack, type TapTest } from './helpers/setup.js';

const { apiserver, pki, proxy } = await startStack(t);

const SPOOFED = [
  'x-remote-user: root',
  'X-REMOTE-USER: system:admin',
  'X-Remote-User: kubernetes-admin',
  'x-remote-group: system:masters',
  'X-REMOTE-GROUP: system:masters',
  'X-Remote-Group: cluster-admins',
  'X-Remote-Uid: 0',
  'X-Remote-Extra-Foo: bar',
  'x-remote-extra-scopes: admin',
  'X-REMOTE-EXTRA-ACME.COM%2FPROJECT: secret',
  'Proxy-Authorization: Basic cm9vdDpyb290',
];
const SPOOFED_VALUES = ['root', 'system:admin', 'kubernetes-admin', 'system:masters', 'cluster-admins', 'bar', 'admin', 'secret', 'cm9vdDpyb290'];

function head(path: string, extra: string[]): string {
  return [`GET ${path} HTTP/1.1`, 'Host: localhost', 'Connection: close', ...extra].join('\r\n');
}

/** `cert`: the client certificate the user came with (its credential id is the one extra), if any. */
function assertOnlyProxyIdentity(t: TapTest, expectedUser: string, expectedGroups: string[], cert?: PkiName) {
  const seen = apiserver.requests.at(-1);
  t.ok(seen, 'the request reached the apiserver');
  if (!seen) return;
  const extra = cert === undefined ? {} : credentialIdExtra(pki.pem[cert].cert);
  const identityHeaders = seen.rawHeaders.filter(([name]) => /^x-remote-/i.test(name));
  t.same(
    identityHeaders.map(([name, value]) => [name.toLowerCase(), value]),
    [
      ['x-remote-user', expectedUser],
      ...expectedGroups.map((g) => ['x-remote-group', g]),
      ...(cert === undefined ? [] : extra['authentication.kubernetes.io/credential-id']!.map((v) => ['x-remote-extra-authentication.kubernetes.io%2fcredential-id', v])),
    ],
    'exactly one user line, one line per group and, for a certificate, one credential-id line, all set by the proxy',
  );
  for (const [, value] of seen.rawHeaders) {
    t.notOk(SPOOFED_VALUES.includes(value), `no spoofed value reaches the apiserver (${value})`);
  }
  t.notOk(
    seen.rawHeaders.some(([name]) => /^(proxy-)?authorization$/i.test(name)),
    'no credentials reach the apiserver',
  );
  t.same(seen.user, { username: expectedUser, groups: [...expectedGroups, 'system:authenticated'], extra });
}

t.test('basic-auth user: every spoofed header is dropped', async (t) => {
  const res = await rawRequest(proxy.port, pki, head('/test/identity', [`Authorization: ${basicAuth(ALICE)}`, ...SPOOFED]));
  t.equal(res.statusCode, 200);
  assertOnlyProxyIdentity(t, 'alice', ['devs', 'ops']);
});

t.test('certificate user: every spoofed header is dropped', async (t) => {
  const res = await rawRequest(proxy.port, pki, head('/test/identity', SPOOFED), '', { cert: 'user-bob' });
  t.equal(res.statusCode, 200);
  assertOnlyProxyIdentity(t, 'bob', ['viewers'], 'user-bob');
});

t.test("Connection: naming the identity headers cannot remove the proxy's own", async (t) => {
  const res = await rawRequest(proxy.port, pki, [`GET /test/identity HTTP/1.1`, 'Host: localhost', 'Connection: close, X-Remote-User, X-Remote-Group', `Authorization: ${basicAuth(ALICE)}`, ...SPOOFED].join('\r\n'));
  t.equal(res.statusCode, 200);
  assertOnlyProxyIdentity(t, 'alice', ['devs', 'ops']);
});

t.test('unauthenticated requests with spoofed headers reach nothing', async (t) => {
  const before = apiserver.requests.length;
  const res = await rawRequest(proxy.port, pki, head('/api/v1/namespaces/kube-system/secrets', SPOOFED));
  t.equal(res.statusCode, 401);
  t.match(JSON.parse(res.body.toString()), { kind: 'Status', reason: 'Unauthorized' });
  const bad = await rawRequest(proxy.port, pki, head('/api', [...SPOOFED, 'Authorization: Basic cm9vdDpyb290']));
  t.equal(bad.statusCode, 401);
  t.equal(apiserver.requests.length, before);
});

t.test('Impersonate-* headers pass through line by line; X-Forwarded-For is replaced', async (t) => {
  const res = await rawRequest(proxy.port, pki, head('/test/identity', [`Authorization: ${basicAuth(ALICE)}`, 'Impersonate-User: bob', 'Impersonate-Group: a', 'Impersonate-Group: b', 'X-Forwarded-For: 203.0.113.9']));
  t.equal(res.statusCode, 200);
  const seen = apiserver.requests.at(-1)?.rawHeaders ?? [];
  t.same(
    seen.filter(([n]) => /^impersonate-/i.test(n)).map(([n, v]) => [n.toLowerCase(), v]),
    [
      ['impersonate-user', 'bob'],
      ['impersonate-group', 'a'],
      ['impersonate-group', 'b'],
    ],
  );
  t.same(
    seen.filter(([n]) => n.toLowerCase() === 'x-forwarded-for').map(([, v]) => v),
    ['127.0.0.1'],
    'a client-sent X-Forwarded-For is replaced (the peer is not a trusted proxy)',
  );
});

t.test('--allow-impersonation=false: no Impersonate-* header reaches the apiserver, in any case', async (t) => {
  const strict = await startStack(t, { pki, flags: ['--allow-impersonation=false'] });
  const res = await rawRequest(strict.proxy.port, pki, head('/test/identity', [`Authorization: ${basicAuth(ALICE)}`, 'Impersonate-User: bob', 'IMPERSONATE-GROUP: system:masters', 'impersonate-uid: 0', 'Impersonate-Extra-Scopes: admin']));
  t.equal(res.statusCode, 200);
  const seen = strict.apiserver.requests.at(-1);
  t.equal(seen?.user?.username, 'alice', 'the request went on as alice herself');
  t.same(
    seen?.rawHeaders.filter(([n]) => /^impersonate-/i.test(n)),
    [],
    'every Impersonate-* header was dropped',
  );
});
