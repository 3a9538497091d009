// The client CAs (--client-ca-file) as certificates, parsed once per load or reload, for the
// checks Node's TLS layer cannot make: a CRL's issuer (crl.ts), and whether a connection opened
// before a reload still chains to a CA the operator trusts now (x509.ts). Node gives the
// handshake's verdict once and never again, and a reload reaches only new handshakes. The chain
// found is kept: every certificate of it is looked up in the CRL, and the connection's
// credential ends when the first of them expires.

import { X509Certificate, type KeyObject } from 'node:crypto';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
// A client sends its leaf and a few intermediates; more is not a chain anyone uses, and each
// one costs signature checks.
const MAX_PRESENTED = 8;
// The leaves found to chain, per bundle: the users' certificates, a few thousand at most.
const MAX_VOUCHED = 10_000;
// The CA certificates those chains pass through, shared between them: a few per bundle.
const MAX_LINKS = 1_000;

export interface Issuer {
  cert: X509Certificate;
  publicKey: KeyObject;
}

/** Every certificate of a PEM bundle that loadCaBundle has already checked (all blocks parse). */
export function bundleCertificates(pem: Buffer): X509Certificate[] {
  return (pem.toString('latin1').match(PEM_CERTIFICATE) ?? []).map((block) => new X509Certificate(block));
}

/**
 * A leaf's way to a root of the bundle: `above` is its issuer, that one's issuer, ... up to and
 * including the root, every link's signature verified.
 */
export interface Chain {
  readonly above: readonly X509Certificate[];
  /** The earliest notAfter of `above` (ms since the epoch): the chain holds until then. */
  readonly notAfter: number;
}

/**
 * When `cert` stops being valid: its notAfter, in ms since the epoch. X.509 validity includes
 * that instant (OpenSSL and Go refuse a certificate only once the clock is past it). A date
 * Node prints in a form Date cannot read counts as already passed: refused, not let in forever.
 */
export function notAfterOf(validTo: string): number {
  const ms = Date.parse(validTo);
  return Number.isNaN(ms) ? Number.NEGATIVE_INFINITY : ms;
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
  /** SHA-256 fingerprint of each leaf already found to chain to these CAs -> its chain. */
  private readonly vouched = new Map<string, Chain>();
  /** The CA certificates of those chains by fingerprint: one object however many leaves use it. */
  private readonly links = new Map<string, X509Certificate>();

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

  /** The chain found for the leaf with this fingerprint, if one was (see chainOf). */
  knownChain(fingerprint: string): Chain | undefined {
    return this.vouched.get(fingerprint);
  }

  /** Whether `leaf` chains to a root of the bundle (see chainOf). */
  chains(leaf: X509Certificate, presented: readonly X509Certificate[]): boolean {
    return this.chainOf(leaf, presented) !== undefined;
  }

  /**
   * How `leaf` chains to a root of the bundle: a root issued it, or an intermediate CA did that
   * chains the same way, taken from `presented` (what the client sent in its handshake, in any
   * order) or from the bundle. Every link's signature is verified. The shortest chain is the one
   * found. A leaf that chains is remembered with its chain (knownChain), so later connections
   * with it can skip the search, and a resumed session, which carries no intermediates, gets it
   * too; this always searches, with what it is given.
   */
  chainOf(leaf: X509Certificate, presented: readonly X509Certificate[]): Chain | undefined {
    // Breadth-first, each candidate used once: at most n² issuance checks however the client
    // arranges what it sends. `from[i]`: the index in `reached` of the certificate `reached[i]` issued.
    const reached = [leaf];
    const from = [-1];
    const left = [...presented.filter((cert) => cert.ca).slice(0, MAX_PRESENTED), ...this.intermediates];
    for (let i = 0; i < reached.length; i++) {
      const cert = reached[i] as X509Certificate;
      const root = this.roots.find((r) => issuedBy(cert, r.cert, r.publicKey));
      if (root !== undefined) {
        const above = [root.cert];
        for (let k = i; k > 0; k = from[k] as number) above.unshift(reached[k] as X509Certificate);
        return this.remember(leaf.fingerprint256, above);
      }
      for (let j = left.length - 1; j >= 0; j--) {
        const candidate = left[j] as X509Certificate;
        if (!issuedBy(cert, candidate)) continue;
        reached.push(candidate);
        from.push(i);
        left.splice(j, 1);
      }
    }
    return undefined;
  }

  private remember(fingerprint: string, above: X509Certificate[]): Chain {
    if (this.vouched.size >= MAX_VOUCHED) this.vouched.clear();
    if (this.links.size >= MAX_LINKS) this.links.clear();
    const shared = above.map((cert) => {
      const same = this.links.get(cert.fingerprint256);
      if (same !== undefined) return same;
      this.links.set(cert.fingerprint256, cert);
      return cert;
    });
    const chain: Chain = { above: shared, notAfter: Math.min(...shared.map((cert) => notAfterOf(cert.validTo))) };
    this.vouched.set(fingerprint, chain);
    return chain;
  }
}
