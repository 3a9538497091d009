// Client-certificate auth through a real proxy process: CN is the user, each O a group; a
// certificate that is expired, not yet valid, from another CA or not for client use is refused,
// even when a valid password comes with it.
import t from 'tap';
import { basicAuth, call, proxyClient } from './helpers/clients.js';
import { credentialIdExtra, type PkiName } from './helpers/pki.js';
import { ALICE, startStack } from './helpers/setup.js';

const { apiserver, pki, proxy } = await startStack(t);

async function identityWith(cert: PkiName | undefined, headers: Record<string, string> = {}) {
  const client = proxyClient(pki, cert ? { cert } : {});
  try {
    return await call(client, `${proxy.url}/test/identity`, { method: 'GET', headers });
  } finally {
    await client.close();
  }
}

t.test('CN is the user name and every O a group', async (t) => {
  const alice = await identityWith('user-alice');
  t.equal(alice.status, 200);
  // The credential id kube-apiserver itself gives a certificate user: the SHA-256 of the DER.
  t.same(alice.body, { authn: 'requestheader', user: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'], extra: credentialIdExtra(pki.pem['user-alice'].cert) } });
  const bob = await identityWith('user-bob');
  t.same((bob.body as { user: unknown }).user, { username: 'bob', groups: ['viewers', 'system:authenticated'], extra: credentialIdExtra(pki.pem['user-bob'].cert) }, 'a single O is one group');
});

t.test('bad certificates are refused with a 401 Status saying why', async (t) => {
  const before = apiserver.requests.length;
  const cases: [PkiName, RegExp][] = [
    ['user-expired', /client certificate has expired/],
    ['user-not-yet-valid', /client certificate is not yet valid/],
    ['user-other-ca', /not signed by a trusted certificate authority/],
    ['user-server-only', /does not allow client authentication/],
    // The front-proxy identity itself is not a user credential at the front door.
    ['front-proxy-client', /not signed by a trusted certificate authority/],
  ];
  for (const [cert, message] of cases) {
    const res = await identityWith(cert);
    t.equal(res.status, 401, `${cert}: 401`);
    t.match(res.body, { kind: 'Status', reason: 'Unauthorized', code: 401, message }, `${cert}: Status names the problem`);
  }
  t.equal(apiserver.requests.length, before, 'nothing reached the apiserver');
});

t.test('a bad certificate is refused even with a valid password', async (t) => {
  const res = await identityWith('user-expired', { authorization: basicAuth(ALICE) });
  t.equal(res.status, 401);
  t.match(res.body, { message: /expired/ });
});

t.test('a valid certificate wins over a password for another user', async (t) => {
  const res = await identityWith('user-bob', { authorization: basicAuth(ALICE) });
  t.equal(res.status, 200);
  t.match(res.body, { user: { username: 'bob' } });
});

t.test('neither certificate nor password: 401 naming both ways in', async (t) => {
  const res = await identityWith(undefined);
  t.equal(res.status, 401);
  t.match(res.body, { reason: 'Unauthorized', message: 'authentication required: present a client certificate or a username and password' });
});

t.test('many requests on one certificate connection all carry its identity', async (t) => {
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());
  const results = await Promise.all(Array.from({ length: 20 }, () => call(client, `${proxy.url}/test/identity`)));
  t.ok(results.every((r) => r.status === 200 && (r.body as { user: { username: string } }).user.username === 'alice'));
});
