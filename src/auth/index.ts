// The authentication chain for one request: a client certificate if one was presented (a bad
// one is refused even when a password is also sent), otherwise HTTP basic auth, otherwise (with
// --token-passthrough) a bearer token, which the proxy does not check but hands to the apiserver.

import { createHash } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import { StatusError, unauthorized } from '../status.js';
import type { BasicAuthenticator, BasicAuthResult } from './basic.js';
import type { RevocationList } from './crl.js';
import type { AuthFailureReason, AuthMethod, Identity } from './identity.js';
import type { LoginLimiter } from './login-limiter.js';
import type { TrustedCas } from './trusted-cas.js';
import { RefusalPacer } from './refusal-pacer.js';
import { authenticateCertificate } from './x509.js';

export type AuthOutcome =
  | { ok: true; identity: Identity }
  | {
      ok: false;
      /** Which method was tried, for logs and metrics; undefined when no credential was sent. */
      method: AuthMethod | undefined;
      reason: AuthFailureReason;
      /** The user name the client claimed (never the password). */
      claimedUser: string | undefined;
      error: StatusError;
    };

export interface AuthenticatorOptions {
  /** Client-certificate auth is on (the listener requests certificates). */
  certificates: boolean;
  /** Basic auth, or undefined when no users file is configured. */
  basic: BasicAuthenticator | undefined;
  /** Revoked client certificates (--client-crl-file), replaced on reload. */
  revocations: RevocationList | undefined;
  /** The client CAs (--client-ca-file), replaced on reload; certificates are re-checked against them. */
  clientCas?: TrustedCas | undefined;
  /** Failed-login limits (--auth-failure-limit), or undefined when off. */
  failures: LoginLimiter | undefined;
  /** How long a login refused by the limits waits for its 429 (--auth-failure-delay), per connection: refusals on one connection queue. */
  refusalDelayMs?: number;
  /** --token-passthrough: a bearer token with no certificate or password goes to the apiserver. */
  tokenPassthrough?: boolean;
}

const BAD_CREDENTIALS = 'invalid username or password';

export class Authenticator {
  private revocations: RevocationList | undefined;
  private clientCas: TrustedCas | undefined;
  private readonly refusals: RefusalPacer | undefined;

  constructor(private readonly options: AuthenticatorOptions) {
    this.revocations = options.revocations;
    this.clientCas = options.clientCas;
    this.refusals = options.refusalDelayMs ? new RefusalPacer(options.refusalDelayMs) : undefined;
  }

  setRevocations(list: RevocationList | undefined): void {
    this.revocations = list;
  }

  /**
   * Puts re-read client CAs in force; returns whether they differ from those in force. An
   * unchanged bundle keeps the set in force, so its connections are not checked again; so does
   * none at all (a reload cannot turn certificate auth off: the listener still asks for them).
   */
  setClientCas(next: TrustedCas | undefined): boolean {
    if (next === undefined || (this.clientCas !== undefined && this.clientCas.sameAs(next))) return false;
    this.clientCas = next;
    return true;
  }

  /**
   * `clientAddress`: the client as limits see it (the TCP peer unless a trusted proxy vouches).
   * `websocketProtocols`: the Sec-WebSocket-Protocol of a WebSocket upgrade, where browsers and
   * client-go put a bearer token (`base64url.bearer.authorization.k8s.io.<token>`); only read
   * with --token-passthrough.
   */
  async authenticate(socket: TLSSocket, authorization: string | undefined, clientAddress: string, websocketProtocols?: string): Promise<AuthOutcome> {
    // Certificates are never limited and their failures never counted: a certificate cannot be
    // guessed (the TLS layer has already checked the signature chain and the key), a refusal
    // costs no bcrypt, and a user's expired certificate retried by kubectl would otherwise lock
    // the password users behind the same address out.
    if (this.options.certificates) {
      const cert = authenticateCertificate(socket, this.revocations, this.clientCas);
      if (cert?.ok) return cert;
      if (cert) return { ok: false, method: 'x509', reason: cert.reason, claimedUser: cert.claimedUser, error: unauthorized(cert.message) };
    }
    if (authorization === undefined || authorization === '') {
      const token = this.options.tokenPassthrough ? websocketBearerToken(websocketProtocols) : undefined;
      if (token !== undefined) return this.passThrough(socket, token, clientAddress);
      return { ok: false, method: undefined, reason: 'no-credentials', claimedUser: undefined, error: unauthorized(this.noCredentialsMessage()) };
    }
    const credentials = parseBasicAuthorization(authorization);
    const basic = this.options.basic;
    if (!credentials) {
      const token = this.options.tokenPassthrough ? bearerToken(authorization) : undefined;
      if (token !== undefined) return this.passThrough(socket, token, clientAddress);
      const message = basic ? 'malformed Authorization header: expected Basic credentials' : this.noCredentialsMessage();
      return { ok: false, method: undefined, reason: 'malformed-authorization', claimedUser: undefined, error: unauthorized(message) };
    }
    if (!basic) {
      return { ok: false, method: 'basic', reason: 'basic-auth-disabled', claimedUser: credentials.user, error: unauthorized(this.noCredentialsMessage()) };
    }
    // Only answered password checks count as failures (basic.verify): a missing or malformed
    // header guesses nothing (browsers and some clients send none until asked), and an
    // overloaded check has no verdict, so counting it would lock users out for our own load.
    const result = await basic.verify(credentials.user, credentials.password, clientAddress, this.options.failures);
    if (result.ok) return result;
    // A refusal costs no bcrypt, so a guessing client would get thousands a second and take the
    // CPU from everyone else: it waits instead, one per delay per connection (a timer, not work).
    if (result.reason === 'rate-limited' && this.refusals) await delay(this.refusals.waitFor(socket));
    return { ok: false, method: 'basic', reason: result.reason, claimedUser: credentials.user, error: failureStatus(result) };
  }

  /**
   * Whether `identity` would still be let in under the material in force now (after a reload):
   * its certificate still chains to a client CA and is not revoked, or its users-file entry is
   * unchanged. Asked of the watches and tunnels already open, which no new request
   * re-authenticates.
   */
  stillHolds(identity: Identity | null | undefined): boolean {
    const credential = identity?.credential;
    switch (credential?.method) {
      case 'x509':
        return authenticateCertificate(credential.connection, this.revocations, this.clientCas)?.ok === true;
      case 'basic':
        return this.options.basic?.stillHolds(credential.entry) === true;
      case 'bearer':
        // The apiserver authenticates the token on every request it gets; the proxy holds nothing
        // a reload could withdraw (and --token-passthrough itself is not reloaded).
        return this.options.tokenPassthrough === true;
      default:
        // Nothing to re-check it against: fail closed (the auth chain always sets a credential).
        return false;
    }
  }

  /**
   * The Authorization value to authenticate with. Node keeps only the first of several
   * Authorization lines; with --token-passthrough a request could put a token first and a password
   * after it. Credentials the proxy checks win over a token, so a Basic line anywhere is the one
   * used (and then no Authorization line is forwarded). Without the flag: Node's value.
   */
  authorizationOf(rawHeaders: readonly string[], first: string | undefined): string | undefined {
    if (!this.options.tokenPassthrough) return first;
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      if (rawHeaders[i]!.toLowerCase() === 'authorization' && /^basic[ \t]/i.test(rawHeaders[i + 1]!.trim())) return rawHeaders[i + 1]!.trim();
    }
    return first;
  }

  /**
   * A bearer token the proxy does not check: the apiserver will (forward.ts and upgrade.ts send it
   * without X-Remote-* headers over a connection that presents no client certificate). Only the
   * failed-login limits apply here: a client address locked by failed passwords or by tokens the
   * apiserver refused (recordTokenRejected) gets 429 before anything is forwarded.
   */
  private async passThrough(socket: TLSSocket, token: string, clientAddress: string): Promise<AuthOutcome> {
    const key = tokenKey(token);
    const failures = this.options.failures;
    const waitMs = failures ? await failures.blockedForMs(clientAddress, key, key) : 0;
    if (waitMs > 0) {
      if (this.refusals) await delay(this.refusals.waitFor(socket));
      return { ok: false, method: 'bearer', reason: 'rate-limited', claimedUser: undefined, error: failureStatus({ ok: false, reason: 'rate-limited', retryAfterMs: waitMs }) };
    }
    return { ok: true, identity: { method: 'bearer', user: '', groups: [], extra: {}, credential: { method: 'bearer', key } } };
  }

  /**
   * The apiserver answered 401 for a passed-through token: one failed login for the client
   * address (and for the token itself), as a wrong password is. Kept simple: counted after the
   * fact, so requests already in flight from a guessing client still reach the apiserver.
   */
  async recordTokenRejected(identity: Identity, clientAddress: string): Promise<void> {
    const failures = this.options.failures;
    if (!failures || identity.credential?.method !== 'bearer') return;
    const key = identity.credential.key;
    try {
      const admission = await failures.begin(clientAddress, key, key);
      if (admission.waitMs === 0) admission.finish('failure');
    } catch {
      // The limits did not answer (--workers, primary gone): nothing to count against.
    }
  }

  private noCredentialsMessage(): string {
    const ways = [this.options.certificates && 'a client certificate', this.options.basic && 'a username and password', this.options.tokenPassthrough && 'a bearer token'].filter(Boolean);
    return `authentication required: present ${ways.join(' or ')}`;
  }
}

function failureStatus(result: Extract<BasicAuthResult, { ok: false }>): StatusError {
  switch (result.reason) {
    case 'overloaded':
      return new StatusError('ServiceUnavailable', 'too many logins are being checked; retry shortly', { 'retry-after': '1' });
    case 'rate-limited': {
      const seconds = Math.max(1, Math.ceil(result.retryAfterMs / 1000));
      // The same words whether the address or the name is locked: which one is nobody's business.
      return new StatusError('TooManyRequests', `too many failed logins; try again in ${seconds} s`, { 'retry-after': String(seconds) });
    }
    default:
      return unauthorized(BAD_CREDENTIALS);
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

/** `Basic base64(user:password)`; the user name ends at the first colon (RFC 7617). */
export function parseBasicAuthorization(header: string): { user: string; password: string } | undefined {
  const match = /^Basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(header);
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
