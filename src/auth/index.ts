// The authentication chain for one request: a client certificate if one was presented (a bad
// one is refused even when a password is also sent), otherwise HTTP basic auth.

import type { TLSSocket } from 'node:tls';
import { StatusError, unauthorized } from '../status.js';
import type { BasicAuthenticator } from './basic.js';
import type { AuthFailureReason, AuthMethod, Identity } from './identity.js';
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
}

const BAD_CREDENTIALS = 'invalid username or password';

export class Authenticator {
  constructor(private readonly options: AuthenticatorOptions) {}

  async authenticate(socket: TLSSocket, authorization: string | undefined): Promise<AuthOutcome> {
    if (this.options.certificates) {
      const cert = authenticateCertificate(socket);
      if (cert?.ok) return cert;
      if (cert) return { ok: false, method: 'x509', reason: cert.reason, claimedUser: cert.claimedUser, error: unauthorized(cert.message) };
    }
    if (authorization === undefined || authorization === '') {
      return { ok: false, method: undefined, reason: 'no-credentials', claimedUser: undefined, error: unauthorized(this.noCredentialsMessage()) };
    }
    const credentials = parseBasicAuthorization(authorization);
    const basic = this.options.basic;
    if (!credentials) {
      const message = basic ? 'malformed Authorization header: expected Basic credentials' : this.noCredentialsMessage();
      return { ok: false, method: undefined, reason: 'malformed-authorization', claimedUser: undefined, error: unauthorized(message) };
    }
    if (!basic) {
      return { ok: false, method: 'basic', reason: 'basic-auth-disabled', claimedUser: credentials.user, error: unauthorized(this.noCredentialsMessage()) };
    }
    const result = await basic.verify(credentials.user, credentials.password);
    if (result.ok) return result;
    const error =
      result.reason === 'overloaded'
        ? new StatusError('ServiceUnavailable', 'too many logins are being checked; retry shortly', { 'retry-after': '1' })
        : unauthorized(BAD_CREDENTIALS);
    return { ok: false, method: 'basic', reason: result.reason, claimedUser: credentials.user, error };
  }

  private noCredentialsMessage(): string {
    const ways = [this.options.certificates && 'a client certificate', this.options.basic && 'a username and password'].filter(Boolean);
    return `authentication required: present ${ways.join(' or ')}`;
  }
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
