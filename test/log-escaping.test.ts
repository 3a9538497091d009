// Client-controlled strings (user names, certificate CNs, groups, paths, user agents) never put a
// C1 control, a bidi mark/override/isolate or U+2028/U+2029 raw into a log line: the traffic log
// (request and authentication-failure lines, json and audit formats), pino loggers given
// escapingHooks, and `kube-front-proxy logs` (-o json, the table, --stats) write them as \uXXXX,
// and the JSON lines parse back to the very same strings.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { AccessLog, authFailureLine, escapeLogLine, escapingHooks, requestLine, UNSAFE_CHARS, type AccessRecord, type AuthFailureRecord } from '../src/observe/accesslog.js';
import { runLogs, sanitize, type LogsOptions } from '../src/commands/logview.js';

/** One of each class, and the edges of each range. */
const CLASSES: [string, string[]][] = [
  ['C1 controls', ['\u0080', '\u0085', '\u008d', '\u009b', '\u009f']],
  ['bidi marks', ['\u200e', '\u200f', '\u061c']],
  ['bidi embeddings and overrides', ['\u202a', '\u202b', '\u202c', '\u202d', '\u202e']],
  ['bidi isolates', ['\u2066', '\u2067', '\u2068', '\u2069']],
  ['line and paragraph separators', ['\u2028', '\u2029']],
];
const ALL = CLASSES.flatMap(([, chars]) => chars);
const hex = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
// eslint-disable-next-line no-control-regex
const RAW_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

const base: AccessRecord = {
  reqId: 'r-1',
  client: '10.0.0.7',
  auth: 'x509',
  user: 'alice',
  groups: ['devs'],
  method: 'GET',
  protocol: 'HTTP/2.0',
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
  bytesOut: 10,
  durationMs: 1.5,
  upstream: 'https://10.0.0.11:6443',
  userAgent: 'kubectl/v1.34.3',
};

const failure: AuthFailureRecord = { reqId: 'r-2', client: '10.0.0.8', auth: 'basic', reason: 'unknown-user', claimedUser: 'bob', method: 'GET', path: '/api', status: 401, userAgent: 'curl/8' };

/** The record with `c` in every client-controlled string. */
const tainted = (c: string): AccessRecord => ({ ...base, user: `adm${c}in`, groups: [`ops${c}`, 'x'], path: `/api/v1/namespaces/a${c}b/pods`, namespace: `a${c}b`, name: `n${c}`, userAgent: `ua ${c} "q"` });

function checkLine(t: Test, line: string, c: string, expected: Record<string, unknown>): void {
  t.notOk(RAW_UNSAFE.test(line.replace(/\n$/, '')), `${hex(c)}: nothing raw in the line`);
  t.ok(line.includes(hex(c)), `${hex(c)}: written as ${hex(c)}`);
  t.match(JSON.parse(line), expected, `${hex(c)}: parses back to the same strings`);
}

for (const [name, chars] of CLASSES) {
  t.test(`request line: ${name}`, async (t) => {
    for (const c of chars) {
      const r = tainted(c);
      checkLine(t, requestLine(r, 1, new Date(0)), c, { user: r.user, groups: r.groups, path: r.path, namespace: r.namespace, name: r.name, userAgent: r.userAgent });
    }
  });
  t.test(`authentication-failure line: ${name}`, async (t) => {
    for (const c of chars) {
      const r = { ...failure, claimedUser: `bo${c}b`, path: `/p${c}`, userAgent: `u${c}` };
      checkLine(t, authFailureLine(r, 30, 1, new Date(0)), c, { claimedUser: r.claimedUser, path: r.path, userAgent: r.userAgent, msg: 'authentication failed', level: 30 });
    }
  });
}

t.test('authFailureLine is what pino writes for the record, escaped', async (t) => {
  const r = { ...failure, claimedUser: `a${ALL.join('')}"\\\n` };
  const time = new Date('2026-12-07T01:02:03.004Z');
  const pinoText = await new Promise<string>((resolve) => {
    const sink = new Writable({ write: (chunk: Buffer, _e, done) => (resolve(chunk.toString('utf8')), done()) });
    pino({ base: { pid: 7 }, timestamp: () => `,"time":"${time.toISOString()}"` }, sink).info(r, 'authentication failed');
  });
  t.ok(
    ALL.every((c) => pinoText.includes(c)),
    "pino alone writes them all raw (its escaping is JSON.stringify's)",
  );
  t.equal(authFailureLine(r, 30, 7, time), escapeLogLine(pinoText));
  t.equal(authFailureLine({ ...r, claimedUser: undefined }, 30, 7, time), escapeLogLine(pinoText.replace(/,"claimedUser":"(?:[^"\\]|\\.)*"/, '')), 'no claimed user: no field, as pino');
});

t.test('escapeLogLine: untouched without them, same JSON value with them', async (t) => {
  const plain = JSON.stringify({ a: 'plain ascii', b: 'caf\u00e9 \u5f00\u53d1 \ud83d\ude00' });
  t.equal(escapeLogLine(plain), plain, 'the same string: nothing to replace');
  const value = { s: `x${ALL.join('y')}z`, nested: [ALL.join('')] };
  const escaped = escapeLogLine(JSON.stringify(value));
  t.notOk(UNSAFE_CHARS.test(escaped));
  t.same(JSON.parse(escaped), value);
});

t.test('the traffic-log file: json and audit formats, request and failure lines', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kfp-escape-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fallback = pino({ level: 'info' }, new Writable({ write: (_c, _e, done) => done() }));
  for (const format of ['json', 'audit'] as const) {
    const file = join(dir, `${format}.log`);
    const log = AccessLog.open(file, format, fallback);
    const c = '\u202e';
    log.request(tainted(c));
    log.authFailure({ ...failure, claimedUser: `evil${ALL.join('')}` });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await log.close();
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    t.equal(lines.length, 2, `${format}: two lines`);
    for (const line of lines) t.notOk(RAW_UNSAFE.test(line), `${format}: nothing raw`);
    const [req, fail] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    if (format === 'json') {
      t.equal(req?.user, `adm${c}in`);
      t.equal(fail?.claimedUser, `evil${ALL.join('')}`);
    } else {
      t.match(req, { user: { username: `adm${c}in` }, requestURI: `/api/v1/namespaces/a${c}b/pods`, userAgent: `ua ${c} "q"` });
      t.match(fail, { user: { username: `evil${ALL.join('')}` } });
    }
  }
});

t.test("authentication failures without a file go to the shared logger's stream, escaped", async (t) => {
  const written: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _e, done) => (written.push(chunk.toString('utf8')), done()) });
  const main = pino({ level: 'info' }, sink);
  const log = AccessLog.open(undefined, 'json', main);
  log.authFailure({ ...failure, claimedUser: 'a\u2028b' });
  log.authFailure({ ...failure, reason: 'rate-limited', claimedUser: 'c\u2029d' });
  t.equal(written.length, 1, 'rate-limited refusals only at debug');
  t.match(JSON.parse(written[0] ?? ''), { claimedUser: 'a\u2028b', msg: 'authentication failed', level: 30 });
  t.notOk(RAW_UNSAFE.test((written[0] ?? '').trim()));
  main.level = 'debug';
  log.authFailure({ ...failure, reason: 'rate-limited', claimedUser: 'c\u2029d' });
  t.equal(written.length, 2);
  t.match(JSON.parse(written[1] ?? ''), { claimedUser: 'c\u2029d', level: 20 });
  t.ok(written[1]?.includes('\\u2029'));
  main.level = 'warn';
  log.authFailure({ ...failure });
  t.equal(written.length, 2, '--log-level warn: no failure lines, as before');
  main.level = 'silent';
  log.authFailure({ ...failure });
  t.equal(written.length, 2, 'silent: none');
});

t.test('pino with escapingHooks escapes its lines (e.g. the main logger)', async (t) => {
  const written: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _e, done) => (written.push(chunk.toString('utf8')), done()) });
  pino({ hooks: escapingHooks }, sink).warn({ user: `u${ALL.join('')}` }, `message ${ALL.join('')}`);
  t.notOk(RAW_UNSAFE.test((written[0] ?? '').trim()));
  t.match(JSON.parse(written[0] ?? ''), { user: `u${ALL.join('')}`, msg: `message ${ALL.join('')}` });
});

// ---------------------------------------------------------------------------------------------
// The viewer, reading a file an older (or foreign) writer left the characters raw in.

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _e: BufferEncoding, done: () => void): void {
    this.text += chunk.toString('utf8');
    done();
  }
}

t.test('logs: -o json, the table and --stats escape them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kfp-escape-view-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'raw.log');
  const records = ALL.map((c, i) => ({ ...tainted(c), reqId: `r${i}`, user: `u${c}x` }));
  // As pino wrote them before: raw.
  const raw = records.map((r) => JSON.stringify({ level: 30, time: '2026-12-07T01:00:00.000Z', pid: 1, ...r, msg: 'request' }));
  raw.push(JSON.stringify({ level: 30, time: '2026-12-07T01:00:01.000Z', pid: 1, ...failure, claimedUser: `e${ALL.join('')}`, msg: 'authentication failed' }));
  t.ok(
    raw.every((l) => RAW_UNSAFE.test(l)),
    'the fixture has them raw',
  );
  writeFileSync(file, `${raw.join('\n')}\n`);
  const opts: LogsOptions = { file, follow: false, output: 'json', stats: false, color: false };

  const json = new Collect();
  await runLogs(opts, json);
  const lines = json.text.split('\n').filter(Boolean);
  t.equal(lines.length, raw.length);
  lines.forEach((line, i) => {
    t.notOk(RAW_UNSAFE.test(line), `-o json line ${i}: nothing raw`);
    t.same(JSON.parse(line), JSON.parse(raw[i] ?? ''), `-o json line ${i}: the same value`);
  });

  for (const output of ['table', 'wide'] as const) {
    const table = new Collect();
    await runLogs({ ...opts, output }, table);
    const rows = table.text.split('\n').filter(Boolean);
    t.equal(rows.length, raw.length + 1, `${output}: header and a row each`);
    t.notOk(RAW_UNSAFE.test(table.text.replace(/\n/g, '')), `${output}: nothing raw`);
    ALL.forEach((c, i) => t.ok(rows[i + 1]?.includes(`u${hex(c)}x`), `${output}: ${hex(c)} shown escaped in the user column`));
  }

  for (const output of ['table', 'json'] as const) {
    const stats = new Collect();
    await runLogs({ ...opts, output, stats: true }, stats);
    t.notOk(RAW_UNSAFE.test(stats.text.replace(/\n/g, '')), `--stats -o ${output}: nothing raw`);
    if (output === 'json')
      t.ok(
        (JSON.parse(stats.text) as { byUser: Array<{ user: string }> }).byUser.some((u) => u.user === `u${ALL[0]}x`),
        '--stats json: the same names',
      );
  }
});

t.test('sanitize: C0, DEL and every class above as \\uXXXX; other text as is', async (t) => {
  t.equal(sanitize('caf\u00e9 \u5f00\u53d1 \ud83d\ude00'), 'caf\u00e9 \u5f00\u53d1 \ud83d\ude00');
  t.equal(sanitize('a\u001b[2J\u007f\u0085\u202e\u2066\u2028b'), 'a\\u001b[2J\\u007f\\u0085\\u202e\\u2066\\u2028b');
  for (const c of ALL) t.equal(sanitize(`x${c}`), `x${hex(c)}`);
});
