// The hand-built request line must be byte for byte what pino wrote before it (same keys, same
// order, same escaping), except that C1 controls, bidi characters and U+2028/U+2029, which pino
// writes raw, are \uXXXX escapes (escapeLogLine): log shippers and `kube-front-proxy logs` parse it.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { escapeLogLine, requestLine, type AccessRecord } from '../src/observe/accesslog.js';

function pinoLine(record: AccessRecord, pid: number, time: Date): Promise<string> {
  return new Promise((resolve) => {
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        resolve(chunk.toString('utf8'));
        done();
      },
    });
    pino({ base: { pid }, timestamp: () => `,"time":"${time.toISOString()}"` }, sink).info(record, 'request');
  });
}

const base: AccessRecord = {
  reqId: '7f9b2a4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b',
  client: '10.0.0.7',
  auth: 'x509',
  user: 'alice',
  groups: ['devs', 'ops'],
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
  bytesOut: 2136,
  durationMs: 6.9,
  upstream: 'https://10.0.0.11:6443',
  userAgent: 'kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07',
};

const cases: [string, AccessRecord][] = [
  ['a list', base],
  ['a watch start line', { ...base, verb: 'watch', phase: 'start', durationMs: 0.4 }],
  ['odd characters everywhere', { ...base, user: 'o"brien\\\u00e9\u2028\u0001', groups: [], path: '/api/v1/namespaces/x"y/pods/\u00fc', userAgent: 'tab\there\nnewline "quoted"', name: '\ud83d\ude00' }],
  ['no upstream, a refused upgrade', { ...base, upstream: '', status: 403, durationMs: 12, phase: 'end', bytesIn: 5, bytesOut: 0 }],
];

for (const [name, record] of cases) {
  t.test(name, async (t) => {
    const time = new Date('2026-11-24T15:42:51.885Z');
    const line = requestLine(record, 4242, time);
    t.equal(line, escapeLogLine(await pinoLine(record, 4242, time)), "identical to pino's line, escaped");
    t.same(JSON.parse(line), JSON.parse(await pinoLine(record, 4242, time)), "the same JSON value as pino's line");
  });
}
