// The differential identity suite on the real kube-apiserver: each certificate of the corpus
// (test/helpers/raw-certificates.ts: several CNs, many O values, non-ASCII, padding, control
// characters, the reserved system: names, strings Go refuses) is presented to the apiserver
// directly and through the proxy, and the two SelfSubjectReviews compared. Exact cases must be
// the same byte for byte (credential-id included); refused ones must get the proxy's 401, and
// what the apiserver derives directly must be what the corpus says (so the stand-in, which the
// fast tests use, reads certificates as the real apiserver does). Users-file identities, which
// the apiserver cannot see directly, must arrive as the file spells them.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { Agent, request } from 'undici';
import { basicAuth } from '../helpers/clients.js';
import { AUTHENTICATED, clientCertificate, EXACT, REFUSED, type ClientCert } from '../helpers/raw-certificates.js';
import type { TestUser } from '../helpers/setup.js';
import { readAuditEvents, startControlPlane } from './control-plane.js';
import { startProxyInFront } from './proxy-fixture.js';
import { pollUntil } from '../helpers/raw-tls.js';

const cp = await startControlPlane({ kubelet: false });
t.teardown(() => cp.stop());
t.comment(`kube-apiserver ${cp.version.replace(/^Kubernetes /, '')}`);

// Users-file entries: non-ASCII, many groups, names close to reserved ones. (The reserved
// system: names cannot be written there: ':' separates the fields; entries the headers cannot
// carry are refused when the file is loaded, tested in test/identity-exactness.test.ts.)
const USERS: TestUser[] = [
  { name: 'josé', password: 'ñandú-pässword', groups: ['开发', 'Ωmega', '😀'] },
  { name: 'system-admin', password: 'near-reserved', groups: ['system-masters', 'ünïcode group'] },
  { name: 'many', password: 'many-groups', groups: Array.from({ length: 40 }, (_, i) => `g-${i}`) },
];
const front = await startProxyInFront(t, cp, { users: USERS });
const clusterCa = { cert: cp.pki.read('ca.crt'), key: cp.pki.read('ca.key') };
const apiserverUrl = cp.apiservers[0]!.url;

interface UserInfo {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}
type Review = { status: number; userInfo?: UserInfo; message?: string } | 'handshake failed';

const SSR = '/apis/authentication.k8s.io/v1/selfsubjectreviews';
const SSR_BODY = JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' });

/** A SelfSubjectReview at `url` with `cert` (and headers): the apiserver's reading of who we are. */
async function review(url: string, ca: string, cert: ClientCert | undefined, headers: Record<string, string> = {}): Promise<Review> {
  const agent = new Agent({ connect: { ca, servername: 'localhost', ...(cert ?? {}) }, keepAliveTimeout: 10 });
  try {
    const res = await request(`${url}${SSR}`, { dispatcher: agent, method: 'POST', body: SSR_BODY, headers: { 'content-type': 'application/json', ...headers } });
    const body = (await res.body.json()) as { status?: { userInfo?: UserInfo }; message?: string };
    return { status: res.statusCode, userInfo: body.status?.userInfo, message: body.message };
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'].includes(code) || /^ERR_(SSL|OSSL)_/.test(code)) return 'handshake failed';
    throw err;
  } finally {
    await agent.destroy();
  }
}

const direct = (cert: ClientCert) => review(apiserverUrl, clusterCa.cert, cert);
const proxied = (cert: ClientCert | undefined, headers: Record<string, string> = {}) => review(front.proxy.url, cp.pki.read('proxy-ca.crt'), cert, headers);

t.test('certificates forwarded exactly: the same SelfSubjectReview through the proxy as directly', async (t) => {
  for (const c of EXACT) {
    const cert = clientCertificate(clusterCa, c.subject);
    const seenDirect = await direct(cert);
    const groups = c.groups.includes(AUTHENTICATED) ? c.groups : [...c.groups, AUTHENTICATED];
    t.match(seenDirect, { status: 201, userInfo: { username: c.user, groups } }, `${c.name}: the apiserver reads it as the corpus says`);
    const through = await proxied(cert);
    t.equal(through !== 'handshake failed' && through.status, 201, `${c.name}: accepted through the proxy`);
    if (seenDirect === 'handshake failed' || through === 'handshake failed') continue;
    t.same(through.userInfo, seenDirect.userInfo, `${c.name}: the same user, groups and extra`);
  }
});

t.test('certificates the headers cannot carry exactly: refused by the proxy; the apiserver reads them as the corpus says', async (t) => {
  for (const c of REFUSED) {
    const cert = clientCertificate(clusterCa, c.subject);
    const seenDirect = await direct(cert);
    if (c.direct === 'handshake failed') t.equal(seenDirect, 'handshake failed', `${c.name}: directly, Go refuses it in the handshake`);
    else if ('kind' in c.direct) t.match(seenDirect, { status: c.direct.code }, `${c.name}: directly, ${c.direct.code}`);
    else t.match(seenDirect, { status: 201, userInfo: c.direct.user }, `${c.name}: directly, the apiserver derives ${JSON.stringify(c.direct.user)}`);
    const through = await proxied(cert);
    if (c.opensslRefuses) t.equal(through, 'handshake failed', `${c.name}: refused in the proxy's handshake`);
    else t.match(through, { status: 401, message: c.message }, `${c.name}: the proxy answers 401 saying why`);
  }
});

t.test('users-file identities reach the apiserver as the file spells them', async (t) => {
  for (const user of USERS) {
    const seen = await proxied(undefined, { authorization: basicAuth(user) });
    t.match(seen, { status: 201 }, `${user.name}: accepted`);
    if (seen === 'handshake failed') continue;
    t.same(seen.userInfo?.username, user.name, `${user.name}: the name`);
    t.same(seen.userInfo?.groups, [...user.groups, AUTHENTICATED], `${user.name}: the groups, in order`);
  }
});

t.test('a watch (the proxy carries it over HTTP/2 upstream) is the same identity as directly', async (t) => {
  const c = EXACT.find((e) => /non-ASCII/.test(e.name))!;
  const cert = clientCertificate(clusterCa, c.subject);
  const seenDirect = await direct(cert);
  if (seenDirect === 'handshake failed') return t.fail('direct handshake failed');
  const agent = front.client(cert);
  t.teardown(() => agent.destroy());
  // Forbidden or not, the apiserver records who asked; RBAC answers 403 to this user, after authentication.
  const res = await request(`${front.proxy.url}/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1`, { dispatcher: agent });
  await res.body.text();
  const auditLog = cp.apiservers[0]!.auditLog;
  const event = await pollUntil(
    () => readAuditEvents(auditLog).find((e) => e.verb === 'watch' && e.requestURI.includes('configmaps?watch=1&timeoutSeconds=1') && e.user.username === c.user),
    (found) => found !== undefined,
    10_000,
  );
  t.ok(event, 'the apiserver audited the watch');
  t.same(event?.user, seenDirect.userInfo, 'the watch was made as the same user, groups and extra');
  t.ok(readFileSync(auditLog, 'utf8').length > 0);
});
