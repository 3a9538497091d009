// A kube-apiserver stand-in for the tests, the benchmark and the demo; never shipped (README.md
// here says what it holds to). It authenticates the way k8s.io/apiserver does (v1.34), so a
// proxy that passes against it passes against a real cluster:
//
//   union( requestheader: x509request.Verifier(front-proxy CA, allowed names) + headerrequest,
//          x509: client CA -> CN user, O groups,
//          bearertoken + websocket protocol: `tokens` (static, like --token-auth-file) )
//   -> AuthenticatedGroupAdder (system:authenticated)
//   -> FailOnError(..., anonymous)
//
// The union collects errors and moves on; if nothing authenticated the request and any
// authenticator failed, the answer is 401, never anonymous. Like Go's server (secure_serving.go:
// tls.RequestClientCert) the TLS handshake accepts any client certificate; verification happens
// per request in the authenticators, which is why a certificate from an unknown CA gets a 401
// Status rather than a TLS alert.
//
// Streaming subresources (pods/exec, pods/attach, pods/portforward) answer kubectl 1.32 as a
// real cluster does: WebSocket first (v5.channel.k8s.io; SPDY/3.1+portforward.k8s.io), SPDY/3.1
// after a refusal; see k8s-streams.ts. Authorization is RBAC-like for them only: the user "bob"
// and the group "viewers" may read pods but not create pods/exec, pods/attach, pods/portforward.
// Every non-101 answer to an upgrade request is an ordinary HTTP response with a Status body,
// followed by closing the connection.
//
// Identity is read as Go reads it, not as Node does. A client certificate's subject is Go's
// (crypto/x509 parseName + pkix FillFromRDNSequence: the last CN, every O, string types checked;
// a certificate Go cannot parse fails the TLS handshake), with the Kubernetes UID attribute of
// AllowParsingUserUIDFromCertAuth (on since 1.33; the LDAP UID attribute is ignored). Header values are bytes, read as UTF-8 (Node's
// parsers give them as Latin-1 strings, one character per byte); HTTP/1.1 values are trimmed of SP
// and HTAB and a control byte is a 400 in Node as in Go (net/textproto); over HTTP/2 a control
// byte other than HTAB resets the stream, as golang.org/x/net/http2 does. One difference stays:
// Node's HTTP/2 server drops a field whose value starts or ends with SP or HTAB, where Go keeps it
// untrimmed.
import { createHash, randomUUID, X509Certificate } from 'node:crypto';
import { ServerResponse, type IncomingMessage } from 'node:http';
import { createSecureServer } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { HEALTH_CHECK_USER } from '../src/upstream/health.js';
import { PREFLIGHT_USER } from '../src/upstream/preflight.js';
import {
  ECHO_PORTS,
  echoTunnel,
  parseExecQuery,
  PORT_FORWARD_PROTOCOL,
  PORT_FORWARD_TUNNEL_PROTOCOL,
  serveExecSpdy,
  serveExecWebSocket,
  servePortForwardSpdy,
  spdyOnSocket,
  spdyOverWebSocket,
  STREAM_PROTOCOL_V4,
  STREAM_PROTOCOL_V5,
  webSocketAccept,
} from './k8s-streams.js';

export interface ApiServerOptions {
  /** Serving certificate and key, PEM. */
  cert: string;
  key: string;
  /** --requestheader-client-ca-file (PEM). */
  requestHeaderCA: string;
  /** --requestheader-allowed-names; default ['front-proxy-client']; [] = any CN. */
  allowedNames?: string[];
  /** --client-ca-file (PEM): direct x509 users, CN = user, each O = group. */
  clientCA?: string;
  host?: string;
  port?: number;
  /** Pods per namespace in lists (default 3). */
  pods?: number;
  /**
   * Accept WebSocket for exec/attach/port-forward (default true, or false when the environment
   * has KFP_STANDIN_WEBSOCKET_EXEC=false). When false such upgrades get 400 BadRequest, as from
   * an apiserver without WebSocket streaming, and kubectl falls back to SPDY/3.1.
   */
  websocketExec?: boolean;
  /**
   * Bearer tokens the apiserver's token authenticators accept (like --token-auth-file or
   * ServiceAccount tokens): token -> user. Read from `Authorization: Bearer` and from a WebSocket
   * upgrade's `base64url.bearer.authorization.k8s.io.` subprotocol, after requestheader and x509
   * found nobody, as the real union does. Default: none.
   */
  tokens?: Record<string, { username: string; groups?: string[] }>;
  /**
   * --requestheader-username-headers, -group-headers, -extra-headers-prefix, -uid-headers:
   * the names the requestheader authenticator reads (any case) and the ConfigMap publishes.
   * Default: kubeadm's X-Remote-User, X-Remote-Group, X-Remote-Extra- and no UID header.
   */
  requestHeaders?: RequestHeaderNames;
  /** The proxy's PREFLIGHT_USER may not read the ConfigMap (no RoleBinding): 403, as RBAC would. */
  preflightForbidden?: boolean;
  /**
   * Services behind the apiserver's service proxy (/api/v1/namespaces/NS/services/NAME/proxy/...),
   * "NS/NAME" -> the backend's answer. The real apiserver authenticates and authorizes the caller,
   * then relays whatever the backend answers, a backend's own 401 included. Default: none (404).
   */
  serviceBackends?: Record<string, ServiceBackendAnswer>;
}

/** What a service behind the service proxy answers every request with. */
export interface ServiceBackendAnswer {
  status: number;
  headers?: Record<string, string>;
  body: string;
  /**
   * A streaming backend (server-sent events, say): its headers go out at once, without a length,
   * and its body only once this settles.
   */
  bodyAfter?: Promise<void>;
}

export interface RequestHeaderNames {
  username?: string[];
  group?: string[];
  extraPrefix?: string[];
  uid?: string[];
}

const KUBEADM_REQUEST_HEADERS: Required<RequestHeaderNames> = { username: ['X-Remote-User'], group: ['X-Remote-Group'], extraPrefix: ['X-Remote-Extra-'], uid: [] };

export interface UserInfo {
  username: string;
  /** Set only when there is one (a certificate's UID attribute). */
  uid?: string;
  groups: string[];
  extra: Record<string, string[]>;
}

/** 'rejected' = an authenticator failed and none succeeded: answered 401. */
export type AuthnMethod = 'requestheader' | 'x509' | 'token' | 'anonymous' | 'rejected';

export interface SeenRequest {
  method: string;
  /** The request target exactly as received. */
  url: string;
  /** Header pairs as received: case, order and repetition preserved. */
  rawHeaders: [string, string][];
  authn: AuthnMethod;
  /** null for anonymous and rejected requests. */
  user: UserInfo | null;
  /** CN of the TLS client certificate, whether or not it verified. */
  peerCN: string | null;
  /** "1.1" or "2.0": what the client (the proxy) chose. */
  httpVersion?: string;
  /** The audit ID this request got (what the real apiserver would write as the audit event's auditID). */
  auditId: string;
  bodyBytes: number;
  bodySha256: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ApiServer {
  url: string;
  port: number;
  /** Every request but the proxy's own reads below, in the order its body finished arriving. */
  requests: SeenRequest[];
  /**
   * The proxy's own start-up reads of the authentication ConfigMap (as PREFLIGHT_USER), kept out
   * of `requests`: those are what tests count as forwarded, and this read races with them.
   */
  preflightReads: SeenRequest[];
  /**
   * The proxy's health checks (GET /readyz as HEALTH_CHECK_USER, every --health-interval), kept
   * out of `requests`: they arrive on their own clock, between a test's request and its assertion.
   */
  healthChecks: SeenRequest[];
  openWatches(): number;
  /**
   * Written to every open watch (a Pod becomes a Table row where the watch asked for one).
   * Returns false when some watch's socket buffer is full: a back-pressure probe.
   */
  sendWatchEvent(type: WatchEventType, object: object): boolean;
  /** Ends every open watch response cleanly (terminating chunk). */
  closeWatches(): void;
  /** Upgraded connections (exec, attach, port-forward, /test/upgrade-echo) still open. */
  openUpgrades(): number;
  /** Stops listening and destroys every socket at once, upgraded ones included. */
  close(): Promise<void>;
  /** As if restarted with other --requestheader-*-headers flags: authenticator and ConfigMap both. */
  setRequestHeaders(names: RequestHeaderNames): void;
  /**
   * As if restarted with another --requestheader-allowed-names ([] = any CN): authenticator and
   * ConfigMap both, from the next request on (open connections stay open).
   */
  setAllowedNames(names: string[]): void;
}

const ANONYMOUS: UserInfo = {
  username: 'system:anonymous',
  groups: ['system:unauthenticated'],
  extra: {},
};
// ClusterRole system:public-info-viewer, bound to system:unauthenticated.
const PUBLIC_PATHS = new Set(['/healthz', '/livez', '/readyz', '/version', '/version/']);
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const RESOURCE_VERSION = '1000';
// Objects were "created" an hour before the module loaded (RFC 3339, whole seconds, as kube).
const CREATED = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
const TABLE_CONTENT_TYPE = 'application/json;as=Table;v=v1;g=meta.k8s.io';

// ---------------------------------------------------------------------------------------------
// Authentication

/** What the certificate on one TLS connection proves; computed once per connection. */
interface PeerCertificate {
  cn: string | null;
  organizations: string[];
  /** UID attribute values (parseUIDFromCert). */
  uids: string[];
  /** SHA-256 of the DER, hex: the x509 authenticator's credential id. */
  fingerprint: string;
  /** Verified (chain, validity, purpose) and issued by the requestheader CA. */
  requestHeaderCA: boolean;
  clientCA: boolean;
  /** Why verification failed, for the error list. */
  verifyError: string;
}

interface Authentication {
  authn: AuthnMethod;
  user: UserInfo | null;
  errors: string[];
}

// ---- Go's crypto/x509 reading of a certificate's names (parser.go parseName, parseASN1String).

interface Der {
  tag: number;
  body: Buffer;
}

/** The DER elements in `buf`, in order; throws on what Go's cryptobyte refuses. */
function derList(buf: Buffer): Der[] {
  const out: Der[] = [];
  let i = 0;
  while (i < buf.length) {
    const tag = buf[i++]!;
    if ((tag & 0x1f) === 0x1f || i >= buf.length) throw new Error('bad element');
    let len = buf[i++]!;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4 || i + n > buf.length || buf[i] === 0) throw new Error('bad length');
      len = buf.subarray(i, i + n).reduce((a, b) => a * 256 + b, 0);
      if (len < 0x80) throw new Error('bad length');
      i += n;
    }
    if (i + len > buf.length) throw new Error('truncated');
    out.push({ tag, body: buf.subarray(i, i + len) });
    i += len;
  }
  return out;
}

const GO_PRINTABLE = /^[A-Za-z0-9 '()*+,\-./:=?&]*$/;

function goAsn1String({ tag, body }: Der): string {
  const latin1 = body.toString('latin1');
  if (tag === 0x14) return latin1; // T61String, as Latin-1
  if (tag === 0x13 && GO_PRINTABLE.test(latin1)) return latin1;
  if (tag === 0x16 && !/[^\x00-\x7f]/.test(latin1)) return latin1; // IA5String
  if (tag === 0x12 && /^[0-9 ]*$/.test(latin1)) return latin1; // NumericString
  if (tag === 0x0c) return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body); // throws unless UTF-8
  if (tag === 0x1e && body.length % 2 === 0) {
    const units = body.length >= 2 && body.readUInt16BE(body.length - 2) === 0 ? body.length - 2 : body.length;
    const points = Array.from({ length: units / 2 }, (_, k) => body.readUInt16BE(2 * k));
    if (points.every((p) => p !== 0xfffe && p !== 0xffff && !(p >= 0xfdd0 && p <= 0xfdef) && !(p >= 0xd800 && p <= 0xdfff))) return String.fromCharCode(...points);
  }
  throw new Error(`invalid or unsupported string (tag ${tag})`);
}

// DER contents of the attribute types the x509 authenticator reads.
const OID_CN = '550403';
const OID_O = '55040a';
// Kubernetes' UID attribute, 1.3.6.1.4.1.57683.2 (apimachinery asn1.X509UID), as DER content bytes.
const OID_UID = '2b0601040183c25302';

/** pkix.Name's CommonName (the last CN), Organization and the UID values, as Go fills them. */
function goSubject(raw: Buffer): { cn: string; organizations: string[]; uids: string[] } {
  const [cert] = derList(raw);
  const tbs = derList(derList(cert!.body)[0]!.body);
  const fields = tbs[0]!.tag === 0xa0 ? tbs.slice(1) : tbs;
  // serial, signature, issuer, validity, subject: both names are parsed.
  const names = [fields[2]!, fields[4]!].map((name) =>
    derList(name.body).flatMap((set) =>
      derList(set.body).map((atv) => {
        const [type, value] = derList(atv.body);
        if (type?.tag !== 0x06 || value === undefined) throw new Error('bad attribute');
        return { oid: type.body.toString('hex'), value: goAsn1String(value) };
      }),
    ),
  );
  const subject = names[1]!;
  return {
    cn: subject.filter((a) => a.oid === OID_CN).at(-1)?.value ?? '',
    organizations: subject.filter((a) => a.oid === OID_O).map((a) => a.value),
    uids: subject.filter((a) => a.oid === OID_UID).map((a) => a.value),
  };
}

/** Whether Go's crypto/x509 parses the names of this certificate. */
function goParses(raw: Buffer): boolean {
  try {
    goSubject(raw);
    return true;
  } catch {
    return false;
  }
}

function issuedBy(cert: X509Certificate, ca: X509Certificate): boolean {
  return cert.checkIssued(ca) && cert.verify(ca.publicKey);
}

function inspectPeer(socket: TLSSocket, requestHeaderCA: X509Certificate, clientCA: X509Certificate | null): PeerCertificate | null {
  const peer = socket.getPeerCertificate();
  if (!peer || !peer.raw) return null;
  const cert = new X509Certificate(peer.raw);
  // Node verified the chain, the validity period and the TLS client purpose against `ca` (both
  // CAs); Go's Verify with KeyUsages [ClientAuth] checks the same. A missing EKU extension
  // means any usage, in both.
  const eku = cert.keyUsage as string[] | undefined;
  const purposeOk = !eku || eku.length === 0 || eku.includes(CLIENT_AUTH_OID);
  const verified = socket.authorized && purposeOk;
  // The connection was refused at the handshake (see 'secureConnection') if this throws.
  const subject = goSubject(peer.raw);
  return {
    cn: subject.cn,
    organizations: subject.organizations,
    uids: subject.uids,
    fingerprint: createHash('sha256').update(peer.raw).digest('hex'),
    requestHeaderCA: verified && issuedBy(cert, requestHeaderCA),
    clientCA: verified && clientCA !== null && issuedBy(cert, clientCA),
    verifyError: !purposeOk ? 'x509: certificate specifies an incompatible key usage' : String(socket.authorizationError ?? 'x509: certificate signed by unknown authority'),
  };
}

// url.PathUnescape: %XX decoded to bytes, '+' kept; a malformed escape keeps the key as sent.
function pathUnescape(s: string): string {
  if (/%(?![0-9a-fA-F]{2})/.test(s)) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '%') {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(s[i]!, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** A header value as Go holds it: Node's one-character-per-byte string, read as UTF-8. */
function goHeaderValue(latin1: string): string {
  return /[^\x00-\x7f]/.test(latin1) ? Buffer.from(latin1, 'latin1').toString('utf8') : latin1;
}

// headerrequest.requestHeaderAuthRequestHandler over the raw header lines (Go's http.Header keeps
// every line; Node's req.headers joins repeats with ", ").
function identityFromHeaders(rawHeaders: string[], names: Required<RequestHeaderNames> = KUBEADM_REQUEST_HEADERS): UserInfo | null {
  // Go's http.Header: canonical (case-insensitive) names, each line's value in order.
  const lines = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const lower = rawHeaders[i]!.toLowerCase();
    const values = lines.get(lower);
    const value = goHeaderValue(rawHeaders[i + 1]!);
    if (values) values.push(value);
    else lines.set(lower, [value]);
  }
  // headerValue: for each username header in flag order, h.Get (its FIRST value); the first
  // non-empty one is the user (a later non-empty line of the same header does not count).
  let username = '';
  for (const name of names.username) {
    const first = lines.get(name.toLowerCase())?.[0] ?? '';
    if (first.length > 0) {
      username = first;
      break;
    }
  }
  if (username.length === 0) return null;
  // allHeaderValues: every non-empty value of every group header, in flag order; each line is one
  // group, no comma splitting.
  const groups: string[] = [];
  for (const name of names.group) for (const value of lines.get(name.toLowerCase()) ?? []) if (value.length > 0) groups.push(value);
  let uid: string | undefined;
  for (const name of names.uid) {
    const first = lines.get(name.toLowerCase())?.[0] ?? '';
    if (first.length > 0) {
      uid = first;
      break;
    }
  }
  const extra: Record<string, string[]> = {};
  for (const prefix of names.extraPrefix.map((p) => p.toLowerCase())) {
    for (const [lower, values] of lines) {
      if (!lower.startsWith(prefix)) continue;
      // newExtra: lower-case first, then unescape; every value (even empty) appended.
      const key = pathUnescape(lower.slice(prefix.length));
      (extra[key] ??= []).push(...values);
    }
  }
  return uid === undefined ? { username, groups, extra } : { username, uid, groups, extra };
}

// group.AuthenticatedGroupAdder
function withAuthenticatedGroup(user: UserInfo): UserInfo {
  if (user.groups.includes('system:authenticated') || user.groups.includes('system:unauthenticated')) {
    return user;
  }
  return { ...user, groups: [...user.groups, 'system:authenticated'] };
}

const WEBSOCKET_BEARER_PREFIX = 'base64url.bearer.authorization.k8s.io.';

/**
 * bearertoken.Authenticator, then websocket.ProtocolAuthenticator (k8s.io/apiserver
 * authentication/request): undefined = no token here (the union moves on); a string = the token
 * to look up; an Error = a malformed one (a union error: 401).
 */
function requestToken(req: IncomingMessage): string | Error | undefined {
  // bearertoken: TrimSpace(Header.Get), SplitN(" ", 3), "bearer" in any case, a non-empty parts[1].
  const auth = (firstHeader(req.rawHeaders, 'authorization') ?? '').trim();
  if (auth !== '') {
    const parts = auth.split(' ');
    const token = parts.length >= 2 && parts[0]!.toLowerCase() === 'bearer' ? parts[1]! : '';
    if (token !== '') return token;
  }
  // websocket.ProtocolAuthenticator: only on a WebSocket upgrade (wsstream.IsWebSocketRequest).
  const upgrade = String(req.headers.upgrade ?? '').toLowerCase();
  const connection = String(req.headers.connection ?? '').toLowerCase();
  if (upgrade !== 'websocket' || !connection.split(',').some((t) => t.trim() === 'upgrade')) return undefined;
  let token = '';
  let seen = false;
  const others: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() !== 'sec-websocket-protocol') continue;
    for (const raw of req.rawHeaders[i + 1]!.split(',')) {
      const protocol = raw.trim();
      if (!protocol.startsWith(WEBSOCKET_BEARER_PREFIX)) {
        others.push(protocol);
        continue;
      }
      if (seen) return new Error('multiple base64.bearer.authorization tokens specified');
      seen = true;
      const encoded = protocol.slice(WEBSOCKET_BEARER_PREFIX.length);
      if (!/^[A-Za-z0-9_-]*$/.test(encoded) || encoded.length % 4 === 1) return new Error('invalid base64.bearer.authorization token encoding');
      token = Buffer.from(encoded, 'base64url').toString('utf8');
    }
  }
  if (token.length > 0 && others.length === 0) return new Error('missing additional subprotocol');
  return token.length > 0 ? token : undefined;
}

function authenticate(
  req: IncomingMessage,
  peer: PeerCertificate | null,
  allowedNames: string[],
  hasClientCA: boolean,
  tokens: Record<string, { username: string; groups?: string[] }> = {},
  headerNames: Required<RequestHeaderNames> = KUBEADM_REQUEST_HEADERS,
): Authentication {
  const errors: string[] = [];
  if (peer) {
    // requestheader: x509request.Verifier, then the header authenticator.
    if (!peer.requestHeaderCA) {
      errors.push(peer.verifyError);
    } else if (allowedNames.length > 0 && !allowedNames.includes(peer.cn ?? '')) {
      errors.push(`x509: subject with cn=${peer.cn ?? ''} is not in the allowed list`);
    } else {
      const user = identityFromHeaders(req.rawHeaders, headerNames);
      if (user) return { authn: 'requestheader', user: withAuthenticatedGroup(user), errors };
    }
    // x509 client certificates, present only with --client-ca-file.
    if (hasClientCA) {
      if (!peer.clientCA) {
        errors.push(`verifying certificate failed: ${peer.verifyError}`);
      } else if (peer.cn) {
        // parseUIDFromCert: one non-empty UID attribute is the UID; several or an empty one is an error.
        if (peer.uids.length > 1 || peer.uids[0] === '') {
          errors.push(peer.uids.length > 1 ? `expected 1 UID, but found multiple: [${peer.uids.join(' ')}]` : 'UID cannot be an empty string');
        } else {
          const user: UserInfo = {
            username: peer.cn,
            ...(peer.uids.length === 1 ? { uid: peer.uids[0] } : {}),
            groups: [...peer.organizations],
            extra: { 'authentication.kubernetes.io/credential-id': [`X509SHA256=${peer.fingerprint}`] },
          };
          return { authn: 'x509', user: withAuthenticatedGroup(user), errors };
        }
      }
    }
  }
  // The token authenticators come after requestheader and x509 in kube-apiserver's union: a token
  // counts only when neither found a user (a front-proxy connection without X-Remote-User).
  const token = requestToken(req);
  if (token instanceof Error) errors.push(token.message);
  else if (token !== undefined) {
    const found = Object.hasOwn(tokens, token) ? tokens[token] : undefined;
    if (!found) errors.push('invalid bearer token');
    else return { authn: 'token', user: withAuthenticatedGroup({ username: found.username, groups: [...(found.groups ?? [])], extra: {} }), errors };
  }
  if (errors.length > 0) return { authn: 'rejected', user: null, errors };
  return { authn: 'anonymous', user: null, errors };
}

// ---------------------------------------------------------------------------------------------
// Responses

interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  details?: { name?: string; group?: string; kind?: string };
  code: number;
}

const reasons: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  406: 'NotAcceptable',
  409: 'Conflict',
  410: 'Expired',
  413: 'RequestEntityTooLarge',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

function status(code: number, message: string, details?: Status['details']): Status {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: reasons[code] ?? 'Unknown',
    ...(details ? { details } : {}),
    code,
  };
}

function sendJson(res: ServerResponse, code: number, body: unknown, contentType = 'application/json'): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(code, { 'Content-Type': contentType, 'Content-Length': data.length });
  res.end(data);
}

function sendText(res: ServerResponse, code: number, text: string): void {
  res.writeHead(code, {
    'Content-Type': 'text/plain; charset=utf-8',
    'X-Content-Type-Options': 'nosniff',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

// ---------------------------------------------------------------------------------------------
// Request info

interface Target {
  pathname: string;
  searchParams: URLSearchParams;
}

// Split the request target by hand: WHATWG URL parsing would resolve "..", and read "//x" as a
// host. Like Go's URL.Path, the path is percent-decoded before it is split into segments.
function parseTarget(target: string): Target {
  const q = target.indexOf('?');
  const rawPath = q === -1 ? target : target.slice(0, q);
  let pathname = rawPath;
  try {
    pathname = decodeURIComponent(rawPath);
  } catch {
    // Go would answer 400 for a malformed escape; routing on the raw text reaches a 404 instead.
  }
  return { pathname, searchParams: new URLSearchParams(q === -1 ? '' : target.slice(q + 1)) };
}

// A small RequestInfoFactory: enough for authorization messages and routing.

interface RequestInfo {
  resource: boolean;
  verb: string;
  path: string;
  group: string;
  version: string;
  namespace: string;
  kind: string; // the resource, e.g. "pods"
  name: string;
  subresource: string;
}

function requestInfo(method: string, path: string, query: URLSearchParams): RequestInfo {
  const parts = path.split('/').filter((p) => p.length > 0);
  const info: RequestInfo = {
    resource: false,
    verb: method.toLowerCase(),
    path,
    group: '',
    version: '',
    namespace: '',
    kind: '',
    name: '',
    subresource: '',
  };
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) {
    info.version = parts[1]!;
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    info.group = parts[1]!;
    info.version = parts[2]!;
    rest = parts.slice(3);
  } else {
    return info;
  }
  info.resource = true;
  if (rest[0] === 'namespaces' && rest.length > 2) {
    info.namespace = rest[1]!;
    rest = rest.slice(2);
  } else if (rest[0] === 'namespaces' && rest.length === 2) {
    info.namespace = rest[1]!;
  }
  info.kind = rest[0] ?? '';
  info.name = rest[1] ?? '';
  info.subresource = rest.slice(2).join('/');
  const watch = query.get('watch');
  const isWatch = watch === 'true' || watch === '1';
  switch (method) {
    case 'GET':
    case 'HEAD':
      info.verb = isWatch ? 'watch' : info.name ? 'get' : 'list';
      break;
    case 'POST':
      info.verb = 'create';
      break;
    case 'PUT':
      info.verb = 'update';
      break;
    case 'PATCH':
      info.verb = 'patch';
      break;
    case 'DELETE':
      info.verb = info.name ? 'delete' : 'deletecollection';
      break;
  }
  // A WebSocket GET of exec/attach/portforward is authorized as "create" as well
  // (AuthorizePodWebsocketUpgradeCreatePermission, on by default since 1.30).
  if (isStreaming(info)) info.verb = 'create';
  return info;
}

const STREAMING_SUBRESOURCES = new Set(['exec', 'attach', 'portforward']);

function isStreaming(info: RequestInfo): boolean {
  return info.resource && info.group === '' && info.kind === 'pods' && info.namespace !== '' && info.name !== '' && STREAMING_SUBRESOURCES.has(info.subresource);
}

// The only RBAC rules modelled beyond anonymous access: "bob" and the group "viewers" hold the
// view ClusterRole, which grants no pods/exec, pods/attach or pods/portforward.
function authorized(user: UserInfo, info: RequestInfo): boolean {
  const viewer = user.username === 'bob' || user.groups.includes('viewers');
  return !(viewer && isStreaming(info));
}

// The RBAC authorizer's denial text.
function forbidden(user: UserInfo, info: RequestInfo): Status {
  if (!info.resource) {
    return status(403, `forbidden: User "${user.username}" cannot ${info.verb} path "${info.path}"`, {});
  }
  const gr = info.group ? `${info.kind}.${info.group}` : info.kind;
  const resource = info.subresource ? `${info.kind}/${info.subresource}` : info.kind;
  const scope = info.namespace ? `in the namespace "${info.namespace}"` : 'at the cluster scope';
  const subject = info.name ? `${gr} "${info.name}"` : gr;
  return status(403, `${subject} is forbidden: User "${user.username}" cannot ${info.verb} resource ` + `"${resource}" in API group "${info.group}" ${scope}`, {
    ...(info.name ? { name: info.name } : {}),
    ...(info.group ? { group: info.group } : {}),
    kind: info.kind,
  });
}

// ---------------------------------------------------------------------------------------------
// Objects

export type Pod = {
  kind: 'Pod';
  apiVersion: 'v1';
  metadata: { name: string; namespace?: string; creationTimestamp?: string; [k: string]: unknown };
  spec?: object;
  status?: {
    phase?: string;
    containerStatuses?: { ready?: boolean; restartCount?: number; [k: string]: unknown }[];
    [k: string]: unknown;
  };
};

/** A Pod as the stand-in lists it (exported for callers of sendWatchEvent). */
export function makePod(namespace: string, name: string, index: number): Pod {
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name,
      namespace,
      uid: `00000000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`,
      resourceVersion: RESOURCE_VERSION,
      creationTimestamp: CREATED,
      labels: { app: 'demo' },
    },
    spec: {
      nodeName: 'node-1',
      containers: [
        {
          name: 'app',
          image: 'registry.k8s.io/pause:3.10',
          ports: ECHO_PORTS.map((containerPort) => ({ name: 'http', containerPort, protocol: 'TCP' })),
        },
      ],
    },
    status: {
      phase: 'Running',
      podIP: `10.244.0.${(index % 250) + 2}`,
      containerStatuses: [
        {
          name: 'app',
          image: 'registry.k8s.io/pause:3.10',
          ready: true,
          started: true,
          restartCount: 0,
          state: { running: { startedAt: CREATED } },
        },
      ],
    },
  };
}

const column = (name: string, description: string, format = '') => ({ name, type: 'string', format, description, priority: 0 }) as const;
const podColumns = [
  column('Name', 'Name must be unique within a namespace.', 'name'),
  column('Ready', 'The aggregate readiness state of this pod for accepting traffic.'),
  column('Status', 'The aggregate status of the containers in this pod.'),
  column('Restarts', 'The number of times the containers in this pod have been restarted.'),
  column('Age', 'CreationTimestamp is a timestamp representing the server time when this object was created.'),
];

function isPod(o: object): o is Pod {
  const p = o as Partial<Pod>;
  return p.kind === 'Pod' && typeof p.metadata?.name === 'string';
}

// The server-side printing kubectl asks for (Accept: application/json;as=Table;v=v1;g=meta.k8s.io).
function podTable(pods: Pod[]): object {
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion: RESOURCE_VERSION },
    columnDefinitions: podColumns,
    rows: pods.map((pod) => {
      const statuses = pod.status?.containerStatuses ?? [];
      const ready = statuses.filter((c) => c.ready).length;
      const restarts = statuses.reduce((n, c) => n + (c.restartCount ?? 0), 0);
      return {
        cells: [pod.metadata.name, `${ready}/${statuses.length}`, pod.status?.phase ?? 'Unknown', String(restarts), age(pod.metadata.creationTimestamp)],
        object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: pod.metadata },
      };
    }),
  };
}

// A coarse duration.HumanDuration, as kubectl prints AGE.
function age(timestamp: string | undefined): string {
  const t = timestamp ? Date.parse(timestamp) : NaN;
  if (Number.isNaN(t)) return '<unknown>';
  const s = Math.max(0, Math.floor((Date.now() - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

function wantsTable(req: IncomingMessage): boolean {
  return /as=Table/.test(req.headers.accept ?? '') && /g=meta\.k8s\.io/.test(req.headers.accept ?? '');
}

const versionInfo = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.0',
  gitCommit: '70d3cc986aa8221cd1dfb1121852688902d3bf53',
  gitTreeState: 'clean',
  buildDate: '2024-12-11T17:59:15Z',
  goVersion: 'go1.23.3',
  compiler: 'gc',
  platform: 'linux/amd64',
};

const apiGroupList = {
  kind: 'APIGroupList',
  apiVersion: 'v1',
  groups: [
    {
      name: 'authentication.k8s.io',
      versions: [{ groupVersion: 'authentication.k8s.io/v1', version: 'v1' }],
      preferredVersion: { groupVersion: 'authentication.k8s.io/v1', version: 'v1' },
    },
  ],
};

const coreResources = {
  kind: 'APIResourceList',
  groupVersion: 'v1',
  resources: [
    {
      name: 'namespaces',
      singularName: 'namespace',
      namespaced: false,
      kind: 'Namespace',
      verbs: ['get', 'list', 'watch'],
      shortNames: ['ns'],
    },
    {
      name: 'pods',
      singularName: 'pod',
      namespaced: true,
      kind: 'Pod',
      verbs: ['get', 'list', 'watch'],
      shortNames: ['po'],
      categories: ['all'],
    },
  ],
};

const authenticationResources = {
  kind: 'APIResourceList',
  apiVersion: 'v1',
  groupVersion: 'authentication.k8s.io/v1',
  resources: [
    {
      name: 'selfsubjectreviews',
      singularName: 'selfsubjectreview',
      namespaced: false,
      kind: 'SelfSubjectReview',
      verbs: ['create'],
    },
  ],
};

const NAMESPACES = ['default', 'kube-system'];

function namespaceObject(name: string): object {
  return {
    kind: 'Namespace',
    apiVersion: 'v1',
    metadata: {
      name,
      uid: `00000000-0000-4000-9000-${Buffer.from(name).toString('hex').slice(0, 12).padEnd(12, '0')}`,
      resourceVersion: RESOURCE_VERSION,
      creationTimestamp: CREATED,
      labels: { 'kubernetes.io/metadata.name': name },
    },
    spec: { finalizers: ['kubernetes'] },
    status: { phase: 'Active' },
  };
}

// ---------------------------------------------------------------------------------------------
// Server

const PATTERN_CHUNK = 64 * 1024;
// Byte i of /test/bytes is i % 251; a chunk starting at offset o is PATTERN[o % 251 ...].
const PATTERN = Buffer.from(Array.from({ length: PATTERN_CHUNK + 251 }, (_, i) => i % 251));

interface Watch {
  res: ServerResponse;
  table: boolean;
}

/** The raw connection of an upgrade request, for a handler that answers 101. */
interface Upgrade {
  socket: Duplex;
  head: Buffer;
}

/** Header values as received, each line split on commas (Sec-WebSocket-Protocol, X-Stream-Protocol-Version). */
function headerList(req: IncomingMessage, name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === name) {
      values.push(
        ...req.rawHeaders[i + 1]!.split(',')
          .map((v) => v.trim())
          .filter((v) => v.length > 0),
      );
    }
  }
  return values;
}

/** The first value of a header, as Go's Header.Get gives it ('' when absent). */
/**
 * A health check exactly as the proxy sends it (src/upstream/health.ts): GET /readyz whose only
 * identity or credential header is X-Remote-User: HEALTH_CHECK_USER. Read from the wire, not from
 * the user authenticated, so a check this apiserver refuses (it does not accept the front-proxy
 * certificate) is still one; a client's request, forwarded with the client's identity, never is.
 */
function isProxyHealthCheck(method: string | undefined, url: string | undefined, rawHeaders: [string, string][]): boolean {
  if (method !== 'GET' || url !== '/readyz') return false;
  const identity = rawHeaders.filter(([name]) => /^(x-remote-|authorization$)/i.test(name));
  return identity.length === 1 && identity[0]![0].toLowerCase() === 'x-remote-user' && identity[0]![1] === HEALTH_CHECK_USER;
}

function firstHeader(rawHeaders: string[], lowerName: string): string {
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === lowerName) return rawHeaders[i + 1]!;
  return '';
}

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  let allowedNames = opts.allowedNames ?? ['front-proxy-client'];
  const requestHeaderCA = new X509Certificate(opts.requestHeaderCA);
  const clientCA = opts.clientCA ? new X509Certificate(opts.clientCA) : null;
  const podCount = opts.pods ?? 3;
  const authenticationConfigMap = {
    kind: 'ConfigMap',
    apiVersion: 'v1',
    metadata: { name: 'extension-apiserver-authentication', namespace: 'kube-system', resourceVersion: RESOURCE_VERSION, creationTimestamp: CREATED },
    data: {
      ...(opts.clientCA ? { 'client-ca-file': opts.clientCA } : {}),
      'requestheader-client-ca-file': opts.requestHeaderCA,
      'requestheader-allowed-names': JSON.stringify(allowedNames),
    } as Record<string, string>,
  };
  let headerNames: Required<RequestHeaderNames> = KUBEADM_REQUEST_HEADERS;
  const setRequestHeaders = (names: RequestHeaderNames) => {
    headerNames = { ...KUBEADM_REQUEST_HEADERS, ...names };
    const data = authenticationConfigMap.data;
    data['requestheader-username-headers'] = JSON.stringify(headerNames.username);
    data['requestheader-group-headers'] = JSON.stringify(headerNames.group);
    data['requestheader-extra-headers-prefix'] = JSON.stringify(headerNames.extraPrefix);
    // The controller writes the UID key only when the flag is set (as kube 1.32+).
    if (headerNames.uid.length > 0) data['requestheader-uid-headers'] = JSON.stringify(headerNames.uid);
    else delete data['requestheader-uid-headers'];
  };
  setRequestHeaders(opts.requestHeaders ?? {});
  const websocketExec = opts.websocketExec ?? process.env.KFP_STANDIN_WEBSOCKET_EXEC !== 'false';
  const upgrades = new Set<Duplex>();
  // The subprotocol chosen for each WebSocket upgrade, before `ws` completes the handshake.
  const chosenProtocol = new WeakMap<IncomingMessage, string>();
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    clientTracking: false,
    handleProtocols: (_offered, req) => chosenProtocol.get(req) ?? false,
  });
  const requests: SeenRequest[] = [];
  const preflightReads: SeenRequest[] = [];
  const healthChecks: SeenRequest[] = [];
  const watches = new Set<Watch>();
  const sockets = new Set<Socket>();
  const peers = new WeakMap<TLSSocket, PeerCertificate | null>();
  const podCache = new Map<string, Pod[]>();

  const podsIn = (namespace: string): Pod[] => {
    let pods = podCache.get(namespace);
    if (!pods) {
      pods = Array.from({ length: podCount }, (_, i) => makePod(namespace, `pod-${i}`, i));
      podCache.set(namespace, pods);
    }
    return pods;
  };

  // ALPN offers h2 and http/1.1, as kube-apiserver does.
  const server = createSecureServer({
    allowHTTP1: true,
    cert: opts.cert,
    key: opts.key,
    ca: clientCA ? [opts.requestHeaderCA, opts.clientCA!] : [opts.requestHeaderCA],
    requestCert: true,
    rejectUnauthorized: false,
  });

  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // A client that resets mid-handshake must not crash the test process.
  server.on('tlsClientError', () => {});
  // Go's TLS server parses the client's certificate during the handshake and fails it when it
  // cannot (crypto/tls processCertsFromClient); Node's has accepted it by now: cut it here.
  server.on('secureConnection', (socket: TLSSocket) => {
    const raw = socket.getPeerCertificate()?.raw;
    if (raw && !goParses(raw)) socket.destroy();
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => handle(req as IncomingMessage, res as ServerResponse, null));

  // Upgrade requests go through the same authentication, recording and routing; `res` writes an
  // ordinary response (then closes the connection) unless a handler switches protocols.
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const res = new ServerResponse(req);
    res.assignSocket(socket as Socket);
    res.shouldKeepAlive = false;
    res.once('finish', () => {
      res.detachSocket(socket as Socket);
      socket.end();
    });
    handle(req, res, { socket, head });
  });

  function handle(req: IncomingMessage, res: ServerResponse, upgrade: Upgrade | null): void {
    const socket = req.socket as TLSSocket;
    let peer = peers.get(socket);
    if (peer === undefined) {
      peer = inspectPeer(socket, requestHeaderCA, clientCA);
      peers.set(socket, peer);
    }
    // golang.org/x/net/http2 resets a stream carrying a control byte other than HTAB in a field
    // value (httpguts.ValidHeaderFieldValue); Node's HTTP/1.1 parser already answers 400, as Go's does.
    if (req.httpVersionMajor === 2 && req.rawHeaders.some((v, i) => i % 2 === 1 && /[\x00-\x08\x0a-\x1f\x7f]/.test(v))) {
      (res as unknown as { stream: { close(code: number): void } }).stream.close(0x1 /* PROTOCOL_ERROR */);
      return;
    }
    const auth = authenticate(req, peer, allowedNames, clientCA !== null, opts.tokens, headerNames);
    const rawHeaders: [string, string][] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      rawHeaders.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    }

    const hash = createHash('sha256');
    let bodyBytes = 0;
    let recorded = false;
    // The proxy's own reads are kept apart from `requests`, which tests count as forwarded.
    const seenIn = isProxyHealthCheck(req.method, req.url, rawHeaders) ? healthChecks : auth.user?.username === PREFLIGHT_USER ? preflightReads : requests;
    const record = (): void => {
      if (recorded) return;
      recorded = true;
      seenIn.push({
        method: req.method ?? '',
        url: req.url ?? '',
        rawHeaders,
        authn: auth.authn,
        user: auth.user,
        peerCN: peer?.cn ?? null,
        httpVersion: req.httpVersion,
        auditId,
        bodyBytes,
        bodySha256: hash.digest('hex'),
      });
    };
    // kube-apiserver's WithAuditInit (k8s.io/apiserver endpoints/filters/audit_init.go): the first
    // Audit-ID request header (Go's Header.Get), kept whole however long, becomes the request's
    // audit ID; an absent or empty one gets a new UUID. Echoed as Audit-Id in every response.
    const auditId = firstHeader(req.rawHeaders, 'audit-id') || randomUUID();
    res.setHeader('Audit-Id', auditId);
    res.setHeader('Cache-Control', 'no-cache, private');

    const url = parseTarget(req.url ?? '/');
    // /test/echo streams the body back as it arrives; everything else reads it first.
    if (url.pathname === '/test/echo' && auth.authn !== 'rejected' && !upgrade) {
      res.writeHead(200, { 'Content-Type': req.headers['content-type'] ?? 'application/octet-stream' });
      req.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bodyBytes += chunk.length;
        if (!res.write(chunk)) {
          req.pause();
          res.once('drain', () => req.resume());
        }
      });
      req.once('end', () => {
        record();
        res.end();
      });
      req.once('close', record);
      return;
    }
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bodyBytes += chunk.length;
    });
    req.once('close', record);
    req.once('end', () => {
      record();
      try {
        respond(req, res, url, auth, upgrade);
      } catch (err) {
        if (!res.headersSent) sendJson(res, 500, status(500, String(err)));
        else res.destroy();
      }
    });
  }

  function respond(req: IncomingMessage, res: ServerResponse, url: Target, auth: Authentication, upgrade: Upgrade | null): void {
    if (auth.authn === 'rejected') {
      sendJson(res, 401, status(401, 'Unauthorized'));
      return;
    }
    const user = auth.user ?? ANONYMOUS;
    const method = req.method ?? 'GET';
    const path = url.pathname;

    if (path.startsWith('/test/')) {
      testEndpoint(req, res, url, auth, upgrade);
      return;
    }

    const info = requestInfo(method, path, url.searchParams);
    if (auth.user === null && !(PUBLIC_PATHS.has(path) && info.verb === 'get')) {
      sendJson(res, 403, forbidden(user, info));
      return;
    }
    if (!authorized(user, info)) {
      sendJson(res, 403, forbidden(user, info));
      return;
    }
    if (isStreaming(info)) return streaming(req, res, url, info, upgrade);

    const notFound = (kind?: string, name?: string): void => sendJson(res, 404, kind && name ? status(404, `${kind} "${name}" not found`, { name, kind }) : status(404, 'the server could not find the requested resource', {}));
    const onlyGet = (send: () => void): void => {
      if (method === 'GET') send();
      else sendJson(res, 405, status(405, 'the server does not allow this method on the requested resource', {}));
    };
    const list = (kind: string, items: unknown[]): void => sendJson(res, 200, { kind, apiVersion: 'v1', metadata: { resourceVersion: RESOURCE_VERSION }, items });

    switch (path) {
      case '/healthz':
      case '/livez':
      case '/readyz':
        return onlyGet(() => sendText(res, 200, 'ok'));
      case '/version':
      case '/version/':
        return onlyGet(() => sendJson(res, 200, versionInfo));
      case '/api':
      case '/api/':
        return onlyGet(() =>
          sendJson(res, 200, {
            kind: 'APIVersions',
            versions: ['v1'],
            serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${host}:${port}` }],
          }),
        );
      case '/apis':
      case '/apis/':
        return onlyGet(() => sendJson(res, 200, apiGroupList));
      case '/api/v1':
        return onlyGet(() => sendJson(res, 200, coreResources));
      case '/apis/authentication.k8s.io':
        return onlyGet(() => sendJson(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...apiGroupList.groups[0] }));
      case '/apis/authentication.k8s.io/v1':
        return onlyGet(() => sendJson(res, 200, authenticationResources));
      case '/apis/authentication.k8s.io/v1/selfsubjectreviews':
        if (method !== 'POST') return notFound();
        return sendJson(res, 201, {
          kind: 'SelfSubjectReview',
          apiVersion: 'authentication.k8s.io/v1',
          metadata: { creationTimestamp: null },
          status: { userInfo: { username: user.username, groups: user.groups, extra: user.extra } },
        });
    }

    const coreRead = info.resource && info.group === '' && info.version === 'v1' && method === 'GET';
    // The apiserver's published requestheader settings (clusterauthenticationtrust controller),
    // which the proxy's preflight reads; readable by any authenticated user here (no RBAC).
    if (coreRead && info.kind === 'configmaps' && info.namespace === 'kube-system' && info.name === 'extension-apiserver-authentication' && !info.subresource) {
      if (opts.preflightForbidden && user.username === PREFLIGHT_USER) return sendJson(res, 403, forbidden(user, info));
      return sendJson(res, 200, authenticationConfigMap);
    }
    // The service proxy: the backend's answer, relayed as it is.
    const backend = info.kind === 'services' && /^proxy(\/|$)/.test(info.subresource) ? opts.serviceBackends?.[`${info.namespace}/${info.name}`] : undefined;
    if (backend?.bodyAfter) {
      res.writeHead(backend.status, backend.headers);
      res.flushHeaders();
      void backend.bodyAfter.then(() => res.end(backend.body));
      return;
    }
    if (backend) {
      res.writeHead(backend.status, { 'Content-Length': Buffer.byteLength(backend.body), ...backend.headers });
      res.end(backend.body);
      return;
    }
    if (coreRead && !info.subresource && info.kind === 'pods') {
      if (info.verb === 'watch') return startWatch(req, res);
      // Every namespace holds the same pod names; the all-namespaces list shows "default".
      const pods = podsIn(info.namespace || 'default');
      const pod = pods.find((p) => p.metadata.name === info.name);
      if (info.verb === 'get' && !pod) return notFound('pods', info.name);
      const found = pod ? [pod] : pods;
      if (wantsTable(req)) return sendJson(res, 200, podTable(found), TABLE_CONTENT_TYPE);
      return pod ? sendJson(res, 200, pod) : list('PodList', pods);
    }
    if (coreRead && !info.subresource && info.kind === 'namespaces') {
      if (info.verb === 'list') return list('NamespaceList', NAMESPACES.map(namespaceObject));
      if (info.verb === 'get' && NAMESPACES.includes(info.name)) {
        return sendJson(res, 200, namespaceObject(info.name));
      }
      if (info.verb === 'get') return notFound('namespaces', info.name);
    }
    notFound();
  }

  function track(socket: Duplex): void {
    upgrades.add(socket);
    socket.once('close', () => upgrades.delete(socket));
  }

  function switchToSpdy(res: ServerResponse, upgrade: Upgrade, protocol: string): void {
    res.detachSocket(upgrade.socket as Socket);
    upgrade.socket.write('HTTP/1.1 101 Switching Protocols\r\n' + 'Connection: Upgrade\r\n' + 'Upgrade: SPDY/3.1\r\n' + `X-Stream-Protocol-Version: ${protocol}\r\n` + `Date: ${new Date().toUTCString()}\r\n\r\n`);
    track(upgrade.socket);
  }

  // pods/exec, pods/attach, pods/portforward, after authentication and authorization.
  function streaming(req: IncomingMessage, res: ServerResponse, url: Target, info: RequestInfo, upgrade: Upgrade | null): void {
    const pod = podsIn(info.namespace).find((p) => p.metadata.name === info.name);
    if (!pod) {
      return sendJson(res, 404, status(404, `pods "${info.name}" not found`, { name: info.name, kind: 'pods' }));
    }
    const bad = (message: string) => sendJson(res, 400, status(400, message));
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'POST') {
      return sendJson(res, 405, status(405, 'the server does not allow this method on the requested resource', {}));
    }
    const portForward = info.subresource === 'portforward';
    const exec = parseExecQuery(url.searchParams, info.subresource === 'attach');
    if (!portForward) {
      const containers = ((pod.spec ?? {}) as { containers?: { name: string }[] }).containers ?? [];
      const container = url.searchParams.get('container');
      if (container && !containers.some((c) => c.name === container)) {
        return bad(`container ${container} is not valid for pod ${pod.metadata.name}`);
      }
      if (!exec.attach && exec.command.length === 0) return bad('you must specify at least 1 command');
      if (!exec.stdin && !exec.stdout && !exec.stderr) {
        return bad('you must specify at least one of stdin, stdout, stderr');
      }
    }
    if (!upgrade) return bad('Upgrade request required');

    const token = (req.headers.upgrade ?? '').toLowerCase();
    if (token === 'websocket') {
      if (!websocketExec) return bad('WebSocket streaming is not supported by this server (websocketExec: false)');
      const offered = headerList(req, 'sec-websocket-protocol');
      const supported = portForward ? [PORT_FORWARD_TUNNEL_PROTOCOL] : [STREAM_PROTOCOL_V5, STREAM_PROTOCOL_V4];
      const chosen = offered.find((p) => supported.includes(p));
      if (!chosen) {
        return bad(`unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server supports [${supported.join(' ')}]`);
      }
      if (method !== 'GET') return bad('a WebSocket upgrade must be a GET request');
      chosenProtocol.set(req, chosen);
      // `ws` refuses "SPDY/3.1+portforward.k8s.io" ("/" is no token character; gorilla and Go's
      // apiserver accept it), so it is shown a placeholder token and handleProtocols answers
      // with the real choice, which `ws` writes back as it is.
      req.headers['sec-websocket-protocol'] = 'negotiated-by-standin';
      res.detachSocket(upgrade.socket as Socket);
      wss.handleUpgrade(req, upgrade.socket, upgrade.head, (ws: WebSocket) => {
        track(upgrade.socket);
        if (portForward) servePortForwardSpdy(spdyOverWebSocket(ws), pod.metadata.name, String(pod.metadata.uid));
        else serveExecWebSocket(ws, exec);
      });
      return;
    }
    if (token === 'spdy/3.1') {
      const offered = headerList(req, 'x-stream-protocol-version');
      const supported = portForward ? [PORT_FORWARD_PROTOCOL] : [STREAM_PROTOCOL_V5, STREAM_PROTOCOL_V4];
      const chosen = offered.find((p) => supported.includes(p));
      if (!chosen) {
        return bad(`unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server supports [${supported.join(' ')}]`);
      }
      switchToSpdy(res, upgrade, chosen);
      const session = spdyOnSocket(upgrade.socket, upgrade.head);
      if (portForward) servePortForwardSpdy(session, pod.metadata.name, String(pod.metadata.uid));
      else serveExecSpdy(session, exec);
      return;
    }
    return bad(`unsupported upgrade protocol "${req.headers.upgrade ?? ''}"`);
  }

  function startWatch(req: IncomingMessage, res: ServerResponse): void {
    // No Content-Length: Node sends the body chunked. Headers go out now, not with the first event.
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.flushHeaders();
    const watch: Watch = { res, table: wantsTable(req) };
    watches.add(watch);
    res.once('close', () => watches.delete(watch));
  }

  function testEndpoint(req: IncomingMessage, res: ServerResponse, url: Target, auth: Authentication, upgrade: Upgrade | null): void {
    const path = url.pathname;
    if (path === '/test/upgrade-echo') {
      // A raw byte echo behind a correct 101, for tunnel tests driven by a raw TLS client.
      if (!upgrade) return sendJson(res, 400, status(400, 'Upgrade request required'));
      const token = (req.headers.upgrade ?? '').toLowerCase();
      if (token === 'spdy/3.1') {
        switchToSpdy(res, upgrade, STREAM_PROTOCOL_V4);
        echoTunnel(upgrade.socket, upgrade.head);
        return;
      }
      const key = req.headers['sec-websocket-key'];
      if (token === 'websocket' && typeof key === 'string' && key.length > 0) {
        const protocol = headerList(req, 'sec-websocket-protocol')[0];
        res.detachSocket(upgrade.socket as Socket);
        upgrade.socket.write(
          'HTTP/1.1 101 Switching Protocols\r\n' + 'Upgrade: websocket\r\n' + 'Connection: Upgrade\r\n' + `Sec-WebSocket-Accept: ${webSocketAccept(key)}\r\n` + (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : '') + '\r\n',
        );
        track(upgrade.socket);
        echoTunnel(upgrade.socket, upgrade.head);
        return;
      }
      return sendJson(res, 400, status(400, `cannot upgrade to "${req.headers.upgrade ?? ''}" here`));
    }
    if (path === '/test/identity') {
      sendJson(res, 200, { authn: auth.authn, user: auth.user });
      return;
    }
    if (path === '/test/bytes') {
      const n = Number(url.searchParams.get('n') ?? '0');
      if (!Number.isSafeInteger(n) || n < 0) {
        sendJson(res, 400, status(400, `invalid n ${url.searchParams.get('n')}`));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      let offset = 0;
      const pump = (): void => {
        while (offset < n) {
          const size = Math.min(PATTERN_CHUNK, n - offset);
          const start = offset % 251;
          offset += size;
          if (!res.write(PATTERN.subarray(start, start + size))) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    const code = /^\/test\/status\/(\d{3})$/.exec(path)?.[1];
    if (code) {
      const c = Number(code);
      if (c < 200) sendJson(res, 400, status(400, `status ${c} cannot be sent as a final response`));
      else sendJson(res, c, status(c, `test status ${c}`));
      return;
    }
    sendJson(res, 404, status(404, 'the server could not find the requested resource', {}));
  }

  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    requests,
    preflightReads,
    healthChecks,
    setRequestHeaders,
    setAllowedNames(names) {
      allowedNames = [...names];
      authenticationConfigMap.data['requestheader-allowed-names'] = JSON.stringify(allowedNames);
    },
    openWatches: () => watches.size,
    openUpgrades: () => upgrades.size,
    sendWatchEvent(type, object) {
      let plain: Buffer | undefined;
      let table: Buffer | undefined;
      let flowing = true;
      for (const w of watches) {
        const line = w.table && isPod(object) ? (table ??= Buffer.from(`${JSON.stringify({ type, object: podTable([object]) })}\n`)) : (plain ??= Buffer.from(`${JSON.stringify({ type, object })}\n`));
        if (!w.res.write(line)) flowing = false;
      }
      return flowing;
    },
    closeWatches() {
      for (const w of watches) w.res.end();
      watches.clear();
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of upgrades) socket.destroy();
        upgrades.clear();
        for (const socket of sockets) socket.destroy();
        sockets.clear();
      });
    },
  };
}
