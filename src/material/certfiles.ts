// Reading certificates and keys named by settings. Every problem becomes one ConfigError line
// that names the setting, the file and what is wrong, because a proxy that starts with a
// mismatched key or an expired front-proxy certificate fails later in ways nobody can trace.

import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { ConfigError, fileErrorText, settingLabel } from '../config/index.js';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** A setting's flag and the path it names, so errors can say both. */
export interface SettingFile {
  flag: string;
  path: string;
}

export interface KeyPair {
  /** PEM as read: leaf first, then any intermediates. */
  cert: Buffer;
  key: Buffer;
  leaf: X509Certificate;
}

function fail(file: SettingFile, problem: string): never {
  // A setting from the config file is named by its key there, not by a flag nobody typed.
  throw new ConfigError(`${settingLabel(file.flag)} ${file.path}: ${problem}`);
}

export function readSettingFile(file: SettingFile): Buffer {
  try {
    return readFileSync(file.path);
  } catch (err) {
    fail(file, fileErrorText(err));
  }
}

/** Parses every certificate in a PEM bundle; at least one must be there. */
export function parseCertificates(file: SettingFile, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) fail(file, 'no PEM certificate found (expected -----BEGIN CERTIFICATE-----)');
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      fail(file, `certificate ${index + 1} cannot be parsed: ${(err as Error).message}`);
    }
  });
}

/** A CA bundle for verifying peers: readable and made of certificates. */
export function loadCaBundle(file: SettingFile): Buffer {
  const pem = readSettingFile(file);
  parseCertificates(file, pem);
  return pem;
}

/**
 * A certificate with its key, checked the way the peer will check it: the key matches, the
 * certificate is inside its validity period, and its extended key usage allows `purpose`.
 */
export function loadKeyPair(certFile: SettingFile, keyFile: SettingFile, purpose: 'server' | 'client', now = new Date()): KeyPair {
  const cert = readSettingFile(certFile);
  const key = readSettingFile(keyFile);
  // What the file is comes first: "chmod 600" is no advice for a certificate given by mistake.
  checkIsPrivateKey(keyFile, key);
  checkKeyPermissions(keyFile);
  const leaf = parseCertificates(certFile, cert)[0] as X509Certificate;
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    fail(keyFile, `not a usable private key: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(privateKey)) fail(keyFile, `key does not match the certificate in ${certFile.path}`);
  if (now.getTime() > Date.parse(leaf.validTo)) fail(certFile, `certificate expired on ${new Date(leaf.validTo).toISOString()}`);
  if (now.getTime() < Date.parse(leaf.validFrom)) fail(certFile, `certificate not valid until ${new Date(leaf.validFrom).toISOString()}`);
  const usages = leaf.keyUsage; // Node names the extended key usage OIDs "keyUsage"
  const wanted = purpose === 'server' ? EKU_SERVER_AUTH : EKU_CLIENT_AUTH;
  if (usages && usages.length > 0 && !usages.includes(wanted)) {
    fail(certFile, `certificate does not allow ${purpose} authentication (extended key usage)`);
  }
  return { cert, key, leaf };
}

/** One line for a file that holds no PEM private key: a certificate in its place, or something else. */
function checkIsPrivateKey(file: SettingFile, pem: Buffer): void {
  const text = pem.toString('latin1');
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) return;
  if (text.includes('-----BEGIN CERTIFICATE-----')) fail(file, 'this is a certificate, not a private key (the key is usually the .key file beside it)');
  if (text.includes('-----BEGIN CERTIFICATE REQUEST-----')) fail(file, 'this is a certificate request, not a private key');
  fail(file, 'no PEM private key found (expected -----BEGIN ... PRIVATE KEY-----)');
}

/**
 * A private key others can read is refused, as ssh refuses one: a key file we own must be
 * private to us (no group or other bits); one owned by another user (root:fsGroup 0440, as a
 * Kubernetes secret volume mounts it for a non-root container) must at least not be
 * world-readable. Writable by others is refused in every case: they could swap the key.
 */
export function checkKeyPermissions(file: SettingFile): void {
  let mode: number;
  let owner: number;
  try {
    ({ mode, uid: owner } = statSync(file.path));
  } catch (err) {
    fail(file, fileErrorText(err));
  }
  const ours = owner === process.getuid?.();
  const exposed = (mode & 0o006) !== 0 || (mode & 0o020) !== 0 || (ours && (mode & 0o077) !== 0);
  if (exposed) {
    const octal = (mode & 0o777).toString(8).padStart(4, '0');
    fail(file, `private key is accessible by other users (mode ${octal}); chmod 600 it`);
  }
}

/** "CN=front-proxy-client" style subject for start-up lines. */
export function commonName(cert: X509Certificate): string {
  return /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1] ?? cert.subject;
}
