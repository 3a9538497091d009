// @peculiar/x509 registers its algorithms through tsyringe, which needs the Reflect metadata
// polyfill in place before the library module is evaluated.
import 'reflect-metadata';
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const subtle = webcrypto.subtle;
// The lib has no DOM types; Node's webcrypto namespace carries the same ones.
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const DAY_MS = 24 * 60 * 60 * 1000;

export type KeyAlgorithm = 'ecdsa-p256' | 'rsa-2048';

/** PEM text; `key` is PKCS#8 ("PRIVATE KEY"). */
export interface CertificateAndKey {
  cert: string;
  key: string;
}

export interface CertificateOptions {
  commonName: string;
  /** Each becomes its own O= attribute: kube-apiserver maps every O to a group. */
  organizations?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  /** Extended key usage. */
  usages: ('serverAuth' | 'clientAuth')[];
  /** Default: one hour ago, so a clock slightly behind ours still accepts the certificate. */
  notBefore?: Date;
  /** Default: `validityDays` after notBefore (or after now when notBefore is defaulted). */
  notAfter?: Date;
  /** Default 365. */
  validityDays?: number;
  /** Default 'ecdsa-p256'. */
  algorithm?: KeyAlgorithm;
  /** Hex; default 16 random bytes. Set only to reproduce a serial (tests of revocation). */
  serialNumber?: string;
}

export interface CertificateAuthorityOptions {
  commonName: string;
  /** Default 3650, kubeadm's CA lifetime: leaves are renewed yearly, the CA is not. */
  validityDays?: number;
  algorithm?: KeyAlgorithm;
  notBefore?: Date;
  notAfter?: Date;
}

// Key generation and signing parameters for the algorithms we create.
const generateParams: Record<KeyAlgorithm, webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams> = {
  'ecdsa-p256': { name: 'ECDSA', namedCurve: 'P-256' },
  'rsa-2048': {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: 'SHA-256',
  },
};

export async function createCertificateAuthority(opts: CertificateAuthorityOptions): Promise<CertificateAndKey> {
  const algorithm = opts.algorithm ?? 'ecdsa-p256';
  const keys = (await subtle.generateKey(generateParams[algorithm], true, ['sign', 'verify'])) as CryptoKeyPair;
  const name = new x509.Name([{ CN: [requireName(opts.commonName)] }]);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: name,
    issuer: name,
    ...validity({ ...opts, validityDays: opts.validityDays ?? 3650 }),
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    signingAlgorithm: signingAlgorithm(keys.privateKey),
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true), await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)],
  });
  return { cert: pem(cert), key: await exportKey(keys.privateKey) };
}

/**
 * Issues a leaf certificate signed by `ca`. The CA key may be any PEM private key Node reads
 * (PKCS#8, or kubeadm's PKCS#1 "RSA PRIVATE KEY" / SEC1 "EC PRIVATE KEY"), so an existing
 * cluster's front-proxy CA can issue the proxy's client certificate.
 */
export async function issueCertificate(ca: CertificateAndKey, opts: CertificateOptions): Promise<CertificateAndKey> {
  const algorithm = opts.algorithm ?? 'ecdsa-p256';
  const caCert = new x509.X509Certificate(ca.cert);
  const [caKey, keys] = await Promise.all([importSigningKey(ca.key), subtle.generateKey(generateParams[algorithm], true, ['sign', 'verify']) as Promise<CryptoKeyPair>]);

  // Go's pkix.Name order (O before CN); one RDN per organization so each is its own attribute.
  const subject = new x509.Name([...(opts.organizations ?? []).map((o) => ({ O: [o] })), { CN: [requireName(opts.commonName)] }]);

  const sans: x509.JsonGeneralName[] = [...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })), ...(opts.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value }))];

  // RSA keys can also encipher a TLS key exchange; ECDSA keys only sign.
  const keyUsage = x509.KeyUsageFlags.digitalSignature | (algorithm === 'rsa-2048' ? x509.KeyUsageFlags.keyEncipherment : 0);

  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(keyUsage, true),
    new x509.ExtendedKeyUsageExtension(opts.usages.map((u) => x509.ExtendedKeyUsage[u])),
    await authorityKeyIdentifier(caCert),
  ];
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans));

  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: opts.serialNumber ?? randomSerial(),
    subject,
    // The issuer must be the CA's subject byte for byte, so reuse its encoded name.
    issuer: caCert.subjectName,
    ...validity(opts),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: signingAlgorithm(caKey),
    extensions,
  });
  return { cert: pem(cert), key: await exportKey(keys.privateKey) };
}

/** OID of the CRL number extension (RFC 5280 5.2.3). */
export const CRL_NUMBER_OID = '2.5.29.20';

/** One revoked certificate: its serial (hex) and when it was revoked. */
export interface RevokedEntry {
  serialNumber: string;
  revocationDate: Date;
}

export interface CrlOptions {
  entries: readonly RevokedEntry[];
  /** Monotonic: a relying party keeps the CRL with the highest number. */
  crlNumber: bigint;
  /** Default now. */
  thisUpdate?: Date;
  /** After this the CRL is stale and relying parties (the proxy among them) refuse it. */
  nextUpdate: Date;
}

/**
 * A v2 CRL signed by `ca`, PEM ("X509 CRL"), with the two extensions RFC 5280 requires of a
 * conforming CRL: the CRL number and the authority key identifier.
 */
export async function signCrl(ca: CertificateAndKey, opts: CrlOptions): Promise<string> {
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await importSigningKey(ca.key);
  const thisUpdate = opts.thisUpdate ?? new Date();
  if (opts.nextUpdate.getTime() <= thisUpdate.getTime()) throw new Error('CRL nextUpdate must be later than thisUpdate');
  const crl = await x509.X509CrlGenerator.create({
    issuer: caCert.subjectName,
    thisUpdate,
    nextUpdate: opts.nextUpdate,
    signingKey: caKey,
    signingAlgorithm: signingAlgorithm(caKey),
    extensions: [new x509.Extension(CRL_NUMBER_OID, false, derInteger(opts.crlNumber)), await authorityKeyIdentifier(caCert)],
    entries: opts.entries.map((e) => ({ serialNumber: e.serialNumber, revocationDate: e.revocationDate })),
  });
  // The library labels it "CRL"; OpenSSL, and most tools, read and write "X509 CRL".
  return `${x509.PemConverter.encode(crl.rawData, 'X509 CRL')}\n`;
}

export interface CrlContents {
  /** "CN=..." */
  issuer: string;
  crlNumber: bigint | undefined;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** Serials as hex, as the CRL encodes them. */
  entries: RevokedEntry[];
  /** The signature verifies with `caCertPem`'s key and the issuer is its subject. */
  signedByCa: boolean;
}

/** Reads a CRL (PEM or DER) and checks it against the CA that should have signed it. */
export async function readCrl(data: string | Buffer, caCertPem: string): Promise<CrlContents> {
  const crl = new x509.X509Crl(typeof data === 'string' ? data : new Uint8Array(data));
  const caCert = new x509.X509Certificate(caCertPem);
  const numberExtension = crl.getExtension(CRL_NUMBER_OID);
  const sameIssuer = Buffer.from(crl.issuerName.toArrayBuffer()).equals(Buffer.from(caCert.subjectName.toArrayBuffer()));
  const signedByCa = sameIssuer && (await crl.verify({ publicKey: caCert }).catch(() => false));
  return {
    issuer: crl.issuer,
    crlNumber: numberExtension ? parseDerInteger(Buffer.from(numberExtension.value)) : undefined,
    thisUpdate: crl.thisUpdate,
    nextUpdate: crl.nextUpdate,
    entries: crl.entries.map((e) => ({ serialNumber: e.serialNumber, revocationDate: e.revocationDate })),
    signedByCa,
  };
}

// A DER INTEGER for a non-negative bigint: minimal big-endian octets, with a 0x00 in front
// when the top bit is set so it stays positive.
function derInteger(value: bigint): Uint8Array {
  if (value < 0n) throw new Error('CRL number must not be negative');
  let hex = value.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  let body = Buffer.from(hex, 'hex');
  if ((body[0] ?? 0) & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  if (body.length > 20) throw new Error('CRL number is longer than 20 octets');
  return new Uint8Array(Buffer.concat([Buffer.from([0x02, body.length]), body]));
}

function parseDerInteger(der: Buffer): bigint | undefined {
  if (der.length < 3 || der[0] !== 0x02 || der[1] !== der.length - 2 || der.length > 23) return undefined;
  return BigInt(`0x${der.subarray(2).toString('hex')}`);
}

function requireName(commonName: string): string {
  if (commonName.length === 0) throw new Error('certificate commonName must not be empty');
  return commonName;
}

function validity(opts: { notBefore?: Date; notAfter?: Date; validityDays?: number }): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  const notBefore = opts.notBefore ?? new Date(now - 60 * 60 * 1000);
  const notAfter = opts.notAfter ?? new Date((opts.notBefore?.getTime() ?? now) + (opts.validityDays ?? 365) * DAY_MS);
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new Error('certificate notAfter must be later than notBefore');
  }
  return { notBefore, notAfter };
}

// 16 random bytes with the top bit clear: a positive DER INTEGER of exactly 16 octets (RFC 5280
// allows at most 20), unpredictable so two certificates never share issuer + serial.
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f || 0x01;
  return bytes.toString('hex');
}

// ECDSA needs the hash named here; for RSA the hash travels with the imported key.
function signingAlgorithm(key: CryptoKey): webcrypto.EcdsaParams {
  const curve = (key.algorithm as webcrypto.EcKeyAlgorithm).namedCurve;
  return { name: key.algorithm.name, hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
}

async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  // A certificate where the key belongs: say so, not what the PEM decoder makes of it.
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyPem)) {
    throw new Error(keyPem.includes('-----BEGIN CERTIFICATE-----') ? 'the CA key file holds a certificate, not a private key' : 'the CA key file holds no PEM private key');
  }
  const key = createPrivateKey(keyPem);
  const der = key.export({ type: 'pkcs8', format: 'der' });
  if (key.asymmetricKeyType === 'rsa') {
    return subtle.importKey('pkcs8', der, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']);
  }
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : null;
    if (namedCurve) return subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve }, false, ['sign']);
  }
  throw new Error(`unsupported CA key type ${key.asymmetricKeyType ?? 'unknown'}: use RSA or ECDSA P-256/P-384`);
}

// Point at the CA's own subject key identifier so verifiers pick the right key when a CA has
// been re-keyed under the same name (kubeadm renewals keep the name).
async function authorityKeyIdentifier(caCert: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) return new x509.AuthorityKeyIdentifierExtension(ski.keyId);
  return x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey);
}

async function exportKey(key: CryptoKey): Promise<string> {
  const der = await subtle.exportKey('pkcs8', key);
  return `${x509.PemConverter.encode(der, 'PRIVATE KEY')}\n`;
}

function pem(cert: x509.X509Certificate): string {
  return `${cert.toString('pem')}\n`;
}
