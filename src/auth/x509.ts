// Client-certificate auth, as kube-apiserver's x509 authenticator does it: the certificate must
// chain to the client CA, be inside its validity period and allow client authentication; then
// CN is the user name and each O is a group. Node's TLS layer has already verified all of that
// (the listener requests a certificate without requiring one); here we read its verdict, check
// its chain against --client-crl-file, which Node's TLS layer is not given (see crl.ts), and
// against the client CAs in force now, which may have been reloaded since the handshake.
//
// kube-apiserver checks validity on every request, and so does this: a connection whose
// certificate (or a CA of its chain) expires while it is open gets 401 from then on, and what
// it opened that makes no new request (watches, tunnels) is ended then (credential-expiry.ts).
//
// The identity is the one kube-apiserver derives from the same certificate presented directly
// (CommonNameUserConversion in k8s.io/apiserver request/x509): the subject as Go reads it
// (x509-name.ts), and the credential id it adds as extra. A certificate whose identity the
// X-Remote-* headers cannot carry exactly is refused, saying why (identityValueProblem).

import type { X509Certificate } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { RevocationList } from './crl.js';
import { credentialExpiry } from './credential-expiry.js';
import { identityValueProblem, quoteValue, type AuthFailureReason, type Credential, type Identity } from './identity.js';
import { notAfterOf, type Chain, type TrustedCas } from './trusted-cas.js';
import { GoParseError, readGoSubject, type GoSubject } from './x509-name.js';

export type CertificateAuthResult = { ok: true; identity: Identity } | { ok: false; reason: Extract<AuthFailureReason, `cert-${string}`>; message: string; claimedUser: string | undefined };

function asList(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

const UNTRUSTED = { reason: 'cert-untrusted', message: 'client certificate is not signed by a trusted certificate authority' } as const;
const EXPIRED = { reason: 'cert-expired', message: 'client certificate has expired' } as const;

function failureFor(code: string): { reason: Extract<AuthFailureReason, `cert-${string}`>; message: string } {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return EXPIRED;
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
      return UNTRUSTED;
    default:
      return { reason: 'cert-invalid', message: `client certificate rejected (${code})` };
  }
}

// The certificate cannot change during a TLS connection (renegotiation is refused), so the
// verdict is worked out once per connection, not once per request. What it is checked against
// can change: a reloaded CRL or client CA bundle must reach connections that are already open,
// so each is checked again whenever it is a different object (once per connection per reload);
// per request that is an identity comparison each.
//
// The client CAs are checked on a connection's first request too, not only after a reload: a
// handshake that began before a reload completes against the bundle of its start, and a resumed
// TLS session carries the verdict of the handshake it resumes (Node gives each new secure
// context fresh ticket keys, so none from before a reload resumes today; this does not rely on
// it). A leaf already found to chain costs a map lookup (TrustedCas.chainOf), which is also
// what lets in a resumed session whose leaf needs intermediates: it does not carry them.
//
// Validity is the one check made on every request: a comparison with the clock. A resumed TLS
// session carries the verdict of the handshake it resumes, expired since or not; this check
// does not rely on the TLS layer for it.
interface ConnectionVerdict {
  verdict: CertificateAuthResult | null;
  /** PeerCertificate.fingerprint256 of an accepted certificate. */
  fingerprint: string | undefined;
  /** The certificates the client sent after its own, once read (see peerChain). */
  sent: readonly X509Certificate[] | undefined;
  /** The leaf's notAfter (ms since the epoch). */
  leafNotAfter: number;
  /** The CAs `untrusted` and `chain` were worked out against. */
  trustedUnder: TrustedCas | undefined;
  untrusted: CertificateAuthResult | undefined;
  /** The leaf's issuers up to a root of `trustedUnder`, when it chains. */
  chain: Chain | undefined;
  /** The earliest notAfter of the leaf and `chain`: the credential expires once the clock is past it. */
  notAfter: number;
  /** The moment last given to the expiry clock. */
  watchedUntil: number | undefined;
  /** The list `revoked` was worked out against (with `chain` as it was then). */
  checkedAgainst: RevocationList | undefined;
  revoked: CertificateAuthResult | undefined;
}

/** Every field set at once: one object shape for every connection on the request path. */
function connectionVerdict(verdict: CertificateAuthResult | null, fingerprint?: string, leafNotAfter = Number.NEGATIVE_INFINITY): ConnectionVerdict {
  return { verdict, fingerprint, sent: undefined, leafNotAfter, trustedUnder: undefined, untrusted: undefined, chain: undefined, notAfter: leafNotAfter, watchedUntil: undefined, checkedAgainst: undefined, revoked: undefined };
}

interface PeerChain {
  leaf: X509Certificate;
  /** The other certificates the client sent in its handshake (none on a resumed session). */
  presented: readonly X509Certificate[];
}

const verdicts = new WeakMap<TLSSocket, ConnectionVerdict>();
/** More certificates than a client sends in a chain (TrustedCas.chains uses fewer still). */
const MAX_SENT = 16;
const NONE_SENT: readonly X509Certificate[] = Object.freeze([]);

/**
 * null: no certificate was presented. `cas`: the client CAs in force now (undefined only if
 * certificate auth was turned off, which a reload cannot do: then nothing is re-checked).
 */
export function authenticateCertificate(socket: TLSSocket, revocations?: RevocationList, cas?: TrustedCas): CertificateAuthResult | null {
  let known = verdicts.get(socket);
  if (known === undefined) {
    known = inspect(socket);
    verdicts.set(socket, known);
  }
  const verdict = known.verdict;
  if (!verdict?.ok) return verdict;
  const user = verdict.identity.user;
  if (cas !== undefined && known.trustedUnder !== cas) {
    known.trustedUnder = cas;
    known.chain = chainOf(socket, known, cas);
    known.untrusted = known.chain === undefined ? { ok: false, ...UNTRUSTED, claimedUser: user } : undefined;
    known.notAfter = Math.min(known.leafNotAfter, known.chain?.notAfter ?? Number.POSITIVE_INFINITY);
    // Another chain, other certificates to look up.
    known.checkedAgainst = undefined;
  }
  if (known.untrusted !== undefined) return known.untrusted;
  if (Date.now() > known.notAfter) return { ok: false, ...EXPIRED, claimedUser: user };
  if (known.watchedUntil !== known.notAfter) {
    known.watchedUntil = known.notAfter;
    credentialExpiry.watch(socket, known.notAfter);
  }
  if (revocations === undefined) return verdict;
  if (known.checkedAgainst !== revocations) {
    known.checkedAgainst = revocations;
    known.revoked = revocationVerdict(socket, known, user, revocations);
  }
  return known.revoked ?? verdict;
}

function chainOf(socket: TLSSocket, known: ConnectionVerdict, cas: TrustedCas): Chain | undefined {
  const vouched = known.fingerprint === undefined ? undefined : cas.knownChain(known.fingerprint);
  if (vouched !== undefined) return vouched;
  const peer = peerChain(socket, known);
  return peer === undefined ? undefined : cas.chainOf(peer.leaf, peer.presented);
}

/**
 * The leaf and every CA of its chain are looked up: a CA whose own issuer revoked it vouches for
 * nobody. Without client CAs to chain to (never so on the request path) only the leaf is.
 */
function revocationVerdict(socket: TLSSocket, known: ConnectionVerdict, user: string, revocations: RevocationList): CertificateAuthResult | undefined {
  const leaf = peerChain(socket, known)?.leaf;
  const above = known.chain?.above ?? [];
  const revoked = revocations.firstRevoked(leaf === undefined ? above : [leaf, ...above]);
  if (revoked === undefined) return undefined;
  const message = revoked === leaf ? 'client certificate has been revoked' : `client certificate was issued under a revoked CA certificate (${revoked.subject.replaceAll('\n', ', ')})`;
  return { ok: false, reason: 'cert-revoked', message, claimedUser: user };
}

/**
 * The peer's certificate, with the certificates it sent after it: `issuerCertificate` of
 * getPeerX509Certificate() is those, in the order sent, and nothing from our CA bundle. In
 * Node 20 the first call takes them with it (later calls return the leaf alone), so they are
 * kept from the first call, which must be this one: nothing else may call it. The leaf is not
 * kept (a certificate object per connection), it is read again at the next reload.
 */
function peerChain(socket: TLSSocket, known: ConnectionVerdict): PeerChain | undefined {
  let leaf: X509Certificate | undefined;
  try {
    leaf = socket.getPeerX509Certificate();
  } catch {
    // An HTTP/2 session whose socket is already gone: nothing left to let in.
    return undefined;
  }
  if (leaf === undefined) return undefined;
  if (known.sent === undefined) {
    const sent: X509Certificate[] = [];
    for (let cert = leaf.issuerCertificate; cert !== undefined && sent.length < MAX_SENT; cert = cert.issuerCertificate) sent.push(cert);
    known.sent = sent.length > 0 ? sent : NONE_SENT;
  }
  return { leaf, presented: known.sent };
}

function inspect(socket: TLSSocket): ConnectionVerdict {
  const cert: PeerCertificate | Record<string, never> = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return connectionVerdict(null);
  const peer = cert as PeerCertificate;
  let subject: GoSubject | GoParseError;
  try {
    subject = readGoSubject(peer.raw);
  } catch (err) {
    if (!(err instanceof GoParseError)) throw err;
    subject = err;
  }
  // An unverified certificate's subject is attacker-chosen: only report it as the claimed name.
  const claimedUser = subject instanceof GoParseError ? asList(peer.subject?.CN).at(-1) : subject.commonName || undefined;
  if (!socket.authorized) {
    const error = socket.authorizationError as unknown;
    const code = typeof error === 'string' ? error : String((error as { code?: string } | undefined)?.code ?? error);
    return connectionVerdict({ ok: false, ...failureFor(code), claimedUser });
  }
  if (subject instanceof GoParseError) {
    // Go's TLS server fails the handshake on a certificate it cannot parse (crypto/tls processCertsFromClient).
    return connectionVerdict({ ok: false, reason: 'cert-invalid', message: `client certificate cannot be parsed by kube-apiserver (Go crypto/x509: ${subject.message})`, claimedUser });
  }
  const refusal = subjectRefusal(subject);
  if (refusal !== undefined) return connectionVerdict({ ok: false, ...refusal, claimedUser });
  const credential: Credential = { method: 'x509', connection: socket };
  const identity: Identity = { method: 'x509', user: subject.commonName, groups: subject.organizations, extra: credentialIdExtra(peer.fingerprint256), upstreamAuth: 'front-proxy', credential };
  return connectionVerdict({ ok: true, identity }, peer.fingerprint256, notAfterOf(peer.valid_to));
}

/** Why kube-apiserver would derive no identity, or another one, through the headers; undefined when it is exact. */
function subjectRefusal(subject: GoSubject): { reason: 'cert-invalid' | 'cert-unforwardable'; message: string } | undefined {
  // CommonNameUserConversion: an empty CommonName (none, or an empty last one) is no user at all.
  if (subject.commonName === '') {
    return { reason: 'cert-invalid', message: 'client certificate has no common name (CN) to use as the user name (kube-apiserver reads the last CN, and it is empty or missing)' };
  }
  const inexact = (what: string) => ({ reason: 'cert-unforwardable' as const, message: `certificate subject cannot be forwarded exactly: ${what}` });
  // parseUIDFromCert (AllowParsingUserUIDFromCertAuth, on by default since 1.33) makes a UID
  // attribute the user's UID; kubeadm configures no --requestheader-uid-headers to carry one.
  if (subject.uids.length > 0) return inexact("it carries a Kubernetes UID attribute (1.3.6.1.4.1.57683.2), which kube-apiserver reads as the user's UID and the front-proxy headers do not carry");
  const userProblem = identityValueProblem(subject.commonName);
  if (userProblem !== undefined) return inexact(`common name ${quoteValue(subject.commonName)} ${userProblem}`);
  for (const organization of subject.organizations) {
    const problem = identityValueProblem(organization);
    if (problem !== undefined) return inexact(`organization ${quoteValue(organization)} ${problem}`);
  }
  return undefined;
}

/** The extra kube-apiserver adds for a certificate: "X509SHA256=" and the hex SHA-256 of its DER. */
function credentialIdExtra(fingerprint256: string): Record<string, string[]> {
  return { 'authentication.kubernetes.io/credential-id': [`X509SHA256=${fingerprint256.replaceAll(':', '').toLowerCase()}`] };
}
