// The header contract on its own: what reaches the apiserver for every kind of incoming header.
import t from 'tap';
import type { Identity } from '../src/auth/identity.js';
import { util as undiciUtil } from 'undici';
import { downstreamResponseHeaders, downstreamResponseHeadersOfLines, escapeExtraKey, upstreamRequestHeaders, withRepeatedHeaders, type HeaderRecord } from '../src/proxy/headers.js';

const alice: Identity = { method: 'basic', user: 'alice', groups: ['devs', 'ops'], extra: {}, upstreamAuth: 'front-proxy' };
const keep = { allowImpersonation: true };

t.test('every client identity header is removed, in any case and any number', async (t) => {
  const spoofed = {
    'x-remote-user': ['root', 'admin'],
    'X-REMOTE-USER': 'system:admin',
    'x-remote-group': 'system:masters',
    'X-Remote-Group': ['system:masters', 'cluster-admins'],
    'x-remote-uid': '0',
    'X-Remote-Extra-Scopes': 'all',
    'x-remote-extra-acme.com%2Fproject': 'secret',
    authorization: 'Basic YWxpY2U6c2VjcmV0',
    'Proxy-Authorization': 'Basic eDp5',
    accept: 'application/json',
  };
  const out = upstreamRequestHeaders(spoofed, alice, '10.0.0.7', keep);
  t.same(out, {
    accept: 'application/json',
    'x-remote-user': 'alice',
    'x-remote-group': ['devs', 'ops'],
    'x-forwarded-for': '10.0.0.7',
  });
});

t.test('a user with no groups gets no group header; extras are escaped like client-go', async (t) => {
  const out = upstreamRequestHeaders({}, { method: 'x509', user: 'bob', groups: [], extra: { 'acme.com/project': ['a', 'b'], scopes: ['x'] }, upstreamAuth: 'front-proxy' }, undefined, keep);
  t.same(out, {
    'x-remote-user': 'bob',
    'x-remote-extra-acme.com%2Fproject': ['a', 'b'],
    'x-remote-extra-scopes': ['x'],
  });
  t.notOk('x-forwarded-for' in out, 'no client address, no X-Forwarded-For');
});

t.test('escapeExtraKey keeps token characters and percent-encodes the rest byte by byte', async (t) => {
  t.equal(escapeExtraKey('scopes'), 'scopes');
  t.equal(escapeExtraKey('acme.com/project'), 'acme.com%2Fproject');
  t.equal(escapeExtraKey('100%'), '100%25');
  t.equal(escapeExtraKey('a b:c'), 'a%20b%3Ac');
  t.equal(escapeExtraKey('ünï'), '%C3%BCn%C3%AF');
  t.equal(decodeURIComponent(escapeExtraKey('key with/every:odd%char')), 'key with/every:odd%char', 'the apiserver unescapes it back');
});

t.test('X-Forwarded-For is appended to, never replaced', async (t) => {
  // The client's own X-Forwarded-For is replaced by the value the address resolver worked out.
  t.equal(upstreamRequestHeaders({ 'x-forwarded-for': '1.2.3.4' }, alice, '10.0.0.7', keep)['x-forwarded-for'], '10.0.0.7');
  t.equal(upstreamRequestHeaders({ 'X-Forwarded-For': ['1.2.3.4', '5.6.7.8'] }, alice, '1.2.3.4, 10.0.0.7', keep)['x-forwarded-for'], '1.2.3.4, 10.0.0.7');
});

t.test('hop-by-hop headers and those named by Connection are dropped', async (t) => {
  const out = upstreamRequestHeaders(
    {
      connection: 'keep-alive, x-secret-hop',
      'x-secret-hop': '1',
      'keep-alive': 'timeout=5',
      te: 'trailers',
      'transfer-encoding': 'chunked',
      upgrade: 'h2c',
      expect: '100-continue',
      'proxy-connection': 'keep-alive',
      'content-type': 'application/json',
    },
    alice,
    undefined,
    keep,
  );
  t.same(Object.keys(out).sort(), ['content-type', 'x-remote-group', 'x-remote-user']);
});

t.test('Impersonate-* passes through unless the policy strips it', async (t) => {
  const incoming = { 'impersonate-user': 'bob', 'impersonate-group': ['a', 'b'], 'impersonate-extra-scopes': 'x' };
  const passed = upstreamRequestHeaders(incoming, alice, undefined, keep);
  t.equal(passed['impersonate-user'], 'bob');
  t.same(passed['impersonate-group'], ['a', 'b']);
  const stripped = upstreamRequestHeaders(incoming, alice, undefined, { allowImpersonation: false });
  t.same(
    Object.keys(stripped).filter((k) => k.startsWith('impersonate-')),
    [],
  );
});

t.test('repeated request headers are restored as separate lines', async (t) => {
  const joined = { 'impersonate-group': 'a, b', accept: 'application/json', 'user-agent': 'kubectl' };
  const distinct = { 'impersonate-group': ['a', 'b'], accept: ['application/json'], 'user-agent': ['kubectl', 'other'] };
  const rawHeaders = ['Impersonate-Group', 'a', 'Impersonate-Group', 'b', 'Accept', 'application/json', 'User-Agent', 'kubectl', 'User-Agent', 'other'];
  t.same(withRepeatedHeaders(joined, { rawHeaders, headers: joined, headersDistinct: distinct }), { 'impersonate-group': ['a', 'b'], accept: 'application/json', 'user-agent': 'kubectl' });
  const single = { accept: 'x' };
  t.equal(withRepeatedHeaders(single, { rawHeaders: ['Accept', 'x'], headers: single, headersDistinct: { accept: ['x'] } }), single, 'nothing repeated: the same object');
});

t.test('response headers: hop-by-hop removed, repeated kept', async (t) => {
  const out = downstreamResponseHeaders({
    connection: 'keep-alive, x-hop',
    'x-hop': '1',
    'keep-alive': 'timeout=5',
    'transfer-encoding': 'chunked',
    warning: ['299 - "a"', '299 - "b"'],
    'content-type': 'application/json',
    'audit-id': 'abc',
  });
  t.same(out, { warning: ['299 - "a"', '299 - "b"'], 'content-type': 'application/json', 'audit-id': 'abc' });
});

t.test("response headers read from undici's lines: the same as undici's parsing, then the filter", async (t) => {
  const pairs = [
    ['Content-Type', 'application/json'],
    ['Set-Cookie', 'a=1'],
    ['set-cookie', 'b=2'],
    ['Connection', 'keep-alive, X-Hop'],
    ['X-Hop', 'gone'],
    ['Keep-Alive', 'timeout=5'],
    ['Transfer-Encoding', 'chunked'],
    ['__proto__', 'p'],
    ['constructor', 'c'],
    ['Audit-Id', 'id-1'],
  ];
  const lines = pairs.flat().map((s) => Buffer.from(s, 'latin1'));
  const fromLines = downstreamResponseHeadersOfLines(lines, undiciUtil.headerNameToString);
  // (The old way lost a header named __proto__: the filter's assignment set a prototype instead.)
  const { ['__proto__']: proto, ...rest } = Object.fromEntries(Object.entries(fromLines));
  t.same(rest, downstreamResponseHeaders(undiciUtil.parseHeaders(lines) as HeaderRecord), "the same as undici's parsing, then the filter");
  t.equal(proto, 'p', 'a header named __proto__ relayed');
  t.same(Object.keys(fromLines), ['content-type', 'set-cookie', '__proto__', 'constructor', 'audit-id'], 'hop-by-hop and connection-named ones dropped, the rest own properties');
  t.same(fromLines['set-cookie'], ['a=1', 'b=2'], 'a repeated header as its lines');
  t.equal(Object.getPrototypeOf(fromLines), Object.prototype, 'no header became the prototype');
});
