// The real kube-apiserver refusing the proxy's own identity (--requestheader-allowed-names without
// the proxy's CN): kubectl gets a 502 that names the flags to check, at once and from the first
// request, never "You must be logged in"; the proxy logs one warning for it. A 401 the real
// apiserver gives for another reason (a bad passed-through token) still reaches kubectl as is.
import t from 'tap';
import { kubectl, requireKubectl, writeKubeconfig } from '../helpers/kubectl.js';
import type { LogLine } from '../helpers/proxy.js';
import { startControlPlane } from './control-plane.js';
import { ALICE, startProxyInFront } from './proxy-fixture.js';

requireKubectl();

const REFUSED = /Error from server \(BadGateway\): the apiserver https:\/\/127\.0\.0\.1:\d+ did not accept the front-proxy client certificate .*--requestheader-client-ca-file.*--requestheader-allowed-names/;

t.test("allowed names without the proxy's CN: 502 naming the flags", async (t) => {
  const cp = await startControlPlane({ kubelet: false, controllerManager: false, apiserverFlags: ['--requestheader-allowed-names=aggregator'] });
  t.teardown(() => cp.stop());
  const front = await startProxyInFront(t, cp, { flags: ['--token-passthrough=true'] });

  const started = performance.now();
  const whoami = await kubectl(front.passwordKubeconfig(ALICE), ['auth', 'whoami']);
  const seconds = (performance.now() - started) / 1000;
  t.not(whoami.code, 0);
  t.match(whoami.stderr, REFUSED, 'kubectl prints what to fix');
  t.notMatch(whoami.stderr, /logged in|Unauthorized/, 'not a credentials error');
  t.ok(seconds < 5, `answered at once (${seconds.toFixed(1)} s), no retries`);
  t.comment(whoami.stderr.trim());

  const bob = await front.certificateKubeconfig('bob', ['devs']);
  // get starts with discovery, whose 502 kubectl prints as the text it is.
  const pods = await kubectl(bob.kubeconfig, ['get', 'pods']);
  t.match(pods.stderr, /an error on the server \("the apiserver https:\/\/127\.0\.0\.1:\d+ did not accept the front-proxy client certificate .*--requestheader-allowed-names/, 'a certificate user, with kubectl get, is told the same');
  t.comment(pods.stderr.trim().split('\n').at(-1) ?? '');

  const warnings = (): LogLine[] => front.proxy.logs.filter((l) => l.level >= 40 && l.msg === "upstream refuses the proxy's identity");
  t.equal(warnings().length, 1, 'one warning for the apiserver');
  t.notOk(
    front.proxy.logs.some((l) => l.level >= 40 && JSON.stringify(l).includes('"stack"')),
    'no stack traces',
  );
});

t.test('a 401 of the real apiserver for a bad token still reaches kubectl', async (t) => {
  const cp = await startControlPlane({ kubelet: false, controllerManager: false });
  t.teardown(() => cp.stop());
  const front = await startProxyInFront(t, cp, { flags: ['--token-passthrough=true'] });
  const kubeconfig = writeKubeconfig(front.proxy.url, cp.pki.read('proxy-ca.crt'), { token: 'not-a-real-token' });
  const res = await kubectl(kubeconfig, ['get', 'pods']);
  t.not(res.code, 0);
  t.match(res.stderr, /You must be logged in to the server/, "the apiserver's own 401");
  t.equal((await kubectl(front.passwordKubeconfig(ALICE), ['auth', 'whoami'])).code, 0, 'and the apiserver stays in for everyone else');
});
