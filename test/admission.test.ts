// One admission step (src/request/admission.ts) for plain requests and upgrades: the same refusals,
// whichever way a request arrives. Each case is sent as a plain GET, as a WebSocket upgrade (what
// kubectl 1.32 tries first for exec) and as a SPDY upgrade (its fallback), over raw TLS from a
// loopback address of its own (so that failed-login limits of one row do not reach another), and
// must get the same Status, the same headers and the same authentication-failure log line.
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { signCrl } from '../src/pki/certificates.js';
import { basicAuth } from './helpers/clients.js';
import { createTestPki, type PkiName } from './helpers/pki.js';
import type { LogLine } from './helpers/proxy.js';
import { waitFor } from './helpers/reload.js';
import { ALICE, bcryptLine, CAROL, startStack, type TapTest } from './helpers/setup.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const pki = await createTestPki();
const crlFile = join(pki.dir, 'user-ca.crl');
writeFileSync(crlFile, await signCrl(pki.pem['user-ca'], { entries: [{ serialNumber: new X509Certificate(pki.pem['user-bob'].cert).serialNumber, revocationDate: new Date() }], crlNumber: 1n, nextUpdate: new Date(Date.now() + DAY_MS) }));
const { apiserver, proxy } = await startStack(t, {
  pki,
  users: [bcryptLine(ALICE), bcryptLine(CAROL)],
  // Debug: refusals during a lockout are logged at that level only. No refusal delay: the
  // lockout row's 429 comes at once.
  flags: ['--client-crl-file', crlFile, '--auth-failure-delay', '0', '--log-level', 'debug'],
});

const EXEC = '/api/v1/namespaces/default/pods/pod-0/exec';
const USER_AGENT = 'admission-test';

interface Transport {
  name: string;
  method: string;
  headers: string[];
}

const TRANSPORTS: Transport[] = [
  { name: 'a plain GET', method: 'GET', headers: [] },
  {
    name: 'a WebSocket upgrade',
    method: 'GET',
    headers: ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${Buffer.from('0123456789abcdef').toString('base64')}`, 'Sec-WebSocket-Protocol: v5.channel.k8s.io'],
  },
  { name: 'a SPDY upgrade', method: 'POST', headers: ['Connection: Upgrade', 'Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: v4.channel.k8s.io'] },
];

/** A Status with the seconds of a lockout's "try again in N s" left out: each transport has its own lockout, a second apart at most. */
const withoutCountdown = (body: Answer['body']): Answer['body'] => ({ ...body, message: body.message?.replace(/try again in \d+ s/, 'try again in N s') });

interface Answer {
  status: number;
  /** Header names lowercased. */
  headers: Map<string, string>;
  body: { kind?: string; code?: number; reason?: string; message?: string };
}

/** A request whose first line is on the wire; `finish` sends the rest and reads the answer. */
interface Started {
  finish(): Promise<Answer>;
}

interface Request {
  transport: Transport;
  /** Source address (all of 127/8 is loopback on Linux): the client as the limits count it. */
  from: string;
  auditId: string;
  cert?: PkiName | undefined;
  headers: string[];
  httpVersion: '1.0' | '1.1';
  /** Bytes after the head (a chunked body's last chunk). */
  body?: string | undefined;
}

async function start(request: Request): Promise<Started> {
  const cert = request.cert;
  // (tls.connect hands localAddress to net.connect; its option type does not list it.)
  const source = { localAddress: request.from };
  const socket = connect({ host: '127.0.0.1', port: proxy.port, ...source, ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ALPNProtocols: ['http/1.1'], ...(cert ? { cert: pki.pem[cert].cert, key: pki.pem[cert].key } : {}) });
  await once(socket, 'secureConnect');
  socket.write(`${request.transport.method} ${EXEC}?command=sh&stdin=true&stdout=true HTTP/${request.httpVersion}\r\n`);
  return {
    finish() {
      const answer = readAnswer(socket);
      socket.write([`Host: localhost`, `Audit-ID: ${request.auditId}`, `User-Agent: ${USER_AGENT}`, ...request.transport.headers, ...request.headers, '', ''].join('\r\n') + (request.body ?? ''));
      return answer;
    },
  };
}

async function send(request: Request): Promise<Answer> {
  return (await start(request)).finish();
}

/** Reads one answer (a Status: its length is known) and closes the connection. */
function readAnswer(socket: TLSSocket): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const answer = parseAnswer(buffer);
      if (!answer) return;
      socket.off('data', onData).off('close', onClose);
      socket.destroy();
      resolve(answer);
    };
    const onClose = () => reject(new Error(`the connection closed before a whole answer: ${JSON.stringify(buffer.toString('latin1'))}`));
    socket
      .on('data', onData)
      .once('close', onClose)
      .on('error', () => {});
  });
}

function parseAnswer(buffer: Buffer): Answer | undefined {
  const headEnd = buffer.indexOf('\r\n\r\n');
  if (headEnd === -1) return undefined;
  const [statusLine = '', ...lines] = buffer.subarray(0, headEnd).toString('latin1').split('\r\n');
  const headers = new Map(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
  // Without a length (a 101: the request was let through) the head alone is the answer.
  const length = Number(headers.get('content-length') ?? 0);
  if (buffer.length < headEnd + 4 + length) return undefined;
  const body = length > 0 ? (JSON.parse(buffer.subarray(headEnd + 4, headEnd + 4 + length).toString()) as Answer['body']) : {};
  return { status: Number(statusLine.split(' ')[1]), headers, body };
}

interface Case {
  name: string;
  cert?: PkiName;
  headers: string[];
  httpVersion?: '1.0';
  body?: string;
  /** Sent over connections opened before SIGTERM, once the proxy is draining (the last row: the proxy exits). */
  duringDrain?: boolean;
  /** Failed logins first, from the same address and the same way. */
  before?: (t: TapTest, send: (headers: string[]) => Promise<Answer>) => Promise<void>;
  status: number;
  reason: string;
  message: RegExp;
  /** Headers the answer must carry, the same whichever way the request came. */
  answerHeaders?: Record<string, string>;
  /** The authentication-failure line, or none (refused before authentication). */
  logged?: { level: number; auth: string; reason: string; claimedUser?: string };
}

const WWW_AUTHENTICATE = { 'www-authenticate': 'Basic realm="kube-front-proxy", charset="UTF-8"' };
const CASES: Case[] = [
  { name: 'no credentials', headers: [], status: 401, reason: 'Unauthorized', message: /./, answerHeaders: WWW_AUTHENTICATE, logged: { level: 30, auth: 'none', reason: 'no-credentials' } },
  {
    name: 'wrong password',
    headers: [`Authorization: ${basicAuth({ name: ALICE.name, password: 'not-her-password' })}`],
    status: 401,
    reason: 'Unauthorized',
    message: /invalid username or password/,
    answerHeaders: WWW_AUTHENTICATE,
    logged: { level: 30, auth: 'basic', reason: 'bad-password', claimedUser: 'alice' },
  },
  {
    name: 'locked out by the failed-login limits',
    // Ten unknown users from one address (the default limit), then carol's right password from it.
    before: async (t, sendFrom) => {
      for (let i = 0; i < 10; i++) t.equal((await sendFrom([`Authorization: ${basicAuth({ name: `nobody-${i}`, password: 'x' })}`])).status, 401);
    },
    headers: [`Authorization: ${basicAuth(CAROL)}`],
    status: 429,
    reason: 'TooManyRequests',
    // Counted down from each transport's own lockout: a second may pass between two of them.
    message: /^too many failed logins; try again in (59|60) s$/,
    logged: { level: 20, auth: 'basic', reason: 'rate-limited', claimedUser: 'carol' },
  },
  { name: 'revoked certificate', cert: 'user-bob', headers: [], status: 401, reason: 'Unauthorized', message: /revoked/, answerHeaders: WWW_AUTHENTICATE, logged: { level: 30, auth: 'x509', reason: 'cert-revoked', claimedUser: 'bob' } },
  // RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding is badly framed, whatever it asks for.
  {
    name: 'bad framing (HTTP/1.0 with Transfer-Encoding)',
    httpVersion: '1.0',
    headers: [`Authorization: ${basicAuth(ALICE)}`, 'Transfer-Encoding: chunked'],
    body: '0\r\n\r\n',
    status: 400,
    reason: 'BadRequest',
    message: /Transfer-Encoding in an HTTP\/1\.0 request/,
  },
  { name: 'draining', duringDrain: true, headers: [`Authorization: ${basicAuth(ALICE)}`], status: 503, reason: 'ServiceUnavailable', message: /shutting down/, answerHeaders: { 'retry-after': '1' } },
];

let nextAddress = 10;
/** Request IDs whose answer came from admission before any authentication. */
const unauthenticated: string[] = [];

for (const [row, c] of CASES.entries()) {
  t.test(c.name, async (t) => {
    const requests = TRANSPORTS.map((transport, i): Request => ({ transport, from: `127.0.0.${nextAddress++}`, auditId: `admission-${row}-${i}`, cert: c.cert, headers: c.headers, httpVersion: c.httpVersion ?? '1.1', body: c.body }));
    let answers: Answer[];
    if (c.duringDrain) {
      const started = await Promise.all(requests.map(start));
      const closed = once(proxy.child, 'close');
      proxy.child.kill('SIGTERM');
      await waitFor('the proxy to drain', () => proxy.logs.some((l) => l.msg.startsWith('shutting down: no new connections')));
      answers = await Promise.all(started.map((s) => s.finish()));
      const [code] = await closed;
      t.equal(code, 0, 'the proxy exits 0 once they are answered');
    } else {
      answers = [];
      for (const request of requests) {
        let failed = 0;
        await c.before?.(t, (headers) => send({ ...request, auditId: `${request.auditId}-before-${failed++}`, headers }));
        answers.push(await send(request));
      }
    }

    const [first] = answers as [Answer];
    for (const [i, answer] of answers.entries()) {
      const { transport, auditId } = requests[i]!;
      t.equal(answer.status, c.status, `${transport.name}: ${c.status}`);
      t.match(answer.body, { kind: 'Status', code: c.status, reason: c.reason, message: c.message }, `${transport.name}: a ${c.reason} Status`);
      t.same(withoutCountdown(answer.body), withoutCountdown(first.body), `${transport.name}: the same Status as ${TRANSPORTS[0]!.name}`);
      t.equal(answer.headers.get('audit-id'), auditId, `${transport.name}: the answer names the request`);
      for (const [name, value] of Object.entries(c.answerHeaders ?? {})) t.equal(answer.headers.get(name), value, `${transport.name}: ${name}`);
    }

    if (!c.logged) {
      unauthenticated.push(...requests.map((r) => r.auditId));
      return;
    }
    const lines: LogLine[] = [];
    for (const { transport, auditId, from } of requests) {
      const line = () => proxy.logs.find((l) => l.msg === 'authentication failed' && l.reqId === auditId);
      await waitFor(`the authentication-failure line of ${transport.name}`, () => line() !== undefined);
      const { time: _time, pid: _pid, ...fields } = line()!;
      lines.push(fields as LogLine);
      const { claimedUser, ...logged } = c.logged;
      t.same(
        fields,
        { ...logged, reqId: auditId, client: from, ...(claimedUser ? { claimedUser } : {}), method: transport.method, path: EXEC, status: c.status, userAgent: USER_AGENT, msg: 'authentication failed' },
        `${transport.name}: the authentication-failure line`,
      );
    }
    // The same line, but for the request's own ID, address and method.
    const comparable = lines.map(({ reqId: _reqId, client: _client, method: _method, ...rest }) => rest);
    for (const [i, line] of comparable.entries()) t.same(line, comparable[0], `${TRANSPORTS[i]!.name}: the same line as ${TRANSPORTS[0]!.name}`);
  });
}

t.test('refused before authentication: no authentication-failure line, and nothing reached the apiserver', async (t) => {
  // The draining row has run: the proxy has exited and its output is all read.
  t.ok(proxy.child.exitCode !== null, 'the proxy has exited');
  t.ok(unauthenticated.length > 0);
  const lines = proxy.logs.filter((l) => l.msg === 'authentication failed' && unauthenticated.includes(String(l.reqId)));
  t.same(lines, [], 'no authentication-failure line for bad framing or the drain');
  t.same(
    apiserver.requests.filter((r) => r.auditId.startsWith('admission-')).map((r) => r.url),
    [],
    'no request of this test reached the apiserver',
  );
});
