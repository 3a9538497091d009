// `pki init` and `pki user`: a complete PKI on disk for a kube-apiserver behind the proxy.
//
// The cluster side uses kubeadm's file names (ca, apiserver, front-proxy-ca, front-proxy-client,
// sa) so the directory can be mounted as /etc/kubernetes/pki; the proxy's own serving CA and
// certificate, and the CA for user client certificates with its (empty) revocation list sit
// next to them.
//
// Nothing is written until every key and certificate has been generated, an existing file is
// never overwritten without `force`, and each file appears atomically (temp file + rename) with
// its final mode already set: 0600 for keys, 0644 for certificates and the CRL.
import { generateKeyPair, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, lstat, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { createCertificateAuthority, issueCertificate, signCrl, type CertificateAndKey, type KeyAlgorithm } from './certificates.js';

const generateKeyPairAsync = promisify(generateKeyPair);

export class PkiError extends Error {
  override name = 'PkiError';
}

export interface PkiInitOptions {
  /** Output directory; created (0755) if missing. */
  dir: string;
  /** SANs of the proxy's serving certificate; an IP literal becomes an IP SAN, anything else DNS. Default ['localhost', '127.0.0.1']. */
  sans?: string[];
  /** Extra SANs for apiserver.crt (e.g. the compose service name), on top of kubeadm's defaults. */
  apiserverSans?: string[];
  /** Key type of every CA and leaf certificate (default 'ecdsa-p256'); sa.key is always RSA 2048. */
  algorithm?: KeyAlgorithm;
  /** Overwrite existing files instead of refusing. */
  force?: boolean;
  /** Leaf certificate lifetime in days (default 365); CAs live max(3650, days). */
  days?: number;
}

export interface PkiInitResult {
  /** Every file written, in a stable order. */
  written: string[];
}

export interface UserCertificateOptions {
  /** The PKI directory holding user-ca.crt and user-ca.key. */
  dir: string;
  /** Becomes the certificate's CN, i.e. the Kubernetes user name. */
  name: string;
  /** Each becomes its own O attribute, i.e. a Kubernetes group. */
  groups: string[];
  /** Default 365. */
  days?: number;
  force?: boolean;
  algorithm?: KeyAlgorithm;
}

export const DEFAULT_PROXY_SANS: readonly string[] = ['localhost', '127.0.0.1'];

/** SANs every apiserver.crt gets (kubeadm's, minus the service-network IP). */
export const APISERVER_DEFAULT_SANS: readonly string[] = ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'localhost', '127.0.0.1'];

/**
 * Base names of the pairs `pkiInit` writes (`.crt` + `.key`), the user CA's (empty) revocation
 * list, then the service-account pair.
 */
export const PKI_INIT_FILES: readonly string[] = [
  'ca.crt',
  'ca.key',
  'apiserver.crt',
  'apiserver.key',
  'front-proxy-ca.crt',
  'front-proxy-ca.key',
  'front-proxy-client.crt',
  'front-proxy-client.key',
  'proxy-ca.crt',
  'proxy-ca.key',
  'proxy.crt',
  'proxy.key',
  'user-ca.crt',
  'user-ca.key',
  'user-ca.crl',
  'sa.key',
  'sa.pub',
];

const DEFAULT_LEAF_DAYS = 365;
const CA_DAYS = 3650;
export const CERT_MODE = 0o644;
const KEY_MODE = 0o600;
const DIR_MODE = 0o755;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface PlannedFile {
  path: string;
  content: string;
  mode: number;
}

export async function pkiInit(options: PkiInitOptions): Promise<PkiInitResult> {
  const dir = options.dir;
  const days = checkDays(options.days);
  const algorithm = options.algorithm ?? 'ecdsa-p256';
  const proxySans = splitSans(options.sans && options.sans.length > 0 ? options.sans : DEFAULT_PROXY_SANS, 'proxy');
  const apiserverSans = splitSans([...APISERVER_DEFAULT_SANS, ...(options.apiserverSans ?? [])], 'apiserver');
  const targets = PKI_INIT_FILES.map((name) => join(dir, name));

  // Refuse before generating anything: cheap, and the error names the first existing file.
  if (!options.force) await refuseExisting(targets);

  const caDays = Math.max(CA_DAYS, days);
  const [clusterCa, frontProxyCa, proxyCa, userCa, sa] = await Promise.all([
    createCertificateAuthority({ commonName: 'kubernetes', validityDays: caDays, algorithm }),
    createCertificateAuthority({ commonName: 'front-proxy-ca', validityDays: caDays, algorithm }),
    createCertificateAuthority({ commonName: 'kube-front-proxy-ca', validityDays: caDays, algorithm }),
    createCertificateAuthority({ commonName: 'kube-front-proxy-user-ca', validityDays: caDays, algorithm }),
    generateKeyPairAsync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    }),
  ]);
  const [apiserver, frontProxyClient, proxy] = await Promise.all([
    issueCertificate(clusterCa, {
      commonName: 'kube-apiserver',
      usages: ['serverAuth'],
      ...apiserverSans,
      validityDays: days,
      algorithm,
    }),
    issueCertificate(frontProxyCa, {
      commonName: 'front-proxy-client',
      usages: ['clientAuth'],
      validityDays: days,
      algorithm,
    }),
    issueCertificate(proxyCa, {
      commonName: 'kube-front-proxy',
      usages: ['serverAuth'],
      ...proxySans,
      validityDays: days,
      algorithm,
    }),
  ]);

  const pairs: [string, CertificateAndKey][] = [
    ['ca', clusterCa],
    ['apiserver', apiserver],
    ['front-proxy-ca', frontProxyCa],
    ['front-proxy-client', frontProxyClient],
    ['proxy-ca', proxyCa],
    ['proxy', proxy],
    ['user-ca', userCa],
  ];
  // An empty list from day one, so --client-crl-file can point at it before anything is
  // revoked; it is valid as long as the leaves, and `pki crl --renew` re-signs it.
  const now = new Date();
  const userCrl = await signCrl(userCa, { entries: [], crlNumber: 1n, thisUpdate: now, nextUpdate: new Date(now.getTime() + days * DAY_MS) });
  const files: PlannedFile[] = [
    ...pairs.flatMap(([name, pair]) => [
      { path: join(dir, `${name}.crt`), content: pair.cert, mode: CERT_MODE },
      { path: join(dir, `${name}.key`), content: pair.key, mode: KEY_MODE },
    ]),
    { path: join(dir, 'user-ca.crl'), content: userCrl, mode: CERT_MODE },
    { path: join(dir, 'sa.key'), content: sa.privateKey, mode: KEY_MODE },
    { path: join(dir, 'sa.pub'), content: sa.publicKey, mode: CERT_MODE },
  ];

  await ensureDir(dir);
  await writeAll(files, options.force ?? false);
  return { written: files.map((f) => f.path) };
}

export async function issueUserCertificate(options: UserCertificateOptions): Promise<{ cert: string; key: string }> {
  const { dir, name } = options;
  checkUserName(name);
  const groups = options.groups.map((g) => checkGroup(g));
  const days = checkDays(options.days);
  const usersDir = join(dir, 'users');
  const certPath = join(usersDir, `${name}.crt`);
  const keyPath = join(usersDir, `${name}.key`);
  if (!options.force) await refuseExisting([certPath, keyPath]);

  const caCertPath = join(dir, 'user-ca.crt');
  const caKeyPath = join(dir, 'user-ca.key');
  const ca: CertificateAndKey = {
    cert: await readPki(caCertPath),
    key: await readPki(caKeyPath),
  };

  let issued: CertificateAndKey;
  try {
    issued = await issueCertificate(ca, {
      commonName: name,
      organizations: groups,
      usages: ['clientAuth'],
      validityDays: days,
      algorithm: options.algorithm ?? 'ecdsa-p256',
    });
  } catch (err) {
    throw new PkiError(`${caCertPath} / ${caKeyPath}: cannot sign with this CA: ${oneLine(err)}`);
  }

  await ensureDir(usersDir);
  await writeAll(
    [
      { path: certPath, content: issued.cert, mode: CERT_MODE },
      { path: keyPath, content: issued.key, mode: KEY_MODE },
    ],
    options.force ?? false,
  );
  return { cert: certPath, key: keyPath };
}

// --- validation ---------------------------------------------------------------------------------

// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;

function checkUserName(name: string): void {
  if (name.length === 0) throw new PkiError('user name must not be empty');
  if (name.includes('/')) throw new PkiError(`user name ${JSON.stringify(name)} must not contain '/'`);
  if (CONTROL_CHARS.test(name)) {
    throw new PkiError(`user name ${JSON.stringify(name)} must not contain control characters`);
  }
  if (name === '.' || name === '..') throw new PkiError(`user name ${JSON.stringify(name)} is not allowed`);
}

function checkGroup(group: string): string {
  if (group.length === 0) throw new PkiError('group names must not be empty');
  if (CONTROL_CHARS.test(group)) {
    throw new PkiError(`group ${JSON.stringify(group)} must not contain control characters`);
  }
  return group;
}

export function checkDays(days: number | undefined): number {
  if (days === undefined) return DEFAULT_LEAF_DAYS;
  if (!Number.isInteger(days) || days < 1) {
    throw new PkiError(`validity days must be a positive integer, got ${String(days)}`);
  }
  return days;
}

function splitSans(sans: readonly string[], what: string): { dnsNames: string[]; ipAddresses: string[] } {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const raw of sans) {
    const san = raw.trim();
    if (san.length === 0 || CONTROL_CHARS.test(san) || /\s/.test(san)) {
      throw new PkiError(`${what} SAN ${JSON.stringify(raw)} is not a valid DNS name or IP address`);
    }
    // Bracketed IPv6 ("[::1]") as people copy it from URLs.
    const unbracketed = san.startsWith('[') && san.endsWith(']') ? san.slice(1, -1) : san;
    if (isIP(unbracketed) !== 0) {
      if (!ipAddresses.includes(unbracketed)) ipAddresses.push(unbracketed);
    } else if (!dnsNames.includes(san)) {
      dnsNames.push(san);
    }
  }
  return { dnsNames, ipAddresses };
}

// --- files --------------------------------------------------------------------------------------

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    if (isErrno(err, 'ENOTDIR')) {
      throw new PkiError(`${path}: a parent of this path is not a directory`);
    }
    throw new PkiError(`${path}: cannot check whether it exists: ${oneLine(err)}`);
  }
}

async function refuseExisting(paths: readonly string[]): Promise<void> {
  for (const path of paths) {
    if (await exists(path)) {
      throw new PkiError(`${path}: already exists; refusing to overwrite (use --force to replace it)`);
    }
  }
}

async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
  } catch (err) {
    throw new PkiError(`${dir}: cannot create directory: ${oneLine(err)}`);
  }
}

export async function readPki(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new PkiError(`${path}: not found (run "pki init" first)`);
    throw new PkiError(`${path}: cannot read: ${oneLine(err)}`);
  }
}

/**
 * Writes every file to a temp file first, then moves them all into place. Without `force` a
 * move is a hard link, which fails if the target appeared meanwhile, so nothing is clobbered
 * even by a concurrent run; with `force` it is a rename, replacing the old file atomically.
 */
export async function writeAll(files: readonly PlannedFile[], force: boolean): Promise<void> {
  const temps: string[] = [];
  try {
    for (const file of files) temps.push(await writeTemp(file));
    for (const [i, file] of files.entries()) {
      const temp = temps[i]!;
      if (force) {
        await rename(temp, file.path).catch((err: unknown) => {
          throw new PkiError(`${file.path}: cannot write: ${oneLine(err)}`);
        });
      } else {
        await placeNew(temp, file.path);
      }
    }
  } finally {
    await Promise.all(temps.map((t) => unlink(t).catch(() => undefined)));
  }
}

async function placeNew(temp: string, target: string): Promise<void> {
  try {
    await link(temp, target);
    return;
  } catch (err) {
    if (isErrno(err, 'EEXIST')) {
      throw new PkiError(`${target}: already exists; refusing to overwrite (use --force to replace it)`);
    }
    // Some filesystems have no hard links: fall back to check-then-rename.
    if (!isErrno(err, 'EPERM') && !isErrno(err, 'ENOTSUP') && !isErrno(err, 'EOPNOTSUPP') && !isErrno(err, 'ENOSYS')) {
      throw new PkiError(`${target}: cannot write: ${oneLine(err)}`);
    }
  }
  if (await exists(target)) {
    throw new PkiError(`${target}: already exists; refusing to overwrite (use --force to replace it)`);
  }
  await rename(temp, target).catch((err: unknown) => {
    throw new PkiError(`${target}: cannot write: ${oneLine(err)}`);
  });
}

async function writeTemp(file: PlannedFile): Promise<string> {
  const dir = join(file.path, '..');
  const temp = join(dir, `.${basename(file.path)}.${randomBytes(6).toString('hex')}.tmp`);
  let handle;
  try {
    // Created 0600 whatever the final mode, so a key is never readable by others, not even
    // briefly; chmod then sets the exact mode regardless of the umask.
    handle = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    await handle.writeFile(file.content, 'utf8');
    await handle.chmod(file.mode);
    await handle.sync();
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw new PkiError(`${file.path}: cannot write: ${oneLine(err)}`);
  }
  await handle.close();
  return temp;
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

export function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\s*\n\s*/g, ' ');
}
