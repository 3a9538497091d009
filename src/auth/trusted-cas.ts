// The client CAs (--client-ca-file) as certificates, parsed once per load or reload, for the
// checks Node's TLS layer cannot make: a CRL's issuer (crl.ts), and whether a connection opened
// before a reload still chains to a CA the operator trusts now (x509.ts). Node gives the
// handshake's verdict once and never again, and a reload reaches only new handshakes.

import { X509Certificate, type KeyObject } from 'node:crypto';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
// A client sends its leaf and a few intermediates; more is not a chain anyone uses, and each
// one costs signature checks.
const MAX_PRESENTED = 8;
// The leaves found to chain, per bundle: the users' certificates, a few thousand at most.
const MAX_VOUCHED = 10_000;

export interface Issuer {
  cert: X509Certificate;
  publicKey: KeyObject;
}

/** Every certificate of a PEM bundle that loadCaBundle has already checked (all blocks parse). */
export function bundleCertificates(pem: Buffer): X509Certificate[] {
  return (pem.toString('latin1').match(PEM_CERTIFICATE) ?? []).map((block) => new X509Certificate(block));
}

/**
 * Whether `issuer` issued `cert`: the names match and the signature verifies against its key.
 * The key is only fetched when the names match (KeyObject creation is the costly part).
 */
export function issuedBy(cert: X509Certificate, issuer: X509Certificate, publicKey?: KeyObject): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(publicKey ?? issuer.publicKey);
  } catch {
    // A key of another type than the signature (an RSA CA for an ECDSA certificate) throws.
    return false;
  }
}

// Node's TLS layer (OpenSSL without X509_V_FLAG_PARTIAL_CHAIN, which Node 20 does not set) wants
// a chain that ends at a self-signed CA of the bundle; an intermediate CA in the bundle is a link
// it may use on the way, not an end. The check here follows the same rule, so a connection open
// across a reload is let in exactly when a new handshake would be.
export class TrustedCas {
  /** The self-signed CAs of the bundle: where a chain ends. */
  readonly roots: readonly Issuer[];
  /** Its other CAs: links a chain may pass through, as the ones the client sends. */
  readonly intermediates: readonly X509Certificate[];
  /** SHA-256 fingerprints of the leaves already found to chain to these CAs. */
  private readonly vouched = new Set<string>();

  /** `pem`: the bundle as read, which loadCaBundle has checked. */
  constructor(readonly pem: Buffer) {
    const certs = bundleCertificates(pem);
    this.roots = certs.filter((cert) => cert.checkIssued(cert)).map((cert) => ({ cert, publicKey: cert.publicKey }));
    this.intermediates = certs.filter((cert) => cert.ca && !cert.checkIssued(cert));
  }

  /** Same bundle, byte for byte: a reload that rewrote the file unchanged keeps the set in force. */
  sameAs(other: TrustedCas): boolean {
    return this.pem.equals(other.pem);
  }

  /** Whether a leaf with this fingerprint (PeerCertificate.fingerprint256) was found to chain before. */
  vouchesFor(fingerprint: string): boolean {
    return this.vouched.has(fingerprint);
  }

  /**
   * Whether `leaf` chains to a root of the bundle: a root issued it, or an intermediate CA did
   * that chains the same way, taken from `presented` (what the client sent in its handshake, in
   * any order) or from the bundle. Every link's signature is verified. A leaf that chains is
   * remembered (vouchesFor), so later connections with it skip the search.
   */
  chains(leaf: X509Certificate, presented: readonly X509Certificate[]): boolean {
    // Breadth-first, each candidate used once: at most n² issuance checks however the client
    // arranges what it sends.
    const reached = [leaf];
    const left = [...presented.filter((cert) => cert.ca).slice(0, MAX_PRESENTED), ...this.intermediates];
    for (let i = 0; i < reached.length; i++) {
      const cert = reached[i] as X509Certificate;
      if (this.roots.some((root) => issuedBy(cert, root.cert, root.publicKey))) {
        if (this.vouched.size >= MAX_VOUCHED) this.vouched.clear();
        this.vouched.add(leaf.fingerprint256);
        return true;
      }
      for (let j = left.length - 1; j >= 0; j--) {
        const candidate = left[j] as X509Certificate;
        if (!issuedBy(cert, candidate)) continue;
        reached.push(candidate);
        left.splice(j, 1);
      }
    }
    return false;
  }
}
