// `kube-front-proxy check` and serve's start-up check against the real kube-apiserver, each case
// its own control plane started with one requestheader flag changed: what the apiserver
// publishes in kube-system/extension-apiserver-authentication, compared with the proxy. The
// apiserver refuses the front-proxy certificate outright (401) when its CA, allowed names or
// username header do not fit, so those cases also read the ConfigMap with the admin's kubeconfig.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createCertificateAuthority } from '../../src/pki/certificates.js';
import { MATCHES, ROLEBINDING_COMMAND } from '../../src/upstream/preflight.js';
import { requireKubectl } from '../helpers/kubectl.js';
import { runCli, type LogLine, type ProxyProcess } from '../helpers/proxy.js';
import { bcryptLine, settingsToFlags, writeUsersFile } from '../helpers/setup.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { ALICE, proxySettingsFor, startProxyInFront } from './proxy-fixture.js';

requireKubectl();

const OUR_CERT = 'CN=front-proxy-client, issued by CN=front-proxy-ca';
const REFUSED = `401 Unauthorized: the apiserver does not accept the proxy's front-proxy certificate (${OUR_CERT}) with the user in X-Remote-User`;
const HINT = '; `kube-front-proxy check --kubeconfig /etc/kubernetes/admin.conf` says why';

async function controlPlane(t: { teardown(fn: () => unknown): void }, apiserverFlags: string[] = []): Promise<ControlPlane> {
  const cp = await startControlPlane({ kubelet: false, controllerManager: false, apiserverFlags });
  t.teardown(() => cp.stop());
  return cp;
}

/** `kube-front-proxy check` with the flags the proxy in front of `cp` is served with. */
async function check(cp: ControlPlane, extra: string[] = []) {
  const usersFile = writeUsersFile(cp.dir, [bcryptLine(ALICE)], 'check-users.htpasswd');
  const res = await runCli(['check', ...settingsToFlags(proxySettingsFor(cp, usersFile)), ...extra]);
  return { ...res, lines: res.stdout.trimEnd().split('\n') };
}

/** The README's RoleBinding, run as written. */
async function grantPreflight(cp: ControlPlane): Promise<void> {
  await cp.adminOk(ROLEBINDING_COMMAND.split(' ').slice(1));
}

async function preflightLogs(proxy: ProxyProcess, count: number): Promise<LogLine[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const lines = proxy.logs.filter((l) => l.msg.startsWith('preflight:'));
    if (lines.length >= count) return lines;
    if (Date.now() > deadline) throw new Error(`no preflight line within 15 s; got: ${proxy.logs.map((l) => l.msg).join(' | ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

t.test("kubeadm's flags: refused to read without the RoleBinding (serve says so at info), then everything matches", async (t) => {
  const cp = await controlPlane(t);
  const url = cp.apiservers[0]!.url;
  t.comment(`kube-apiserver ${cp.version.replace(/^Kubernetes /, '')}`);

  const refused = await check(cp);
  t.same(refused.lines, [`${url}: 403 Forbidden: kube-front-proxy:preflight may not read kube-system/extension-apiserver-authentication; allow it: ${ROLEBINDING_COMMAND}`]);
  t.equal(refused.code, 1);

  const front = await startProxyInFront(t, cp);
  const [line] = await preflightLogs(front.proxy, 1);
  t.match(
    line,
    { level: 30, upstream: url, msg: `preflight: 403 Forbidden: kube-front-proxy:preflight may not read kube-system/extension-apiserver-authentication; allow it: ${ROLEBINDING_COMMAND}` },
    'not a warning: nothing is known to be wrong',
  );
  await front.proxy.stop();

  await grantPreflight(cp);
  const matching = await check(cp);
  t.same(matching.lines, [`${url}: ${MATCHES}`]);
  t.equal(matching.code, 0);
});

t.test("--requestheader-allowed-names without our CN: refused; the admin's kubeconfig says why; serve warns", async (t) => {
  const cp = await controlPlane(t, ['--requestheader-allowed-names=someone-else']);
  const url = cp.apiservers[0]!.url;
  await grantPreflight(cp);

  const alone = await check(cp);
  t.same(alone.lines, [`${url}: ${REFUSED}${HINT}`]);
  t.equal(alone.code, 1);

  const why = await check(cp, ['--kubeconfig', cp.adminKubeconfig]);
  t.same(why.lines, [`${url}: ${REFUSED}`, `${url}: requestheader-allowed-names ["someone-else"] does not include the proxy's CN front-proxy-client`]);
  t.equal(why.code, 1);

  const front = await startProxyInFront(t, cp);
  const started = front.proxy.logs.findIndex((l) => l.msg.startsWith('listening on'));
  const [warning] = await preflightLogs(front.proxy, 1);
  t.match(warning, { level: 40, upstream: url, msg: `preflight: ${REFUSED}${HINT}` });
  t.ok(front.proxy.logs.indexOf(warning!) > started, 'logged after the start-up line');
});

t.test("another --requestheader-client-ca-file: the proxy's certificate is not signed by a CA in it", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kfp-other-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const otherCa = join(dir, 'other-front-proxy-ca.crt');
  writeFileSync(otherCa, (await createCertificateAuthority({ commonName: 'other-front-proxy-ca' })).cert);
  const cp = await controlPlane(t, [`--requestheader-client-ca-file=${otherCa}`]);
  const url = cp.apiservers[0]!.url;

  const why = await check(cp, ['--kubeconfig', cp.adminKubeconfig]);
  t.same(why.lines, [`${url}: ${REFUSED}`, `${url}: the proxy's front-proxy certificate (${OUR_CERT}) is not signed by a CA in requestheader-client-ca-file (CN=other-front-proxy-ca)`]);
  t.equal(why.code, 1);
});

t.test('--requestheader-username-headers=X-Other-User: ours is not read, and clients could send that one', async (t) => {
  const cp = await controlPlane(t, ['--requestheader-username-headers=X-Other-User']);
  const url = cp.apiservers[0]!.url;

  const why = await check(cp, ['--kubeconfig', cp.adminKubeconfig]);
  t.same(why.lines, [
    `${url}: ${REFUSED}`,
    `${url}: requestheader-username-headers ["X-Other-User"] does not include X-Remote-User: the apiserver does not see the user the proxy sends`,
    `${url}: requestheader-username-headers has X-Other-User, which the proxy passes on from clients while it cannot read this ConfigMap itself: any user of the proxy could pose as any user`,
  ]);
  t.equal(why.code, 1);
});

t.test('a group header besides ours: the proxy reads the ConfigMap itself, so serve removes that header too; check notes it and passes', async (t) => {
  const cp = await controlPlane(t, ['--requestheader-group-headers=X-Remote-Group,X-Other-Group']);
  const url = cp.apiservers[0]!.url;
  await grantPreflight(cp);

  const res = await check(cp);
  t.same(res.lines, [`${url}: ${MATCHES}`, `${url}: requestheader-group-headers has X-Other-Group too: serve removes it from every client request (it reads this list at start and every minute)`]);
  t.equal(res.code, 0);
});
