// A throw-away PKI, generated fresh for each test run: every trust relation the proxy meets
// (cluster CA, front-proxy CA, the proxy's own serving CA, the user CA) plus a rogue CA that
// signs look-alikes of the trusted certificates.
// @peculiar/x509 (intermediateCa below) needs the Reflect metadata polyfill first.
import 'reflect-metadata';
import { createHash, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { createCertificateAuthority, issueCertificate, type CertificateAndKey, type CertificateOptions } from '../../src/pki/certificates.js';
import { tempDir } from './temp.js';

export type CaName = 'cluster-ca' | 'front-proxy-ca' | 'rogue-ca' | 'proxy-ca' | 'user-ca';

export type LeafName =
  | 'apiserver'
  | 'cluster-admin'
  | 'front-proxy-client'
  | 'front-proxy-wrong-name'
  | 'rogue-front-proxy-client'
  | 'rogue-apiserver'
  | 'user-other-ca'
  | 'proxy-server'
  | 'user-alice'
  | 'user-bob'
  | 'user-expired'
  | 'user-not-yet-valid'
  | 'user-server-only';

export type PkiName = CaName | LeafName;

export interface TestPki {
  dir: string;
  /** `<dir>/<name>.crt` or `<dir>/<name>.key`. */
  path(name: PkiName, kind: 'crt' | 'key'): string;
  pem: Record<PkiName, CertificateAndKey>;
}

const DAY_MS = 24 * 60 * 60 * 1000;

const caCommonNames: Record<CaName, string> = {
  'cluster-ca': 'kubernetes',
  'front-proxy-ca': 'front-proxy-ca',
  'rogue-ca': 'rogue-ca',
  'proxy-ca': 'kube-front-proxy-ca',
  'user-ca': 'kube-front-proxy-user-ca',
};

const apiserverSans = {
  dnsNames: ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'localhost'],
  ipAddresses: ['127.0.0.1'],
};

function leaves(now: number): Record<LeafName, [CaName, CertificateOptions]> {
  const client = (commonName: string, organizations?: string[]): CertificateOptions => ({
    commonName,
    ...(organizations ? { organizations } : {}),
    usages: ['clientAuth'],
  });
  return {
    apiserver: ['cluster-ca', { commonName: 'kube-apiserver', usages: ['serverAuth'], ...apiserverSans }],
    'cluster-admin': ['cluster-ca', client('direct-admin', ['system:masters'])],
    'front-proxy-client': ['front-proxy-ca', client('front-proxy-client')],
    'front-proxy-wrong-name': ['front-proxy-ca', client('not-the-proxy')],
    'rogue-front-proxy-client': ['rogue-ca', client('front-proxy-client')],
    'rogue-apiserver': ['rogue-ca', { commonName: 'kube-apiserver', usages: ['serverAuth'], ...apiserverSans }],
    'user-other-ca': ['rogue-ca', client('mallory', ['devs'])],
    'proxy-server': [
      'proxy-ca',
      {
        commonName: 'kube-front-proxy',
        usages: ['serverAuth'],
        dnsNames: ['localhost'],
        ipAddresses: ['127.0.0.1'],
      },
    ],
    'user-alice': ['user-ca', client('alice', ['devs', 'ops'])],
    'user-bob': ['user-ca', client('bob', ['viewers'])],
    'user-expired': [
      'user-ca',
      {
        ...client('expired-user'),
        notBefore: new Date(now - 10 * DAY_MS),
        notAfter: new Date(now - DAY_MS),
      },
    ],
    'user-not-yet-valid': ['user-ca', { ...client('not-yet-valid-user'), notBefore: new Date(now + DAY_MS) }],
    'user-server-only': ['user-ca', { commonName: 'server-only', usages: ['serverAuth'] }],
  };
}

export async function createTestPki(dir?: string): Promise<TestPki> {
  const outDir = dir ?? tempDir('kfp-pki-');
  await mkdir(outDir, { recursive: true });

  // ECDSA P-256 throughout: a key pair costs well under a millisecond, so the whole PKI is a
  // few tens of milliseconds. CAs first (in parallel), then every leaf in parallel.
  const caNames = Object.keys(caCommonNames) as CaName[];
  const cas = await Promise.all(caNames.map((name) => createCertificateAuthority({ commonName: caCommonNames[name] })));
  const caPem = Object.fromEntries(caNames.map((name, i) => [name, cas[i]!])) as Record<CaName, CertificateAndKey>;

  const leafSpecs = Object.entries(leaves(Date.now())) as [LeafName, [CaName, CertificateOptions]][];
  const issued = await Promise.all(leafSpecs.map(([, [ca, opts]]) => issueCertificate(caPem[ca], opts)));
  const pem = {
    ...caPem,
    ...Object.fromEntries(leafSpecs.map(([name], i) => [name, issued[i]!])),
  } as Record<PkiName, CertificateAndKey>;

  const path = (name: PkiName, kind: 'crt' | 'key'): string => join(outDir, `${name}.${kind}`);
  await Promise.all(
    (Object.entries(pem) as [PkiName, CertificateAndKey][]).flatMap(([name, { cert, key }]) => [
      writeFile(path(name, 'crt'), cert, { mode: 0o644 }),
      // writeFile's mode applies only when it creates the file; chmod covers a reused dir.
      writeFile(path(name, 'key'), key, { mode: 0o600 }).then(() => chmod(path(name, 'key'), 0o600)),
    ]),
  );
  return { dir: outDir, path, pem };
}

/**
 * The extra kube-apiserver's x509 authenticator gives a user of this certificate, and the proxy
 * forwards for one: "X509SHA256=" and the lower-case hex SHA-256 of the certificate's DER.
 */
export function credentialIdExtra(certPem: string): Record<string, string[]> {
  const der = new X509Certificate(certPem).raw;
  return { 'authentication.kubernetes.io/credential-id': [`X509SHA256=${createHash('sha256').update(der).digest('hex')}`] };
}

/**
 * A CA signed by `parent` (createCertificateAuthority makes roots only), as an enterprise PKI
 * issues user certificates from. ECDSA P-256 parent keys only (the test PKI's); valid from an
 * hour ago for a day unless told otherwise.
 */
export async function intermediateCa(parent: CertificateAndKey, commonName: string, validity: { notBefore?: Date; notAfter?: Date } = {}): Promise<CertificateAndKey> {
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const parentKey = await webcrypto.subtle.importKey('pkcs8', Buffer.from(parent.key.replace(/-----[^-]+-----|\s/g, ''), 'base64'), algorithm, false, ['sign']);
  const parentCert = new x509.X509Certificate(parent.cert);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: `01${randomBytes(15).toString('hex')}`,
    subject: `CN=${commonName}`,
    issuer: parentCert.subjectName,
    notBefore: validity.notBefore ?? new Date(Date.now() - 60 * 60 * 1000),
    notAfter: validity.notAfter ?? new Date(Date.now() + DAY_MS),
    publicKey: keys.publicKey,
    signingKey: parentKey,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(parentCert),
    ],
  });
  const key = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { cert: cert.toString('pem'), key: `-----BEGIN PRIVATE KEY-----\n${key.replace(/(.{64})/g, '$1\n')}\n-----END PRIVATE KEY-----\n` };
}
