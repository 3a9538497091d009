// A request refused before its body was read (here: no credentials, 401) may not hold the proxy
// by trickling that body: the connection (HTTP/1.1) or the stream (HTTP/2) ends once a short
// grace after the answer is over. A client that does send its whole body in time keeps its
// connection for the next request.
import { once } from 'node:events';
import { connect as http2Connect, constants as h2 } from 'node:http2';
import t from 'tap';
import { REFUSED_BODY_GRACE_MS } from '../src/edge/refused-body.js';
import { openTls } from './helpers/raw-tls.js';
import { startStack } from './helpers/setup.js';

const { pki, proxy } = await startStack(t);
const ca = pki.pem['proxy-ca'].cert;
const PUT_HEAD = (length: number) => `PUT /api/v1/namespaces/default/configmaps/x HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;

t.test('HTTP/1.1: a body trickled after the 401 loses the connection after the grace', async (t) => {
  const connection = await openTls(proxy.port, { ca });
  t.teardown(() => connection.destroy());
  await connection.write(`${PUT_HEAD(100_000)}{"a":`);
  t.ok(await connection.waitResponses(1, 5000), 'the 401 arrives before the body');
  const answeredAt = Date.now();
  t.equal(connection.responses()[0]?.statusCode, 401);
  // One byte every 100 ms: the connection would live for 10,000 s.
  const trickle = setInterval(() => void connection.write('x').catch(() => {}), 100);
  t.teardown(() => clearInterval(trickle));
  const ending = await connection.waitClosed(REFUSED_BODY_GRACE_MS + 5000);
  clearInterval(trickle);
  t.ok(ending, 'the proxy closed the connection');
  const after = Date.now() - answeredAt;
  t.comment(`closed ${after} ms after the answer (grace ${REFUSED_BODY_GRACE_MS} ms)`);
  t.ok(after >= REFUSED_BODY_GRACE_MS - 100, 'not before the grace is over');
});

t.test('HTTP/1.1: a body that arrives within the grace keeps the connection for the next request', async (t) => {
  const connection = await openTls(proxy.port, { ca });
  t.teardown(() => connection.destroy());
  await connection.write(`${PUT_HEAD(10)}{"a":`);
  t.ok(await connection.waitResponses(1, 5000), 'the 401 arrives before the body');
  await connection.write('"b1"}');
  await connection.write('GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n');
  t.ok(await connection.waitResponses(2, 5000), 'the next request on the same connection is answered');
  t.equal(connection.responses()[1]?.statusCode, 401);
  t.equal(connection.ended, undefined, 'the connection is still open');
});

t.test('HTTP/2: the stream of a refused request is reset with NO_ERROR after its answer; the session lives on', async (t) => {
  const session = http2Connect(proxy.url, { ca, servername: 'localhost' });
  t.teardown(() => session.destroy());
  await once(session, 'connect');
  const stream = session.request({ ':method': 'PUT', ':path': '/api/v1/namespaces/default/configmaps/x', 'content-type': 'application/json' }, { endStream: false });
  stream.write('{"a":');
  const [headers] = (await once(stream, 'response')) as [Record<string, string | number>];
  t.equal(headers[':status'], 401, '401 before the body ended');
  const body: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => body.push(chunk));
  await once(stream, 'close');
  t.equal(stream.rstCode, h2.NGHTTP2_NO_ERROR, 'reset with NO_ERROR (RFC 9113 §8.1)');
  t.match(JSON.parse(Buffer.concat(body).toString()), { kind: 'Status', code: 401 }, 'the whole answer was delivered first');

  const next = session.request({ ':path': '/version' });
  next.resume();
  const [nextHeaders] = (await once(next, 'response')) as [Record<string, string | number>];
  t.equal(nextHeaders[':status'], 401, 'the session still serves requests');
  next.close();
});
