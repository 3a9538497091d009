// --token-passthrough as a method: a bearer token the proxy does not check but hands to the
// apiserver, which authenticates it on every request. It travels upstream as the client sent
// it, without X-Remote-* headers, over a connection that presents no client certificate
// (Identity.upstreamAuth 'client-token'). It comes after the methods the proxy checks itself,
// so a request with a certificate or a password never reaches it.
//
// Only the failed-login limits apply here: a client address locked by failed passwords or by
// tokens the apiserver refused (tokenRejected) gets 429 before anything is forwarded.

import { createHash } from 'node:crypto';
import type { Credential, Identity } from './identity.js';
import { LimiterUnavailableError, type LoginLimiter } from './login-limiter.js';
import { NOT_MINE, overloaded, rateLimited, type AuthRequest, type MethodVerdict, type RequestAuthenticator } from './method.js';

export class TokenPassthroughMethod implements RequestAuthenticator {
  readonly method = 'bearer';

  constructor(
    /** Failed-login limits (--auth-failure-limit), or undefined when off. */
    private readonly failures: LoginLimiter | undefined,
  ) {}

  async authenticate(request: AuthRequest): Promise<MethodVerdict> {
    const authorization = request.authorization;
    // A WebSocket subprotocol is read only when no Authorization value was sent.
    const token = authorization === undefined || authorization === '' ? websocketBearerToken(request.websocketProtocols) : bearerToken(authorization);
    if (token === undefined) return NOT_MINE;
    const key = tokenKey(token);
    let waitMs: number;
    try {
      waitMs = this.failures ? await this.failures.blockedForMs(request.clientAddress, key, key) : 0;
    } catch (err) {
      // The limits gave no verdict (--workers: the primary did not answer): no request, as for a password.
      if (err instanceof LimiterUnavailableError) return overloaded('bearer', undefined);
      throw err;
    }
    if (waitMs > 0) return rateLimited('bearer', undefined, waitMs);
    // The proxy knows no user name: the apiserver will name the user from the token.
    const identity: Identity = { method: 'bearer', user: '', groups: [], extra: {}, upstreamAuth: 'client-token', credential: { method: 'bearer', key } };
    return { ok: true, identity };
  }

  /** The proxy holds nothing a reload could withdraw (and --token-passthrough itself is not reloaded). */
  stillHolds(credential: Credential): boolean {
    return credential.method === 'bearer';
  }

  /**
   * The apiserver answered 401 for a passed-through token: one failed login for the client
   * address (and for the token itself), as a wrong password is. Kept simple: counted after the
   * fact, so requests already in flight from a guessing client still reach the apiserver.
   */
  async tokenRejected(identity: Identity, clientAddress: string): Promise<void> {
    const failures = this.failures;
    if (!failures || identity.credential?.method !== 'bearer') return;
    const key = identity.credential.key;
    try {
      const admission = await failures.begin(clientAddress, key, key);
      if (admission.waitMs === 0) admission.finish('failure');
    } catch {
      // The limits did not answer (--workers, primary gone): nothing to count against.
    }
  }
}

// What the apiserver's bearertoken authenticator reads as a token (k8s.io/apiserver
// authentication/request/bearertoken): "bearer" in any case, one space, the token. A value it
// would not read as a token (two spaces, nothing after the space) would reach the apiserver as no
// credential at all, and its anonymous authenticator would take the request as system:anonymous:
// such values stay refused by the proxy. Visible ASCII only, no spaces (a third part would be cut off).
const BEARER = /^bearer ([\x21-\x7e]+)$/i;

/** The token of an `Authorization: Bearer <token>` value the apiserver reads as one, else undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  return header === undefined ? undefined : BEARER.exec(header)?.[1];
}

/** The subprotocol prefix of a bearer token in a WebSocket upgrade (k8s.io/apiserver authentication/request/websocket). */
export const WEBSOCKET_BEARER_PREFIX = 'base64url.bearer.authorization.k8s.io.';

/**
 * The base64url token of a WebSocket upgrade's bearer subprotocol, when the apiserver would read
 * it as one: exactly one such subprotocol, a non-empty token, and another subprotocol beside it
 * (the apiserver refuses a token with none). Else undefined: the proxy refuses the request rather
 * than let the apiserver take it as anonymous.
 */
export function websocketBearerToken(protocols: string | undefined): string | undefined {
  if (!protocols) return undefined;
  const all = protocols.split(',').map((p) => p.trim());
  const tokens = all.filter((p) => p.startsWith(WEBSOCKET_BEARER_PREFIX));
  if (tokens.length !== 1 || tokens.length === all.filter((p) => p !== '').length) return undefined;
  const token = tokens[0]!.slice(WEBSOCKET_BEARER_PREFIX.length);
  return /^[A-Za-z0-9_-]+$/.test(token) ? token : undefined;
}

/** Names a token for the failed-login limits without holding it: a SHA-256 prefix. */
function tokenKey(token: string): string {
  return `bearer:${createHash('sha256').update(token).digest('hex').slice(0, 32)}`;
}
