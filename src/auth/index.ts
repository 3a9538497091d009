// The authenticator for every request: the methods in force, in order (union.ts): a client
// certificate if one was presented (a bad one is refused even when a password is also sent),
// then HTTP basic auth, then (with --token-passthrough) a bearer token, which the proxy does not
// check but hands to the apiserver. It answers an identity or a refusal; refusals.ts turns a
// refusal into the HTTP answer.

import { setTimeout as delay } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import { BasicAuthMethod } from './basic-method.js';
import type { BasicAuthenticator } from './basic.js';
import { CertificateMethod } from './certificate-method.js';
import type { RevocationList } from './crl.js';
import type { Identity } from './identity.js';
import type { LoginLimiter } from './login-limiter.js';
import type { AuthOutcome, RequestAuthenticator } from './method.js';
import { RefusalPacer } from './refusal-pacer.js';
import { TokenPassthroughMethod } from './token-passthrough.js';
import type { TrustedCas } from './trusted-cas.js';
import { AuthenticatorUnion } from './union.js';

export type { AuthOutcome, AuthRefusal } from './method.js';
export { parseBasicAuthorization } from './basic-method.js';
export { WEBSOCKET_BEARER_PREFIX, bearerToken, websocketBearerToken } from './token-passthrough.js';

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

export class Authenticator {
  private readonly certificates: CertificateMethod;
  private readonly tokens: TokenPassthroughMethod | undefined;
  private readonly union: AuthenticatorUnion;
  private readonly refusals: RefusalPacer | undefined;
  private readonly tokenPassthrough: boolean;

  constructor(options: AuthenticatorOptions) {
    this.certificates = new CertificateMethod(options.revocations, options.clientCas);
    this.tokenPassthrough = options.tokenPassthrough === true;
    this.tokens = this.tokenPassthrough ? new TokenPassthroughMethod(options.failures) : undefined;
    this.refusals = options.refusalDelayMs ? new RefusalPacer(options.refusalDelayMs) : undefined;
    const ways = [options.certificates && 'a client certificate', options.basic && 'a username and password', this.tokenPassthrough && 'a bearer token'].filter(Boolean);
    const noCredentials = `authentication required: present ${ways.join(' or ')}`;
    // Always listed: Basic credentials sent without a users file are refused, not passed over.
    const basic = new BasicAuthMethod(options.basic, options.failures, noCredentials);
    const methods: RequestAuthenticator[] = [...(options.certificates ? [this.certificates] : []), basic, ...(this.tokens ? [this.tokens] : [])];
    this.union = new AuthenticatorUnion(methods, {
      noCredentials,
      malformedAuthorization: options.basic ? 'malformed Authorization header: expected Basic credentials' : noCredentials,
    });
  }

  setRevocations(list: RevocationList | undefined): void {
    this.certificates.revocations = list;
  }

  /**
   * Puts re-read client CAs in force; returns whether they differ from those in force. An
   * unchanged bundle keeps the set in force, so its connections are not checked again; so does
   * none at all (a reload cannot turn certificate auth off: the listener still asks for them).
   */
  setClientCas(next: TrustedCas | undefined): boolean {
    const current = this.certificates.clientCas;
    if (next === undefined || (current !== undefined && current.sameAs(next))) return false;
    this.certificates.clientCas = next;
    return true;
  }

  /**
   * `clientAddress`: the client as limits see it (the TCP peer unless a trusted proxy vouches).
   * `websocketProtocols`: the Sec-WebSocket-Protocol of a WebSocket upgrade, where browsers and
   * client-go put a bearer token (`base64url.bearer.authorization.k8s.io.<token>`); only read
   * with --token-passthrough.
   */
  async authenticate(socket: TLSSocket, authorization: string | undefined, clientAddress: string, websocketProtocols?: string): Promise<AuthOutcome> {
    const outcome = await this.union.authenticate({ connection: socket, authorization, clientAddress, websocketProtocols });
    // A refusal by the limits costs no bcrypt, so a guessing client would get thousands a second
    // and take the CPU from everyone else: it waits instead, one per delay per connection (a
    // timer, not work).
    if (!outcome.ok && outcome.reason === 'rate-limited' && this.refusals) await delay(this.refusals.waitFor(socket));
    return outcome;
  }

  /**
   * Whether `identity` would still be let in under the material in force now (after a reload):
   * its certificate still chains to a client CA and is not revoked, or its users-file entry is
   * unchanged. Asked of the watches and tunnels already open, which no new request
   * re-authenticates.
   */
  stillHolds(identity: Identity | null | undefined): boolean {
    return this.union.stillHolds(identity);
  }

  /**
   * The Authorization value to authenticate with. Node keeps only the first of several
   * Authorization lines; with --token-passthrough a request could put a token first and a password
   * after it. Credentials the proxy checks win over a token, so a Basic line anywhere is the one
   * used (and then no Authorization line is forwarded). Without the flag: Node's value.
   */
  authorizationOf(rawHeaders: readonly string[], first: string | undefined): string | undefined {
    if (!this.tokenPassthrough) return first;
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      if (rawHeaders[i]!.toLowerCase() === 'authorization' && /^basic[ \t]/i.test(rawHeaders[i + 1]!.trim())) return rawHeaders[i + 1]!.trim();
    }
    return first;
  }

  /** The apiserver answered 401 for a passed-through token: one failed login (TokenPassthroughMethod.tokenRejected). */
  async recordTokenRejected(identity: Identity, clientAddress: string): Promise<void> {
    await this.tokens?.tokenRejected(identity, clientAddress);
  }
}
