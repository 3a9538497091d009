// Certificate revocation lists for client certificates (--client-crl-file).
//
// Every CRL in the file must come from a CA in --client-ca-file, verify against that CA's key
// and still be current; a file that fails any of that is refused as a whole (at start-up: exit
// 2; on reload: the previous list stays), because a CRL the proxy cannot trust must not
// silently let revoked certificates back in, nor lock everybody out.
//
// A revocation is the issuing CA plus the serial number: serials are only unique per CA, so a
// serial listed by one CA never refuses another CA's certificate. The check is a map lookup on
// the serial; only when a serial matches is the certificate's signature checked against the CAs
// that listed it, which settles its issuer without trusting the chain the client sent.
//
// Every certificate of a client's chain is looked up, not only its own (x509.ts): a root's CRL
// that lists an intermediate CA refuses everything issued under that intermediate. A file may
// hold the CRLs of several CAs (the root's, listing intermediates, and each intermediate's,
// listing leaves); an intermediate's CRL needs that intermediate in --client-ca-file, to verify
// it against.
//
// Node's TLS layer could check CRLs itself (the secure context's `crl` option), but it would
// then refuse every certificate whose CA has no CRL in the file, and it could not reach a
// keep-alive connection opened before the certificate was revoked.

// @peculiar/x509 registers its algorithms through tsyringe, which needs the Reflect metadata
// polyfill before the library module is evaluated.
import 'reflect-metadata';
import { verify as verifySignature, constants as cryptoConstants, type KeyObject, type X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { FastifyBaseLogger } from 'fastify';
import { bundleCertificates, issuedBy, type Issuer } from './trusted-cas.js';

// OpenSSL writes "X509 CRL"; some tools (older @peculiar/x509 among them) write "CRL".
const PEM_CRL = /-----BEGIN (X509 )?CRL-----([\s\S]+?)-----END \1CRL-----/g;

/** Serial numbers as one spelling: lower-case hex, no leading zeros ("00FF01" and "ff01" agree). */
export function normalizeSerial(hex: string): string {
  const stripped = hex.toLowerCase().replace(/^0+/, '');
  return stripped === '' ? '0' : stripped;
}

export class RevocationList {
  /**
   * @param revoked normalised serial -> the CAs that list it (usually one).
   * @param crls how many CRLs the file held, for logs.
   * @param nextUpdate the earliest nextUpdate among them: after it the file would be refused.
   */
  constructor(
    private readonly revoked: ReadonlyMap<string, readonly Issuer[]>,
    readonly crls: number,
    readonly nextUpdate: Date | undefined,
  ) {}

  /** How many (CA, serial) revocations the list holds. */
  get size(): number {
    let n = 0;
    for (const issuers of this.revoked.values()) n += issuers.length;
    return n;
  }

  /** The first certificate of `chain` (leaf first, then its issuers) whose issuer has listed it. */
  firstRevoked(chain: readonly X509Certificate[]): X509Certificate | undefined {
    return chain.find((cert) => this.isRevoked(cert));
  }

  /** Whether `cert`'s issuer has listed its serial number. `cert` is one the TLS layer accepted. */
  isRevoked(cert: X509Certificate): boolean {
    const issuers = this.revoked.get(normalizeSerial(cert.serialNumber));
    if (issuers === undefined) return false;
    return issuers.some((issuer) => issuedBy(cert, issuer.cert, issuer.publicKey));
  }
}

interface CaCandidate {
  cert: X509Certificate;
  publicKey: KeyObject;
  /** DER of the subject Name, to compare with a CRL's issuer. */
  subject: Buffer;
  /** False when the CA's key usage leaves out cRLSign. */
  mayCrlSign: boolean;
}

/** Why a CRL file is refused, as one line without the file's name (the caller names it). */
export class RevocationListError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RevocationListError';
  }
}

/**
 * Checks the contents of a CRL file (PEM blocks or one DER CRL) against the client CA bundle;
 * throws RevocationListError saying what is wrong.
 */
export function parseRevocationList(data: Buffer, clientCa: Buffer, now = new Date()): RevocationList {
  const fail: (problem: string) => never = (problem) => {
    throw new RevocationListError(problem);
  };
  const cas = caCandidates(clientCa);
  const ders = crlBlocks(data, fail);
  const revoked = new Map<string, Issuer[]>();
  let earliest: Date | undefined;
  ders.forEach((der, index) => {
    const label = `CRL ${index + 1}`;
    const crl = parseCrl(der, (problem) => fail(`${label} ${problem}`));
    const issuerText = crl.parsed.issuer;
    const named = cas.filter((ca) => ca.subject.equals(crl.issuer));
    if (named.length === 0) fail(`${label} issuer ${issuerText} is not in --client-ca-file`);
    const signers = named.filter((ca) => signedBy(crl, ca));
    if (signers.length === 0) fail(`${label} (issuer ${issuerText}) signature does not verify against --client-ca-file`);
    if (!signers.some((ca) => ca.mayCrlSign)) fail(`${label} (issuer ${issuerText}): the CA's key usage does not allow signing CRLs (cRLSign)`);
    const nextUpdate = crl.parsed.nextUpdate;
    if (nextUpdate !== undefined && nextUpdate.getTime() < now.getTime()) {
      fail(`${label} (issuer ${issuerText}) expired on ${nextUpdate.toISOString()} (its nextUpdate); the CA must publish a new one`);
    }
    if (nextUpdate !== undefined && (earliest === undefined || nextUpdate < earliest)) earliest = nextUpdate;
    const issuers = signers.filter((ca) => ca.mayCrlSign).map((ca) => ({ cert: ca.cert, publicKey: ca.publicKey }));
    for (const entry of crl.parsed.entries) {
      // removeFromCRL only appears in delta CRLs: it un-revokes, so it is not a revocation.
      if (entry.reason === x509.X509CrlReason.removeFromCRL) continue;
      const serial = normalizeSerial(entry.serialNumber);
      const listed = revoked.get(serial) ?? [];
      for (const issuer of issuers) if (!listed.some((l) => l.cert === issuer.cert)) listed.push(issuer);
      revoked.set(serial, listed);
    }
  });
  return new RevocationList(revoked, ders.length, earliest);
}

function caCandidates(bundle: Buffer): CaCandidate[] {
  // --client-ca-file was checked by loadCaBundle before this runs: every block parses.
  return bundleCertificates(bundle).map((cert) => {
    const parsed = new x509.X509Certificate(new Uint8Array(cert.raw));
    const usage = parsed.getExtension(x509.KeyUsagesExtension);
    return {
      cert,
      publicKey: cert.publicKey,
      subject: Buffer.from(parsed.subjectName.toArrayBuffer()),
      mayCrlSign: usage === null || (usage.usages & x509.KeyUsageFlags.cRLSign) !== 0,
    };
  });
}

/** The DER of each CRL in the file: PEM blocks, or the whole file as one DER CRL. */
function crlBlocks(data: Buffer, fail: (problem: string) => never): Buffer[] {
  const text = data.toString('latin1');
  if (text.includes('-----BEGIN')) {
    const blocks = [...text.matchAll(PEM_CRL)].map((m) => Buffer.from((m[2] ?? '').replace(/\s+/g, ''), 'base64'));
    if (blocks.length === 0) fail('no CRL found (expected -----BEGIN X509 CRL----- blocks, or one DER CRL)');
    return blocks;
  }
  if (data.length === 0) fail('empty file (expected -----BEGIN X509 CRL----- blocks, or one DER CRL)');
  return [data];
}

interface ParsedCrl {
  parsed: x509.X509Crl;
  /** The signed part, byte for byte as in the file. */
  tbs: Buffer;
  /** DER of the issuer Name. */
  issuer: Buffer;
  signature: Buffer;
}

// CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue BIT STRING }
// TBSCertList ::= SEQUENCE { version INTEGER OPTIONAL, signature AlgorithmIdentifier, issuer Name, ... }
// The signed bytes are taken from the file rather than re-encoded by the parser, so a CRL
// that is not quite DER still verifies exactly as its signer meant.
function parseCrl(der: Buffer, fail: (problem: string) => never): ParsedCrl {
  let parsed: x509.X509Crl;
  let outer: Tlv[];
  let tbsFields: Tlv[];
  try {
    const top = readTlv(der, 0);
    if (top.tag !== 0x30 || top.end !== der.length) throw new Error('not a DER SEQUENCE');
    outer = children(der, top);
    if (outer.length !== 3) throw new Error('expected tbsCertList, signatureAlgorithm and signatureValue');
    tbsFields = children(der, outer[0]!);
    parsed = new x509.X509Crl(new Uint8Array(der));
    // Reading the fields parses them: a malformed date or entry fails here, not on a request.
    void parsed.issuer;
    void parsed.thisUpdate;
    void parsed.nextUpdate;
    void parsed.entries.map((e) => [e.serialNumber, e.reason]);
  } catch (err) {
    return fail(`cannot be parsed: ${(err as Error).message.replace(/\s*\n\s*/g, ' ')}`);
  }
  const [tbs, outerAlgorithm, signatureValue] = outer as [Tlv, Tlv, Tlv];
  const fields = tbsFields[0]?.tag === 0x02 ? tbsFields.slice(1) : tbsFields;
  const [innerAlgorithm, issuer] = fields;
  if (!innerAlgorithm || !issuer) return fail('cannot be parsed: tbsCertList is too short');
  if (!slice(der, innerAlgorithm).equals(slice(der, outerAlgorithm))) {
    return fail(`(issuer ${parsed.issuer}) names two different signature algorithms`);
  }
  if (signatureValue.tag !== 0x03 || der[signatureValue.contentStart] !== 0) return fail('cannot be parsed: bad signatureValue');
  return {
    parsed,
    tbs: slice(der, tbs),
    issuer: slice(der, issuer),
    signature: der.subarray(signatureValue.contentStart + 1, signatureValue.end),
  };
}

function signedBy(crl: ParsedCrl, ca: CaCandidate): boolean {
  // WebCrypto's shape; the library's type names DOM types this project does not load.
  let algorithm: { name: string; hash?: { name: string } | string; saltLength?: number };
  try {
    algorithm = crl.parsed.signatureAlgorithm as unknown as typeof algorithm;
  } catch {
    return false;
  }
  const hash = typeof algorithm.hash === 'object' ? algorithm.hash.name : algorithm.hash;
  const nodeHash = hash?.replace(/^SHA-/, 'sha');
  try {
    switch (algorithm.name) {
      case 'ECDSA':
      case 'RSASSA-PKCS1-v1_5':
        return nodeHash !== undefined && verifySignature(nodeHash, crl.tbs, ca.publicKey, crl.signature);
      case 'RSA-PSS':
        return nodeHash !== undefined && verifySignature(nodeHash, crl.tbs, { key: ca.publicKey, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: algorithm.saltLength ?? cryptoConstants.RSA_PSS_SALTLEN_AUTO }, crl.signature);
      case 'Ed25519':
      case 'Ed448':
      case 'EdDSA':
        return verifySignature(null, crl.tbs, ca.publicKey, crl.signature);
      default:
        return false;
    }
  } catch {
    // A key of another type than the signature (an RSA CA for an ECDSA CRL) throws.
    return false;
  }
}

// --- a minimal DER reader: just enough to cut out the signed bytes --------------------------

interface Tlv {
  tag: number;
  start: number;
  contentStart: number;
  end: number;
}

function readTlv(der: Buffer, offset: number): Tlv {
  const tag = der[offset];
  let length = der[offset + 1];
  if (tag === undefined || length === undefined) throw new Error('truncated DER');
  let contentStart = offset + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4) throw new Error('unsupported DER length');
    length = 0;
    for (let i = 0; i < octets; i++) {
      const byte = der[contentStart + i];
      if (byte === undefined) throw new Error('truncated DER');
      length = length * 256 + byte;
    }
    contentStart += octets;
  }
  const end = contentStart + length;
  if (end > der.length) throw new Error('truncated DER');
  return { tag, start: offset, contentStart, end };
}

function children(der: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let offset = parent.contentStart; offset < parent.end;) {
    const child = readTlv(der, offset);
    if (child.end > parent.end) throw new Error('truncated DER');
    out.push(child);
    offset = child.end;
  }
  return out;
}

function slice(der: Buffer, tlv: Tlv): Buffer {
  return der.subarray(tlv.start, tlv.end);
}

/**
 * A CRL past its nextUpdate is still enforced (what it revokes stays revoked), but a restart or
 * reload would now refuse the file: say so once, when it happens, so someone publishes a new one.
 */
export class CrlExpiryWarning {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly file: string | undefined,
    private readonly logger: FastifyBaseLogger,
  ) {}

  watch(list: RevocationList | undefined): void {
    clearTimeout(this.timer);
    const at = list?.nextUpdate?.getTime();
    if (at === undefined) return;
    // setTimeout holds at most ~24.8 days: re-arm until the moment comes.
    const wait = Math.min(at - Date.now(), 2 ** 31 - 1);
    this.timer = setTimeout(
      () => {
        if (Date.now() < at) return this.watch(list);
        this.logger.warn(
          { file: this.file, nextUpdate: new Date(at).toISOString() },
          '--client-crl-file: the CRL has passed its nextUpdate; it is still enforced, but a restart or reload will refuse it until a new one is published (pki crl --renew)',
        );
      },
      Math.max(0, wait),
    );
    this.timer.unref();
  }
}
