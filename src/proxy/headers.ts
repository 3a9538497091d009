// The front-proxy header contract, in one pure function (after client-go's
// SetAuthProxyHeaders): delete every identity header the client sent, in any case and any
// number, plus its credentials and hop-by-hop headers; then state who the user is.

import type { Identity } from '../auth/identity.js';
import { WEBSOCKET_BEARER_PREFIX } from '../auth/token-passthrough.js';

export type HeaderRecord = Record<string, string | string[] | undefined>;
export type OutgoingHeaders = Record<string, string | string[]>;

export interface HeaderPolicy {
  /** Pass Impersonate-* on for the apiserver to authorize; false drops them. */
  allowImpersonation: boolean;
  /**
   * The other identity header names the apiserver trusts (its --requestheader-*-headers flags
   * beyond X-Remote-*, learned from its ConfigMap: upstream/trusted-headers.ts), removed from
   * every request like the X-Remote-* ones. Replaced whole when a read finds other names.
   */
  apiserverTrusted?: TrustedHeaderNames;
}

/** Identity header names, lower-case: exact names, and prefixes (the extra headers). */
export interface TrustedHeaderNames {
  readonly names: ReadonlySet<string>;
  readonly prefixes: readonly string[];
}

/** Whether the apiserver reads `lowerName` as identity by these names: one Set lookup, prefixes only when there are any. */
export function isTrustedHeader(trusted: TrustedHeaderNames, lowerName: string): boolean {
  if (trusted.names.has(lowerName)) return true;
  const prefixes = trusted.prefixes;
  for (let i = 0; i < prefixes.length; i++) if (lowerName.startsWith(prefixes[i]!)) return true;
  return false;
}

// Hop-by-hop (RFC 9110 §7.6.1) and framing headers: they describe one connection, not the
// message. undici refuses `transfer-encoding` and `expect` outright.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

// Where the client is, which the proxy states itself (X-Forwarded-For, from the trusted chain):
// kube-apiserver reads X-Forwarded-For, then X-Real-Ip, into the audit event's sourceIPs
// (k8s.io/apimachinery util/net SourceIPs). It does not read Forwarded (RFC 7239), but nothing
// behind the proxy may take a client's Forwarded for the proxy's word either.
const CLIENT_ADDRESS_CLAIMS = new Set(['x-forwarded-for', 'x-real-ip', 'forwarded']);

/** Headers the apiserver reads as identity or the proxy consumes as credentials. */
export function isIdentityOrCredentialHeader(lowerName: string): boolean {
  return lowerName === 'x-remote-user' || lowerName === 'x-remote-uid' || lowerName === 'x-remote-group' || lowerName.startsWith('x-remote-extra-') || lowerName === 'authorization' || lowerName === 'proxy-authorization';
}

/**
 * The request headers to send upstream, as text. `forwardedFor` replaces the client's
 * X-Forwarded-For (and X-Real-Ip and Forwarded go): the apiserver records it as the audit source
 * IP, so only a trusted proxy's chain may extend it. `incoming` has lower-case names (as Node
 * gives them); repeated headers must already be arrays (see `withRepeatedHeaders`). What goes on
 * the wire is `upstreamWireHeaders`.
 */
export function upstreamRequestHeaders(incoming: HeaderRecord, identity: Identity, forwardedFor: string | undefined, policy: HeaderPolicy, auditId?: string): OutgoingHeaders {
  return requestHeaders(incoming, identity, forwardedFor, policy, auditId, 'text');
}

/**
 * upstreamRequestHeaders in the form Node's HTTP clients write byte for byte. undici, node:http
 * and node:http2 all write a header string one byte per character (Latin-1): a client's own
 * values are such strings already (Node's parsers read them so), but the identity is text, and
 * "José" would go out as the Latin-1 byte E9 (another user to the apiserver, which reads UTF-8)
 * and a character above U+00FF would be refused by undici and node:http or cut to its low byte
 * by node:http2. So the identity values become their UTF-8 bytes, one character per byte.
 */
export function upstreamWireHeaders(incoming: HeaderRecord, identity: Identity, forwardedFor: string | undefined, policy: HeaderPolicy, auditId?: string): OutgoingHeaders {
  return requestHeaders(incoming, identity, forwardedFor, policy, auditId, 'wire');
}

function requestHeaders(incoming: HeaderRecord, identity: Identity, forwardedFor: string | undefined, policy: HeaderPolicy, auditId: string | undefined, form: keyof IdentityHeaders): OutgoingHeaders {
  const out: OutgoingHeaders = {};
  const named = connectionNamedHeaders(incoming.connection);
  // 'client-token' (--token-passthrough): the client's token is the credential, for the apiserver
  // to check. It goes with no X-Remote-* header at all (the client's are removed as always, and the
  // proxy states no identity), over a connection without the front-proxy certificate (forward.ts,
  // upgrade.ts). 'front-proxy': the proxy vouches for the user, and a token the client also sent
  // (in Authorization or a WebSocket subprotocol) is dropped, so it can never speak for the request.
  const clientToken = identity.upstreamAuth === 'client-token';
  // Read once: a refresh replaces the whole object, never a part of one in use.
  const trusted = policy.apiserverTrusted;
  for (const [rawName, value] of Object.entries(incoming)) {
    if (value === undefined) continue;
    const name = rawName.toLowerCase();
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) describe this hop's request line.
    if (name.charCodeAt(0) === 0x3a /* : */) continue;
    if (clientToken && name === 'authorization') {
      // The auth step took it for a bearer token the apiserver reads as one (auth/token-passthrough.ts bearerToken).
      out[name] = value;
      continue;
    }
    if (HOP_BY_HOP.has(name) || named.has(name) || isIdentityOrCredentialHeader(name) || CLIENT_ADDRESS_CLAIMS.has(name)) continue;
    if (trusted !== undefined && isTrustedHeader(trusted, name)) continue;
    if (!policy.allowImpersonation && name.startsWith('impersonate-')) continue;
    if (name === 'sec-websocket-protocol' && !clientToken) {
      const kept = withoutBearerSubprotocols(value);
      if (kept !== undefined) out[name] = kept;
      continue;
    }
    out[name] = value;
  }
  // The request's ID (the client's safe Audit-ID or the proxy's own): the apiserver adopts it as
  // its audit event's auditID. It replaces the client's own header (kept only if safe, as this ID).
  if (auditId !== undefined) out['audit-id'] = auditId;
  if (!clientToken) Object.assign(out, identityHeaders(identity)[form]);
  if (forwardedFor) out['x-forwarded-for'] = forwardedFor;
  return out;
}

/** X-Remote-User, -Group and -Extra-* of one identity, as text and as the wire carries them. */
interface IdentityHeaders {
  readonly text: Readonly<OutgoingHeaders>;
  readonly wire: Readonly<OutgoingHeaders>;
}

/**
 * Made once per identity, which is never changed once made and serves many requests: a
 * certificate's verdict is kept per connection and a password's in the verified-credential
 * cache. Frozen, values too: every request shares them.
 */
const identityHeaderCache = new WeakMap<Identity, IdentityHeaders>();

function identityHeaders(identity: Identity): IdentityHeaders {
  const known = identityHeaderCache.get(identity);
  if (known) return known;
  const text: OutgoingHeaders = { 'x-remote-user': identity.user };
  if (identity.groups.length > 0) text['x-remote-group'] = [...identity.groups];
  for (const [key, values] of Object.entries(identity.extra)) {
    if (values.length > 0) text[`x-remote-extra-${escapeExtraKey(key)}`] = [...values];
  }
  // Nearly every identity is ASCII, whose Latin-1 and UTF-8 bytes are the same: one object serves both.
  const wire = isAsciiIdentity(identity) ? text : Object.fromEntries(Object.entries(text).map(([name, value]) => [name, Array.isArray(value) ? value.map(utf8Bytes) : utf8Bytes(value)]));
  for (const headers of new Set([text, wire])) for (const value of Object.values(headers)) Object.freeze(value);
  const made = { text: Object.freeze(text), wire: Object.freeze(wire) };
  identityHeaderCache.set(identity, made);
  return made;
}

/**
 * Sec-WebSocket-Protocol without its bearer-token subprotocols (undefined when none is left):
 * outside --token-passthrough a token must not reach the apiserver, whose union of authenticators
 * would never read it after X-Remote-User but would pass it on (to a kubelet, an aggregated API).
 */
export function withoutBearerSubprotocols(value: string | string[]): string | string[] | undefined {
  // Nothing to remove: the client's lines as they were.
  if (!(Array.isArray(value) ? value : [value]).some((line) => line.includes(WEBSOCKET_BEARER_PREFIX))) return value;
  const kept = (Array.isArray(value) ? value : [value])
    .flatMap((line) => line.split(','))
    .map((p) => p.trim())
    .filter((p) => p !== '' && !p.startsWith(WEBSOCKET_BEARER_PREFIX));
  return kept.length > 0 ? kept.join(', ') : undefined;
}

const ASCII = /^[\x00-\x7f]*$/;

/** Whether every string the identity headers carry (user, groups, extra keys and values) is ASCII. */
function isAsciiIdentity(identity: Identity): boolean {
  if (!ASCII.test(identity.user)) return false;
  for (const group of identity.groups) if (!ASCII.test(group)) return false;
  for (const key in identity.extra) {
    if (!ASCII.test(key)) return false;
    for (const value of identity.extra[key]!) if (!ASCII.test(value)) return false;
  }
  return true;
}

function utf8Bytes(text: string): string {
  return ASCII.test(text) ? text : Buffer.from(text, 'utf8').toString('latin1');
}

/**
 * The longest client-sent Audit-ID kept. kube-apiserver keeps any non-empty value whole in its
 * audit event (endpoints/filters/audit_init.go) but cuts it to 64 characters in its own log lines
 * (audit.GetAuditIDTruncated, maxAuditIDLength): longer, and the apiserver's logs and audit
 * events would name one request by two IDs. A UUID is 36.
 */
export const MAX_AUDIT_ID_LENGTH = 64;

// Visible ASCII, no space: a value the apiserver takes as it is (Go trims spaces at the ends),
// that needs no escaping in a log line, and that cannot be two lines joined: Node joins a repeated
// header's values with ", ", so a repeated Audit-ID always has a space and is refused here.
const SAFE_AUDIT_ID = /^[\x21-\x7e]{1,64}$/;

/**
 * The client's Audit-ID request header if it is safe to adopt as the request's ID (one value,
 * 1 to MAX_AUDIT_ID_LENGTH visible ASCII characters); undefined otherwise, and then the proxy
 * uses its own ID (a random UUID, the form the apiserver generates).
 */
export function clientAuditId(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && value.length <= MAX_AUDIT_ID_LENGTH && SAFE_AUDIT_ID.test(value) ? value : undefined;
}

/** Response headers to relay to the client: everything but the hop-by-hop ones. */
export function downstreamResponseHeaders(incoming: HeaderRecord): OutgoingHeaders {
  const out: OutgoingHeaders = {};
  const named = connectionNamedHeaders(incoming.connection);
  for (const [rawName, value] of Object.entries(incoming)) {
    if (value === undefined) continue;
    const name = rawName.toLowerCase();
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) describe this hop's request line.
    if (name.charCodeAt(0) === 0x3a /* : */) continue;
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * downstreamResponseHeaders of an answer as undici hands it over: header lines as name and value
 * pairs of bytes, `lowerName` giving a name in lower case. One object made instead of two (undici's
 * parseHeaders, then the filter), on the path of every plain read.
 */
export function downstreamResponseHeadersOfLines(lines: readonly Buffer[], lowerName: (name: Buffer) => string): OutgoingHeaders {
  const out: OutgoingHeaders = {};
  let connection: string[] | undefined;
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const name = lowerName(lines[i]!);
    const value = lines[i + 1]!.toString('latin1');
    if (HOP_BY_HOP.has(name)) {
      if (name === 'connection') (connection ??= []).push(value);
      continue;
    }
    // hasOwn: a header named "constructor" must not find Object.prototype's; "__proto__" is defined, not set.
    const seen = Object.hasOwn(out, name) ? out[name] : undefined;
    const joined = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value];
    if (name === '__proto__') Object.defineProperty(out, name, { value: joined, enumerable: true, configurable: true, writable: true });
    else out[name] = joined;
  }
  if (connection) for (const name of connectionNamedHeaders(connection)) delete out[name];
  return out;
}

const NONE: ReadonlySet<string> = new Set();

function connectionNamedHeaders(connection: string | string[] | undefined): ReadonlySet<string> {
  // Nearly every request and answer names none: no Set to make.
  if (connection === undefined) return NONE;
  const names = new Set<string>();
  for (const value of Array.isArray(connection) ? connection : connection ? [connection] : []) {
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name) names.add(name);
    }
  }
  return names;
}

// Node joins a repeated request header into one "a, b" string, over HTTP/1.1 and HTTP/2 alike
// (Impersonate-Group sent twice by `kubectl --as-group a --as-group b` would reach the apiserver
// as one group "a, b"); rawHeaders keeps every line. Some headers Node keeps only the first of,
// so there is nothing to restore for them: HTTP/1.1's (node:_http_incoming matchKnownFields)...
const SINGLE_VALUED = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);
// ...and HTTP/2's (node:internal/http2/util kSingleValueHeaders, which node:http2 also refuses to
// send twice), plus Cookie, whose HTTP/2 fields must be joined with "; " for HTTP/1.1 (RFC 9113
// 8.2.3), as Node does.
const SINGLE_VALUED_HTTP2 = new Set([
  ...SINGLE_VALUED,
  'access-control-allow-credentials',
  'access-control-max-age',
  'access-control-request-method',
  'content-encoding',
  'content-language',
  'content-location',
  'content-md5',
  'content-range',
  'date',
  'dnt',
  'if-match',
  'if-none-match',
  'if-range',
  'range',
  'tk',
  'upgrade-insecure-requests',
  'x-content-type-options',
  'cookie',
]);

/** What withRepeatedHeaders reads of Node's request (IncomingMessage or Http2ServerRequest). */
export interface ReceivedHeaders {
  rawHeaders: string[];
  headers: HeaderRecord;
  /** 2 for an HTTP/2 request. */
  httpVersionMajor?: number;
  /** Not read (HTTP/2 requests have none); rawHeaders serves both protocols. */
  headersDistinct?: Record<string, string[] | undefined>;
}

/** Replaces joined values with the separate lines the client sent. */
export function withRepeatedHeaders(headers: HeaderRecord, received: ReceivedHeaders): HeaderRecord {
  const raw = received.rawHeaders;
  // As many header lines as names: nothing was joined.
  if (raw.length / 2 === Object.keys(received.headers).length) return headers;
  const single = received.httpVersionMajor === 2 ? SINGLE_VALUED_HTTP2 : SINGLE_VALUED;
  const lines = new Map<string, string[]>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const values = lines.get(name);
    if (values) values.push(raw[i + 1]!);
    else lines.set(name, [raw[i + 1]!]);
  }
  let out: HeaderRecord | undefined;
  for (const [name, values] of lines) {
    // hasOwn, not `headers[name]`: a header named "constructor" must not find Object.prototype's.
    if (values.length < 2 || single.has(name) || !Object.hasOwn(headers, name)) continue;
    out ??= { ...headers };
    out[name] = values;
  }
  return out ?? headers;
}

// RFC 9110 token characters: what may stand in a header name unescaped. '%' is escaped too,
// because the apiserver path-unescapes the key (k8s.io/apiserver headerrequest).
const TOKEN_CHARS = "!#$&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const IS_TOKEN_BYTE = new Uint8Array(128);
for (let i = 0; i < TOKEN_CHARS.length; i++) IS_TOKEN_BYTE[TOKEN_CHARS.charCodeAt(i)] = 1;

/** Percent-encodes an extra key byte by byte, as client-go's headerKeyEscape does. */
export function escapeExtraKey(key: string): string {
  let out = '';
  // A table, not a regex test per byte: a certificate identity's credential-id key is 40 bytes.
  for (const byte of Buffer.from(key, 'utf8')) out += byte < 0x80 && IS_TOKEN_BYTE[byte] === 1 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}
