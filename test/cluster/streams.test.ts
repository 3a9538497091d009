// kubectl's streaming verbs through the proxy and the real kube-apiserver's own upgrade proxy
// to a kubelet (fake-kubelet: the kubelet's streaming server code, "containers" that are local
// processes): logs and logs -f, exec over WebSocket and SPDY with exit codes, attach,
// port-forward over both with bytes both ways, cp both ways.
import t from 'tap';
import { once } from 'node:events';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { echoOverTcp, kubectl, requireKubectl } from '../helpers/kubectl.js';
import type { LogLine } from '../helpers/proxy.js';
import { pollUntil } from '../helpers/raw-tls.js';
import { tempDir } from '../helpers/temp.js';
import { startControlPlane } from './control-plane.js';
import { startProxyInFront } from './proxy-fixture.js';
import { spawnKubectl } from './watch-process.js';

requireKubectl();
const cp = await startControlPlane();
t.teardown(() => cp.stop());
const ERIN = { name: 'erin', password: 'erin-password-3', groups: ['platform'] };
const front = await startProxyInFront(t, cp, { users: [ERIN] });
const erin = front.passwordKubeconfig(ERIN);
await cp.adminOk(['create', 'clusterrolebinding', 'platform-admin', '--clusterrole=cluster-admin', '--group=platform']);

const PROTOCOLS = [
  // kubectl 1.32 opens exec/attach/cp/port-forward as a WebSocket (GET) unless told otherwise;
  // SPDY goes as POST.
  { name: 'WebSocket', method: 'GET', env: { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'true', KUBECTL_PORT_FORWARD_WEBSOCKETS: 'true' } },
  { name: 'SPDY', method: 'POST', env: { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false', KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } },
] as const;

/**
 * The proxy's traffic-log lines for upgrades to `subresource` since `from`, once there are at
 * least `count` (log lines reach stdout in batches, up to 100 ms after the request).
 */
/**
 * The log's length once every tunnel opened so far has its end line: an earlier test's tunnel
 * closes as its kubectl exits, and its end line can reach stdout after the next test has begun.
 */
async function settledLogLength(): Promise<number> {
  const tunnels = () => front.proxy.logs.filter((l) => l.status === 101);
  await pollUntil(tunnels, (lines) => lines.filter((l) => l.phase === 'start').length === lines.filter((l) => l.phase === 'end').length, 10_000, 20);
  return front.proxy.logs.length;
}

function upgradeLines(from: number, subresource: string, count: number): Promise<LogLine[]> {
  const read = () => front.proxy.logs.slice(from).filter((l) => typeof l.path === 'string' && l.path.includes(`/pods/pod-0/${subresource}`) && l.status === 101);
  return pollUntil(read, (lines) => lines.length >= count, 10_000, 20);
}

t.test('logs and logs -f', async (t) => {
  const logFile = join(cp.kubeletRoot, 'logs', 'default_pod-0_main.log');
  writeFileSync(logFile, 'first line\nsecond line\n');
  const logs = await kubectl(erin, ['logs', 'pod-0']);
  t.equal(logs.code, 0, logs.stderr);
  t.equal(logs.stdout, 'first line\nsecond line\n');
  const tail = await kubectl(erin, ['logs', 'pod-0', '--tail=1']);
  t.equal(tail.stdout, 'second line\n');

  const follow = spawnKubectl(erin, ['logs', '-f', 'pod-0']);
  t.teardown(() => follow.stop());
  await follow.waitFor(/second line\n/);
  appendFileSync(logFile, 'written while followed\n');
  await follow.waitFor(/written while followed\n/);
  t.pass('logs -f delivered a line written after it started');
});

for (const protocol of PROTOCOLS) {
  t.test(`exec -i over ${protocol.name}: stdin, stdout, stderr, exit codes`, async (t) => {
    const from = await settledLogLength();
    const cat = await kubectl(erin, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: `through ${protocol.name}\n`, env: protocol.env });
    t.equal(cat.code, 0, cat.stderr);
    t.equal(cat.stdout, `through ${protocol.name}\n`);
    const failing = await kubectl(erin, ['exec', 'pod-0', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'], { env: protocol.env });
    t.equal(failing.code, 7, 'the exit code travels back');
    t.equal(failing.stdout, 'out\n');
    t.match(failing.stderr, /^err\n/);
    const lines = await upgradeLines(from, 'exec', 2);
    t.ok(lines.length >= 2 && lines.every((l) => l.method === protocol.method), `the proxy carried ${protocol.name} upgrades (${lines.map((l) => l.method).join(', ')})`);
  });

  t.test(`port-forward over ${protocol.name}: bytes both ways`, async (t) => {
    // The "pod" port is this machine's: fake-kubelet dials 127.0.0.1:PORT.
    const echo = createServer({ allowHalfOpen: true }, (socket: Socket) => socket.pipe(socket));
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    t.teardown(() => echo.close());
    const podPort = (echo.address() as { port: number }).port;
    const forward = spawnKubectl(erin, ['port-forward', '--address', '127.0.0.1', 'pod/pod-0', `:${podPort}`], protocol.env);
    t.teardown(() => forward.stop());
    const localPort = Number((await forward.waitFor(new RegExp(`Forwarding from 127\\.0\\.0\\.1:(\\d+) -> ${podPort}`)))[1]);
    const payload = Buffer.alloc(256 * 1024, 0);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
    const back = await echoOverTcp(localPort, payload);
    t.ok(back.equals(payload), `256 KiB there and back (${back.length} bytes came back)`);
    const second = await echoOverTcp(localPort, Buffer.from('again'));
    t.equal(second.toString(), 'again', 'a second connection through the same port-forward');
  });
}

t.test("attach -i: the container's main process answers", async (t) => {
  const attach = await kubectl(erin, ['attach', '-i', 'pod-0', '-c', 'main'], { stdin: 'to the main process\n' });
  t.equal(attach.code, 0, attach.stderr);
  t.match(attach.stdout, 'to the main process\n');
  const spdy = await kubectl(erin, ['attach', '-i', 'pod-0', '-c', 'main'], { stdin: 'over spdy\n', env: PROTOCOLS[1].env });
  t.equal(spdy.code, 0, spdy.stderr);
  t.match(spdy.stdout, 'over spdy\n');
});

t.test('cp into the pod and back out', async (t) => {
  const local = tempDir('kfp-cp-');
  const remote = tempDir('kfp-pod-');
  const content = Buffer.alloc(300 * 1024);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7 + 3) & 0xff;
  writeFileSync(join(local, 'data.bin'), content);
  const into = await kubectl(erin, ['cp', join(local, 'data.bin'), `pod-0:${remote}/data.bin`]);
  t.equal(into.code, 0, into.stderr);
  t.ok(readFileSync(join(remote, 'data.bin')).equals(content), 'the file arrived in the "container" byte for byte');
  const out = await kubectl(erin, ['cp', `pod-0:${remote}/data.bin`, join(local, 'back.bin')]);
  t.equal(out.code, 0, out.stderr);
  t.ok(readFileSync(join(local, 'back.bin')).equals(content), 'and came back byte for byte');
});

t.test("exec refused by RBAC is the apiserver's 403, over both protocols", async (t) => {
  // kubectl reads the pod before it execs: viewers may do that, not exec.
  await cp.adminOk(['create', 'role', 'pod-getter', '--verb=get', '--resource=pods']);
  await cp.adminOk(['create', 'rolebinding', 'viewers-get-pods', '--role=pod-getter', '--group=viewers']);
  const viewer = await front.certificateKubeconfig('vera', ['viewers']);
  for (const protocol of PROTOCOLS) {
    const denied = await kubectl(viewer.kubeconfig, ['exec', 'pod-0', '--', 'true'], { env: protocol.env });
    t.equal(denied.code, 1);
    t.match(denied.stderr, 'pods "pod-0" is forbidden: User "vera" cannot create resource "pods/exec" in API group "" in the namespace "default"', protocol.name);
  }
});
