// Tests of the test helpers themselves: the generated PKI is what Node's TLS and the
// kube-apiserver stand-in expect, and the stand-in authenticates like k8s.io/apiserver v1.32.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type PeerCertificate } from 'node:tls';
import { promisify } from 'node:util';
import t from 'tap';
import { Agent, request } from 'undici';
import { createCertificateAuthority, issueCertificate } from '../src/pki/certificates.js';
import { HEALTH_CHECK_USER } from '../src/upstream/health.js';
import { startApiServer, type ApiServer, type UserInfo } from '../standin/apiserver.js';
import { createTestPki, type PkiName } from './helpers/pki.js';

const pkiStart = performance.now();
const pki = await createTestPki();
const pkiMs = performance.now() - pkiStart;

const api = await startApiServer({
  cert: pki.pem.apiserver.cert,
  key: pki.pem.apiserver.key,
  requestHeaderCA: pki.pem['front-proxy-ca'].cert,
  clientCA: pki.pem['cluster-ca'].cert,
});

const agents: Agent[] = [];
function agentFor(name?: PkiName): Agent {
  const agent = new Agent({
    connect: {
      ca: pki.pem['cluster-ca'].cert,
      servername: 'kubernetes',
      ...(name ? { cert: pki.pem[name].cert, key: pki.pem[name].key } : {}),
    },
    keepAliveTimeout: 10,
  });
  agents.push(agent);
  return agent;
}
const asProxy = agentFor('front-proxy-client');
const asWrongName = agentFor('front-proxy-wrong-name');
const asRogueProxy = agentFor('rogue-front-proxy-client');
const asOtherCaUser = agentFor('user-other-ca');
const asAdmin = agentFor('cluster-admin');
const anonymous = agentFor();

t.teardown(async () => {
  await Promise.all(agents.map((a) => a.destroy()));
  await api.close();
  await rm(pki.dir, { recursive: true, force: true });
});

type Headers = string[];
async function get(server: ApiServer, agent: Agent, path: string, headers: Headers = []) {
  const res = await request(`${server.url}${path}`, { dispatcher: agent, headers });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

const identity = async (server: ApiServer, agent: Agent, headers: Headers = []) => (await get(server, agent, '/test/identity', headers)).json() as { authn: string; user: UserInfo | null };

function lastRequest(server: ApiServer) {
  const r = server.requests.at(-1);
  if (!r) throw new Error('no request recorded');
  return r;
}

// -------------------------------------------------------------------------------------------
t.test('PKI', async (t) => {
  t.ok(pkiMs < 2000, `whole test PKI generated in ${pkiMs.toFixed(0)} ms`);

  const chains: [PkiName, PkiName][] = [
    ['apiserver', 'cluster-ca'],
    ['cluster-admin', 'cluster-ca'],
    ['front-proxy-client', 'front-proxy-ca'],
    ['front-proxy-wrong-name', 'front-proxy-ca'],
    ['rogue-front-proxy-client', 'rogue-ca'],
    ['rogue-apiserver', 'rogue-ca'],
    ['user-other-ca', 'rogue-ca'],
    ['proxy-server', 'proxy-ca'],
    ['user-alice', 'user-ca'],
    ['user-server-only', 'user-ca'],
  ];
  for (const [leaf, ca] of chains) {
    const cert = new X509Certificate(pki.pem[leaf].cert);
    const caCert = new X509Certificate(pki.pem[ca].cert);
    t.ok(cert.checkIssued(caCert) && cert.verify(caCert.publicKey), `${leaf} is signed by ${ca}`);
    t.ok(cert.checkPrivateKey(createPrivateKey(pki.pem[leaf].key)), `${leaf} key matches`);
    t.equal(cert.ca, false, `${leaf} is not a CA`);
    t.equal(caCert.ca, true, `${ca} is a CA`);
  }
  const rogue = new X509Certificate(pki.pem['rogue-front-proxy-client'].cert);
  const frontProxyCa = new X509Certificate(pki.pem['front-proxy-ca'].cert);
  t.notOk(rogue.verify(frontProxyCa.publicKey), 'rogue look-alike does not verify against the real CA');

  const apiserver = new X509Certificate(pki.pem.apiserver.cert);
  t.equal(apiserver.subjectAltName, 'DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:localhost, IP Address:127.0.0.1');
  t.ok(apiserver.checkHost('kubernetes') && apiserver.checkIP('127.0.0.1'));
  t.same(apiserver.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'serverAuth EKU');
  t.same(new X509Certificate(pki.pem['user-alice'].cert).keyUsage, ['1.3.6.1.5.5.7.3.2'], 'clientAuth EKU');
  t.match(pki.pem['user-alice'].key, /^-----BEGIN PRIVATE KEY-----\n/, 'PKCS#8 PEM key');
  t.equal(new X509Certificate(pki.pem['user-alice'].cert).serialNumber.length, 32, '16-byte serial');

  t.equal((await stat(pki.path('user-alice', 'key'))).mode & 0o777, 0o600, 'keys are 0600');
  t.equal((await stat(pki.path('user-alice', 'crt'))).mode & 0o777, 0o644);

  t.test('RSA, and a kubeadm-style PKCS#1 CA key', async (t) => {
    const ca = await createCertificateAuthority({ commonName: 'rsa-ca', algorithm: 'rsa-2048' });
    const pkcs1 = createPrivateKey(ca.key).export({ type: 'pkcs1', format: 'pem' }) as string;
    const leaf = await issueCertificate({ cert: ca.cert, key: pkcs1 }, { commonName: 'r', usages: ['serverAuth'], algorithm: 'rsa-2048' });
    const cert = new X509Certificate(leaf.cert);
    t.ok(cert.verify(new X509Certificate(ca.cert).publicKey));
    t.equal(cert.publicKey.asymmetricKeyType, 'rsa');
    const backwards = { commonName: 'x', usages: [], notBefore: new Date(), notAfter: new Date(0) };
    await t.rejects(issueCertificate(ca, backwards), /notAfter/);
  });

  t.test('what a Node TLS server sees of each client certificate', async (t) => {
    const seen: { authorized: boolean; error: string | null; subject: PeerCertificate['subject'] }[] = [];
    const server = createServer({
      cert: pki.pem['proxy-server'].cert,
      key: pki.pem['proxy-server'].key,
      ca: pki.pem['user-ca'].cert,
      requestCert: true,
      rejectUnauthorized: false,
    });
    server.on('secureConnection', (s) => {
      seen.push({
        authorized: s.authorized,
        error: s.authorizationError ? String(s.authorizationError) : null,
        subject: s.getPeerCertificate().subject,
      });
      s.end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const peer = async (name: PkiName) => {
      const socket = connect({
        port,
        host: '127.0.0.1',
        servername: 'localhost',
        ca: pki.pem['proxy-ca'].cert,
        ...pki.pem[name],
      });
      socket.resume();
      await once(socket, 'close');
      return seen.at(-1)!;
    };
    const alice = await peer('user-alice');
    t.equal(alice.authorized, true);
    t.equal(alice.subject.CN, 'alice');
    t.same(alice.subject.O, ['devs', 'ops'], 'two organizations arrive as an array');
    t.equal((await peer('user-bob')).subject.O, 'viewers', 'one organization arrives as a string');
    t.same(await peer('user-expired'), { authorized: false, error: 'CERT_HAS_EXPIRED', subject: { CN: 'expired-user' } });
    t.match(await peer('user-not-yet-valid'), { authorized: false, error: 'CERT_NOT_YET_VALID' });
    t.match(await peer('user-server-only'), { authorized: false, error: 'INVALID_PURPOSE' });
    t.match(await peer('user-other-ca'), { authorized: false, error: /^UNABLE_TO_(GET_ISSUER_CERT|VERIFY_LEAF_SIGNATURE)/ });
    server.close();
  });
});

// -------------------------------------------------------------------------------------------
t.test('requestheader authentication', async (t) => {
  const id = await identity(api, asProxy, [
    'X-Remote-User',
    'alice',
    'x-remote-user',
    'mallory',
    'X-Remote-Group',
    'devs',
    'X-Remote-Group',
    'ops, admins',
    'X-Remote-Group',
    '',
    'X-Remote-Extra-Acme.com%2Fproject',
    'x',
    'X-Remote-Extra-Scopes',
    'a',
    'x-remote-extra-scopes',
    'b',
  ]);
  t.same(
    id,
    {
      authn: 'requestheader',
      user: {
        username: 'alice',
        groups: ['devs', 'ops, admins', 'system:authenticated'],
        extra: { 'acme.com/project': ['x'], scopes: ['a', 'b'] },
      },
    },
    'first user wins, one group per line, extra keys lower-cased and unescaped',
  );
  const seen = lastRequest(api);
  t.equal(seen.peerCN, 'front-proxy-client');
  t.same(
    seen.rawHeaders.filter(([k]) => k.toLowerCase() === 'x-remote-group'),
    [
      ['X-Remote-Group', 'devs'],
      ['X-Remote-Group', 'ops, admins'],
      ['X-Remote-Group', ''],
    ],
    'raw header lines recorded as sent',
  );

  const bob = await identity(api, asProxy, ['X-Remote-User', 'bob', 'X-Remote-Group', 'system:authenticated']);
  t.same(bob.user?.groups, ['system:authenticated'], 'system:authenticated not added twice');

  // Go's h.Get takes the first line only: an empty first X-Remote-User means no user, and the
  // front-proxy certificate then fails the x509 authenticator (not from --client-ca-file): 401.
  t.equal((await get(api, asProxy, '/test/identity', ['X-Remote-User', '', 'X-Remote-User', 'bob'])).status, 401, 'empty first user line');
  t.equal((await get(api, asProxy, '/api')).status, 401, 'front-proxy cert without X-Remote-User is 401 when --client-ca-file is set');

  const wrong = await get(api, asWrongName, '/api', ['X-Remote-User', 'alice']);
  t.equal(wrong.status, 401, 'CN not in allowed names');
  t.same(wrong.json(), {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'Unauthorized',
    reason: 'Unauthorized',
    code: 401,
  });
  t.match(lastRequest(api), { authn: 'rejected', user: null, peerCN: 'not-the-proxy' });

  // kube-apiserver uses tls.RequestClientCert: the handshake succeeds, the authenticators refuse.
  t.equal((await get(api, asRogueProxy, '/api', ['X-Remote-User', 'alice'])).status, 401, 'rogue-CA front-proxy look-alike');
  t.equal((await get(api, asOtherCaUser, '/test/identity')).status, 401, 'client certificate from an unknown CA');

  t.test('no client CA, any allowed name', async (t) => {
    const open = await startApiServer({
      cert: pki.pem.apiserver.cert,
      key: pki.pem.apiserver.key,
      requestHeaderCA: pki.pem['front-proxy-ca'].cert,
      allowedNames: [],
    });
    t.match(await identity(open, asWrongName, ['X-Remote-User', 'carol']), { authn: 'requestheader', user: { username: 'carol' } });
    t.same(await identity(open, asProxy), { authn: 'anonymous', user: null }, 'trusted connection without user header is anonymous');
    t.equal((await get(open, asAdmin, '/test/identity')).status, 401, 'a cluster-CA cert is unknown without --client-ca-file');

    // close() must not wait for kept-alive connections or an open watch.
    const watch = await request(`${open.url}/api/v1/pods?watch=true`, { dispatcher: asWrongName, headers: ['X-Remote-User', 'carol'] });
    t.equal(open.openWatches(), 1);
    const start = performance.now();
    await open.close();
    t.ok(performance.now() - start < 200, `close() took ${(performance.now() - start).toFixed(0)} ms`);
    await t.rejects(watch.body.text(), 'the open watch is torn down');
  });
});

t.test('x509 and anonymous', async (t) => {
  const admin = await identity(api, asAdmin, ['X-Remote-User', 'ignored']);
  t.match(admin, { authn: 'x509', user: { username: 'direct-admin', groups: ['system:masters', 'system:authenticated'] } });
  t.match(admin.user?.extra['authentication.kubernetes.io/credential-id']?.[0], /^X509SHA256=[0-9a-f]{64}$/);

  const denied = await get(api, anonymous, '/api');
  t.equal(denied.status, 403);
  t.match(denied.json(), { kind: 'Status', reason: 'Forbidden', code: 403, message: 'forbidden: User "system:anonymous" cannot get path "/api"' });
  t.match(lastRequest(api), { authn: 'anonymous', user: null, peerCN: null });
  t.equal((await get(api, anonymous, '/api/v1/namespaces/default/pods')).json().message, 'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" in the namespace "default"');
  for (const path of ['/readyz', '/livez', '/healthz']) {
    const r = await get(api, anonymous, path);
    t.same([r.status, r.text], [200, 'ok'], `anonymous ${path}`);
  }
  t.match((await get(api, anonymous, '/version')).json(), { gitVersion: 'v1.32.0' });
  t.same(await identity(api, anonymous), { authn: 'anonymous', user: null }, '/test/ answers anonymous too');
});

t.test('API endpoints', async (t) => {
  const h = ['X-Remote-User', 'alice'];
  t.match((await get(api, asProxy, '/apis', h)).json(), { kind: 'APIGroupList', groups: [{ name: 'authentication.k8s.io' }] });
  t.match((await get(api, asProxy, '/api/v1', h)).json(), {
    kind: 'APIResourceList',
    resources: [{ name: 'namespaces' }, { name: 'pods', namespaced: true }],
  });
  const list = (await get(api, asProxy, '/api/v1/namespaces/default/pods', h)).json() as { kind: string; items: unknown[] };
  t.equal(list.kind, 'PodList');
  t.equal(list.items.length, 3);
  t.match((await get(api, asProxy, '/api/v1/namespaces/default/pods/pod-1', h)).json(), { kind: 'Pod', metadata: { name: 'pod-1' } });
  const missing = await get(api, asProxy, '/api/v1/namespaces/default/pods/nope', h);
  t.match([missing.status, missing.json()], [404, { reason: 'NotFound', message: 'pods "nope" not found' }]);
  const review = await request(`${api.url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    dispatcher: asProxy,
    method: 'POST',
    headers: [...h, 'X-Remote-Group', 'devs', 'Content-Type', 'application/json'],
    body: '{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1"}',
  });
  t.equal(review.statusCode, 201);
  t.match(await review.body.json(), {
    kind: 'SelfSubjectReview',
    status: { userInfo: { username: 'alice', groups: ['devs', 'system:authenticated'] } },
  });
  t.match(lastRequest(api), { method: 'POST', bodyBytes: 68 });
  const failure = await get(api, asProxy, '/test/status/503', h);
  t.match([failure.status, failure.json()], [503, { kind: 'Status', reason: 'ServiceUnavailable', code: 503 }]);

  await get(api, asProxy, '/test/identity?b=a%2Fb&a=%7e+x', h);
  t.equal(lastRequest(api).url, '/test/identity?b=a%2Fb&a=%7e+x', 'request target recorded as sent');
});

t.test("the proxy's health checks are recorded apart from requests", async (t) => {
  const check = ['X-Remote-User', HEALTH_CHECK_USER];
  const counts = (): [number, number] => [api.requests.length, api.healthChecks.length];
  const [requests, checks] = counts();
  t.equal((await get(api, asProxy, '/readyz', check)).status, 200, 'a check as the proxy sends it');
  t.match(api.healthChecks.at(-1), { method: 'GET', url: '/readyz', authn: 'requestheader', user: { username: HEALTH_CHECK_USER } });
  t.equal((await get(api, asWrongName, '/readyz', check)).status, 401, 'the same from a front-proxy certificate not allowed');
  t.match(api.healthChecks.at(-1), { authn: 'rejected', user: null }, 'one the apiserver refuses is still a check');
  t.same(counts(), [requests, checks + 2], 'both in healthChecks, none in requests');

  // Anything else is a request: another user, another target, more identity than a check carries.
  await get(api, asProxy, '/readyz', ['X-Remote-User', 'alice']);
  await get(api, asProxy, '/readyz?verbose', check);
  await get(api, asProxy, '/livez', check);
  await get(api, asProxy, '/readyz', [...check, 'X-Remote-Group', 'devs']);
  await get(api, asProxy, '/readyz', [...check, 'Authorization', 'Bearer x']);
  t.same(counts(), [requests + 5, checks + 2], 'all five in requests');
});

t.test('byte streams', async (t) => {
  const h = ['X-Remote-User', 'alice'];
  const n = 1_000_003;
  const expected = Buffer.from(Array.from({ length: n }, (_, i) => i % 251));
  const res = await request(`${api.url}/test/bytes?n=${n}`, { dispatcher: asProxy, headers: h });
  t.equal(res.headers['transfer-encoding'], 'chunked');
  t.equal(res.headers['content-length'], undefined);
  t.ok(Buffer.from(await res.body.arrayBuffer()).equals(expected), '/test/bytes pattern is byte-exact');

  const payload = createHash('sha512').update('seed').digest();
  const body = Buffer.concat(Array.from({ length: 40_000 }, (_, i) => Buffer.concat([payload, Buffer.from([i & 0xff])])));
  const echo = await request(`${api.url}/test/echo`, {
    dispatcher: asProxy,
    method: 'PUT',
    headers: [...h, 'Content-Type', 'application/x-test'],
    body,
  });
  t.equal(echo.headers['content-type'], 'application/x-test');
  t.ok(Buffer.from(await echo.body.arrayBuffer()).equals(body), '/test/echo returns the body byte for byte');
  t.match(lastRequest(api), {
    method: 'PUT',
    url: '/test/echo',
    bodyBytes: body.length,
    bodySha256: createHash('sha256').update(body).digest('hex'),
  });
});

t.test('watch', async (t) => {
  const res = await request(`${api.url}/api/v1/namespaces/default/pods?watch=1`, {
    dispatcher: asProxy,
    headers: ['X-Remote-User', 'alice'],
  });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'application/json');
  t.equal(res.headers['transfer-encoding'], 'chunked');
  t.equal(api.openWatches(), 1);
  t.match(lastRequest(api), { url: '/api/v1/namespaces/default/pods?watch=1', bodyBytes: 0 }, 'recorded while still open');

  const received: string[] = [];
  const done = (async () => {
    let buffered = '';
    for await (const chunk of res.body) {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      received.push(...lines);
    }
    return buffered;
  })();
  const pod = { kind: 'Pod', apiVersion: 'v1', metadata: { name: 'new', namespace: 'default' }, status: { phase: 'Pending' } };
  api.sendWatchEvent('ADDED', pod);
  api.sendWatchEvent('DELETED', pod);
  while (received.length < 2) await new Promise((r) => setTimeout(r, 5));
  t.same(
    received.map((l) => JSON.parse(l)),
    [
      { type: 'ADDED', object: pod },
      { type: 'DELETED', object: pod },
    ],
  );
  api.closeWatches();
  t.equal(await done, '', 'stream ends cleanly after closeWatches');
  t.equal(api.openWatches(), 0);
});

// -------------------------------------------------------------------------------------------
t.test('real kubectl against the stand-in (cluster-admin client certificate)', async (t) => {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
  } catch {
    throw new Error('kubectl was not found on PATH: these tests need the real kubectl (v1.32) installed');
  }
  const kubeconfig = pki.path('cluster-ca', 'crt').replace(/cluster-ca\.crt$/, 'kubeconfig');
  await writeFile(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: standin',
      '  cluster:',
      `    server: ${api.url}`,
      `    certificate-authority: ${pki.path('cluster-ca', 'crt')}`,
      '    tls-server-name: kubernetes',
      'users:',
      '- name: admin',
      '  user:',
      `    client-certificate: ${pki.path('cluster-admin', 'crt')}`,
      `    client-key: ${pki.path('cluster-admin', 'key')}`,
      'contexts:',
      '- name: standin',
      '  context: {cluster: standin, user: admin, namespace: default}',
      'current-context: standin',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  // HOME and --cache-dir keep kubectl away from the real ~/.kube (and its discovery cache).
  const env = { ...process.env, KUBECONFIG: kubeconfig, HOME: pki.dir };
  const args = (a: string[]) => [...a, '--cache-dir', `${pki.dir}/kube-cache`, '--request-timeout', '10s'];
  const kubectl = async (...a: string[]) => (await promisify(execFile)('kubectl', args(a), { env })).stdout;

  t.match(JSON.parse(await kubectl('get', '--raw', '/api')), { kind: 'APIVersions', versions: ['v1'] });

  const whoami = JSON.parse(await kubectl('auth', 'whoami', '-o', 'json')) as { status: { userInfo: UserInfo } };
  t.equal(whoami.status.userInfo.username, 'direct-admin');
  t.ok(whoami.status.userInfo.groups.includes('system:masters'), 'groups include system:masters');

  const pods = await kubectl('get', 'pods');
  t.match(pods, /^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\n/);
  t.match(pods, /pod-0\s+1\/1\s+Running\s+0\s+\S+\n/);
  t.equal(pods.trim().split('\n').length, 4, 'three pods listed');

  const watch = spawn('kubectl', args(['get', 'pods', '--watch']), { env });
  let out = '';
  watch.stdout.on('data', (d: Buffer) => (out += d.toString()));
  watch.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = once(watch, 'exit');
  while (api.openWatches() === 0) await new Promise((r) => setTimeout(r, 10));
  api.sendWatchEvent('ADDED', {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: { name: 'watched-pod', namespace: 'default' },
    status: { phase: 'Pending' },
  });
  while (!out.includes('watched-pod')) await new Promise((r) => setTimeout(r, 10));
  api.closeWatches();
  const [code] = await exited;
  t.equal(code, 0, 'kubectl get --watch exits cleanly when the watch ends');
  t.match(out, /watched-pod\s+0\/0\s+Pending/);
  t.match(lastRequest(api), { authn: 'x509', url: /\/api\/v1\/namespaces\/default\/pods\?.*watch=true/ });
});
