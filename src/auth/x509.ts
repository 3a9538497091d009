// Client-certificate auth, as kube-apiserver's x509 authenticator does it: the certificate must
// chain to the client CA, be inside its validity period and allow client authentication; then
// CN is the user name and each O is a group. Node's TLS layer has already verified all of that
// (the listener requests a certificate without requiring one); here we read its verdict, and
// check it against --client-crl-file, which Node's TLS layer is not given (see crl.ts).

import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { RevocationList } from './crl.js';
import type { AuthFailureReason, Credential, Identity } from './identity.js';

export type CertificateAuthResult =
  | { ok: true; identity: Identity }
  | { ok: false; reason: Extract<AuthFailureReason, `cert-${string}`>; message: string; claimedUser: string | undefined };

function asList(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function failureFor(code: string): { reason: Extract<AuthFailureReason, `cert-${string}`>; message: string } {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return { reason: 'cert-expired', message: 'client certificate has expired' };
    case 'CERT_NOT_YET_VALID':
      return { reason: 'cert-not-yet-valid', message: 'client certificate is not yet valid' };
    case 'INVALID_PURPOSE':
      return { reason: 'cert-wrong-usage', message: 'client certificate does not allow client authentication' };
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
      return { reason: 'cert-untrusted', message: 'client certificate is not signed by a trusted certificate authority' };
    default:
      return { reason: 'cert-invalid', message: `client certificate rejected (${code})` };
  }
}

// The certificate cannot change during a TLS connection (renegotiation is refused), so the
// verdict is worked out once per connection, not once per request. Revocation is the exception:
// a reloaded CRL must reach connections that are already open, so it is looked up again
// whenever the list is a different one (once per connection per reload); per request that is
// one identity comparison.
interface ConnectionVerdict {
  verdict: CertificateAuthResult | null;
  /** The list `revoked` was worked out against. */
  checkedAgainst?: RevocationList | undefined;
  revoked?: CertificateAuthResult | undefined;
}

const verdicts = new WeakMap<TLSSocket, ConnectionVerdict>();

/** null: no certificate was presented. */
export function authenticateCertificate(socket: TLSSocket, revocations?: RevocationList): CertificateAuthResult | null {
  let known = verdicts.get(socket);
  if (known === undefined) {
    known = { verdict: inspect(socket) };
    verdicts.set(socket, known);
  }
  const verdict = known.verdict;
  if (!verdict?.ok || revocations === undefined) return verdict;
  if (known.checkedAgainst !== revocations) {
    known.checkedAgainst = revocations;
    known.revoked = revocationVerdict(socket, verdict.identity.user, revocations);
  }
  return known.revoked ?? verdict;
}

function revocationVerdict(socket: TLSSocket, user: string, revocations: RevocationList): CertificateAuthResult | undefined {
  const cert = socket.getPeerX509Certificate();
  if (cert === undefined || !revocations.isRevoked(cert)) return undefined;
  return { ok: false, reason: 'cert-revoked', message: 'client certificate has been revoked', claimedUser: user };
}

function inspect(socket: TLSSocket): CertificateAuthResult | null {
  const cert: PeerCertificate | Record<string, never> = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return null;
  const peer = cert as PeerCertificate;
  // An unverified certificate's subject is attacker-chosen: only report it as the claimed name.
  const commonName = asList(peer.subject?.CN)[0];
  if (!socket.authorized) {
    const error = socket.authorizationError as unknown;
    const code = typeof error === 'string' ? error : String((error as { code?: string } | undefined)?.code ?? error);
    return { ok: false, ...failureFor(code), claimedUser: commonName };
  }
  if (!commonName) {
    return { ok: false, reason: 'cert-invalid', message: 'client certificate has no common name (CN) to use as the user name', claimedUser: undefined };
  }
  const credential: Credential = { method: 'x509', connection: socket };
  return { ok: true, identity: { method: 'x509', user: commonName, groups: asList(peer.subject.O), extra: {}, credential } };
}
