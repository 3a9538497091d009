// `kube-front-proxy logs` (src/commands/logview.ts): parsing and filters as pure functions, the
// exact table and --stats output for a small fixture, -o json pass-through, a pipe as input, and
// -f against a file that a separate process appends to, rotates (rename + new file) and truncates
// (copytruncate), stopped by an AbortSignal. Colours are checked in a real pseudo-terminal when
// util-linux `script` is there.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { cliArgs } from './helpers/proxy.js';
import { LineSplitter, MAX_LINE, compileFilter, parseLine, parseSince, parseStatusFilter, runLogs, type LogEntry, type LogsOptions, type StatsSummary } from '../src/commands/logview.js';
import { auditEvent, type AccessRecord, type AuthFailureRecord } from '../src/observe/accesslog.js';

const dir = mkdtempSync(join(tmpdir(), 'logview-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ESC = '\u001b';

// --- fixture ------------------------------------------------------------------------------------

interface Req {
  reqId: string;
  time: string;
  user: string;
  verb: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  apiGroup?: string;
  path: string;
  status: number;
  durationMs: number;
  phase?: 'start' | 'end';
}

function requestLine(r: Req): string {
  return JSON.stringify({
    level: 30,
    time: r.time,
    pid: 123,
    reqId: r.reqId,
    msg: 'request',
    client: '10.0.0.7',
    auth: 'basic',
    user: r.user,
    groups: ['devs'],
    method: 'GET',
    path: r.path,
    verb: r.verb,
    apiGroup: r.apiGroup ?? '',
    apiVersion: 'v1',
    resource: r.resource ?? '',
    subresource: r.subresource ?? '',
    namespace: r.namespace ?? '',
    name: r.name ?? '',
    status: r.status,
    bytesIn: 0,
    bytesOut: 10,
    durationMs: r.durationMs,
    upstream: 'https://10.0.0.11:6443',
    userAgent: 'kubectl/v1.32.4',
    ...(r.phase ? { phase: r.phase } : {}),
  });
}

function authFailureLine(reqId: string, time: string, claimedUser: string | undefined): string {
  return JSON.stringify({
    level: 30,
    time,
    pid: 123,
    reqId,
    msg: 'authentication failed',
    client: '10.0.0.9',
    auth: 'basic',
    reason: 'bad-password',
    ...(claimedUser === undefined ? {} : { claimedUser }),
    method: 'GET',
    path: '/api',
    status: 401,
    userAgent: 'curl/8',
  });
}

const pods = { resource: 'pods', namespace: 'default', path: '/api/v1/namespaces/default/pods' };
const L = {
  list: requestLine({ reqId: 'r1', time: '2026-11-24T15:20:06.612Z', user: 'alice', verb: 'list', ...pods, status: 200, durationMs: 3.2 }),
  log: requestLine({
    reqId: 'r2',
    time: '2026-11-24T15:20:07.001Z',
    user: 'bob',
    verb: 'get',
    ...pods,
    subresource: 'log',
    name: 'web-1',
    path: '/api/v1/namespaces/default/pods/web-1/log',
    status: 200,
    durationMs: 12.5,
  }),
  authFail: authFailureLine('r3', '2026-11-24T15:20:09.250Z', 'mallory'),
  watchStart: requestLine({ reqId: 'r4', time: '2026-11-24T15:20:10.000Z', user: 'alice', verb: 'watch', ...pods, status: 200, durationMs: 1, phase: 'start' }),
  forbidden: requestLine({
    reqId: 'r5',
    time: '2026-11-24T15:20:11.500Z',
    user: 'carol',
    verb: 'delete',
    resource: 'deployments',
    apiGroup: 'apps',
    namespace: 'prod',
    name: 'api',
    path: '/apis/apps/v1/namespaces/prod/deployments/api',
    status: 403,
    durationMs: 1.1,
  }),
  version: requestLine({ reqId: 'r6', time: '2026-11-24T15:20:12.000Z', user: 'bob', verb: 'get', path: '/version', status: 200, durationMs: 0.8 }),
  watchEnd: requestLine({ reqId: 'r4', time: '2026-11-24T15:21:10.000Z', user: 'alice', verb: 'watch', ...pods, status: 200, durationMs: 60000.3, phase: 'end' }),
  patch: requestLine({
    reqId: 'r7',
    time: '2026-11-24T15:21:20.000Z',
    user: 'dave',
    verb: 'patch',
    resource: 'nodes',
    name: 'node-1',
    path: '/api/v1/nodes/node-1',
    status: 500,
    durationMs: 250.04,
  }),
};
const GARBAGE = ['not json at all', '', '{"level":30,"time":"2026-11-24T15:20:08.000Z","pid":123,"msg":"Server listening at https://0.0.0.0:8443"}', '{"broken', '[1,2,3]', 'null', '{"msg":"request","user":"nostatus"}', '   '];
const FIXTURE = [L.list, GARBAGE[0], L.log, GARBAGE[1], GARBAGE[2], L.authFail, L.watchStart, GARBAGE[3], L.forbidden, L.version, GARBAGE[4], L.watchEnd, GARBAGE[5], GARBAGE[6], L.patch, GARBAGE[7]].join('\n') + '\n';
const fixtureFile = join(dir, 'access.log');
writeFileSync(fixtureFile, FIXTURE);

// The same requests as --access-log-format audit writes them (accesslog.ts auditEvent), each at
// its line's time.
const toAudit = (line: string) => {
  const r = JSON.parse(line) as (AccessRecord | AuthFailureRecord) & { time: string };
  return JSON.stringify(auditEvent(r, Date.parse(r.time)));
};
const A = Object.fromEntries(Object.entries(L).map(([k, v]) => [k, toAudit(v)])) as Record<keyof typeof L, string>;
/** What an apiserver writes before it answers: no responseStatus, so not a line the viewer shows. */
const REQUEST_RECEIVED = JSON.stringify({ kind: 'Event', apiVersion: 'audit.k8s.io/v1', level: 'Metadata', auditID: 'r5', stage: 'RequestReceived', requestURI: '/api', verb: 'get', user: { username: 'carol' } });
const AUDIT_FIXTURE = [A.list, GARBAGE[0], A.log, A.authFail, REQUEST_RECEIVED, A.watchStart, A.forbidden, GARBAGE[2], A.version, A.watchEnd, A.patch].join('\n') + '\n';
const auditFile = join(dir, 'audit.log');
writeFileSync(auditFile, AUDIT_FIXTURE);

const HEADER = 'TIME (UTC)    USER              VERB        RESOURCE                                  STATUS    DURATION';
const ROW = {
  list: '15:20:06.612  alice             list        pods default                              200          3.2ms',
  log: '15:20:07.001  bob               get         pods/log default/web-1                    200         12.5ms',
  authFail: '15:20:09.250  mallory?          -           /api                                      401              -',
  watchStart: '15:20:10.000  alice             watch       pods default                              200          1.0ms  start',
  forbidden: '15:20:11.500  carol             delete      deployments prod/api                      403          1.1ms',
  version: '15:20:12.000  bob               get         /version                                  200          0.8ms',
  watchEnd: '15:21:10.000  alice             watch       pods default                              200        60000ms  end',
  patch: '15:21:20.000  dave              patch       nodes node-1                              500          250ms',
};

// --- helpers ------------------------------------------------------------------------------------

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

const base: LogsOptions = { follow: false, output: 'table', stats: false, color: false };

async function run(options: Partial<LogsOptions>, input?: NodeJS.ReadableStream): Promise<{ code: number; text: string }> {
  const out = new Collect();
  const code = await runLogs({ ...base, file: fixtureFile, ...options }, out, input);
  return { code, text: out.text };
}

/** The reqIds of `-o json` output, in order. */
const reqIds = (text: string) =>
  text
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { reqId: string }).reqId);

async function until(what: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

function entry(line: string): LogEntry {
  const e = parseLine(line);
  if (!e) throw new Error(`fixture line did not parse: ${line}`);
  return e;
}

// --- pure functions -----------------------------------------------------------------------------

t.test('parseLine: requests and authentication failures; anything else is skipped', async (t) => {
  const e = entry(L.log);
  t.match(e, { kind: 'request', user: 'bob', verb: 'get', resource: 'pods', subresource: 'log', namespace: 'default', name: 'web-1', status: 200, durationMs: 12.5, phase: undefined });
  t.equal(e.time, Date.parse('2026-11-24T15:20:07.001Z'));
  t.equal(e.raw, L.log);
  t.match(entry(L.authFail), { kind: 'auth-failure', user: 'mallory', verb: '-', status: 401, path: '/api' });
  t.equal(entry(L.watchEnd).phase, 'end');
  t.equal(entry(`${L.list}\r`).raw, `${L.list}\r`, 'a CRLF line parses, raw kept as read');
  t.equal(parseLine(JSON.stringify({ msg: 'request', time: 1764000000000, status: 200 }))?.time, 1764000000000, 'epoch-ms time');
  for (const g of GARBAGE) t.equal(parseLine(g), undefined, `skipped: ${JSON.stringify(g)}`);
  t.equal(e.auditId, 'r2', 'the reqId is the audit ID');
  t.equal(entry(L.authFail).auditId, 'r3');
});

t.test('parseLine: the audit format (audit.k8s.io/v1 Events), the same fields as the json format', async (t) => {
  const e = entry(A.log);
  t.match(e, { kind: 'request', auditId: 'r2', user: 'bob', verb: 'get', resource: 'pods', subresource: 'log', namespace: 'default', name: 'web-1', path: '/api/v1/namespaces/default/pods/web-1/log', status: 200, phase: undefined });
  t.equal(e.time, Date.parse('2026-11-24T15:20:07.001Z'), 'stageTimestamp');
  t.equal(e.raw, A.log);
  t.match(entry(A.authFail), { kind: 'auth-failure', auditId: 'r3', user: 'mallory', verb: '-', status: 401, path: '/api' });
  t.match(entry(A.forbidden), { auditId: 'r5', apiGroup: 'apps', resource: 'deployments', namespace: 'prod', name: 'api', status: 403 });
  t.match(entry(A.version), { auditId: 'r6', resource: '', path: '/version' });
  t.equal(entry(A.watchStart).phase, 'start', 'stage ResponseStarted: the start line');
  const patch = entry(A.patch).durationMs ?? -1;
  t.ok(patch >= 250 && patch <= 251, `duration from the two timestamps (ms): ${patch}`);
  t.equal(parseLine(REQUEST_RECEIVED), undefined, 'no responseStatus: skipped');
  t.equal(parseLine(JSON.stringify({ kind: 'Event', apiVersion: 'v1', reason: 'Pulled' })), undefined, 'a core/v1 Event is not an audit event');
});

t.test('parseSince and parseStatusFilter: good values, and a one-line error for bad ones', async (t) => {
  t.equal(parseSince('30s'), 30_000);
  t.equal(parseSince('10m'), 600_000);
  t.equal(parseSince('1h'), 3_600_000);
  t.equal(parseSince('2d'), 172_800_000);
  t.equal(parseSince('1h30m'), 5_400_000);
  for (const bad of ['', '10', 'm', '-5m', '1.5h', '10 minutes', '1w', '99999999999999999999d']) {
    t.throws(() => parseSince(bad), /^invalid --since/, `--since ${JSON.stringify(bad)}`);
  }
  t.same(parseStatusFilter('4xx'), { kind: 'class', class: 4 });
  t.same(parseStatusFilter('5XX'), { kind: 'class', class: 5 });
  t.same(parseStatusFilter('403'), { kind: 'code', code: 403 });
  for (const bad of ['4x', '6xx', '40', '4033', 'error', '099', '']) {
    t.throws(() => parseStatusFilter(bad), /^invalid --status/, `--status ${JSON.stringify(bad)}`);
  }
  const err = (() => {
    try {
      parseStatusFilter('bad');
    } catch (e) {
      return (e as Error).message;
    }
    return '';
  })();
  t.notMatch(err, /\n/, 'one line');
});

t.test('compileFilter: each filter, and all of them together', async (t) => {
  const all = Object.values(L).map(entry);
  const ids = (f: Parameters<typeof compileFilter>[0], now = Date.parse('2026-11-24T15:21:30.000Z')) => {
    const keep = compileFilter(f, now);
    return all.filter(keep).map((e) => `${e.raw === L.watchStart ? 'r4s' : e.raw === L.watchEnd ? 'r4e' : (JSON.parse(e.raw) as { reqId: string }).reqId}`);
  };
  t.same(ids({}), ['r1', 'r2', 'r3', 'r4s', 'r5', 'r6', 'r4e', 'r7']);
  t.same(ids({ user: 'alice' }), ['r1', 'r4s', 'r4e']);
  t.same(ids({ user: 'mallory' }), ['r3'], 'an authentication failure matches its claimed user');
  t.same(ids({ user: 'ali' }), [], 'user is exact');
  t.same(ids({ verb: 'get' }), ['r2', 'r6']);
  t.same(ids({ verb: 'WATCH' }), ['r4s', 'r4e']);
  t.same(ids({ resource: 'pods' }), ['r1', 'r2', 'r4s', 'r4e'], 'a resource matches with any subresource');
  t.same(ids({ resource: 'pods/log' }), ['r2']);
  t.same(ids({ resource: 'deployments.apps' }), ['r5'], 'resource.group');
  t.same(ids({ resource: 'deployments.batch' }), []);
  t.same(ids({ resource: '/version' }), ['r6'], 'a path for non-resource requests');
  t.same(ids({ resource: '/api' }), ['r3'], 'a path prefix matches only non-resource requests');
  t.same(ids({ namespace: 'default' }), ['r1', 'r2', 'r4s', 'r4e']);
  t.same(ids({ namespace: 'prod' }), ['r5']);
  t.same(ids({ status: '2xx' }), ['r1', 'r2', 'r4s', 'r6', 'r4e']);
  t.same(ids({ status: '4xx' }), ['r3', 'r5']);
  t.same(ids({ status: '5xx' }), ['r7']);
  t.same(ids({ status: '3xx' }), []);
  t.same(ids({ status: '403' }), ['r5']);
  t.same(ids({ status: '401' }), ['r3']);
  t.same(ids({ since: '30s' }), ['r4e', 'r7'], 'at or after now - 30s (15:21:00)');
  t.same(ids({ since: '20s' }), ['r4e', 'r7'], 'the cut-off itself (15:21:10) is kept');
  t.same(ids({ since: '10s' }), ['r7']);
  t.same(ids({ since: '1h' }), ['r1', 'r2', 'r3', 'r4s', 'r5', 'r6', 'r4e', 'r7']);
  t.same(ids({ user: 'alice', verb: 'watch', namespace: 'default', resource: 'pods', status: '200', since: '30s' }), ['r4e'], 'all filters at once');
  t.same(ids({ auditId: 'r5' }), ['r5'], 'auditId: the reqId');
  t.same(ids({ auditId: 'r4' }), ['r4s', 'r4e'], "a long-lived request's start and end lines");
  t.same(ids({ auditId: 'r3' }), ['r3'], 'an authentication failure');
  t.same(ids({ auditId: 'r' }), [], 'auditId is exact');
  t.same(ids({ auditId: 'R5' }), [], 'and case-sensitive');
  t.same(ids({ auditId: 'r4', status: '200', since: '30s' }), ['r4e'], 'with the other filters');
  t.same(ids({ user: '', verb: '', auditId: '' }), ids({}), 'empty values are no filter');
  t.throws(() => compileFilter({ status: '4xy' }, 0), /^invalid --status "4xy"/);
  t.throws(() => compileFilter({ since: 'yesterday' }, 0), /^invalid --since "yesterday"/);
});

t.test('LineSplitter: lines across chunks and split UTF-8, an over-long line dropped whole', async (t) => {
  const s = new LineSplitter();
  const bytes = Buffer.from('ab\nc\u00e9d\nlast', 'utf8');
  const cut = bytes.indexOf(0xc3) + 1; // in the middle of the two bytes of é
  t.same(s.push(bytes.subarray(0, cut)), ['ab']);
  t.same(s.push(bytes.subarray(cut)), ['c\u00e9d']);
  t.same(s.end(), ['last']);
  t.same(s.end(), [], 'nothing left twice');

  const long = new LineSplitter();
  t.same(long.push('x'.repeat(MAX_LINE + 10)), []);
  t.same(long.push('still the long line'), []);
  t.same(long.push('tail of it\nnext\n'), ['next'], 'the over-long line never comes out, the next one does');
});

// --- output -------------------------------------------------------------------------------------

t.test('table, no colour: exact lines for the fixture, garbage skipped', async (t) => {
  const { code, text } = await run({});
  t.equal(code, 0);
  t.equal(text, [HEADER, ROW.list, ROW.log, ROW.authFail, ROW.watchStart, ROW.forbidden, ROW.version, ROW.watchEnd, ROW.patch, ''].join('\n'));
  t.notOk(text.includes(ESC), 'no ANSI escape');
  t.equal((await run({ status: '5xx' })).text, `${HEADER}\n${ROW.patch}\n`);
  t.equal((await run({ user: 'nobody' })).text, `${HEADER}\n`, 'nothing matched: the header only');
});

t.test('table: long values are cut to the column, control characters never reach the terminal', async (t) => {
  const file = join(dir, 'long.log');
  const longUser = 'system:serviceaccount:kube-system:replicaset-controller';
  writeFileSync(
    file,
    [
      requestLine({
        reqId: 'x1',
        time: '2026-11-24T01:02:03.004Z',
        user: longUser,
        verb: 'deletecollection',
        resource: 'customresourcedefinitions',
        name: 'certificaterequests.cert-manager.io',
        path: '/x',
        status: 200,
        durationMs: 12345.6,
      }),
      authFailureLine('x2', '2026-11-24T01:02:04.000Z', `evil${ESC}[2J${ESC}]0;pwned\u0007\u202e`),
      authFailureLine('x3', '2026-11-24T01:02:05.000Z', undefined),
    ].join('\n'),
  );
  const { text } = await run({ file, color: true });
  const lines = text.split('\n');
  t.equal(lines[1], `01:02:03.004  system:servicea…  deletecol…  customresourcedefinitions certificatere…  ${ESC}[32m200   ${ESC}[0m     12346ms`);
  t.equal(lines[2], `01:02:04.000  evil\\u001b[2J\\u…  -           /api                                      ${ESC}[33m401   ${ESC}[0m           -`);
  t.equal(lines[3], `01:02:05.000  ?                 -           /api                                      ${ESC}[33m401   ${ESC}[0m           -`, 'no claimed user');
  t.equal(text.split(ESC).length - 1, 2 + 6, 'the only escapes are the header bold and the status colours');
  t.equal(lines.length, 5, 'a last line without a line break is still read');
});

t.test('table, colour on: status colours by class, bold header, same columns', async (t) => {
  const { text } = await run({ color: true });
  const lines = text.split('\n');
  t.equal(lines[0], `${ESC}[1m${HEADER}${ESC}[0m`);
  const green = `${ESC}[32m200   ${ESC}[0m`;
  t.equal(lines[1], ROW.list.replace('200   ', green));
  t.equal(lines[3], ROW.authFail.replace('401   ', `${ESC}[33m401   ${ESC}[0m`), '4xx yellow');
  t.equal(lines[5], ROW.forbidden.replace('403   ', `${ESC}[33m403   ${ESC}[0m`));
  t.equal(lines[8], ROW.patch.replace('500   ', `${ESC}[31m500   ${ESC}[0m`), '5xx red');
  const redirect = join(dir, 'redirect.log');
  writeFileSync(redirect, `${requestLine({ reqId: 'y', time: '2026-11-24T00:00:00.000Z', user: 'u', verb: 'get', path: '/openapi/v2', status: 304, durationMs: 1 })}\n`);
  t.match((await run({ file: redirect, color: true })).text, `${ESC}[36m304   ${ESC}[0m`, '3xx cyan');
  const plain = lines.map((l) => l.replace(/\u001b\[\d+m/g, '')).join('\n');
  t.equal(plain, (await run({})).text, 'without the escapes, the same text as with colour off');
});

t.test('colour default: off for a stream that is not a TTY, on for a TTY unless NO_COLOR', async (t) => {
  const opts = { ...base, file: fixtureFile, color: undefined };
  const notTty = new Collect();
  await runLogs(opts, notTty);
  t.notOk(notTty.text.includes(ESC));
  const tty = Object.assign(new Collect(), { isTTY: true });
  const saved = process.env.NO_COLOR;
  try {
    delete process.env.NO_COLOR;
    await runLogs(opts, tty);
    t.ok(tty.text.includes(`${ESC}[31m500`), 'TTY: colour');
    process.env.NO_COLOR = '1';
    const noColor = Object.assign(new Collect(), { isTTY: true });
    await runLogs(opts, noColor);
    t.notOk(noColor.text.includes(ESC), 'TTY with NO_COLOR: none');
  } finally {
    if (saved === undefined) delete process.env.NO_COLOR;
    else process.env.NO_COLOR = saved;
  }
});

t.test('-o json: the matching lines exactly as read, one per line, no header', async (t) => {
  const { text } = await run({ output: 'json' });
  t.equal(text, [L.list, L.log, L.authFail, L.watchStart, L.forbidden, L.version, L.watchEnd, L.patch, ''].join('\n'));
  t.equal((await run({ output: 'json', status: '4xx' })).text, `${L.authFail}\n${L.forbidden}\n`);
  // Key order, spacing and unknown fields are kept.
  const odd = join(dir, 'odd.log');
  const line = '{ "msg" : "request", "status": 418, "extra": {"a": [1, 2]}, "time": "2026-11-24T00:00:00Z", "user":"tea" }';
  writeFileSync(odd, `${line}\n`);
  t.equal((await run({ file: odd, output: 'json' })).text, `${line}\n`);
});

t.test("--audit-id: that request's lines only, in the json and the audit format; -o wide shows the ID", async (t) => {
  t.equal((await run({ auditId: 'r5', output: 'json' })).text, `${L.forbidden}\n`);
  t.equal((await run({ auditId: 'r4', output: 'json' })).text, `${L.watchStart}\n${L.watchEnd}\n`, 'a watch: its start and end lines');
  t.equal((await run({ auditId: 'r3' })).text, `${HEADER}\n${ROW.authFail}\n`, 'an authentication failure, in the table');
  t.equal((await run({ auditId: 'r9' })).text, `${HEADER}\n`, 'an ID not in the log: the header only');

  t.equal((await run({ file: auditFile, auditId: 'r5', output: 'json' })).text, `${A.forbidden}\n`, 'audit format: the event as read');
  t.equal((await run({ file: auditFile, auditId: 'r4', output: 'json' })).text, `${A.watchStart}\n${A.watchEnd}\n`);
  t.equal((await run({ file: auditFile, auditId: 'r3', output: 'json' })).text, `${A.authFail}\n`);
  const auditTable = (await run({ file: auditFile, auditId: 'r5' })).text.split('\n');
  t.equal(auditTable[0], HEADER);
  t.match(auditTable[1], /^15:20:11\.500  carol {13}delete      deployments prod\/api {22}403 +\d+\.\dms$/, 'audit format in the table');
  t.equal(auditTable.length, 3);
  t.equal((await run({ file: auditFile, output: 'json' })).text.split('\n').length - 1, 8, 'audit format: all 8 events, the RequestReceived one and garbage skipped');
  t.equal((await run({ file: auditFile, output: 'json', auditId: '' })).text, (await run({ file: auditFile, output: 'json' })).text, 'an empty --audit-id is no filter');

  const WIDE_HEADER = `${HEADER}  PHASE  AUDIT-ID`;
  t.equal(
    (await run({ output: 'wide' })).text,
    [
      WIDE_HEADER,
      `${ROW.list}         r1`,
      `${ROW.log}         r2`,
      `${ROW.authFail}         r3`,
      `${ROW.watchStart}  r4`,
      `${ROW.forbidden}         r5`,
      `${ROW.version}         r6`,
      `${ROW.watchEnd}    r4`,
      `${ROW.patch}         r7`,
      '',
    ].join('\n'),
    '-o wide: the phase as a column and the ID last',
  );
  const uuid = '0f8fad5b-d9cb-469f-a165-70867728950e';
  const longId = join(dir, 'long-id.log');
  writeFileSync(longId, `${requestLine({ reqId: uuid, time: '2026-11-24T15:20:06.612Z', user: 'alice', verb: 'list', ...pods, status: 200, durationMs: 3.2 })}\n`);
  t.equal((await run({ file: longId, output: 'wide', auditId: uuid })).text, `${WIDE_HEADER}\n${ROW.list}         ${uuid}\n`, 'a UUID in full, never cut');
  t.notMatch((await run({})).text, /AUDIT-ID|r1/, 'the default table has no ID');

  const cli = spawnSync(process.execPath, cliArgs(['logs', auditFile, '--audit-id', 'r5', '-o', 'json']), { encoding: 'utf8' });
  t.equal(cli.status, 0, cli.stderr);
  t.equal(cli.stdout, `${A.forbidden}\n`, 'kube-front-proxy logs FILE --audit-id ID');
});

t.test('--stats: counts by user, verb and status; the slowest calls; long-lived requests once', async (t) => {
  const { code, text } = await run({ stats: true });
  t.equal(code, 0);
  t.equal(
    text,
    [
      '7 requests, 3 errors (status >= 400), 2026-11-24T15:20:06.612Z to 2026-11-24T15:21:20.000Z',
      '',
      'BY USER   REQUESTS    ERRORS',
      'alice            2         0',
      'bob              2         0',
      'carol            1         1',
      'dave             1         1',
      'mallory?         1         1',
      '',
      'BY VERB  REQUESTS    ERRORS',
      'get             2         0',
      '-               1         1',
      'delete          1         1',
      'list            1         0',
      'patch           1         1',
      'watch           1         0',
      '',
      'BY STATUS  REQUESTS',
      '2xx               4',
      '  200             4',
      '4xx               2',
      '  401             1',
      '  403             1',
      '5xx               1',
      '  500             1',
      '',
      'SLOWEST 10 (long-lived watch/exec/port-forward requests left out)',
      '  DURATION  TIME (UTC)    USER              VERB        RESOURCE                                  STATUS',
      '     250ms  15:21:20.000  dave              patch       nodes node-1                              500',
      '    12.5ms  15:20:07.001  bob               get         pods/log default/web-1                    200',
      '     3.2ms  15:20:06.612  alice             list        pods default                              200',
      '     1.1ms  15:20:11.500  carol             delete      deployments prod/api                      403',
      '     0.8ms  15:20:12.000  bob               get         /version                                  200',
      '',
    ].join('\n'),
  );

  const json = JSON.parse((await run({ stats: true, output: 'json' })).text) as StatsSummary;
  t.equal(json.requests, 7);
  t.equal(json.errors, 3);
  t.same(json.byUser[0], { user: 'alice', requests: 2, errors: 0 });
  t.same(
    json.byStatus.map((c) => [c.class, c.requests]),
    [
      ['2xx', 4],
      ['4xx', 2],
      ['5xx', 1],
    ],
  );
  t.same(
    json.slowest.map((s) => s.durationMs),
    [250.04, 12.5, 3.2, 1.1, 0.8],
  );

  const filtered = JSON.parse((await run({ stats: true, output: 'json', user: 'alice' })).text) as StatsSummary;
  t.equal(filtered.requests, 2, 'filters apply to --stats');
  t.equal((await run({ stats: true, user: 'nobody' })).text, '0 requests, 0 errors (status >= 400)\n');
  t.equal((await run({ stats: true, follow: true })).code, 0, '--stats reads to the end even with -f');
});

t.test('--stats keeps only the 10 slowest, slowest first', async (t) => {
  const file = join(dir, 'many.log');
  const durations = Array.from({ length: 500 }, (_, i) => (i * 7919) % 1000); // a shuffle of 0..999 (some)
  writeFileSync(file, durations.map((d, i) => requestLine({ reqId: `m${i}`, time: '2026-11-24T00:00:00.000Z', user: `u${i % 3}`, verb: 'get', path: '/x', status: i % 5 === 0 ? 503 : 200, durationMs: d })).join('\n'));
  const s = JSON.parse((await run({ file, stats: true, output: 'json' })).text) as StatsSummary;
  t.equal(s.requests, 500);
  t.equal(s.errors, 100);
  t.same(
    s.slowest.map((c) => c.durationMs),
    [...durations].sort((a, b) => b - a).slice(0, 10),
  );
  t.same(
    s.byUser.map((u) => u.user),
    ['u0', 'u1', 'u2'],
  );
});

t.test('bad option values and unreadable input fail before anything is printed', async (t) => {
  const out = new Collect();
  await t.rejects(runLogs({ ...base, file: fixtureFile, since: '5 minutes' }, out), /^invalid --since "5 minutes"/);
  await t.rejects(runLogs({ ...base, file: fixtureFile, status: 'oops' }, out), /^invalid --status "oops"/);
  await t.rejects(runLogs({ ...base, file: join(dir, 'missing.log') }, out), /^cannot read .*missing\.log: ENOENT/);
  await t.rejects(runLogs({ ...base, file: dir }, out), /^cannot read /);
  const ttyIn = Object.assign(new PassThrough(), { isTTY: true });
  await t.rejects(runLogs({ ...base }, out, ttyIn), /standard input is a terminal/);
  t.equal(out.text, '');
});

t.test('--since against the clock', async (t) => {
  const file = join(dir, 'recent.log');
  const ago = (ms: number) => new Date(Date.now() - ms).toISOString();
  writeFileSync(
    file,
    [
      requestLine({ reqId: 'old', time: ago(3 * 3_600_000), user: 'a', verb: 'get', path: '/x', status: 200, durationMs: 1 }),
      requestLine({ reqId: 'mid', time: ago(20 * 60_000), user: 'a', verb: 'get', path: '/x', status: 200, durationMs: 1 }),
      requestLine({ reqId: 'new', time: ago(5_000), user: 'a', verb: 'get', path: '/x', status: 200, durationMs: 1 }),
    ].join('\n'),
  );
  t.same(reqIds((await run({ file, output: 'json', since: '1m' })).text), ['new']);
  t.same(reqIds((await run({ file, output: 'json', since: '1h' })).text), ['mid', 'new']);
  t.same(reqIds((await run({ file, output: 'json', since: '1d' })).text), ['old', 'mid', 'new']);
});

// --- input from a pipe --------------------------------------------------------------------------

t.test('a pipe as input: chunks that split lines and characters', async (t) => {
  const bytes = Buffer.from(FIXTURE, 'utf8');
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 37) chunks.push(bytes.subarray(i, i + 37));
  const out = new Collect();
  const code = await runLogs({ ...base, file: undefined }, out, Readable.from(chunks));
  t.equal(code, 0);
  t.equal(out.text, (await run({})).text, 'the same table as from the file');

  const json = new Collect();
  await runLogs({ ...base, output: 'json', namespace: 'prod' }, json, Readable.from([FIXTURE]));
  t.equal(json.text, `${L.forbidden}\n`);
});

t.test('a pipe with -f: lines as they arrive; the AbortSignal stops it', async (t) => {
  const input = new PassThrough();
  const out = new Collect();
  const ac = new AbortController();
  const done = runLogs({ ...base, follow: true, output: 'json', user: 'alice' }, out, input, ac.signal);
  input.write(`${L.list}\n${L.log}\n${L.watchStart.slice(0, 50)}`);
  t.ok(await until(() => out.text === `${L.list}\n`, 2000), 'first line out');
  input.write(`${L.watchStart.slice(50)}\n`);
  t.ok(await until(() => out.text === `${L.list}\n${L.watchStart}\n`, 2000), 'a line completed later');
  const t0 = Date.now();
  ac.abort();
  t.equal(await done, 0);
  t.ok(Date.now() - t0 < 500, 'stops promptly');
  t.notOk(input.destroyed, 'the input stream is left alone');

  const ended = new Collect();
  t.equal(await runLogs({ ...base, follow: true, output: 'json' }, ended, Readable.from([`${L.patch}\n`])), 0, 'and ends by itself at the end of the input');
  t.equal(ended.text, `${L.patch}\n`);

  const destroyed = new PassThrough();
  const gone = new Collect();
  const run2 = runLogs({ ...base, follow: true, output: 'json' }, gone, destroyed);
  destroyed.write(`${L.version}\n`);
  await until(() => gone.text !== '', 2000);
  destroyed.destroy();
  t.equal(await run2, 0, 'an input destroyed without an end stops it too');
  t.equal(gone.text, `${L.version}\n`);
});

t.test('the reader of the output going away (EPIPE) ends the run quietly', async (t) => {
  const out = new Writable({
    write(_chunk, _enc, cb) {
      cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    },
  });
  const input = new PassThrough();
  const done = runLogs({ ...base, follow: true }, out, input);
  input.write(`${L.list}\n`);
  t.equal(await done, 0);
});

// --- -f on a file, written by another process ----------------------------------------------------

/** A `node -e` writer: runs `steps` (JS statements with `w(fd, id)`, `sleep(ms)` and `fs` at hand). */
function writer(file: string, steps: string): Promise<number | null> {
  const script = `
    const fs = require('node:fs');
    const file = process.argv[1];
    const template = ${JSON.stringify(requestLine({ reqId: 'ID', time: '2026-11-24T12:00:00.000Z', user: 'USER', verb: 'get', path: '/api', status: 200, durationMs: 1 }))};
    const line = (id, user = 'alice') => template.replace('"ID"', JSON.stringify(id)).replace('"USER"', JSON.stringify(user)) + '\\n';
    const w = (fd, id, user) => fs.writeSync(fd, line(id, user));
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    (async () => { ${steps} })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const child = spawn(process.execPath, ['-e', script, file], { stdio: ['ignore', 'inherit', 'inherit'] });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

/** Starts `logs -f -o json --user alice` on `file`; resolves once it has the file open. */
async function follow(file: string) {
  const out = new Collect();
  const ac = new AbortController();
  const done = runLogs({ ...base, file, follow: true, output: 'json', user: 'alice' }, out, undefined, ac.signal);
  return { out, ac, done };
}

t.test('-f: appends from another process, then a rename rotation (old file still written for a while)', async (t) => {
  const file = join(dir, 'rotate.log');
  writeFileSync(file, 'garbage before\n' + requestLine({ reqId: 'a0', time: '2026-11-24T12:00:00.000Z', user: 'alice', verb: 'get', path: '/api', status: 200, durationMs: 1 }) + '\n');
  const f = await follow(file);
  t.ok(await until(() => reqIds(f.out.text).includes('a0'), 2000), 'what is already there comes first');

  const exit = writer(
    file,
    `
    let fd = fs.openSync(file, 'a');
    w(fd, 'a1'); await sleep(150);
    w(fd, 'b1', 'bob'); w(fd, 'a2'); await sleep(150);
    const half = line('a3'); fs.writeSync(fd, half.slice(0, 40)); await sleep(400); fs.writeSync(fd, half.slice(40));
    fs.writeSync(fd, 'not json\\n'); await sleep(150);
    // logrotate: move the file away; the proxy has not reopened yet and goes on writing into it
    fs.renameSync(file, file + '.1');
    w(fd, 'a4'); await sleep(400);
    // the new file appears (reopen), and after the viewer has moved on to it, one more line still
    // lands in the old file
    const fd2 = fs.openSync(file, 'a');
    w(fd2, 'n1'); await sleep(500); w(fd, 'a5'); fs.closeSync(fd); await sleep(150);
    w(fd2, 'n2', 'bob'); w(fd2, 'n3'); fs.closeSync(fd2);
  `,
  );
  t.equal(await exit, 0, 'the writer ran');
  const want = ['a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'n1', 'n3'];
  t.ok(await until(() => reqIds(f.out.text).length >= want.length, 5000), 'every line arrived');
  await sleep(300); // nothing more should come
  const got = reqIds(f.out.text);
  t.same([...got].sort(), want, 'each alice line exactly once, bob filtered out, no garbage');
  t.same(got.slice(0, 5), ['a0', 'a1', 'a2', 'a3', 'a4'], 'in file order before the rotation');
  t.ok(got.indexOf('n1') < got.indexOf('n3'), 'in file order after it');
  t.ok(got.indexOf('n1') < got.indexOf('a5'), 'a5 came from the old file after the switch to the new one');

  const t0 = Date.now();
  f.ac.abort();
  t.equal(await f.done, 0, 'the AbortSignal ends -f with exit code 0');
  t.ok(Date.now() - t0 < 500, `stops promptly (${Date.now() - t0} ms)`);
});

t.test('-f: copytruncate (copy, then truncate in place; the writer keeps its O_APPEND fd)', async (t) => {
  const file = join(dir, 'truncate.log');
  writeFileSync(file, '');
  const f = await follow(file);
  const exit = writer(
    file,
    `
    const fd = fs.openSync(file, 'a');
    for (const id of ['t1', 't2', 't3', 't4']) { w(fd, id); await sleep(100); }
    await sleep(300);
    fs.copyFileSync(file, file + '.1');
    fs.ftruncateSync(fd, 0);
    await sleep(600); // copytruncate loses what is written between copy and truncate; here nothing is
    w(fd, 'u1'); await sleep(100); w(fd, 'u2'); fs.closeSync(fd);
  `,
  );
  t.equal(await exit, 0, 'the writer ran');
  t.ok(await until(() => reqIds(f.out.text).length >= 6, 5000), 'every line arrived');
  await sleep(300);
  t.same(reqIds(f.out.text), ['t1', 't2', 't3', 't4', 'u1', 'u2'], 'after the truncation, the new lines from the start of the file, once');
  f.ac.abort();
  t.equal(await f.done, 0);
});

t.test('-f: an AbortSignal already aborted, or aborted while idle, ends it at once', async (t) => {
  const ac = new AbortController();
  ac.abort();
  const out = new Collect();
  t.equal(await runLogs({ ...base, file: fixtureFile, follow: true }, out, undefined, ac.signal), 0);

  const f = await follow(fixtureFile);
  t.ok(await until(() => reqIds(f.out.text).length === 3, 2000), 'the file read (alice: 3 lines)');
  await sleep(600);
  const t0 = Date.now();
  f.ac.abort();
  t.equal(await f.done, 0);
  t.ok(Date.now() - t0 < 300, 'no wait for the next poll');
});

// --- a real terminal ----------------------------------------------------------------------------

t.test('kube-front-proxy logs in a pseudo-terminal (util-linux script): colour on a TTY, none through a pipe', async (t) => {
  if (spawnSync('script', ['--version'], { encoding: 'utf8' }).status !== 0) {
    throw new Error('util-linux `script` is needed to give the CLI a pseudo-terminal (Debian package bsdutils)');
  }
  const args = cliArgs(['logs', fixtureFile, '--status', '5xx']);
  const env = { ...process.env };
  delete env.NO_COLOR;
  delete env.FORCE_COLOR;
  const cwd = fileURLToPath(new URL('..', import.meta.url));
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, ...args].map(quote).join(' ');

  const tty = spawnSync('script', ['-qec', command, '/dev/null'], { cwd, env, encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  t.equal(tty.status, 0, tty.stderr);
  const lines = tty.stdout.replace(/\r\n/g, '\n').split('\n');
  t.equal(lines[0], `${ESC}[1m${HEADER}${ESC}[0m`, 'bold header on the TTY');
  t.equal(lines[1], ROW.patch.replace('500   ', `${ESC}[31m500   ${ESC}[0m`), 'red 5xx on the TTY');

  const piped = spawnSync(process.execPath, args, { cwd, env, encoding: 'utf8', timeout: 10_000 });
  t.equal(piped.status, 0, piped.stderr);
  t.equal(piped.stdout, `${HEADER}\n${ROW.patch}\n`, 'plain through a pipe');

  const noColor = spawnSync('script', ['-qec', command, '/dev/null'], { cwd, env: { ...env, NO_COLOR: '1' }, encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  t.equal(noColor.stdout.replace(/\r\n/g, '\n'), `${HEADER}\n${ROW.patch}\n`, 'NO_COLOR on the TTY: plain');
});
