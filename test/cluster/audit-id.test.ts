// One ID per request on the real kube-apiserver: the proxy's traffic-log line for a request and
// the apiserver's audit event for it carry the same ID (the proxy sends its request ID as
// Audit-ID, which the apiserver adopts), for kubectl's own requests, an RBAC denial, a client's
// own Audit-ID, a watch over the HTTP/2 upstream path and an exec upgrade that RBAC refuses; and
// `kube-front-proxy logs --audit-id` finds that one request's line, in the proxy's stdout and in
// --access-log files in both --access-log-format json and audit.
import { existsSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { kubectl, requireKubectl } from '../helpers/kubectl.js';
import { runCli, type LogLine } from '../helpers/proxy.js';
import { pollUntil } from '../helpers/raw-tls.js';
import { auditEventWhen, readAuditEvents, startControlPlane, type AuditEvent } from './control-plane.js';
import { ALICE, CAROL, startProxyInFront } from './proxy-fixture.js';

requireKubectl();
const cp = await startControlPlane({ kubelet: false, controllerManager: false });
t.teardown(() => cp.stop());
t.comment(`kube-apiserver ${cp.version.replace(/^Kubernetes /, '')}`);
const front = await startProxyInFront(t, cp);
const alice = front.passwordKubeconfig(ALICE);
const carol = front.passwordKubeconfig(CAROL);
const basic = (u: typeof ALICE) => `Basic ${Buffer.from(`${u.name}:${u.password}`).toString('base64')}`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

await cp.adminOk(['create', 'namespace', 'audit-a']);
await cp.adminOk(['create', 'role', 'pod-reader', '-n', 'audit-a', '--verb=get,list,watch', '--resource=pods']);
await cp.adminOk(['create', 'rolebinding', 'devs-read-pods', '-n', 'audit-a', '--role=pod-reader', '--group=devs']);

/** The audit event (ResponseComplete) with this auditID, once the apiserver has written it. */
function auditEvent(id: string): Promise<AuditEvent | undefined> {
  return auditEventWhen(cp.apiservers[0]!.auditLog, (e) => e.auditID === id);
}

/** The proxy's traffic-log lines (msg "request") written since `from` that `match` accepts. */
function proxyLines(from: number, match: (l: LogLine) => boolean, count = 1): Promise<LogLine[]> {
  const read = () => front.proxy.logs.slice(from).filter((l) => l.msg === 'request' && match(l));
  return pollUntil(read, (lines) => lines.length >= count, 10_000, 20);
}

t.test("kubectl get through the proxy: the log line's ID is the audit event's auditID", async (t) => {
  const from = front.proxy.logs.length;
  const res = await kubectl(alice, ['get', 'pods', '-n', 'audit-a']);
  t.equal(res.code, 0, res.stderr);
  const [line] = await proxyLines(from, (l) => l.verb === 'list' && l.namespace === 'audit-a' && l.user === 'alice');
  const id = String(line?.reqId);
  t.match(id, UUID, `the proxy's ID for it: ${id}`);
  const event = await auditEvent(id);
  t.ok(event, "the apiserver's audit event has the same ID");
  t.match(event, { verb: 'list', user: { username: 'alice' }, objectRef: { resource: 'pods', namespace: 'audit-a' }, responseStatus: { code: 200 } });
  t.comment(`proxy: ${JSON.stringify(line)}`);
  t.comment(`audit: ${JSON.stringify(event)}`);

  // `logs --audit-id` over the proxy's log (its stdout, which holds kubectl's discovery requests
  // and the other log lines too) finds exactly this request's line.
  const stdoutLog = front.proxy.logs.map((l) => JSON.stringify(l)).join('\n') + '\n';
  const json = await runCli(['logs', '--audit-id', id, '-o', 'json'], {}, stdoutLog);
  t.equal(json.code, 0, json.stderr);
  const found = json.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LogLine);
  t.equal(found.length, 1, 'logs --audit-id: one line');
  t.match(found[0], { reqId: id, verb: 'list', namespace: 'audit-a', user: 'alice', status: 200 });
  const wide = await runCli(['logs', '--audit-id', id, '-o', 'wide'], {}, stdoutLog);
  t.equal(wide.code, 0, wide.stderr);
  const rows = wide.stdout.trimEnd().split('\n');
  t.equal(rows.length, 2, 'header and one row');
  t.match(rows[0], /DURATION\s+PHASE\s+AUDIT-ID$/);
  t.match(rows[1], new RegExp(`^\\S+\\s+alice\\s+list\\s+pods audit-a\\s+200\\s.*\\s${id}$`));
});

t.test('logs --audit-id over --access-log files, json and audit format: the one request the apiserver audited under that ID', async (t) => {
  for (const format of ['json', 'audit'] as const) {
    const file = join(cp.dir, `access-${format}-${Date.now()}.log`);
    const other = await startProxyInFront(t, cp, { settings: { accessLog: file, accessLogFormat: format } });
    const client = other.client();
    const ask = async (path: string) => {
      const res = await request(`${other.proxy.url}${path}`, { dispatcher: client, headers: { authorization: basic(ALICE) } });
      await res.body.dump();
      return { status: res.statusCode, id: String(res.headers['audit-id']) };
    };
    const before = await ask('/api/v1/namespaces/audit-a/pods');
    const wanted = await ask('/api/v1/namespaces/audit-a/pods/nope');
    const after = await ask('/version');
    t.equal(wanted.status, 404, `${format}: the request asked for`);
    t.match(wanted.id, UUID);
    t.not(wanted.id, before.id);
    t.match(await auditEvent(wanted.id), { verb: 'get', objectRef: { resource: 'pods', namespace: 'audit-a', name: 'nope' }, responseStatus: { code: 404 } }, `${format}: the apiserver's audit event for it`);
    // The file is written in batches (at least every 100 ms): wait for all three lines.
    await pollUntil(() => existsSync(file) && readFileSync(file, 'utf8').includes(after.id), Boolean, 10_000);
    const idKey = format === 'json' ? 'reqId' : 'auditID';
    const all = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.includes(`"${idKey}"`));
    t.ok(all.length >= 3, `${format}: the file has ${all.length} request lines`);

    const res = await runCli(['logs', file, '--audit-id', wanted.id, '-o', 'json']);
    t.equal(res.code, 0, res.stderr);
    const lines = res.stdout.split('\n').filter(Boolean);
    t.equal(lines.length, 1, `${format}: logs --audit-id finds one line`);
    const line = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
    t.equal(line[idKey], wanted.id, `${format}: its ${idKey} is the audit event's auditID`);
    if (format === 'json') t.match(line, { msg: 'request', verb: 'get', resource: 'pods', name: 'nope', status: 404, user: 'alice' });
    else t.match(line, { kind: 'Event', verb: 'get', objectRef: { resource: 'pods', name: 'nope' }, responseStatus: { code: 404 }, user: { username: 'alice' } });

    const table = await runCli(['logs', file, '--audit-id', wanted.id]);
    t.equal(table.code, 0, table.stderr);
    const rows = table.stdout.trimEnd().split('\n');
    t.equal(rows.length, 2, `${format}: the table: header and one row`);
    t.match(rows[1], /alice\s+get\s+pods audit-a\/nope\s+404\s/);
    t.notMatch(rows[0], /AUDIT-ID/, 'the default table has no ID column');
    const none = await runCli(['logs', file, '--audit-id', `${wanted.id.slice(0, -1)}x`, '-o', 'json']);
    t.equal(none.stdout, '', `${format}: an ID that is not in the log: nothing`);
    await client.close();
    await other.proxy.stop();
  }
});

t.test('an RBAC denial (403) is found in both logs by one ID', async (t) => {
  const from = front.proxy.logs.length;
  const res = await kubectl(carol, ['get', 'pods', '-n', 'audit-a']);
  t.equal(res.code, 1);
  t.match(res.stderr, 'pods is forbidden: User "carol" cannot list resource "pods"');
  const lines = await proxyLines(from, (l) => l.user === 'carol' && l.status === 403);
  t.ok(lines.length >= 1, 'the proxy logged the 403');
  for (const line of lines) {
    const event = await auditEvent(String(line.reqId));
    t.match(event, { user: { username: 'carol' }, responseStatus: { code: 403 } }, `${line.reqId}: the apiserver's audit event for the same denial`);
  }
  // The same through the raw API: the response's Audit-Id is the one in both logs.
  const raw = await request(`${front.proxy.url}/api/v1/namespaces/audit-a/pods`, { dispatcher: front.client(), headers: { authorization: basic(CAROL) } });
  await raw.body.dump();
  t.equal(raw.statusCode, 403);
  const id = String(raw.headers['audit-id']);
  t.match(id, UUID);
  t.match(await auditEvent(id), { user: { username: 'carol' }, responseStatus: { code: 403 } });
  t.equal((await proxyLines(from, (l) => l.reqId === id))[0]?.status, 403);
});

t.test("a client's own safe Audit-ID is the audit event's; an unsafe one is replaced", async (t) => {
  const client = front.client();
  t.teardown(() => client.close());
  const mine = `client-chosen-${Date.now()}`;
  const kept = await request(`${front.proxy.url}/api/v1/namespaces/audit-a/pods`, { dispatcher: client, headers: { authorization: basic(ALICE), 'audit-id': mine } });
  await kept.body.dump();
  t.equal(kept.statusCode, 200);
  t.equal(kept.headers['audit-id'], mine, 'echoed by the apiserver');
  t.match(await auditEvent(mine), { user: { username: 'alice' }, verb: 'list' });
  t.ok((await proxyLines(0, (l) => l.reqId === mine)).length === 1, "the proxy's line has it");

  const tooLong = 'x'.repeat(65);
  const replaced = await request(`${front.proxy.url}/api/v1/namespaces/audit-a/pods`, { dispatcher: client, headers: { authorization: basic(ALICE), 'audit-id': tooLong } });
  await replaced.body.dump();
  const id = String(replaced.headers['audit-id']);
  t.match(id, UUID, "over 64 characters: the proxy's own ID");
  t.match(await auditEvent(id), { user: { username: 'alice' } });
  t.notOk(
    readAuditEvents(cp.apiservers[0]!.auditLog).some((e) => e.auditID === tooLong),
    'the long one never reached the apiserver',
  );
});

t.test('a watch over the HTTP/2 upstream path carries the ID', async (t) => {
  const client = front.client();
  t.teardown(() => client.close());
  const from = front.proxy.logs.length;
  const res = await request(`${front.proxy.url}/api/v1/namespaces/audit-a/pods?watch=1&timeoutSeconds=1`, { dispatcher: client, headers: { authorization: basic(ALICE) } });
  const id = String(res.headers['audit-id']);
  await res.body.dump();
  t.match(id, UUID);
  const [start] = await proxyLines(from, (l) => l.reqId === id && l.phase === 'start');
  t.match(start, { verb: 'watch', status: 200 }, "the proxy's start line");
  t.match(await auditEvent(id), { verb: 'watch', user: { username: 'alice' } }, "the apiserver's event for the watch");
});

t.test("an exec upgrade refused by RBAC: one ID in the response, the proxy's log and the audit event", async (t) => {
  const from = front.proxy.logs.length;
  const answer = await new Promise<{ status: number; auditId: string | undefined }>((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port: front.proxy.port,
      method: 'POST',
      path: '/api/v1/namespaces/audit-a/pods/nope/exec?command=ls&stdout=true',
      ca: cp.pki.read('proxy-ca.crt'),
      servername: 'localhost',
      headers: { authorization: basic(CAROL), connection: 'Upgrade', upgrade: 'SPDY/3.1', 'x-stream-protocol-version': 'v4.channel.k8s.io' },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      reject(new Error(`upgraded: ${res.statusCode}`));
    });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, auditId: res.headers['audit-id'] as string | undefined });
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(answer.status, 403);
  t.match(answer.auditId, UUID);
  const [line] = await proxyLines(from, (l) => l.reqId === answer.auditId);
  t.match(line, { subresource: 'exec', status: 403, user: 'carol' });
  t.match(await auditEvent(String(answer.auditId)), { user: { username: 'carol' }, responseStatus: { code: 403 }, objectRef: { resource: 'pods', name: 'nope' } });
});
