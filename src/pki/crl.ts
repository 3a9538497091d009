// `pki revoke` and `pki crl`: the users CA's certificate revocation list, user-ca.crl, next to
// user-ca.crt in the PKI directory. A proxy started with --client-crl-file on it picks every
// change up by itself (the file is replaced atomically, so it never reads half a list).
//
// Every write re-signs the whole list: the CRL number goes up by one, thisUpdate is now and
// nextUpdate is now + days. After nextUpdate the proxy refuses the file, so a list must be
// re-signed before then (`pki crl --renew`, or any `pki revoke`).
//
// A change reads the list, adds to it and writes it back: two admins revoking at once would each
// write a list without the other's serial. So a change holds <dir>/user-ca.crl.lock (created
// exclusively) from read to write; the next one waits for it.
import { X509Certificate } from 'node:crypto';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { normalizeSerial } from '../auth/crl.js';
import { readCrl, signCrl, type CertificateAndKey, type RevokedEntry } from './certificates.js';
import { CERT_MODE, PkiError, checkDays, isErrno, oneLine, readPki, writeAll } from './init.js';

export const CRL_FILE = 'user-ca.crl';
const DAY_MS = 24 * 60 * 60 * 1000;

export interface CrlSummary {
  path: string;
  /** "CN=..." of the CA that signed it. */
  issuer: string;
  crlNumber: bigint | undefined;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** Serials as `openssl x509 -serial` prints them (upper-case hex). */
  entries: RevokedEntry[];
}

export interface RevokeOptions {
  /** The PKI directory holding user-ca.crt, user-ca.key and user-ca.crl. */
  dir: string;
  /** The certificate to revoke (PEM or DER). */
  cert: string;
  /** How long the re-signed CRL is valid; default 365. */
  days?: number;
  now?: Date;
  /** How long to wait for another command's lock on the CRL; default 10 s. */
  lockWaitMs?: number;
}

export interface RevokeResult extends CrlSummary {
  /** Of the revoked certificate, upper-case hex. */
  serial: string;
  /** Of the revoked certificate, "O=devs, CN=alice". */
  subject: string;
  /** When it had been revoked already (the list was re-signed, nothing else changed). */
  alreadyRevokedAt: Date | undefined;
}

/** Adds `cert` to the users CA's CRL (creating the CRL if needed) and re-signs it. */
export async function revokeCertificate(options: RevokeOptions): Promise<RevokeResult> {
  const days = checkDays(options.days);
  const now = options.now ?? new Date();
  const leaf = await readCertificate(options.cert);
  const ca = await readUsersCa(options.dir);
  const caCert = new X509Certificate(ca.cert);
  if (!leaf.checkIssued(caCert) || !leaf.verify(caCert.publicKey)) {
    throw new PkiError(`${options.cert}: not issued by the users CA ${caPath(options.dir)} (its issuer is ${oneLineName(leaf.issuer)}); only that CA's certificates can be revoked here`);
  }
  return withCrlLock(options.dir, options.lockWaitMs, async () => {
    const existing = await readExisting(options.dir, ca);
    const serial = displaySerial(leaf.serialNumber);
    const entries = existing?.entries ?? [];
    const previous = entries.find((e) => e.serialNumber === serial);
    if (!previous) entries.push({ serialNumber: serial, revocationDate: now });
    const summary = await writeCrl(options.dir, ca, entries, (existing?.crlNumber ?? 0n) + 1n, now, days);
    return { ...summary, serial, subject: oneLineName(leaf.subject), alreadyRevokedAt: previous?.revocationDate };
  });
}

/** Re-signs the CRL with fresh dates and the next number (an empty one if there is none yet). */
export async function renewCrl(options: { dir: string; days?: number; now?: Date; lockWaitMs?: number }): Promise<CrlSummary> {
  const days = checkDays(options.days);
  const ca = await readUsersCa(options.dir);
  return withCrlLock(options.dir, options.lockWaitMs, async () => {
    const existing = await readExisting(options.dir, ca);
    return writeCrl(options.dir, ca, existing?.entries ?? [], (existing?.crlNumber ?? 0n) + 1n, options.now ?? new Date(), days);
  });
}

/** A lock older than this was left by a command that died (a change takes well under a second). */
const STALE_LOCK_MS = 60_000;

/** Runs `change` (read, modify, write the CRL) while holding <dir>/user-ca.crl.lock. */
async function withCrlLock<T>(dir: string, waitMs = 10_000, change: () => Promise<T>): Promise<T> {
  const lock = `${crlPath(dir)}.lock`;
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const handle = await open(lock, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      break;
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw new PkiError(`${lock}: cannot create the lock file: ${oneLine(err)}`);
    }
    const since = await stat(lock).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    if (since > STALE_LOCK_MS) {
      await rm(lock, { force: true });
      continue;
    }
    if (Date.now() >= deadline) throw new PkiError(`${lock}: another pki command is changing the CRL; if none is running, remove the file`);
    await sleep(25);
  }
  try {
    return await change();
  } finally {
    await rm(lock, { force: true });
  }
}

/** The CRL as it is on disk, checked against the users CA. */
export async function showCrl(dir: string): Promise<CrlSummary> {
  const ca = await readUsersCa(dir);
  const existing = await readExisting(dir, ca);
  if (!existing) throw new PkiError(`${crlPath(dir)}: not found (create it with "pki crl --renew --dir ${dir}", or revoke a certificate)`);
  return existing;
}

const crlPath = (dir: string) => join(dir, CRL_FILE);
const caPath = (dir: string) => join(dir, 'user-ca.crt');

async function readUsersCa(dir: string): Promise<CertificateAndKey> {
  return { cert: await readPki(caPath(dir)), key: await readPki(join(dir, 'user-ca.key')) };
}

async function readCertificate(path: string): Promise<X509Certificate> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    throw new PkiError(`${path}: ${isErrno(err, 'ENOENT') ? 'not found' : `cannot read: ${oneLine(err)}`}`);
  }
  try {
    return new X509Certificate(data);
  } catch (err) {
    throw new PkiError(`${path}: not a certificate (PEM or DER): ${oneLine(err)}`);
  }
}

/** The current list, or undefined when there is none; one from another CA is refused, not replaced. */
async function readExisting(dir: string, ca: CertificateAndKey): Promise<CrlSummary | undefined> {
  const path = crlPath(dir);
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw new PkiError(`${path}: cannot read: ${oneLine(err)}`);
  }
  let contents;
  try {
    contents = await readCrl(data, ca.cert);
  } catch (err) {
    throw new PkiError(`${path}: not a CRL: ${oneLine(err)}; move it away to start a new list`);
  }
  if (!contents.signedByCa) {
    throw new PkiError(`${path}: not signed by ${caPath(dir)}; move it away to start a new list`);
  }
  return {
    path,
    issuer: contents.issuer,
    crlNumber: contents.crlNumber,
    thisUpdate: contents.thisUpdate,
    nextUpdate: contents.nextUpdate,
    entries: contents.entries.map((e) => ({ serialNumber: displaySerial(e.serialNumber), revocationDate: e.revocationDate })),
  };
}

async function writeCrl(dir: string, ca: CertificateAndKey, entries: RevokedEntry[], crlNumber: bigint, now: Date, days: number): Promise<CrlSummary> {
  const nextUpdate = new Date(now.getTime() + days * DAY_MS);
  let pem: string;
  try {
    pem = await signCrl(ca, { entries, crlNumber, thisUpdate: now, nextUpdate });
  } catch (err) {
    throw new PkiError(`${caPath(dir)}: cannot sign the CRL with this CA: ${oneLine(err)}`);
  }
  const path = crlPath(dir);
  await writeAll([{ path, content: pem, mode: CERT_MODE }], true);
  // Read back what was written: the dates as encoded (whole seconds), the serials as listed.
  const written = await readCrl(pem, ca.cert);
  return {
    path,
    issuer: written.issuer,
    crlNumber: written.crlNumber,
    thisUpdate: written.thisUpdate,
    nextUpdate: written.nextUpdate,
    entries: written.entries.map((e) => ({ serialNumber: displaySerial(e.serialNumber), revocationDate: e.revocationDate })),
  };
}

/** Upper-case hex in whole octets, as openssl and Node print serials ("0A01", not "a01"). */
export function displaySerial(hex: string): string {
  const normal = normalizeSerial(hex);
  return (normal.length % 2 ? `0${normal}` : normal).toUpperCase();
}

function oneLineName(name: string): string {
  return name.split('\n').join(', ');
}
