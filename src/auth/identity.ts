// Who a request is, once authenticated: what the apiserver will see in the X-Remote-* headers.

export type AuthMethod = 'basic' | 'x509';

export interface Identity {
  method: AuthMethod;
  user: string;
  groups: string[];
  /** X-Remote-Extra-<key> values; keys as the apiserver will see them (lower-case). */
  extra: Record<string, string[]>;
}

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
