// What one authentication method answers for a request (after k8s.io/apiserver's
// authenticator.Request): an identity, a refusal, or "not mine" when the request carries no
// credential of its kind. A verdict says why, never how to answer: the HTTP answer to a
// refusal is the edge's to build (refusals.ts).

import type { TLSSocket } from 'node:tls';
import type { AuthFailureReason, AuthMethod, Credential, Identity } from './identity.js';

/** What a method may read of a request. */
export interface AuthRequest {
  /** The client's TLS connection (over HTTP/2, the session's socket): its certificate, and the key refusals are paced by. */
  connection: TLSSocket;
  /** The Authorization value to authenticate with (Authenticator.authorizationOf). */
  authorization: string | undefined;
  /** The client as limits see it (the TCP peer unless a trusted proxy vouches). */
  clientAddress: string;
  /** Sec-WebSocket-Protocol of a WebSocket upgrade, where client-go and browsers put a bearer token. */
  websocketProtocols?: string | undefined;
}

interface RefusalFields {
  ok: false;
  /** The method that refused, for logs and metrics; undefined when no method read a credential. */
  method: AuthMethod | undefined;
  /** What the client is told: it names no user and says nothing a guesser could use. */
  message: string;
  /** The user name the client claimed (never the password). */
  claimedUser: string | undefined;
}

/** A refusal; one by the failed-login limits says when the client may try again. */
export type AuthRefusal = RefusalFields & ({ reason: 'rate-limited'; retryAfterMs: number } | { reason: Exclude<AuthFailureReason, 'rate-limited'>; retryAfterMs?: undefined });

/** The authenticator's answer for a request: who it is, or why it is refused. */
export type AuthOutcome = { ok: true; identity: Identity } | AuthRefusal;

/** A method's answer when the request carries no credential of its kind: the next method is asked. */
export const NOT_MINE = 'not-mine';

export type MethodVerdict = AuthOutcome | typeof NOT_MINE;

/** One way of authenticating a request (a client certificate, a password, a token passed through). */
export interface RequestAuthenticator {
  /** The method it answers as; also the `method` of the credentials it sets on identities. */
  readonly method: AuthMethod;
  authenticate(request: AuthRequest): MethodVerdict | Promise<MethodVerdict>;
  /**
   * Whether a credential this method accepted would still be accepted under the material in
   * force now (after a reload). Asked of the watches and tunnels already open.
   */
  stillHolds(credential: Credential): boolean;
}

/** Whole seconds to wait, at least one: what Retry-After and the refusal's message both say. */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}

/**
 * The refusal of a login the failed-login limits gave no verdict on (too many checks queued, or
 * under --workers a primary that did not answer): neither let through nor counted as a failure.
 */
export function overloaded(method: AuthMethod, claimedUser: string | undefined): AuthRefusal {
  return { ok: false, method, reason: 'overloaded', message: 'too many logins are being checked; retry shortly', claimedUser };
}

/** The refusal of a client the failed-login limits hold back. */
export function rateLimited(method: AuthMethod, claimedUser: string | undefined, retryAfterMs: number): AuthRefusal {
  // The same words whether the address or the name is locked: which one is nobody's business.
  const message = `too many failed logins; try again in ${retryAfterSeconds(retryAfterMs)} s`;
  return { ok: false, method, reason: 'rate-limited', message, claimedUser, retryAfterMs };
}
