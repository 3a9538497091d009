// Client-certificate authentication as a method: a connection that presented no certificate is
// not its business; one that did is let in or refused by what x509.ts finds, checked against the
// client CAs and revocation list in force now (both replaced on reload).
//
// Certificates are never limited and their failures never counted: a certificate cannot be
// guessed (the TLS layer has already checked the signature chain and the key), a refusal costs
// no bcrypt, and a user's expired certificate retried by kubectl would otherwise lock the
// password users behind the same address out.

import type { RevocationList } from './crl.js';
import type { Credential } from './identity.js';
import { NOT_MINE, type AuthRequest, type MethodVerdict, type RequestAuthenticator } from './method.js';
import type { TrustedCas } from './trusted-cas.js';
import { authenticateCertificate } from './x509.js';

export class CertificateMethod implements RequestAuthenticator {
  readonly method = 'x509';

  constructor(
    /** Revoked client certificates (--client-crl-file). */
    public revocations: RevocationList | undefined,
    /** The client CAs (--client-ca-file): certificates are re-checked against them. */
    public clientCas: TrustedCas | undefined,
  ) {}

  authenticate(request: AuthRequest): MethodVerdict {
    const verdict = authenticateCertificate(request.connection, this.revocations, this.clientCas);
    if (verdict === null) return NOT_MINE;
    if (verdict.ok) return verdict;
    return { ok: false, method: 'x509', reason: verdict.reason, message: verdict.message, claimedUser: verdict.claimedUser };
  }

  stillHolds(credential: Credential): boolean {
    return credential.method === 'x509' && authenticateCertificate(credential.connection, this.revocations, this.clientCas)?.ok === true;
  }
}
