// Who a request is, once authenticated: what the apiserver will see in the X-Remote-* headers.

import type { TLSSocket } from 'node:tls';
import type { UserEntry } from './htpasswd.js';

export type AuthMethod = 'basic' | 'x509';

export interface Identity {
  method: AuthMethod;
  user: string;
  groups: string[];
  /** X-Remote-Extra-<key> values; keys as the apiserver will see them (lower-case). */
  extra: Record<string, string[]>;
  /**
   * What the identity was verified against, so that a reload can end the watches and tunnels it
   * opened once that no longer holds (Authenticator.stillHolds). Never sent upstream or logged.
   * Set by the auth chain; an identity without it is never taken to hold.
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
  | { method: 'basic'; entry: UserEntry };

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
  | 'cert-revoked'
  | 'rate-limited'
  | 'overloaded';
