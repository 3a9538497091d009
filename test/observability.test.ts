// The traffic log and metrics through a real proxy: exact lines for each kind of request, no
// secret anywhere in the output, counters that match a known mix, and a log file that follows
// logrotate.
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { basicAuth, call, openWatch, proxyClient } from './helpers/clients.js';
import { kubectl, requireKubectl, writeKubeconfig } from './helpers/kubectl.js';
import { runCli, type LogLine } from './helpers/proxy.js';
import { ALICE, startStack } from './helpers/setup.js';

requireKubectl();
const { apiserver, pki, proxy } = await startStack(t);
const cert = proxyClient(pki, { cert: 'user-alice' });
const password = proxyClient(pki);
t.teardown(() => Promise.all([cert.close(), password.close()]));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The traffic-log lines written since `from`, once the proxy has written `count` of them. */
async function linesSince(from: number, count: number): Promise<LogLine[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const lines = proxy.logs.slice(from).filter((l) => l.msg === 'request' || l.msg === 'authentication failed');
    if (lines.length >= count || Date.now() > deadline) return lines;
    await sleep(20);
  }
}

const VOLATILE = ['level', 'time', 'pid', 'reqId', 'durationMs', 'bytesOut', 'upstream', 'msg'] as const;
function stable(line: LogLine | undefined): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...line };
  for (const key of VOLATILE) delete copy[key];
  return copy;
}

const alice = { client: '127.0.0.1', auth: 'x509', user: 'alice', groups: ['devs', 'ops'] };

t.test('a list, a get of a subresource and a 5xx from the apiserver: one exact line each', async (t) => {
  const from = proxy.logs.length;
  await call(cert, `${proxy.url}/api/v1/namespaces/default/pods?limit=5&labelSelector=app%3Dweb`, { method: 'GET', headers: { 'user-agent': 'kubectl/v1.32.4 (test)' } });
  await call(cert, `${proxy.url}/apis/apps/v1/namespaces/kube-system/deployments/coredns/scale`, { method: 'GET' });
  await call(cert, `${proxy.url}/test/status/503`, { method: 'GET' });
  const [list, scale, failed] = await linesSince(from, 3);
  t.same(stable(list), {
    ...alice,
    method: 'GET',
    protocol: 'HTTP/1.1',
    path: '/api/v1/namespaces/default/pods',
    verb: 'list',
    apiGroup: '',
    apiVersion: 'v1',
    resource: 'pods',
    subresource: '',
    namespace: 'default',
    name: '',
    status: 200,
    bytesIn: 0,
    userAgent: 'kubectl/v1.32.4 (test)',
  });
  t.same(stable(scale), {
    ...alice,
    method: 'GET',
    protocol: 'HTTP/1.1',
    path: '/apis/apps/v1/namespaces/kube-system/deployments/coredns/scale',
    verb: 'get',
    apiGroup: 'apps',
    apiVersion: 'v1',
    resource: 'deployments',
    subresource: 'scale',
    namespace: 'kube-system',
    name: 'coredns',
    status: 404,
    bytesIn: 0,
    userAgent: '',
  });
  t.match(failed, { path: '/test/status/503', verb: 'get', status: 503 });
  t.equal(list?.upstream, apiserver.url, 'the upstream that served it');
  t.ok(Number(list?.bytesOut) > 100, `bytes sent to the client (${list?.bytesOut})`);
  t.type(list?.durationMs, 'number');
  t.match(String(list?.reqId), /^[0-9a-f-]{36}$/);
  t.notOk(JSON.stringify(list).includes('labelSelector'), 'no query string in the log');
});

t.test('a refused login: its reason and the claimed user', async (t) => {
  const from = proxy.logs.length;
  await call(password, `${proxy.url}/api`, { method: 'GET', headers: { authorization: basicAuth({ name: 'alice', password: 'guessing' }) } });
  const [line] = await linesSince(from, 1);
  t.same(stable(line), { client: '127.0.0.1', auth: 'basic', reason: 'bad-password', claimedUser: 'alice', method: 'GET', path: '/api', status: 401, userAgent: '' });
  t.equal(line?.msg, 'authentication failed');
});

t.test('a watch: a start line when it opens, an end line when it closes', async (t) => {
  const from = proxy.logs.length;
  const watch = await openWatch(password, `${proxy.url}/api/v1/namespaces/default/pods?watch=1`, { authorization: basicAuth(ALICE) });
  const [start] = await linesSince(from, 1);
  t.same(stable(start), {
    client: '127.0.0.1',
    auth: 'basic',
    user: 'alice',
    groups: ['devs', 'ops'],
    method: 'GET',
    protocol: 'HTTP/1.1',
    path: '/api/v1/namespaces/default/pods',
    verb: 'watch',
    apiGroup: '',
    apiVersion: 'v1',
    resource: 'pods',
    subresource: '',
    namespace: 'default',
    name: '',
    status: 200,
    bytesIn: 0,
    userAgent: '',
    phase: 'start',
  });
  apiserver.sendWatchEvent('ADDED', { kind: 'Pod', apiVersion: 'v1', metadata: { name: 'x', namespace: 'default' } });
  await watch.next(1);
  apiserver.closeWatches();
  await watch.ended;
  const [, end] = await linesSince(from, 2);
  t.match(end, { verb: 'watch', phase: 'end', status: 200, reqId: start?.reqId });
  t.ok(Number(end?.bytesOut) > 0, 'the end line counts the events sent');
});

t.test('kubectl exec: start and end lines for the tunnel', async (t) => {
  const kubeconfig = writeKubeconfig(proxy.url, pki.pem['proxy-ca'].cert, { clientCertificate: pki.pem['user-alice'].cert, clientKey: pki.pem['user-alice'].key });
  const from = proxy.logs.length;
  const res = await kubectl(kubeconfig, ['exec', '-i', 'pod-0', '--', 'cat'], { stdin: 'logged\n' });
  t.equal(res.code, 0, res.stderr);
  // The end line comes when the tunnel has closed, which can be just after kubectl exits.
  let lines: LogLine[] = [];
  for (let i = 0; i < 250 && lines.length < 2; i++) {
    lines = (await linesSince(from, 0)).filter((l) => l.subresource === 'exec');
    if (lines.length < 2) await sleep(20);
  }
  t.same(
    lines.map((l) => [l.verb, l.resource, l.subresource, l.name, l.status, l.phase]),
    [
      ['get', 'pods', 'exec', 'pod-0', 101, 'start'],
      ['get', 'pods', 'exec', 'pod-0', 101, 'end'],
    ],
  );
  t.ok(Number(lines[1]?.bytesIn) > 0 && Number(lines[1]?.bytesOut) > 0, 'bytes both ways are counted');
});

t.test('no password and no Authorization value anywhere in the output', async (t) => {
  const everything = JSON.stringify(proxy.logs) + proxy.stderr();
  for (const secret of [ALICE.password, 'guessing', 'Basic ', 'Bearer ', Buffer.from(`alice:${ALICE.password}`).toString('base64')]) {
    t.notOk(everything.includes(secret), `never ${JSON.stringify(secret)}`);
  }
});

/** Prometheus text format: every line a comment, blank, or `name{labels} value`. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?) (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    if (!match) throw new Error(`not Prometheus text: ${line}`);
    samples.set(match[1] as string, Number(match[2]));
  }
  return samples;
}

t.test('/metrics after a known mix of requests', async (t) => {
  const metricsText = async () => {
    const res = await fetch(`${proxy.adminUrl}/metrics`);
    t.match(res.headers.get('content-type'), /^text\/plain/);
    return parseMetrics(await res.text());
  };
  const before = await metricsText();
  const get = (m: Map<string, number>, key: string) => m.get(key) ?? 0;
  const upstream = apiserver.url;
  for (let i = 0; i < 3; i++) await call(cert, `${proxy.url}/api/v1/namespaces/default/pods`);
  await call(cert, `${proxy.url}/api/v1/namespaces/default/pods/nope`);
  for (let i = 0; i < 2; i++) await call(password, `${proxy.url}/api`, { method: 'GET', headers: { authorization: basicAuth({ name: 'mallory', password: 'x' }) } });
  const after = await metricsText();
  const listKey = `kube_front_proxy_requests_total{verb="list",resource="pods",code="200",upstream="${upstream}"}`;
  t.equal(get(after, listKey) - get(before, listKey), 3, 'three lists of pods');
  const notFound = `kube_front_proxy_requests_total{verb="get",resource="pods",code="404",upstream="${upstream}"}`;
  t.equal(get(after, notFound) - get(before, notFound), 1, 'one 404');
  const unknown = 'kube_front_proxy_authentications_total{method="basic",outcome="unknown-user"}';
  t.equal(get(after, unknown) - get(before, unknown), 2, 'two unknown users');
  const success = 'kube_front_proxy_authentications_total{method="x509",outcome="success"}';
  t.equal(get(after, success) - get(before, success), 4, 'four certificate logins');
  t.equal(get(after, `kube_front_proxy_upstream_healthy{upstream="${upstream}"}`), 1);
  t.equal(get(after, `kube_front_proxy_upstream_in_flight{upstream="${upstream}"}`), 0);
  t.equal(get(after, 'kube_front_proxy_open_streams{kind="watch"}'), 0);
  const histogramCount = `kube_front_proxy_request_duration_seconds_count{verb="list",resource="pods",code="200",upstream="${upstream}"}`;
  t.equal(get(after, histogramCount) - get(before, histogramCount), 3, 'durations observed');
  t.ok(after.has('kube_front_proxy_process_cpu_user_seconds_total'), 'process metrics');
  t.notOk(
    [...after.keys()].some((k) => k.includes('alice') || k.includes('mallory') || k.includes('/api')),
    'no user names or paths as labels',
  );
});

t.test('--access-log FILE follows logrotate (rename, then SIGUSR1)', async (t) => {
  const file = join(pki.dir, 'access.log');
  const logged = await startStack(t, { pki, flags: ['--access-log', file] });
  const client = proxyClient(pki, { cert: 'user-bob' });
  t.teardown(() => client.close());
  await call(client, `${logged.proxy.url}/api/v1/namespaces/default/pods`);
  const waitForFile = async (path: string, text: string) => {
    for (let i = 0; i < 100 && !(existsSync(path) && readFileSync(path, 'utf8').includes(text)); i++) await sleep(50);
    return existsSync(path) ? readFileSync(path, 'utf8') : '';
  };
  t.match(await waitForFile(file, '"user":"bob"'), /"msg":"request"/);
  t.notOk(
    logged.proxy.logs.some((l) => l.msg === 'request'),
    'traffic lines go to the file, not stdout',
  );
  renameSync(file, `${file}.1`);
  logged.proxy.child.kill('SIGUSR1');
  await sleep(200);
  await call(client, `${logged.proxy.url}/api/v1/namespaces/kube-system/pods`);
  t.match(await waitForFile(file, 'kube-system'), /"namespace":"kube-system"/, 'the new file gets the new lines');
  t.notOk(readFileSync(`${file}.1`, 'utf8').includes('kube-system'), 'the rotated file keeps only the old ones');

  // The viewer reads the proxy's own file.
  const table = await runCli(['logs', file, '--user', 'bob', '--namespace', 'kube-system']);
  t.equal(table.code, 0, table.stderr);
  t.match(table.stdout, /^TIME \(UTC\)/, 'a header');
  t.match(table.stdout, /bob\s+list\s+pods kube-system\s+200/, 'the request as a row');
  const stats = await runCli(['logs', file, '--stats']);
  t.equal(stats.code, 0, stats.stderr);
  t.match(stats.stdout, /bob/);
  const bad = await runCli(['logs', file, '--status', '6xx']);
  t.equal(bad.code, 2, 'a bad filter is a usage error');
  t.match(bad.stderr, /^kube-front-proxy: .*6xx/);
});

t.test('--access-log-format audit: Kubernetes audit Events, readable by audit-log tools', async (t) => {
  const audited = await startStack(t, { pki, flags: ['--access-log-format', 'audit'] });
  const client = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => client.close());
  await call(client, `${audited.proxy.url}/apis/apps/v1/namespaces/kube-system/deployments/coredns/scale?dryRun=All`);
  await call(proxyClient(pki), `${audited.proxy.url}/api`, { method: 'GET', headers: { authorization: basicAuth({ name: 'mallory', password: 'x' }) } });
  let events: LogLine[] = [];
  for (let i = 0; i < 100 && events.length < 2; i++) {
    events = audited.proxy.logs.filter((l) => (l as { kind?: string }).kind === 'Event');
    await sleep(20);
  }
  const [event, refused] = events as unknown as [Record<string, unknown>, Record<string, unknown>];
  t.same(
    Object.keys(event).sort(),
    ['annotations', 'apiVersion', 'auditID', 'kind', 'level', 'objectRef', 'requestReceivedTimestamp', 'requestURI', 'responseStatus', 'sourceIPs', 'stage', 'stageTimestamp', 'user', 'userAgent', 'verb'],
    'a bare Event, nothing of pino around it',
  );
  t.match(event, {
    kind: 'Event',
    apiVersion: 'audit.k8s.io/v1',
    level: 'Metadata',
    stage: 'ResponseComplete',
    requestURI: '/apis/apps/v1/namespaces/kube-system/deployments/coredns/scale',
    verb: 'get',
    user: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'] },
    sourceIPs: ['127.0.0.1'],
    objectRef: { resource: 'deployments', namespace: 'kube-system', name: 'coredns', apiGroup: 'apps', apiVersion: 'v1', subresource: 'scale' },
    responseStatus: { code: 404 },
  });
  t.ok(Date.parse(String(event.stageTimestamp)) >= Date.parse(String(event.requestReceivedTimestamp)));
  t.match(refused, { kind: 'Event', responseStatus: { code: 401 }, user: { username: 'mallory' }, annotations: { 'kube-front-proxy/auth-failure': 'unknown-user' } });
});
