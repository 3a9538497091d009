// The front-proxy header contract, in one pure function (after client-go's
// SetAuthProxyHeaders): delete every identity header the client sent, in any case and any
// number, plus its credentials and hop-by-hop headers; then state who the user is.

import type { Identity } from '../auth/identity.js';

export type HeaderRecord = Record<string, string | string[] | undefined>;
export type OutgoingHeaders = Record<string, string | string[]>;

export interface HeaderPolicy {
  /** Pass Impersonate-* on for the apiserver to authorize; false drops them. */
  allowImpersonation: boolean;
}

// Hop-by-hop (RFC 9110 §7.6.1) and framing headers: they describe one connection, not the
// message. undici refuses `transfer-encoding` and `expect` outright.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

/** Headers the apiserver reads as identity or the proxy consumes as credentials. */
export function isIdentityOrCredentialHeader(lowerName: string): boolean {
  return (
    lowerName === 'x-remote-user' ||
    lowerName === 'x-remote-uid' ||
    lowerName === 'x-remote-group' ||
    lowerName.startsWith('x-remote-extra-') ||
    lowerName === 'authorization' ||
    lowerName === 'proxy-authorization'
  );
}

/**
 * The request headers to send upstream. `forwardedFor` replaces the client's X-Forwarded-For:
 * the apiserver records it as the audit source IP, so only a trusted proxy's chain may extend it. `incoming` has lower-case names (as Node gives them);
 * repeated headers must already be arrays (see `withRepeatedHeaders`).
 */
export function upstreamRequestHeaders(incoming: HeaderRecord, identity: Identity, forwardedFor: string | undefined, policy: HeaderPolicy): OutgoingHeaders {
  const out: OutgoingHeaders = {};
  const named = connectionNamedHeaders(incoming.connection);
  for (const [rawName, value] of Object.entries(incoming)) {
    if (value === undefined) continue;
    const name = rawName.toLowerCase();
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) describe this hop's request line.
    if (name.charCodeAt(0) === 0x3a /* : */) continue;
    if (HOP_BY_HOP.has(name) || named.has(name) || isIdentityOrCredentialHeader(name) || name === 'x-forwarded-for') continue;
    if (!policy.allowImpersonation && name.startsWith('impersonate-')) continue;
    out[name] = value;
  }
  out['x-remote-user'] = identity.user;
  if (identity.groups.length > 0) out['x-remote-group'] = [...identity.groups];
  for (const [key, values] of Object.entries(identity.extra)) {
    if (values.length > 0) out[`x-remote-extra-${escapeExtraKey(key)}`] = [...values];
  }
  if (forwardedFor) out['x-forwarded-for'] = forwardedFor;
  return out;
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

function connectionNamedHeaders(connection: string | string[] | undefined): Set<string> {
  const names = new Set<string>();
  for (const value of Array.isArray(connection) ? connection : connection ? [connection] : []) {
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name) names.add(name);
    }
  }
  return names;
}

// Node joins a repeated request header into one "a, b" string (Impersonate-Group sent twice
// by `kubectl --as-group a --as-group b` would reach the apiserver as one group "a, b").
// These are the headers Node keeps only one of, so there is nothing to restore for them.
const SINGLE_VALUED = new Set(['age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host', 'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent']);

/** What withRepeatedHeaders reads of Node's request. */
export interface ReceivedHeaders {
  rawHeaders: string[];
  headers: HeaderRecord;
  headersDistinct: Record<string, string[] | undefined>;
}

/** Replaces joined values with the separate lines the client sent. */
export function withRepeatedHeaders(headers: HeaderRecord, received: ReceivedHeaders): HeaderRecord {
  // As many header lines as names: nothing was joined. Checked first because Node builds
  // headersDistinct anew, an array per header, on every read.
  if (received.rawHeaders.length / 2 === Object.keys(received.headers).length) return headers;
  let out: HeaderRecord | undefined;
  for (const [name, values] of Object.entries(received.headersDistinct)) {
    if (values === undefined) continue;
    // hasOwn, not `headers[name]`: a header named "constructor" must not find Object.prototype's.
    if (values.length < 2 || SINGLE_VALUED.has(name) || !Object.hasOwn(headers, name)) continue;
    out ??= { ...headers };
    out[name] = values;
  }
  return out ?? headers;
}

// RFC 9110 token characters: what may stand in a header name unescaped. '%' is escaped too,
// because the apiserver path-unescapes the key (k8s.io/apiserver headerrequest).
const TOKEN_BYTE = /^[!#$&'*+\-.^_`|~0-9A-Za-z]$/;

/** Percent-encodes an extra key byte by byte, as client-go's headerKeyEscape does. */
export function escapeExtraKey(key: string): string {
  let out = '';
  for (const byte of Buffer.from(key, 'utf8')) {
    const char = String.fromCharCode(byte);
    out += byte < 0x80 && TOKEN_BYTE.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
