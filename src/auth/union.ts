// The authentication methods in order, as one (after k8s.io/apiserver's request/union with
// FailOnError): the first method that answers decides. A refusal ends the chain, so a client
// certificate that fails is refused even when a password is also sent, rather than passed over
// for a weaker credential. When no method reads a credential, the request is refused as
// carrying none (or, with an Authorization value no method understood, as malformed).

import type { Credential, Identity } from './identity.js';
import { NOT_MINE, type AuthOutcome, type AuthRefusal, type AuthRequest, type RequestAuthenticator } from './method.js';

/** What a client with no usable credential is told. */
export interface UnansweredMessages {
  /** No credential at all. */
  noCredentials: string;
  /** An Authorization value that no method took for its own. */
  malformedAuthorization: string;
}

export class AuthenticatorUnion {
  constructor(
    private readonly methods: readonly RequestAuthenticator[],
    private readonly messages: UnansweredMessages,
  ) {}

  async authenticate(request: AuthRequest): Promise<AuthOutcome> {
    for (const method of this.methods) {
      const verdict = await method.authenticate(request);
      if (verdict !== NOT_MINE) return verdict;
    }
    return this.unanswered(request);
  }

  /**
   * Whether `identity` would still be let in: asked of the method that let it in. An identity
   * with no credential, or one no listed method sets, is never taken to hold (fail closed).
   */
  stillHolds(identity: Identity | null | undefined): boolean {
    const credential: Credential | undefined = identity?.credential;
    if (credential === undefined) return false;
    return this.methods.find((m) => m.method === credential.method)?.stillHolds(credential) === true;
  }

  private unanswered(request: AuthRequest): AuthRefusal {
    // A missing or malformed header guesses nothing (browsers and some clients send none until
    // asked): neither counts as a failed login.
    if (request.authorization === undefined || request.authorization === '') {
      return { ok: false, method: undefined, reason: 'no-credentials', message: this.messages.noCredentials, claimedUser: undefined };
    }
    return { ok: false, method: undefined, reason: 'malformed-authorization', message: this.messages.malformedAuthorization, claimedUser: undefined };
  }
}
