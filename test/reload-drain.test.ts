// Rotation without a restart and a clean shutdown, against the real proxy process: certificates,
// keys and users re-read from disk (polled, and at once on SIGHUP) while open watches keep their
// connections; a broken file keeps the previous material; SIGTERM lets in-flight requests finish,
// ends watches, closes idle connections and exits 0; the admin listener reports health and
// readiness, and the user-facing /readyz stays the apiserver's.
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { connect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { pollUntil } from './helpers/raw-tls.js';
import { Agent, request, type Dispatcher } from 'undici';
import type { RawSettings } from '../src/config/index.js';
import { issueCertificate, type CertificateAndKey } from '../src/pki/certificates.js';
import { startApiServer, type ApiServer } from '../standin/apiserver.js';
import { basicAuth, call, openWatch, proxyClient } from './helpers/clients.js';
import { createTestPki } from './helpers/pki.js';
import { startProxy, type LogLine, type ProxyProcess } from './helpers/proxy.js';
import { ALICE, bcryptLine, CAROL, proxySettings, settingsToFlags, type TestUser } from './helpers/setup.js';

const ERIN: TestUser = { name: 'erin', password: 'erin-rotated-in', groups: ['late-joiners'] };
const RELOADED = 'reloaded certificates, keys and users';
const RELOAD_FAILED = 'reload failed, still serving with the previous certificates and users:';

const pki = await createTestPki();
const scratch: string[] = [pki.dir];
t.teardown(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// Plain HTTP to the admin listener; short keep-alive so nothing holds the test process open.
const plain = new Agent({ keepAliveTimeout: 10, keepAliveMaxTimeout: 10 });
t.teardown(() => plain.close());

// ---------------------------------------------------------------------------------------------
// Fixtures

/** Copies of the proxy's files in a directory of our own, so a test can rewrite them. */
interface MaterialFiles {
  dir: string;
  cert: string;
  key: string;
  clientCert: string;
  clientKey: string;
  users: string;
}

function usersText(lines: string[]): string {
  return `# kube-front-proxy test users\n${lines.join('\n')}\n`;
}

function copyMaterial(users: string[]): MaterialFiles {
  const dir = mkdtempSync(join(tmpdir(), 'kfp-reload-'));
  scratch.push(dir);
  const files: MaterialFiles = {
    dir,
    cert: join(dir, 'serving.crt'),
    key: join(dir, 'serving.key'),
    clientCert: join(dir, 'front-proxy-client.crt'),
    clientKey: join(dir, 'front-proxy-client.key'),
    users: join(dir, 'users.htpasswd'),
  };
  copyFileSync(pki.path('proxy-server', 'crt'), files.cert);
  copyFileSync(pki.path('proxy-server', 'key'), files.key);
  copyFileSync(pki.path('front-proxy-client', 'crt'), files.clientCert);
  copyFileSync(pki.path('front-proxy-client', 'key'), files.clientKey);
  writeFileSync(files.users, usersText(users), { mode: 0o600 });
  return files;
}

/** How kubeadm, cert-manager and `mv` replace a file: the new content appears all at once. */
function writeAtomically(path: string, content: string): void {
  const temp = `${path}.tmp-${process.pid}`;
  writeFileSync(temp, content, { mode: 0o600 });
  renameSync(temp, path);
}

/** An editor or `cat >`: truncate and rewrite the same inode. */
function writeInPlace(path: string, content: string): void {
  writeFileSync(path, content);
}

function flagsFor(files: MaterialFiles, upstream: string, extra: string[] = []): string[] {
  const settings: RawSettings = {
    ...proxySettings(pki, { upstream, usersFile: files.users }),
    tlsCertFile: files.cert,
    tlsPrivateKeyFile: files.key,
    proxyClientCertFile: files.clientCert,
    proxyClientKeyFile: files.clientKey,
  };
  return [...settingsToFlags(settings), ...extra];
}

type Tap = { teardown(fn: () => unknown): void };

async function standIn(t: Tap, allowedNames?: string[]): Promise<ApiServer> {
  const apiserver = await startApiServer({
    cert: pki.pem.apiserver.cert,
    key: pki.pem.apiserver.key,
    requestHeaderCA: pki.pem['front-proxy-ca'].cert,
    clientCA: pki.pem['cluster-ca'].cert,
    ...(allowedNames ? { allowedNames } : {}),
  });
  t.teardown(() => apiserver.close());
  return apiserver;
}

async function proxyOn(t: Tap, files: MaterialFiles, upstream: string, extra: string[] = []): Promise<ProxyProcess> {
  // These tests poll for a user the next reload adds: the failed-login limit would lock them out.
  const proxy = await startProxy(flagsFor(files, upstream, ['--auth-failure-limit', '0', ...extra]));
  t.teardown(() => proxy.stop('SIGKILL'));
  return proxy;
}

function newServingCert(): Promise<CertificateAndKey> {
  return issueCertificate(pki.pem['proxy-ca'], { commonName: 'kube-front-proxy', usages: ['serverAuth'], dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
}

/** Waits for a log line after index `from` that `match` accepts. */
async function waitForLog(proxy: ProxyProcess, from: number, match: (line: LogLine) => boolean, timeoutMs = 5000): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = proxy.logs.slice(from).find(match);
    if (line) return line;
    if (Date.now() > deadline) {
      throw new Error(`no matching log line within ${timeoutMs} ms; lines since: ${JSON.stringify(proxy.logs.slice(from).map((l) => l.msg))}`);
    }
    await sleep(20);
  }
}

const isReloaded = (line: LogLine) => line.msg === RELOADED;
const isReloadFailed = (line: LogLine) => line.msg.startsWith(RELOAD_FAILED);

/** SHA-256 fingerprint of the certificate a fresh TLS connection to the proxy is shown. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.pem['proxy-ca'].cert }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.once('error', reject);
  });
}

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;

/** A watch response read line by line. */
async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 20): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await condition()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

const pod = (name: string) => ({ kind: 'Pod', apiVersion: 'v1', metadata: { name, namespace: 'default' } });
const WATCH_PATH = '/api/v1/namespaces/default/pods?watch=true';

async function identity(dispatcher: Dispatcher, proxy: ProxyProcess, user?: TestUser): Promise<{ status: number; username: string | undefined }> {
  const res = await call(dispatcher, `${proxy.url}/test/identity`, { method: 'GET', headers: user ? { authorization: basicAuth(user) } : {} });
  return { status: res.status, username: (res.body as { user?: { username?: string } } | undefined)?.user?.username };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function adminGet(proxy: ProxyProcess, path: string): Promise<{ status: number; text: string }> {
  const res = await request(`${proxy.adminUrl}${path}`, { dispatcher: plain });
  return { status: res.statusCode, text: await res.body.text() };
}

// ---------------------------------------------------------------------------------------------

t.test('rotation: new serving cert, front-proxy cert and users take effect while an open watch survives', async (t) => {
  const apiserver = await standIn(t, ['front-proxy-client', 'front-proxy-client-2']);
  const files = copyMaterial([bcryptLine(ALICE), bcryptLine(CAROL)]);
  const proxy = await proxyOn(t, files, apiserver.url, ['--reload-interval', '200ms']);
  const alice = proxyClient(pki, { cert: 'user-alice' });
  const password = proxyClient(pki);
  t.teardown(() => Promise.all([alice.close(), password.close()]));

  // Before: the original material everywhere; carol's password is verified (and cached).
  const before = await servedFingerprint(proxy.port);
  t.equal(before, fingerprintOf(pki.pem['proxy-server'].cert), 'the original serving certificate is presented');
  t.same(await identity(password, proxy, CAROL), { status: 200, username: 'carol' }, 'carol logs in before the rotation');
  t.equal((await identity(password, proxy, ERIN)).status, 401, 'erin is not a user yet');

  const watchRequest = apiserver.requests.length;
  const watch = await openWatch(alice, `${proxy.url}${WATCH_PATH}`);
  t.equal(watch.statusCode, 200);
  await waitFor('the watch reaches the apiserver', () => apiserver.openWatches() === 1);
  apiserver.sendWatchEvent('ADDED', pod('before-rotation'));
  t.match(JSON.parse(await watch.next(1)), { type: 'ADDED', object: { metadata: { name: 'before-rotation' } } });

  // Replace everything on disk, each file atomically.
  const serving = await newServingCert();
  const client2 = await issueCertificate(pki.pem['front-proxy-ca'], { commonName: 'front-proxy-client-2', usages: ['clientAuth'] });
  const mark = proxy.logs.length;
  const started = Date.now();
  writeAtomically(files.cert, serving.cert);
  writeAtomically(files.key, serving.key);
  writeAtomically(files.clientCert, client2.cert);
  writeAtomically(files.clientKey, client2.key);
  writeAtomically(files.users, usersText([bcryptLine(ALICE), bcryptLine(ERIN)]));
  const reloaded = await waitForLog(proxy, mark, isReloaded);
  t.comment(`reload logged ${Date.now() - started} ms after the files were replaced (cause: ${String(reloaded.cause)})`);
  t.notOk(proxy.logs.slice(mark).some(isReloadFailed), 'no failed reload on the way');

  // The open watch kept its connections, both sides.
  apiserver.sendWatchEvent('MODIFIED', pod('after-rotation'));
  t.match(JSON.parse(await watch.next(2)), { type: 'MODIFIED', object: { metadata: { name: 'after-rotation' } } }, 'the open watch still delivers events');
  t.equal(apiserver.openWatches(), 1, 'the upstream watch is still open');

  // New connections get the new material.
  const after = await servedFingerprint(proxy.port);
  t.not(after, before, 'a new TLS connection sees a different certificate');
  t.equal(after, fingerprintOf(serving.cert), 'the new serving certificate is presented');

  t.same(await identity(alice, proxy), { status: 200, username: 'alice' }, 'alice (client certificate) still works');
  const seen = apiserver.requests.filter((r) => r.url === '/test/identity').at(-1);
  t.equal(seen?.peerCN, 'front-proxy-client-2', 'new upstream connections present the new front-proxy certificate');
  t.equal(seen?.authn, 'requestheader');

  t.same(await identity(password, proxy, ERIN), { status: 200, username: 'erin' }, 'erin, added to the file, logs in');
  t.equal((await identity(password, proxy, CAROL)).status, 401, 'carol, removed from the file, is refused despite her cached login');
  t.same(await identity(password, proxy, ALICE), { status: 200, username: 'alice' }, 'alice (password) still works');

  watch.close();
  await waitFor('the watch closes upstream', () => apiserver.openWatches() === 0);
  const watchSeen = apiserver.requests.slice(watchRequest).find((r) => r.url === WATCH_PATH);
  t.equal(watchSeen?.peerCN, 'front-proxy-client', 'the watch stayed on its connection with the old front-proxy certificate');
});

t.test('a broken file keeps the previous material and says so in one line; fixing it reloads', async (t) => {
  const apiserver = await standIn(t);
  const files = copyMaterial([bcryptLine(ALICE)]);
  const proxy = await proxyOn(t, files, apiserver.url, ['--reload-interval', '200ms']);
  const password = proxyClient(pki);
  t.teardown(() => password.close());
  const original = fingerprintOf(pki.pem['proxy-server'].cert);
  const stillServing = async (what: string) => {
    t.equal(await servedFingerprint(proxy.port), original, `${what}: new TLS connections get the previous certificate`);
    t.same(await identity(password, proxy, ALICE), { status: 200, username: 'alice' }, `${what}: requests still work`);
  };
  /** Rewrites, waits for the one failure line, and checks no second one follows. */
  const expectFailure = async (what: string, write: () => void, pattern: RegExp) => {
    const mark = proxy.logs.length;
    write();
    const line = await waitForLog(proxy, mark, (l) => isReloadFailed(l) || isReloaded(l));
    t.ok(isReloadFailed(line), `${what}: the reload failed`);
    t.match(line.msg, pattern, `${what}: the line names the file and the problem`);
    t.equal(line.level, 50, `${what}: logged at error level`);
    await sleep(700); // three more polls: a broken file is reported once, not on every poll
    t.equal(proxy.logs.slice(mark).filter(isReloadFailed).length, 1, `${what}: exactly one line`);
    t.notOk(proxy.logs.slice(mark).some(isReloaded), `${what}: nothing was applied`);
    await stillServing(what);
  };

  await expectFailure(
    'garbage serving key',
    () => writeAtomically(files.key, 'this is not a key\n'),
    new RegExp(`^${escape(RELOAD_FAILED)} --tls-private-key-file ${escape(files.key)}: ${escape('no PEM private key found (expected -----BEGIN ... PRIVATE KEY-----)')}`),
  );
  await expectFailure('a key of another certificate', () => writeAtomically(files.key, pki.pem['user-bob'].key), new RegExp(`--tls-private-key-file ${escape(files.key)}: key does not match the certificate in ${escape(files.cert)}`));

  // Fixed in place (truncate and rewrite, not a rename): the proxy notices that too.
  let mark = proxy.logs.length;
  writeInPlace(files.key, pki.pem['proxy-server'].key);
  await waitForLog(proxy, mark, isReloaded);
  t.notOk(proxy.logs.slice(mark).some(isReloadFailed), 'the in-place fix reloads without a failure');
  await stillServing('after the fix');

  await expectFailure(
    'an $apr1$ users line',
    () => writeAtomically(files.users, usersText([bcryptLine(ALICE), bcryptLine(ERIN), 'frank:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/'])),
    new RegExp(`--htpasswd-file ${escape(files.users)}: line 4: .*apr1`),
  );
  t.equal((await identity(password, proxy, ERIN)).status, 401, 'erin, in the rejected file, is not a user');

  mark = proxy.logs.length;
  writeAtomically(files.users, usersText([bcryptLine(ALICE), bcryptLine(ERIN)]));
  await waitForLog(proxy, mark, isReloaded);
  t.same(await identity(password, proxy, ERIN), { status: 200, username: 'erin' }, 'the fixed users file is applied');
  t.same(await identity(password, proxy, ALICE), { status: 200, username: 'alice' });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

t.test('SIGHUP reloads at once', async (t) => {
  const apiserver = await standIn(t);
  const files = copyMaterial([bcryptLine(ALICE)]);
  const proxy = await proxyOn(t, files, apiserver.url, ['--reload-interval', '1h']);
  const password = proxyClient(pki);
  t.teardown(() => password.close());

  writeAtomically(files.users, usersText([bcryptLine(ALICE), bcryptLine(ERIN)]));
  await sleep(300);
  t.equal((await identity(password, proxy, ERIN)).status, 401, 'with a 1h interval the change is not seen yet');

  const mark = proxy.logs.length;
  const sent = Date.now();
  proxy.child.kill('SIGHUP');
  const took = await waitFor('erin logs in after SIGHUP', async () => (await identity(password, proxy, ERIN)).status === 200, 1000, 25);
  t.comment(`erin could log in ${took} ms after SIGHUP`);
  t.ok(Date.now() - sent < 1500, 'within about a second');
  const line = await waitForLog(proxy, mark, isReloaded, 1000);
  t.equal(line.cause, 'SIGHUP', 'the reload line names SIGHUP as the cause');
  t.equal(proxy.child.exitCode, null, 'SIGHUP does not stop the proxy');
});

t.test('a file changed while the proxy is starting is still noticed', async (t) => {
  const apiserver = await standIn(t);
  const files = copyMaterial([bcryptLine(ALICE)]);
  const proxy = await proxyOn(t, files, apiserver.url, ['--reload-interval', '200ms']);
  // Straight after the start-up line: before the poller's first look at the files.
  writeAtomically(files.users, usersText([bcryptLine(ALICE), bcryptLine(ERIN)]));
  const password = proxyClient(pki);
  t.teardown(() => password.close());
  const took = await waitFor('erin logs in', async () => (await identity(password, proxy, ERIN)).status === 200, 3000, 25);
  t.comment(`noticed ${took} ms after the change`);
  t.pass('the change was not mistaken for the starting state');
});

t.test('SIGTERM lets an in-flight request with a slow body finish, reports not ready, then exits 0', async (t) => {
  const apiserver = await standIn(t);
  const files = copyMaterial([bcryptLine(ALICE)]);
  const proxy = await proxyOn(t, files, apiserver.url, ['--shutdown-grace', '10s']);
  // kubectl keeps idle connections for 90 s; so does this client.
  const client = new Agent({ connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key }, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
  t.teardown(() => client.destroy());

  const ready = await adminGet(proxy, '/readyz');
  t.equal(ready.status, 200, '/readyz is 200 before the signal');

  const chunks = Array.from({ length: 8 }, (_, i) => Buffer.alloc(1024, 0x41 + i));
  let pushed = 0;
  const body = new Readable({ read() {} });
  const pusher = setInterval(() => {
    if (pushed < chunks.length) body.push(chunks[pushed++]);
    else {
      clearInterval(pusher);
      body.push(null);
    }
  }, 200);
  t.teardown(() => clearInterval(pusher));
  const exited = once(proxy.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const response = (async () => {
    const res = await request(`${proxy.url}/test/echo`, { dispatcher: client, method: 'PUT', body, headers: { 'content-type': 'application/octet-stream' } });
    return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), at: Date.now() };
  })();

  await waitFor('part of the body is sent', () => pushed >= 3, 2000, 10);
  const signalledAt = Date.now();
  const inFlight = pushed < chunks.length;
  proxy.child.kill('SIGTERM');
  t.ok(inFlight, `the request was in flight at SIGTERM (${pushed} of ${chunks.length} chunks sent)`);

  // Draining: the admin listener stays up and says not ready; the user port takes no new connections.
  const notReady = await waitFor('/readyz turns 503', async () => (await adminGet(proxy, '/readyz')).status === 503, 1000, 20);
  t.comment(`/readyz answered 503 ${notReady} ms after SIGTERM`);
  t.match((await adminGet(proxy, '/readyz')).text, /shutting down/);
  const refused = await waitFor(
    'the user port refuses new connections',
    () =>
      new Promise<boolean>((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: proxy.port, servername: 'localhost', ca: pki.pem['proxy-ca'].cert }, () => {
          socket.destroy();
          resolve(false);
        });
        socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
      }),
    1000,
  );
  t.comment(`new connections refused ${refused} ms after SIGTERM`);
  t.equal(proxy.child.exitCode, null, 'still running while the request is in flight');

  const result = await response;
  t.equal(result.status, 200, 'the in-flight request completed');
  t.ok(result.body.equals(Buffer.concat(chunks)), `the whole body was echoed (${result.body.length} bytes)`);
  t.equal(apiserver.requests.filter((r) => r.url === '/test/echo').at(-1)?.bodyBytes, 8 * 1024, 'the apiserver received the whole body');
  t.ok(result.at - signalledAt > 600, `the response finished ${result.at - signalledAt} ms after SIGTERM`);

  const [code] = await exited;
  const exitAfter = Date.now() - result.at;
  t.equal(code, 0, 'exit code 0');
  t.comment(`exited ${exitAfter} ms after the response finished (grace 10 s)`);
  // reply-from answers "Connection: close" when the apiserver responds before the request body
  // is complete (as /test/echo does), so this connection does not outlive the request; the next
  // test covers a response on a connection that stays keep-alive.
  t.ok(exitAfter < 3000, 'exits promptly once the request is done');
  // The child's 'exit' can come before the last bytes of its stdout have been read.
  t.ok(
    await pollUntil(
      () => proxy.logs.some((l) => l.msg === 'stopped'),
      (seen) => seen,
      2000,
    ),
    'the proxy logged "stopped"',
  );
});

t.test('SIGTERM during a streaming response on a kept-alive connection: the response completes, then the proxy exits', async (t) => {
  const apiserver = await standIn(t);
  const files = copyMaterial([bcryptLine(ALICE)]);
  const proxy = await proxyOn(t, files, apiserver.url, ['--shutdown-grace', '3s']);
  // kubectl keeps idle connections for 90 s; so does this client.
  const client = new Agent({ connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key }, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
  t.teardown(() => client.destroy());

  const size = 32 * 1024 * 1024;
  const res = await request(`${proxy.url}/test/bytes?n=${size}`, { dispatcher: client });
  t.equal(res.statusCode, 200);
  t.equal(res.headers.connection, 'keep-alive', 'the response keeps its connection alive');
  res.body.pause(); // back-pressure holds most of the body upstream: the response is in flight
  const exited = once(proxy.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const signalledAt = Date.now();
  proxy.child.kill('SIGTERM');
  await sleep(400);
  t.equal(proxy.child.exitCode, null, 'the proxy waits for the response');
  let received = 0;
  for await (const chunk of res.body) received += (chunk as Buffer).length;
  const doneAt = Date.now();
  t.equal(received, size, `the whole response arrived (${doneAt - signalledAt} ms after SIGTERM)`);
  const [code] = await exited;
  const exitAfter = Date.now() - doneAt;
  t.equal(code, 0, 'exit code 0');
  t.comment(`exited ${exitAfter} ms after the response ended (grace 3 s)`);
  // Node closes idle connections only once, at server.close(); the proxy sweeps them while it
  // drains, so a kept-alive connection does not hold it to its grace period.
  t.ok(exitAfter < 1000, 'exits promptly once the response is done, although the client keeps its connection');
  t.notOk(
    proxy.logs.some((l) => l.msg.startsWith('shutdown grace period over')),
    'no connection had to be cut at the end of the grace period',
  );
});

t.test('SIGTERM with an open watch and an idle keep-alive connection exits 0 promptly and ends the watch', async (t) => {
  const apiserver = await standIn(t);
  const files = copyMaterial([bcryptLine(ALICE)]);
  const proxy = await proxyOn(t, files, apiserver.url, ['--shutdown-grace', '20s']);
  const watcher = proxyClient(pki, { cert: 'user-alice' });
  t.teardown(() => watcher.destroy());

  const watch = await openWatch(watcher, `${proxy.url}${WATCH_PATH}`);
  await waitFor('the watch reaches the apiserver', () => apiserver.openWatches() === 1);
  apiserver.sendWatchEvent('ADDED', pod('one'));
  await watch.next(1);

  // An idle keep-alive connection: one request answered, the socket left open by the client.
  const idle = connect({ host: '127.0.0.1', port: proxy.port, servername: 'localhost', ca: pki.pem['proxy-ca'].cert });
  t.teardown(() => idle.destroy());
  await once(idle, 'secureConnect');
  let received = '';
  idle.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
  const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()));
  idle.on('error', () => {});
  idle.write(`GET /test/identity HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${basicAuth(ALICE)}\r\n\r\n`);
  await waitFor('the keep-alive response arrives', () => /\r\n\r\n\{.*\}$/s.test(received));
  t.match(received, /^HTTP\/1\.1 200 /, 'the keep-alive request was answered');
  t.notMatch(received, /connection: close/i, 'and the connection kept alive');

  const exited = once(proxy.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const signalledAt = Date.now();
  proxy.child.kill('SIGTERM');
  const [code] = await exited;
  const took = Date.now() - signalledAt;
  t.equal(code, 0, 'exit code 0');
  t.comment(`exited ${took} ms after SIGTERM (grace 20 s)`);
  t.ok(took < 3000, 'well under the grace period');
  t.equal(await watch.ended, 'end', 'the watch ended cleanly at the client (last chunk, not a torn connection)');
  await idleClosed;
  t.pass('the idle keep-alive connection was closed');
  await waitFor('the upstream watch closes', () => apiserver.openWatches() === 0);
});

t.test('the admin listener: /healthz, /readyz per upstream; the user port forwards /readyz to the apiserver', async (t) => {
  const apiserver = await standIn(t);
  const files = copyMaterial([bcryptLine(ALICE)]);
  const [proxy, port] = await Promise.all([proxyOn(t, files, apiserver.url, ['--health-interval', '200ms']), closedPort()]);
  const dead = `https://127.0.0.1:${port}`;
  const orphan = await proxyOn(t, files, dead, ['--health-interval', '200ms']);
  const password = proxyClient(pki);
  t.teardown(() => password.close());

  const healthz = await adminGet(proxy, '/healthz');
  t.same(healthz, { status: 200, text: 'ok' }, '/healthz: 200 ok');
  const readyz = await adminGet(proxy, '/readyz');
  t.equal(readyz.status, 200, '/readyz: 200 with a healthy upstream');
  t.match(readyz.text, new RegExp(`^\\[\\+\\]${escape(apiserver.url)} ok$`, 'm'), '/readyz lists the upstream with [+]');
  t.match(readyz.text, /ok: 1 of 1 upstreams healthy/);

  const tookDown = await waitFor('/readyz turns 503 with the only upstream down', async () => (await adminGet(orphan, '/readyz')).status === 503, 2000, 50);
  t.comment(`/readyz turned 503 ${tookDown} ms after the check started`);
  const down = await adminGet(orphan, '/readyz');
  t.match(down.text, new RegExp(`^\\[-\\]${escape(dead)} GET /readyz failed`, 'm'), 'the dead upstream is listed with [-] and why');
  t.match(down.text, /no healthy upstream/);
  t.same(await adminGet(orphan, '/healthz'), { status: 200, text: 'ok' }, '/healthz stays 200: the process is up');
  const refused = await call(password, `${orphan.url}/api/v1/namespaces`, { method: 'GET', headers: { authorization: basicAuth(ALICE) } });
  t.equal(refused.status, 503, 'requests get 503 with no healthy upstream');
  t.match(refused.body, { kind: 'Status', reason: 'ServiceUnavailable' });

  // On the user-facing port /readyz and /healthz are the apiserver's paths.
  for (const path of ['/readyz', '/healthz']) {
    const before = apiserver.requests.length;
    const res = await call(password, `${proxy.url}${path}`, { method: 'GET', headers: { authorization: basicAuth(ALICE) } });
    t.equal(res.status, 200, `${path} on the user port: 200`);
    const forwarded = apiserver.requests.slice(before).find((r) => r.url === path && r.user?.username === 'alice');
    t.ok(forwarded, `${path} on the user port reached the apiserver as alice`);
  }
  const anonymous = await call(password, `${proxy.url}/readyz`, { method: 'GET' });
  t.equal(anonymous.status, 401, 'and like every user-port path it needs credentials');
});
