// Hostile input, byte for byte over raw sockets: request smuggling and malformed framing, slow
// clients, oversized headers, garbage in place of TLS, and one host opening too many connections.
// Every request carries a valid password, so anything the proxy accepted would be forwarded: each
// case checks the answer AND that the stand-in apiserver saw nothing, and at the end the proxy
// still serves and holds no more file descriptors than before.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { basicAuth } from './helpers/clients.js';
import { createTestPki } from './helpers/pki.js';
import { exchange, heldConnections, jsonOf, openFds, openTcp, openTls, pollUntil, sleep, type RawConnection, type RawHttpResponse } from './helpers/raw-tls.js';
import { ALICE, startStack, type Stack, type TapTest } from './helpers/setup.js';

const pki = await createTestPki();
const ca = pki.pem['proxy-ca'].cert;
// Short deadlines so slow clients are judged in about a second; quick health checks so that an
// upstream wrongly ejected by one case is back for the next.
const [stack, capped] = await Promise.all([
  startStack(t, { pki, flags: ['--request-header-timeout', '1s', '--keep-alive-timeout', '1s', '--health-interval', '250ms', '--shutdown-grace', '1s'] }),
  startStack(t, { pki, flags: ['--request-header-timeout', '1s', '--max-connections-per-client', '5', '--max-request-header-bytes', '8192', '--health-interval', '250ms', '--shutdown-grace', '1s'] }),
]);

const AUTH = `Authorization: ${basicAuth(ALICE)}`;
const CREATE = 'POST /api/v1/namespaces/default/configmaps HTTP/1.1';
/** Request line and header lines joined with CRLF, ended by the blank line. */
const head = (...lines: string[]) => `${lines.join('\r\n')}\r\n\r\n`;
const okGet = head('GET /api HTTP/1.1', 'Host: localhost', AUTH, 'Connection: close');

interface Mark {
  requests: number;
  logs: number;
}
const mark = (s: Stack): Mark => ({ requests: s.apiserver.requests.length, logs: s.proxy.logs.length });
/** Requests the stand-in received since `m` (it keeps the proxy's health checks apart). */
const forwardedSince = (s: Stack, m: Mark) => s.apiserver.requests.slice(m.requests).map((r) => `${r.method} ${r.url}`);
let barriers = 0;
/**
 * Requests the stand-in received since `m` and before a GET the proxy forwards after them (sent
 * once the case is over, its answer awaited): what reached the apiserver for the case's requests,
 * without waiting for a time in which it might have.
 */
async function forwardedBefore(s: Stack, m: Mark): Promise<string[]> {
  const barrier = `GET /version?barrier=${++barriers}`;
  const res = await exchange(s.proxy.port, { ca }, head(`${barrier} HTTP/1.1`, 'Host: localhost', AUTH, 'Connection: close'));
  if (res.responses[0]?.statusCode !== 200) throw new Error(`the barrier request got ${res.responses[0]?.statusLine ?? 'no answer'}`);
  const seen = forwardedSince(s, m);
  const at = seen.indexOf(barrier);
  if (at < 0) throw new Error(`the stand-in did not record ${barrier}`);
  return seen.slice(0, at);
}

/** Warnings and errors the proxy logged since `m` ("upstream ejected", "response errored", ...). */
const warningsSince = (s: Stack, m: Mark) =>
  s.proxy.logs
    .slice(m.logs)
    .filter((l) => l.level >= 40)
    .map((l) => l.msg);

/** What a client's misbehaviour must not do to the upstream side: eject it, or have it blamed in the log. */
function assertUpstreamUnharmed(t: TapTest, s: Stack, m: Mark) {
  const warnings = warningsSince(s, m);
  t.notOk(warnings.includes('upstream ejected'), 'the apiserver is not ejected from the pool');
  t.same(
    warnings.filter((msg) => /apiserver|upstream/i.test(msg)),
    [],
    'no log line blames the apiserver for what the client did',
  );
}

function assertStatus(t: TapTest, response: RawHttpResponse | undefined, code: number, reason: string) {
  t.equal(response?.statusCode, code, `answered HTTP ${code}`);
  t.match(jsonOf(response), { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, code }, `a Status with reason ${reason}`);
}

/** A normal authenticated GET on a fresh connection: the proxy still serves. */
async function stillServes(t: TapTest, s: Stack, why: string) {
  const res = await exchange(s.proxy.port, { ca }, okGet);
  t.equal(res.responses[0]?.statusCode, 200, `a normal GET /api still gets 200 ${why} (got ${res.responses[0]?.statusLine ?? 'no answer'})`);
}

/** Waits until the pool has its upstream back (admin /readyz), so one case's damage does not fail the next. */
async function upstreamBack(s: Stack) {
  await pollUntil(
    () =>
      fetch(`${s.proxy.adminUrl}/readyz`).then(
        (r) => r.status,
        () => 0,
      ),
    (status) => status === 200,
    4000,
  );
}

const metricValue = async (s: Stack, name: string) => {
  const text = await (await fetch(`${s.proxy.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
};

/** Open descriptors of the main proxy once a request has warmed its upstream connection and auth cache. */
await exchange(stack.proxy.port, { ca }, okGet);
const pid = stack.proxy.child.pid as number;
// (Once the proxy has closed that client connection, as Connection: close asked.)
await pollUntil(
  () => heldConnections(pid, stack.proxy.port),
  (n) => n === 0,
  2000,
);
const fdBaseline = openFds(pid);

// ---------------------------------------------------------------------------------------------
// 1. Smuggling and malformed framing

interface FramingCase {
  name: string;
  bytes: string;
}

const SMUGGLED = head('GET /api/v1/namespaces/kube-system/secrets HTTP/1.1', 'Host: localhost', AUTH, 'Connection: close');
const FRAMING: FramingCase[] = [
  { name: 'Content-Length and Transfer-Encoding: chunked (CL first)', bytes: head(CREATE, 'Host: localhost', AUTH, 'Content-Length: 6', 'Transfer-Encoding: chunked') + '0\r\n\r\n' },
  { name: 'Transfer-Encoding: chunked and Content-Length (TE first)', bytes: head(CREATE, 'Host: localhost', AUTH, 'Transfer-Encoding: chunked', 'Content-Length: 6') + '0\r\n\r\n' },
  { name: 'CL.TE with a smuggled request in the body', bytes: head(CREATE, 'Host: localhost', AUTH, `Content-Length: ${5 + SMUGGLED.length}`, 'Transfer-Encoding: chunked') + '0\r\n\r\n' + SMUGGLED },
  { name: 'two conflicting Content-Length headers', bytes: head(CREATE, 'Host: localhost', AUTH, 'Content-Length: 5', 'Content-Length: 6') + 'hello!' },
  { name: 'Content-Length: 5, 6', bytes: head(CREATE, 'Host: localhost', AUTH, 'Content-Length: 5, 6') + 'hello!' },
  { name: 'obs-fold: a header line starting with a space', bytes: head('GET /api HTTP/1.1', 'Host: localhost', AUTH, 'X-Note: first', ' continued', 'Connection: close') },
  { name: 'obs-fold: a header line starting with a tab', bytes: head('GET /api HTTP/1.1', 'Host: localhost', AUTH, 'X-Note: first', '\tcontinued', 'Connection: close') },
  { name: 'obs-fold hiding Transfer-Encoding: chunked', bytes: head(CREATE, 'Host: localhost', AUTH, 'Content-Length: 5', 'Transfer-Encoding:', ' chunked') + '0\r\n\r\n' },
  { name: 'bare LF after the request line', bytes: `GET /api HTTP/1.1\nHost: localhost\r\n${AUTH}\r\nConnection: close\r\n\r\n` },
  { name: 'bare LF after header lines', bytes: `GET /api HTTP/1.1\r\nHost: localhost\n${AUTH}\nConnection: close\n\n` },
  { name: 'Transfer-Encoding: gzip', bytes: head(CREATE, 'Host: localhost', AUTH, 'Transfer-Encoding: gzip') + 'hello' },
  { name: 'Transfer-Encoding: chunked, identity', bytes: head(CREATE, 'Host: localhost', AUTH, 'Transfer-Encoding: chunked, identity') + '0\r\n\r\n' },
  { name: 'Transfer-Encoding: xchunked', bytes: head(CREATE, 'Host: localhost', AUTH, 'Transfer-Encoding: xchunked') + '0\r\n\r\n' },
  { name: 'two Transfer-Encoding lines, chunked then identity', bytes: head(CREATE, 'Host: localhost', AUTH, 'Transfer-Encoding: chunked', 'Transfer-Encoding: identity') + '0\r\n\r\n' },
  { name: 'space before the colon of Transfer-Encoding', bytes: head(CREATE, 'Host: localhost', AUTH, 'Content-Length: 5', 'Transfer-Encoding : chunked') + '0\r\n\r\n' },
  { name: 'chunked body with an invalid chunk size', bytes: head(CREATE, 'Host: localhost', AUTH, 'Transfer-Encoding: chunked') + 'zz\r\nhello\r\n0\r\n\r\n' },
  { name: 'chunked body with a chunk size over 64 bits', bytes: head(CREATE, 'Host: localhost', AUTH, 'Transfer-Encoding: chunked') + '10000000000000005\r\nhello\r\n0\r\n\r\n' },
  { name: 'a valid request pipelined after a CL+TE request', bytes: head(CREATE, 'Host: localhost', AUTH, 'Content-Length: 6', 'Transfer-Encoding: chunked') + '0\r\n\r\n' + SMUGGLED },
  { name: 'a valid request pipelined after a bare-LF request', bytes: `GET /api HTTP/1.1\r\nHost: localhost\n${AUTH}\n\n` + SMUGGLED },
  // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding is badly framed, whatever else it says.
  { name: 'HTTP/1.0 with Transfer-Encoding: chunked', bytes: head('POST /api/v1/namespaces/default/configmaps HTTP/1.0', 'Host: localhost', AUTH, 'Transfer-Encoding: chunked') + '5\r\nhello\r\n0\r\n\r\n' },
  {
    name: 'HTTP/1.0 with Transfer-Encoding: chunked and a smuggled request',
    bytes: head('POST /api/v1/namespaces/default/configmaps HTTP/1.0', 'Host: localhost', AUTH, 'Connection: keep-alive', 'Transfer-Encoding: chunked') + '0\r\n\r\n' + SMUGGLED,
  },
];

t.test('smuggling and malformed framing: 400 BadRequest Status, connection closed, nothing forwarded', async (t) => {
  for (const c of FRAMING) {
    await t.test(c.name, async (t) => {
      const m = mark(stack);
      const res = await exchange(stack.proxy.port, { ca }, c.bytes, 3000);
      t.equal(res.responses.length, 1, 'exactly one response (nothing pipelined behind it is answered)');
      assertStatus(t, res.responses[0], 400, 'BadRequest');
      t.ok(res.ending, `the proxy closed the connection (${res.ending?.how} after ${res.ending?.afterMs} ms)`);
      t.equal(res.rest.length, 0, 'no bytes after the Status');
      t.same(await forwardedBefore(stack, m), [], 'the stand-in apiserver received nothing');
      assertUpstreamUnharmed(t, stack, m);
      await stillServes(t, stack, 'right after');
      await upstreamBack(stack);
    });
  }
});

t.test('a client that stops sending its body half-way does not take the apiserver out of the pool', async (t) => {
  const m = mark(stack);
  const c = await openTls(stack.proxy.port, { ca });
  await c.write(head(CREATE, 'Host: localhost', AUTH, 'Content-Type: application/json', 'Content-Length: 100') + '{"kind":');
  await sleep(300);
  c.destroy();
  // Bodies are streamed, so the apiserver may see the start of this one: never as complete.
  await forwardedBefore(stack, m);
  const seen = stack.apiserver.requests.slice(m.requests).filter((r) => r.method === 'POST');
  t.ok(
    seen.every((r) => r.bodyBytes < 100),
    `the apiserver never got a complete body (${seen.map((r) => `${r.bodyBytes} bytes`).join(', ') || 'nothing'})`,
  );
  assertUpstreamUnharmed(t, stack, m);
  await stillServes(t, stack, 'right after');
  await upstreamBack(stack);
});

// ---------------------------------------------------------------------------------------------
// 2. Slow clients (--request-header-timeout 1s, --keep-alive-timeout 1s)

/** The answer to a slow client: a 408, or nothing at all. Never a 400 "malformed request". */
function assertTimeoutAnswer(t: TapTest, c: RawConnection) {
  const responses = c.responses();
  t.ok(responses.length <= 1, 'at most one response');
  if (responses[0]) t.equal(responses[0].statusCode, 408, `a slow client is told 408 Request Timeout, if anything (got ${responses[0].statusLine}: ${responses[0].body.toString().slice(0, 120)})`);
}

t.test('slow clients are cut off after --request-header-timeout', async (t) => {
  const m = mark(stack);
  // All at once: each is judged against its own clock.
  const dripping = openTls(stack.proxy.port, { ca, allowHalfOpen: true }).then(async (c) => {
    // A header block that never ends, one byte every 200 ms, and the client never closes.
    const bytes = Buffer.from(`GET /api HTTP/1.1\r\nHost: localhost\r\n${AUTH}\r\nX-Slow: ${'a'.repeat(100)}`);
    let i = 0;
    const drip = setInterval(() => {
      if (!c.socket.destroyed && c.socket.writable) c.socket.write(bytes.subarray(i % bytes.length, (i % bytes.length) + 1), () => undefined);
      i++;
    }, 200);
    const fin = await c.waitFin(3200);
    // A socket the server has let go of answers our next drip with a reset.
    const released = fin === undefined ? undefined : await c.waitClosed(2500);
    clearInterval(drip);
    c.destroy();
    return { c, fin, released };
  });
  const silentAfterHandshake = openTls(stack.proxy.port, { ca }).then(async (c) => {
    const fin = await c.waitFin(3200);
    c.destroy();
    return { c, fin };
  });
  const noClientHello = openTcp(stack.proxy.port).then(async (c) => {
    const fin = await c.waitFin(3200);
    c.destroy();
    return { c, fin };
  });
  const halfClientHello = openTcp(stack.proxy.port).then(async (c) => {
    // A handshake record announcing 512 bytes, a ClientHello announcing 508, and then 70 of them.
    await c.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), randomBytes(59)]));
    const fin = await c.waitFin(3200);
    c.destroy();
    return { c, fin };
  });

  const [drip, silent, noHello, halfHello] = await Promise.all([dripping, silentAfterHandshake, noClientHello, halfClientHello]);

  await t.test('(a) headers one byte every 200 ms, never finished', async (t) => {
    t.ok(drip.fin !== undefined && drip.fin >= 900 && drip.fin <= 3000, `the proxy stops reading within 1-3 s (FIN after ${drip.fin} ms)`);
    assertTimeoutAnswer(t, drip.c);
    t.ok(drip.released, `the proxy lets go of the socket, though the client never closes its side (${drip.released ? `${drip.released.how} after ${drip.released.afterMs} ms` : 'still accepting bytes 2.5 s after its FIN'})`);
  });
  await t.test('(a) TLS handshake done, then not a byte', async (t) => {
    t.ok(silent.fin !== undefined && silent.fin >= 900 && silent.fin <= 3000, `closed within 1-3 s (after ${silent.fin} ms)`);
    assertTimeoutAnswer(t, silent.c);
  });
  await t.test('(b) TCP connection that never sends a ClientHello', async (t) => {
    t.ok(noHello.fin !== undefined && noHello.fin <= 3000, `closed within 1-3 s (${noHello.fin === undefined ? 'still open after 3.2 s' : `after ${noHello.fin} ms`})`);
    t.equal(noHello.c.received().length, 0, 'no bytes sent back');
  });
  await t.test('(b) half a ClientHello', async (t) => {
    t.ok(halfHello.fin !== undefined && halfHello.fin <= 3000, `closed within 1-3 s (${halfHello.fin === undefined ? 'still open after 3.2 s' : `after ${halfHello.fin} ms`})`);
    t.notOk(halfHello.c.received().toString('latin1').includes('HTTP/1.1'), 'no HTTP answer written into a TLS stream');
  });
  t.same(await forwardedBefore(stack, m), [], 'the stand-in apiserver received nothing');
});

t.test('(c) an idle keep-alive connection is closed after --keep-alive-timeout', async (t) => {
  const c = await openTls(stack.proxy.port, { ca, allowHalfOpen: true });
  await c.write(head('GET /api HTTP/1.1', 'Host: localhost', AUTH));
  t.ok(await c.waitResponses(1, 3000), 'the request is answered');
  t.equal(c.responses()[0]?.statusCode, 200);
  const answeredAt = Date.now() - c.openedAt;
  const fin = await c.waitFin(4000);
  c.destroy();
  const idle = fin === undefined ? undefined : fin - answeredAt;
  // Node keeps the socket 1 s longer than the Keep-Alive: timeout=1 it advertises, so that the
  // client, not the server, is the one to close a connection it might be about to reuse.
  t.ok(idle !== undefined && idle >= 900 && idle <= 3000, `closed 1-3 s after the response (${idle} ms)`);
  t.equal(c.responses().length, 1, 'no second response (no Status written into an idle connection)');
  const first = c.responses()[0];
  t.equal(c.received().length, first ? c.received().indexOf('\r\n\r\n') + 4 + first.body.length : 0, 'nothing after the response');
});

t.test('connections the proxy gave up on are released even when the client never closes its side', async (t) => {
  const kinds = {
    // One malformed request, then silence: the 400 comes back, the client keeps its side open.
    'after a 400 for a malformed request': async () => {
      const c = await openTls(stack.proxy.port, { ca, allowHalfOpen: true });
      await c.write(head(CREATE, 'Host: localhost', AUTH, 'Content-Length: 1', 'Content-Length: 2'));
      return c;
    },
    // A handshake and not a byte after it: the request-header timeout fires.
    'after the request-header timeout': () => openTls(stack.proxy.port, { ca, allowHalfOpen: true }),
  };
  for (const [name, open] of Object.entries(kinds)) {
    await t.test(name, async (t) => {
      // Connections leaked by earlier cases (if any) stay out of the count.
      const before = heldConnections(pid, stack.proxy.port);
      const clients = await Promise.all([open(), open(), open(), open()]);
      const fins = await Promise.all(clients.map((c) => c.waitFin(3000)));
      t.ok(
        fins.every((f) => f !== undefined),
        `the proxy sent FIN on all ${clients.length} (after ${fins.join(', ')} ms)`,
      );
      const atFin = heldConnections(pid, stack.proxy.port);
      const held = await pollUntil(
        () => heldConnections(pid, stack.proxy.port),
        (n) => n <= before,
        2500,
      );
      t.equal(held - before, 0, `the proxy closes its end within 2.5 s of its FIN, though the clients stay connected (held of these ${clients.length}: ${atFin - before} at FIN, ${held - before} 2.5 s later)`);
      for (const c of clients) c.destroy();
      await pollUntil(
        () => heldConnections(pid, stack.proxy.port),
        (n) => n <= before,
        1000,
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------
// 3. Oversized headers (default --max-request-header-bytes 32768 on the main proxy, 8192 on the capped one)

t.test('oversized headers: 431 RequestHeaderFieldsTooLarge, nothing forwarded', async (t) => {
  const cases = {
    'one 64 KiB header': head('GET /api HTTP/1.1', 'Host: localhost', AUTH, `X-Big: ${'a'.repeat(64 * 1024)}`, 'Connection: close'),
    '400 headers of 100 bytes (40 KB in all)': head('GET /api HTTP/1.1', 'Host: localhost', AUTH, ...Array.from({ length: 400 }, (_, i) => `X-Header-${String(i).padStart(3, '0')}: ${'b'.repeat(84)}`), 'Connection: close'),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    await t.test(name, async (t) => {
      const m = mark(stack);
      const res = await exchange(stack.proxy.port, { ca }, bytes, 3000);
      t.equal(res.responses.length, 1, 'one response');
      assertStatus(t, res.responses[0], 431, 'RequestHeaderFieldsTooLarge');
      t.ok(res.ending, 'the proxy closed the connection');
      t.same(await forwardedBefore(stack, m), [], 'the stand-in apiserver received nothing');
    });
  }
});

t.test('a 30 KiB header block (under the default 32 KiB) is accepted and forwarded', async (t) => {
  const m = mark(stack);
  const bytes = head('GET /api HTTP/1.1', 'Host: localhost', AUTH, `X-Big: ${'a'.repeat(30 * 1024)}`, 'Connection: close');
  const res = await exchange(stack.proxy.port, { ca }, bytes, 3000);
  const answer = res.responses[0];
  t.not((jsonOf(answer) as { reason?: string } | undefined)?.reason, 'RequestHeaderFieldsTooLarge', 'not refused by the proxy');
  // The stand-in is a Node server with Node's default 16 KiB header limit (kube-apiserver's is
  // 1 MiB), so it may refuse the request itself; the proxy's traffic log says it was sent there.
  const line = await pollUntil(
    () => stack.proxy.logs.slice(m.logs).find((l) => l.msg === 'request' && l.path === '/api'),
    (found) => found !== undefined,
    5000,
  );
  t.equal(line?.upstream, stack.apiserver.url, `the proxy forwarded it to the apiserver (its answer: ${answer?.statusLine ?? 'none'})`);
  t.equal(line?.user, 'alice');
});

t.test('--max-request-header-bytes 8192: 8192 bytes reach the apiserver intact, 8300 get 431', async (t) => {
  const start = `GET /api HTTP/1.1\r\nHost: localhost\r\n${AUTH}\r\nConnection: close\r\nX-Pad: `;
  const padFor = (total: number) => total - start.length - 4;
  const sized = (total: number) => `${start}${'p'.repeat(padFor(total))}\r\n\r\n`;
  const m = mark(capped);
  const fits = await exchange(capped.proxy.port, { ca }, sized(8192), 3000);
  t.equal(fits.responses[0]?.statusCode, 200, 'a header block of exactly the limit is served');
  const seen = capped.apiserver.requests.slice(m.requests).find((r) => r.url === '/api');
  t.equal(seen?.rawHeaders.find(([n]) => n.toLowerCase() === 'x-pad')?.[1].length, padFor(8192), 'the stand-in received the whole X-Pad header');
  const m2 = mark(capped);
  const over = await exchange(capped.proxy.port, { ca }, sized(8300), 3000);
  assertStatus(t, over.responses[0], 431, 'RequestHeaderFieldsTooLarge');
  t.same(await forwardedBefore(capped, m2), [], 'the oversized one reached nothing');
});

// ---------------------------------------------------------------------------------------------
// 4. Garbage instead of TLS

t.test('garbage instead of a ClientHello is dropped, and the proxy keeps serving', async (t) => {
  const m = mark(stack);
  const random = randomBytes(64 * 1024);
  random[0] = 0x00; // not a TLS record type, nor an SSLv2-style hello: garbage from the first byte
  const cases: Record<string, Buffer> = {
    'one byte': Buffer.from([0x42]),
    'a TLS record header announcing 65535 bytes': Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]),
    '64 KiB of random bytes': random,
    'plain HTTP to the HTTPS port': Buffer.from(okGet),
  };
  const results = await Promise.all(
    Object.entries(cases).map(async ([name, bytes]) => {
      const c = await openTcp(stack.proxy.port);
      await c.write(bytes).catch(() => undefined);
      const fin = await c.waitFin(3200);
      c.destroy();
      return { name, fin, received: c.received() };
    }),
  );
  for (const r of results) {
    t.ok(r.fin !== undefined && r.fin <= 3000, `${r.name}: closed within 3 s (${r.fin === undefined ? 'still open after 3.2 s' : `after ${r.fin} ms`})`);
    t.notOk(r.received.toString('latin1').includes('HTTP/1.1'), `${r.name}: no HTTP answer (at most a TLS alert: ${r.received.toString('hex').slice(0, 40)})`);
  }
  t.same(await forwardedBefore(stack, m), [], 'the stand-in apiserver received nothing');
  await stillServes(t, stack, 'after the garbage');
});

// ---------------------------------------------------------------------------------------------
// 5. Per-client connection cap (--max-connections-per-client 5)

t.test('the 6th connection from one address is reset before TLS; other addresses and freed slots still work', async (t) => {
  const refused = 'kube_front_proxy_connections_refused_total';
  const before = (await metricValue(capped, refused)) ?? 0;
  const five: RawConnection[] = [];
  for (let i = 0; i < 5; i++) five.push(await openTls(capped.proxy.port, { ca }));
  t.teardown(() => five.forEach((c) => c.destroy()));

  // Raw TCP: the kernel completes the connect, the proxy resets it at accept.
  const sixthTcp = await openTcp(capped.proxy.port).then(
    async (c) => ({ ending: await c.waitClosed(2000), bytes: c.received().length }),
    (err: NodeJS.ErrnoException) => ({ ending: { how: 'reset', code: err.code, afterMs: 0 }, bytes: 0 }),
  );
  t.equal(sixthTcp.ending?.how, 'reset', `the 6th TCP connection is reset (${sixthTcp.ending?.code})`);
  t.equal(sixthTcp.bytes, 0, 'without a byte from the server');
  const sixthTls = await openTls(capped.proxy.port, { ca, handshakeTimeoutMs: 2000 }).then(
    (c) => {
      c.destroy();
      return 'handshake completed';
    },
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
  t.equal(sixthTls, 'ECONNRESET', 'a 6th TLS client gets a reset, no handshake');
  t.equal(await metricValue(capped, refused), before + 2, `${refused} counts both`);

  const other = await exchange(capped.proxy.port, { ca, localAddress: '127.0.0.2' }, okGet, 3000);
  t.equal(other.responses[0]?.statusCode, 200, 'a client at 127.0.0.2 is served meanwhile');

  five.shift()?.destroy();
  // The proxy sees the close a moment later; until then a new connection may still be refused.
  let refusedMeanwhile = 0;
  const reopened = await pollUntil(
    () =>
      openTls(capped.proxy.port, { ca, handshakeTimeoutMs: 2000 }).then(
        (c) => c,
        () => {
          refusedMeanwhile++;
          return undefined;
        },
      ),
    (c) => c !== undefined,
    2000,
    20,
  );
  t.ok(reopened, `after one of the five closes, 127.0.0.1 gets a connection again (${refusedMeanwhile} refused meanwhile)`);
  if (reopened) {
    await reopened.write(okGet);
    await reopened.waitClosed(3000);
    t.equal(reopened.responses()[0]?.statusCode, 200, 'and is served');
  }
  t.equal(await metricValue(capped, refused), before + 2 + refusedMeanwhile, `${refused} counts every refusal and nothing else`);
});

t.test('connections that stalled in the TLS handshake and then left give their per-client slots back', async (t) => {
  const cappedPid = capped.proxy.child.pid as number;
  await pollUntil(
    () => heldConnections(cappedPid, capped.proxy.port),
    (n) => n === 0,
    2000,
  );
  // Five connections (the whole allowance) that send nothing until the handshake timeout (1 s)
  // has passed, then close.
  const stalled = await Promise.all(Array.from({ length: 5 }, () => openTcp(capped.proxy.port)));
  await sleep(1500);
  for (const c of stalled) c.destroy();
  const held = await pollUntil(
    () => heldConnections(cappedPid, capped.proxy.port),
    (n) => n === 0,
    2000,
  );
  t.equal(held, 0, `the proxy closed its end of all five once the clients left (still holds ${held})`);
  const next = await openTls(capped.proxy.port, { ca, handshakeTimeoutMs: 2000 }).then(
    async (c) => {
      await c.write(okGet);
      await c.waitClosed(3000);
      return c.responses()[0]?.statusLine ?? 'no answer';
    },
    (err: NodeJS.ErrnoException) => `refused (${err.code ?? err.message})`,
  );
  t.match(next, /^HTTP\/1\.1 200/, `a new connection from 127.0.0.1 is served, not locked out (${next})`);
});

// ---------------------------------------------------------------------------------------------
// 6. Afterwards

t.test('after all of it the proxy serves and its file descriptors are back to the baseline', async (t) => {
  await upstreamBack(stack);
  await stillServes(t, stack, 'at the end');
  const fds = await pollUntil(
    () => openFds(pid),
    (n) => n <= fdBaseline + 3,
    2500,
  );
  t.ok(fds <= fdBaseline + 3, `open file descriptors ${fds}, baseline ${fdBaseline} (+3 allowed)`);
  // The GET just above may still be closing: give it the same deadline.
  const held = await pollUntil(
    () => heldConnections(pid, stack.proxy.port),
    (n) => n === 0,
    2500,
  );
  t.equal(held, 0, 'no client connection left open on the proxy');
  t.equal(stack.proxy.child.exitCode, null, 'the proxy is still running');
  t.equal(capped.proxy.child.exitCode, null, 'the capped proxy is still running');
});

t.test('SIGTERM after all of it: both proxies exit within their --shutdown-grace (1 s)', async (t) => {
  // Both at once: a proxy that hangs on to a connection waits for serve's last-resort exit (grace + 5 s).
  const timed = async (s: Stack) => {
    const started = Date.now();
    const code = await s.proxy.stop('SIGTERM');
    return { code, took: Date.now() - started };
  };
  const [main, other] = await Promise.all([timed(stack), timed(capped)]);
  for (const [name, r] of [
    ['main proxy', main],
    ['capped proxy', other],
  ] as const) {
    t.equal(r.code, 0, `${name}: exit code 0`);
    t.ok(r.took < 3000, `${name}: exited in ${r.took} ms (1 s grace and some slack)`);
  }
});
