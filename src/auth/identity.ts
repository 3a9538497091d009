// Who a request is, once authenticated, and how that reaches the apiserver.

import type { TLSSocket } from 'node:tls';
import type { UserEntry } from './htpasswd.js';

/**
 * The method that let a request in, for logs and metrics. `bearer`: --token-passthrough. The
 * proxy did not authenticate the request; it forwards the client's own token for the apiserver
 * to authenticate, and knows no user name (empty).
 */
export type AuthMethod = 'basic' | 'x509' | 'bearer';

/**
 * How the request is authenticated to the apiserver, set by the method that let it in:
 * - `front-proxy`: the proxy vouches for the user, in X-Remote-* headers over its front-proxy
 *   client certificate; any token the client sent is dropped;
 * - `client-token`: the client's own token goes as it was sent, with no X-Remote-* header, over
 *   a connection that presents no client certificate, for the apiserver to authenticate.
 */
export type UpstreamAuth = 'front-proxy' | 'client-token';

export interface Identity {
  method: AuthMethod;
  /** Empty with `client-token`: the apiserver names the user. */
  user: string;
  groups: string[];
  /** X-Remote-Extra-<key> values; keys as the apiserver will see them (lower-case). */
  extra: Record<string, string[]>;
  upstreamAuth: UpstreamAuth;
  /**
   * What the identity was verified against, so that a reload can end the watches and tunnels it
   * opened once that no longer holds (Authenticator.stillHolds). Never sent upstream or logged.
   * Set by the method that let the identity in; an identity without it is never taken to hold.
   */
  credential?: Credential;
}

export type Credential =
  /** The client's TLS connection: its certificate is looked up again in a reloaded revocation list. */
  | { method: 'x509'; connection: TLSSocket }
  /**
   * The users-file entry the password matched: its bcrypt hash and groups are compared with the
   * reloaded file's entry. The password itself is not kept.
   */
  | { method: 'basic'; entry: UserEntry }
  /**
   * A bearer token passed through (--token-passthrough): the apiserver authenticates it on every
   * request. `key` names it for the failed-login limits (a SHA-256 of the token, never the token).
   */
  | { method: 'bearer'; key: string };

/** Why a login failed: logged for operators, never shown to the client in detail. */
export type AuthFailureReason =
  | 'no-credentials'
  | 'malformed-authorization'
  | 'basic-auth-disabled'
  | 'unknown-user'
  | 'bad-password'
  | 'cert-expired'
  | 'cert-not-yet-valid'
  | 'cert-untrusted'
  | 'cert-wrong-usage'
  | 'cert-invalid'
  /** Verified, but its subject cannot reach the apiserver as the same identity (identityValueProblem). */
  | 'cert-unforwardable'
  | 'cert-revoked'
  | 'rate-limited'
  /** A passed-through bearer token the apiserver answered 401 for (--token-passthrough). */
  | 'token-rejected'
  | 'overloaded';

// An identity reaches kube-apiserver as X-Remote-User / X-Remote-Group lines, which Go's HTTP
// servers read before the requestheader authenticator does (k8s.io/apiserver headerrequest):
// - HTTP/1.1 (net/textproto readMIMEHeader) strips leading and trailing SP and HTAB from a value
//   and refuses the request for any other control byte (validHeaderValueByte); HTTP/2
//   (golang.org/x/net/http2 readMetaFrame, httpguts.ValidHeaderFieldValue) refuses control bytes
//   other than HTAB and strips nothing; both keep bytes 0x80-0xFF as they are (UTF-8 arrives intact);
// - the authenticator takes no user from an empty X-Remote-User and skips empty X-Remote-Group
//   values (headerValue, allHeaderValues).
// A value it would strip, refuse or skip would make the apiserver see someone else than the
// credential says, so such a credential is refused instead. HTAB is refused anywhere: both
// servers would keep one inside a value, but it is stripped at either end and no name means it.
const CONTROL = /[\u0000-\u001f\u007f]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Why a user name or group cannot reach the apiserver as these exact bytes, as a phrase ("has
 * leading or trailing whitespace"), or undefined when it can.
 */
export function identityValueProblem(value: string): string | undefined {
  if (value === '') return 'is empty';
  const control = CONTROL.exec(value);
  if (control) return `contains a control character (U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')})`;
  if (value.startsWith(' ') || value.endsWith(' ')) return 'has leading or trailing whitespace';
  if (LONE_SURROGATE.test(value)) return 'is not valid Unicode';
  return undefined;
}

/** `value` in single quotes for a message: invisible and control characters escaped, long ones cut. */
export function quoteValue(value: string): string {
  const chars = [...value];
  const shown = chars.length > 80 ? `${chars.slice(0, 80).join('')}…` : value;
  return `'${shown.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\\']/gu, (c) => (c === '\\' || c === "'" ? `\\${c}` : `\\u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`))}'`;
}
