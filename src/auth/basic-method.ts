// HTTP basic auth as a method: an Authorization value that is Basic credentials is its to
// answer, checked against the users file (basic.ts); any other request is not its business.
// Basic credentials sent to a proxy without a users file are refused, not passed over: the
// client meant them as its credential.

import type { BasicAuthenticator } from './basic.js';
import type { Credential } from './identity.js';
import type { LoginLimiter } from './login-limiter.js';
import { NOT_MINE, overloaded, rateLimited, type AuthRequest, type MethodVerdict, type RequestAuthenticator } from './method.js';

const BAD_CREDENTIALS = 'invalid username or password';

export class BasicAuthMethod implements RequestAuthenticator {
  readonly method = 'basic';

  constructor(
    /** The users file's checker, or undefined when no users file is configured. */
    private readonly users: BasicAuthenticator | undefined,
    /** Failed-login limits (--auth-failure-limit), or undefined when off. */
    private readonly failures: LoginLimiter | undefined,
    /** What a client is told when it sends a password and none is accepted here. */
    private readonly noPasswordsMessage: string,
  ) {}

  async authenticate(request: AuthRequest): Promise<MethodVerdict> {
    const credentials = request.authorization === undefined ? undefined : parseBasicAuthorization(request.authorization);
    if (!credentials) return NOT_MINE;
    const claimedUser = credentials.user;
    if (!this.users) return { ok: false, method: 'basic', reason: 'basic-auth-disabled', message: this.noPasswordsMessage, claimedUser };
    // Only answered password checks count as failures (basic.verify): an overloaded check has
    // no verdict, so counting it would lock users out for our own load.
    const result = await this.users.verify(credentials.user, credentials.password, request.clientAddress, this.failures);
    if (result.ok) return result;
    switch (result.reason) {
      case 'rate-limited':
        return rateLimited('basic', claimedUser, result.retryAfterMs);
      case 'overloaded':
        return overloaded('basic', claimedUser);
      default:
        return { ok: false, method: 'basic', reason: result.reason, message: BAD_CREDENTIALS, claimedUser };
    }
  }

  stillHolds(credential: Credential): boolean {
    return credential.method === 'basic' && this.users?.stillHolds(credential.entry) === true;
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
