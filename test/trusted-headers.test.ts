// Identity headers the apiserver trusts besides X-Remote-*: an apiserver started with
// --requestheader-username-headers=X-User,X-Remote-User (or more group headers, another extra
// prefix, UID headers) reads those names from the proxy's connection too. The proxy learns them
// from ConfigMap kube-system/extension-apiserver-authentication and removes them from every
// request: HTTP/1.1, HTTP/2 and upgrades. The stand-in reads extra names as kube-apiserver does.
import { once } from 'node:events';
import { connect as h2connect } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { request } from 'undici';
import { basicAuth, proxyClient, rawRequest } from './helpers/clients.js';
import type { ApiServer, RequestHeaderNames, SeenRequest } from '../standin/apiserver.js';
import type { TestPki } from './helpers/pki.js';
import { upstreamRequestHeaders } from '../src/proxy/headers.js';
import { extraTrusted } from '../src/upstream/trusted-headers.js';
import type { ProxyProcess } from './helpers/proxy.js';
import { ALICE, startStack, type TapTest } from './helpers/setup.js';

const EXTRA_NAMES: RequestHeaderNames = {
  // X-User first: the apiserver takes the first non-empty username header, so it would win.
  username: ['X-User', 'X-Remote-User'],
  group: ['X-Remote-Group', 'X-Other-Group'],
  extraPrefix: ['X-Remote-Extra-', 'X-Extra-'],
  uid: ['X-Remote-Uid', 'X-Uid'],
};
// Any case, as Go reads them.
const SPOOF = ['X-User: root', 'x-other-group: system:masters', 'X-EXTRA-Scopes: admin', 'X-Uid: 0'];
const SPOOF_H2: Record<string, string> = { 'x-user': 'root', 'x-other-group': 'system:masters', 'x-extra-scopes': 'admin', 'x-uid': '0' };
const FAST_REFRESH = { KUBE_FRONT_PROXY_TRUSTED_HEADERS_REFRESH_MS: '300' };

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function learned(proxy: ProxyProcess): boolean {
  return proxy.logs.some((l) => String((l as { msg?: unknown }).msg).startsWith('removing from every request'));
}

/** The apiserver's record of the next request `send` makes. */
async function recordOf(apiserver: ApiServer, send: () => Promise<void>): Promise<SeenRequest> {
  const before = apiserver.requests.length;
  await send();
  await until('the request at the apiserver', () => apiserver.requests.length > before);
  return apiserver.requests.at(-1)!;
}

function http1(proxy: ProxyProcess, pki: TestPki, apiserver: ApiServer): Promise<SeenRequest> {
  return recordOf(apiserver, async () => {
    const res = await rawRequest(proxy.port, pki, ['GET /test/identity HTTP/1.1', 'Host: localhost', 'Connection: close', `Authorization: ${basicAuth(ALICE)}`, ...SPOOF].join('\r\n'));
    if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  });
}

function http2(proxy: ProxyProcess, pki: TestPki, apiserver: ApiServer): Promise<SeenRequest> {
  return recordOf(apiserver, async () => {
    const session = h2connect(proxy.url, { ca: pki.pem['proxy-ca'].cert, servername: 'localhost' });
    try {
      const stream = session.request({ ':method': 'GET', ':path': '/test/identity', authorization: basicAuth(ALICE), ...SPOOF_H2 });
      stream.resume();
      await once(stream, 'end');
    } finally {
      session.close();
    }
  });
}

function upgrade(proxy: ProxyProcess, pki: TestPki, apiserver: ApiServer): Promise<SeenRequest> {
  return recordOf(apiserver, async () => {
    const socket = tlsConnect({ host: '127.0.0.1', port: proxy.port, ca: pki.pem['proxy-ca'].cert, servername: 'localhost' });
    await once(socket, 'secureConnect');
    socket.write(['POST /test/upgrade-echo HTTP/1.1', 'Host: localhost', 'Connection: Upgrade', 'Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: v4.channel.k8s.io', `Authorization: ${basicAuth(ALICE)}`, ...SPOOF, '', ''].join('\r\n'));
    let head = '';
    while (!head.includes('\r\n')) head += ((await once(socket, 'data')) as [Buffer])[0].toString('latin1');
    socket.destroy();
    if (!head.startsWith('HTTP/1.1 101')) throw new Error(head.split('\r\n')[0]);
  });
}

/** A watch: the proxy carries it to the apiserver over HTTP/2 (--upstream-http2, the default). */
function watch(proxy: ProxyProcess, pki: TestPki, apiserver: ApiServer): Promise<SeenRequest> {
  return recordOf(apiserver, async () => {
    const agent = proxyClient(pki);
    try {
      const res = await request(`${proxy.url}/api/v1/namespaces/default/pods?watch=1`, { dispatcher: agent, headers: { authorization: basicAuth(ALICE), ...SPOOF_H2 } });
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      res.body.destroy();
    } finally {
      await agent.destroy();
    }
  });
}

const PATHS = { 'HTTP/1.1': http1, 'HTTP/2': http2, 'upgrade (SPDY)': upgrade, 'watch (HTTP/2 upstream)': watch };

function assertStripped(t: TapTest, seen: SeenRequest) {
  t.same(seen.user, { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'], extra: {} }, 'the apiserver sees alice as the proxy says, nothing more');
  t.same(
    seen.rawHeaders.filter(([name]) => /^(x-user|x-other-group|x-extra-|x-uid)/i.test(name)),
    [],
    'no spoofed header reaches the apiserver',
  );
}

t.test('the rewrite: learned names and prefixes removed in any case, the fixed rules kept', async (t) => {
  const learned = extraTrusted(['X-Remote-User', 'X-User', ' X-Other-Group ', 'x-extra-foo', ''], ['X-Remote-Extra-', 'X-Remote-Extra-Sub-', 'X-Extra-', '']);
  t.same(learned && { names: [...learned.names].sort(), prefixes: learned.prefixes }, { names: ['x-other-group', 'x-user'], prefixes: ['x-extra-'] }, 'what X-Remote-* rules or a prefix cover is not repeated');
  t.equal(extraTrusted(['X-Remote-User', 'x-remote-group', 'X-Remote-Uid'], ['X-Remote-Extra-']), undefined, "kubeadm's names: nothing to learn");
  const out = upstreamRequestHeaders(
    { 'x-user': 'root', 'x-other-group': 'system:masters', 'x-extra-scopes': 'admin', 'x-users': 'kept', 'x-extra': 'kept', accept: 'application/json' },
    { method: 'basic', user: 'alice', groups: ['devs'], extra: {}, upstreamAuth: 'front-proxy' },
    undefined,
    { allowImpersonation: true, apiserverTrusted: learned },
  );
  t.same(out, { 'x-users': 'kept', 'x-extra': 'kept', accept: 'application/json', 'x-remote-user': 'alice', 'x-remote-group': ['devs'] });
});

t.test('learned at start: removed on every path', async (t) => {
  const { apiserver, pki, proxy } = await startStack(t, { apiserver: { requestHeaders: EXTRA_NAMES }, env: FAST_REFRESH });
  await until('the proxy to learn the names', () => learned(proxy));
  const line = proxy.logs.find((l) => String((l as { msg?: unknown }).msg).startsWith('removing from every request')) as { names?: string[]; prefixes?: string[] };
  t.same([...(line.names ?? [])].sort(), ['x-other-group', 'x-uid', 'x-user']);
  t.same(line.prefixes, ['x-extra-']);
  for (const [name, send] of Object.entries(PATHS)) {
    t.test(name, async (t) => assertStripped(t, await send(proxy, pki, apiserver)));
  }
});

t.test('no RoleBinding: nothing learned, the proxy serves on with its fixed rules', async (t) => {
  const { apiserver, pki, proxy } = await startStack(t, { apiserver: { requestHeaders: EXTRA_NAMES, preflightForbidden: true }, env: FAST_REFRESH });
  await until('two reads refused', () => apiserver.preflightReads.length >= 2);
  t.notOk(learned(proxy));
  const seen = await http1(proxy, pki, apiserver);
  // What every proxy before this fix did: the apiserver takes the client's headers.
  t.same(seen.user, { username: 'root', uid: '0', groups: ['devs', 'ops', 'system:masters', 'system:authenticated'], extra: { scopes: ['admin'] } }, 'the spoof works where the names cannot be learned');
});

t.test('a changed apiserver is followed', async (t) => {
  const { apiserver, pki, proxy } = await startStack(t, { env: FAST_REFRESH });
  await until('a first read', () => apiserver.preflightReads.length >= 2);
  t.notOk(learned(proxy), 'kubeadm defaults: nothing beyond X-Remote-*');
  apiserver.setRequestHeaders(EXTRA_NAMES);
  await until('the proxy to learn the names', () => learned(proxy));
  for (const [name, send] of Object.entries(PATHS)) {
    await t.test(name, async (t) => assertStripped(t, await send(proxy, pki, apiserver)));
  }
  apiserver.setRequestHeaders({});
  await until('the proxy to forget them', () => proxy.logs.some((l) => String((l as { msg?: unknown }).msg).startsWith('the apiserver trusts no identity headers besides')));
});

t.test('--workers 2: every worker learns and removes them', async (t) => {
  const { apiserver, pki, proxy } = await startStack(t, { apiserver: { requestHeaders: EXTRA_NAMES }, env: FAST_REFRESH, flags: ['--workers', '2'] });
  await until('both workers to learn the names', () => new Set(proxy.logs.filter((l) => String(l.msg).startsWith('removing from every request')).map((l) => l.pid)).size >= 2, 20_000);
  // Each connection goes to one worker or the other.
  for (let i = 0; i < 6; i++) assertStripped(t, await http1(proxy, pki, apiserver));
});
