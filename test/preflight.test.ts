// Preflight on the stand-in: `check` run with serve's flags, its exit codes and lines; serve's
// start-up line about it; and the comparison itself on ConfigMap data the stand-in does not
// publish (other CAs, allowed names, header names). test/cluster/preflight.test.ts runs the same
// against the real kube-apiserver.
import { createServer } from 'node:net';
import t from 'tap';
import { compare, MATCHES } from '../src/upstream/preflight.js';
import { startApiServer } from '../standin/apiserver.js';
import { createTestPki } from './helpers/pki.js';
import { runCli, startProxy, type LogLine, type ProxyProcess } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, withFlag, writeUsersFile } from './helpers/setup.js';

const pki = await createTestPki();
const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)]);

async function standIn(allowedNames?: string[]) {
  const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert, clientCA: pki.pem['cluster-ca'].cert, ...(allowedNames ? { allowedNames } : {}) });
  t.teardown(() => apiserver.close());
  return apiserver;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

async function waitForLog(proxy: ProxyProcess, match: (l: LogLine) => boolean): Promise<LogLine> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const line = proxy.logs.find(match);
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`no such log line within 10 s; got: ${proxy.logs.map((l) => l.msg).join(' | ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const good = await standIn();
const strict = await standIn(['someone-else']);
const REFUSED =
  "401 Unauthorized: the apiserver does not accept the proxy's front-proxy certificate (CN=front-proxy-client, issued by CN=front-proxy-ca) with the user in X-Remote-User; `kube-front-proxy check --kubeconfig /etc/kubernetes/admin.conf` says why";

t.test('check: one line per matching upstream, exit 0; the read is made as the preflight user', async (t) => {
  const res = await runCli(['check', ...proxyFlags(pki, { upstream: good.url, usersFile })]);
  t.equal(res.stdout, `${good.url}: ${MATCHES}\n`);
  t.equal(res.stderr, '');
  t.equal(res.code, 0);
  t.match(good.preflightReads.at(-1), {
    method: 'GET',
    url: '/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication',
    authn: 'requestheader',
    user: { username: 'kube-front-proxy:preflight', groups: ['system:authenticated'] },
  });
  t.notOk(
    good.requests.some((r) => r.url.includes('extension-apiserver-authentication')),
    'kept apart from the requests tests count',
  );
});

t.test('check: an apiserver that refuses the front-proxy certificate and one not reachable, exit 1', async (t) => {
  const down = `https://127.0.0.1:${await closedPort()}`;
  const flags = [...withFlag(proxyFlags(pki, { upstream: strict.url, usersFile }), '--upstream', strict.url), '--upstream', down, '--upstream', good.url];
  const res = await runCli(['check', ...flags]);
  const lines = res.stdout.trimEnd().split('\n');
  t.same(lines.slice(0, 1), [`${strict.url}: ${REFUSED}`]);
  t.match(lines[1], `${down}: cannot read kube-system/extension-apiserver-authentication: ECONNREFUSED`);
  t.same(lines.slice(2), [`${good.url}: ${MATCHES}`], 'in the order of --upstream');
  t.equal(res.code, 1);
});

t.test('check: a bad --kubeconfig is a settings error (exit 2, one line)', async (t) => {
  const res = await runCli(['check', ...proxyFlags(pki, { upstream: good.url, usersFile }), '--kubeconfig', `${pki.dir}/missing.conf`]);
  t.equal(res.stderr, `kube-front-proxy: --kubeconfig ${pki.dir}/missing.conf: no such file\n`);
  t.equal(res.code, 2);
});

t.test('serve: the start-up check logs a match at info and a refusal as a warning, after listening', async (t) => {
  const matching = await startProxy(proxyFlags(pki, { upstream: good.url, usersFile }));
  t.teardown(() => matching.stop());
  const ok = await waitForLog(matching, (l) => l.msg.startsWith('preflight:'));
  t.match(ok, { level: 30, upstream: good.url, msg: `preflight: ${MATCHES}` });
  t.ok(matching.logs.indexOf(ok) > matching.logs.findIndex((l) => l.msg.startsWith('listening on')), 'after the start-up line');

  const refused = await startProxy(proxyFlags(pki, { upstream: strict.url, usersFile }));
  t.teardown(() => refused.stop());
  t.match(await waitForLog(refused, (l) => l.msg.startsWith('preflight:')), { level: 40, upstream: strict.url, msg: `preflight: ${REFUSED}` });
});

t.test('compare: what a ConfigMap may say that does not fit the proxy', async (t) => {
  const proxyCert = Buffer.from(pki.pem['front-proxy-client'].cert);
  const kubeadm = {
    'requestheader-client-ca-file': pki.pem['front-proxy-ca'].cert,
    'requestheader-allowed-names': '["front-proxy-client"]',
    'requestheader-username-headers': '["X-Remote-User"]',
    'requestheader-group-headers': '["X-Remote-Group"]',
    'requestheader-extra-headers-prefix': '["X-Remote-Extra-"]',
  };
  const texts = (data: Record<string, string>) => compare(data, proxyCert).map((f) => f.text);
  t.same(texts(kubeadm), [], "kubeadm's flags match");
  t.same(texts({ ...kubeadm, 'requestheader-allowed-names': '[]' }), [], 'an empty list allows any CN');
  t.same(texts({ ...kubeadm, 'requestheader-username-headers': '["x-remote-user"]', 'requestheader-extra-headers-prefix': '["x-remote-extra-"]' }), [], 'names compare case-insensitively');
  t.same(texts({ ...kubeadm, 'requestheader-uid-headers': '["X-Remote-Uid"]', 'requestheader-extra-headers-prefix': '["X-Remote-Extra-","X-Remote-Extra-Scope-"]' }), [], 'names the proxy removes are safe');
  t.same(texts({ ...kubeadm, 'requestheader-client-ca-file': `${pki.pem['rogue-ca'].cert}${pki.pem['cluster-ca'].cert}` }), [
    "the proxy's front-proxy certificate (CN=front-proxy-client, issued by CN=front-proxy-ca) is not signed by a CA in requestheader-client-ca-file (CN=rogue-ca; CN=kubernetes)",
  ]);
  t.same(texts({ ...kubeadm, 'requestheader-client-ca-file': `${pki.pem['rogue-ca'].cert}${pki.pem['front-proxy-ca'].cert}` }), [], 'one CA of the bundle is enough');
  t.same(texts({ ...kubeadm, 'requestheader-allowed-names': '["someone-else","aggregator"]' }), ['requestheader-allowed-names ["someone-else","aggregator"] does not include the proxy\'s CN front-proxy-client']);
  t.same(texts({ ...kubeadm, 'requestheader-username-headers': '["X-Other-User"]' }), [
    'requestheader-username-headers ["X-Other-User"] does not include X-Remote-User: the apiserver does not see the user the proxy sends',
    'requestheader-username-headers has X-Other-User, which the proxy passes on from clients while it cannot read this ConfigMap itself: any user of the proxy could pose as any user',
  ]);
  t.same(texts({ ...kubeadm, 'requestheader-group-headers': '["X-Remote-Group","X-Groups"]', 'requestheader-extra-headers-prefix': '["X-Remote-Extra-","X-Remote-"]', 'requestheader-uid-headers': '["X-Remote-Uid","X-Uid"]' }), [
    'requestheader-group-headers has X-Groups, which the proxy passes on from clients while it cannot read this ConfigMap itself: any user of the proxy could claim any group',
    'requestheader-extra-headers-prefix has X-Remote-, which the proxy passes on from clients while it cannot read this ConfigMap itself: any user of the proxy could add extra values',
    'requestheader-uid-headers has X-Uid, which the proxy passes on from clients while it cannot read this ConfigMap itself: any user of the proxy could set its UID',
  ]);
  // Read with the proxy's own identity, the list is what serve learns and removes: a note, not a problem.
  t.same(compare({ ...kubeadm, 'requestheader-group-headers': '["X-Remote-Group","X-Groups"]' }, proxyCert, { proxyReadsIt: true }), [
    { severity: 'note', text: 'requestheader-group-headers has X-Groups too: serve removes it from every client request (it reads this list at start and every minute)' },
  ]);
  t.same(texts({ 'client-ca-file': pki.pem['cluster-ca'].cert }), ['no requestheader-client-ca-file: the apiserver trusts no front proxy (it runs without --requestheader-client-ca-file)']);
  t.same(texts({ ...kubeadm, 'requestheader-group-headers': 'X-Remote-Group' }), ['requestheader-group-headers is not a JSON list of strings: X-Remote-Group']);
});
