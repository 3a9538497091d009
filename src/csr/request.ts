// `user request-cert`: a client certificate from the cluster's own signer. A key (made here, or
// the user's own) and a PKCS#10 request with CN = user and one O per group; a
// certificates.k8s.io/v1 CertificateSigningRequest for kubernetes.io/kube-apiserver-client;
// approval (by us with --approve, or by an admin); then the certificate is checked against what
// was asked and written, with a kubeconfig through the proxy, all at once (temp file + rename):
// a failure at any step leaves no file behind. The private key never leaves this process.

import '../pki/certificates.js'; // installs the webcrypto provider for @peculiar/x509
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import { buildKubeconfig } from '../pki/kubeconfig.js';
import { PkiError, writeAll, type PlannedFile } from '../pki/init.js';
import { CsrError, Kubectl, kubectlMessage } from './kubectl.js';

export const SIGNER = 'kubernetes.io/kube-apiserver-client';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'kube-front-proxy';
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
/** The API refuses expirationSeconds below 600; kube-controller-manager caps it at --cluster-signing-duration (default 8760h). */
export const MIN_EXPIRATION_SECONDS = 600;
const subtle = webcrypto.subtle;

export interface RequestCertOptions {
  name: string;
  groups: string[];
  expirationSeconds: number;
  approve: boolean;
  waitMs: number;
  /** The admin's kubeconfig (kubectl --kubeconfig). */
  kubeconfig: string;
  /** The kubeconfig to write (not with csrFile). */
  output?: string;
  /** https://host:port of the proxy and its serving CA (PEM), for the kubeconfig. */
  server?: string;
  proxyCa?: string;
  /** The user's own private key (PEM): used to sign the request, never copied or changed. */
  keyFile?: string;
  /** The user's own PKCS#10 request (PEM): submitted as is; no key, no kubeconfig. */
  csrFile?: string;
  /** Where the certificate goes; default beside the key (or the request). */
  certFile?: string;
  /** The CertificateSigningRequest object's name; default the user name. */
  csrName?: string;
  /** PEM of the CA expected to sign; default the admin kubeconfig's cluster CA. */
  signerCa?: string;
  pollMs?: number;
  /** On SIGINT/SIGTERM while waiting: delete the CSR, say so, exit 130 (the CLI sets this). */
  withdrawOnSignal?: boolean;
  /** Progress lines (stderr in the CLI). */
  log: (line: string) => void;
}

export interface RequestCertResult {
  csrName: string;
  certFile: string;
  keyFile?: string;
  kubeconfigFile?: string;
  notAfter: Date;
  /** Milliseconds from submitting to having the certificate. */
  elapsedMs: number;
}

interface CsrObject {
  metadata: { name: string; uid?: string; creationTimestamp?: string; labels?: Record<string, string> };
  spec: { request: string; signerName: string; usages?: string[]; expirationSeconds?: number; username?: string };
  status?: { certificate?: string; conditions?: { type: string; status?: string; reason?: string; message?: string }[] };
}

export async function requestCert(opts: RequestCertOptions): Promise<RequestCertResult> {
  const csrName = opts.csrName ?? opts.name;
  if (!isObjectName(csrName)) {
    throw new CsrError(`"${csrName}" cannot name a CertificateSigningRequest (lowercase letters, digits, "-" and "."): give --csr-name`);
  }
  const plan = outputPlan(opts);
  for (const path of [plan.certFile, plan.keyOut, opts.output]) {
    if (path !== undefined && existsSync(path)) throw new CsrError(`${path}: already exists; refusing to overwrite`);
  }

  const material = await requestMaterial(opts);
  const kubectl = new Kubectl(opts.kubeconfig);
  const signerCa = opts.signerCa ?? (await clusterCa(kubectl));

  const body = {
    apiVersion: 'certificates.k8s.io/v1',
    kind: 'CertificateSigningRequest',
    metadata: { name: csrName, labels: { [MANAGED_BY_LABEL]: MANAGED_BY } },
    spec: {
      request: Buffer.from(material.csrPem).toString('base64'),
      signerName: SIGNER,
      usages: ['client auth'],
      expirationSeconds: opts.expirationSeconds,
    },
  };
  const started = Date.now();
  const created = await kubectl.run(['create', '-f', '-', '-o', 'json'], JSON.stringify(body));
  if (created.code !== 0) {
    if (/AlreadyExists|already exists/.test(created.stderr)) {
      const state = await kubectl.json<CsrObject>(`CSR ${csrName}`, ['get', 'csr', csrName]).then(stateOf, () => 'unknown state');
      throw new CsrError(`CSR ${csrName} already exists (${state}): delete it ("kubectl delete csr ${csrName}") or give --csr-name`);
    }
    throw new CsrError(`creating CSR ${csrName}: ${kubectlMessage(created.stderr)}`);
  }
  const uid = (JSON.parse(created.stdout) as CsrObject).metadata.uid;
  opts.log(`created CSR ${csrName}: ${describeSubject(opts.name, opts.groups)}, signer ${SIGNER}, expiration ${formatDuration(opts.expirationSeconds)}`);

  // From here on, a failure of ours withdraws the request (its key is gone with this process,
  // or a re-run would find the name taken); a denied or failed one stays for the admin to see.
  const withdraw = async (message: string): Promise<never> => {
    const deleted = await kubectl.run(['delete', 'csr', csrName, '--wait=false']);
    throw new CsrError(deleted.code === 0 ? `${message} (CSR ${csrName} deleted)` : `${message} (and deleting CSR ${csrName} failed: ${kubectlMessage(deleted.stderr)})`);
  };

  // Interrupted while waiting (Ctrl-C): withdraw the request too, so a re-run finds the name free.
  // The wait below then stops where it is: it would otherwise see its own deletion and end first.
  let interrupted: Promise<never> | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted ??= kubectl.run(['delete', 'csr', csrName, '--wait=false']).then((deleted) => {
      process.stderr.write(`kube-front-proxy: interrupted (${signal}); ${deleted.code === 0 ? `CSR ${csrName} deleted` : `deleting CSR ${csrName} failed: ${kubectlMessage(deleted.stderr)}`}; no file written\n`);
      return process.exit(130);
    });
  };
  if (opts.withdrawOnSignal) {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  let certPem: string;
  try {
    certPem = await awaitCertificate();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const elapsedMs = Date.now() - started;
  return finish(certPem, elapsedMs);

  async function awaitCertificate(): Promise<string> {
    if (opts.approve) {
      const approved = await kubectl.run(['certificate', 'approve', csrName]);
      if (approved.code !== 0) {
        const why = kubectlMessage(approved.stderr);
        const hint = /forbidden|not permitted/i.test(why) ? `the admin needs "approve" on signers "${SIGNER}" and "update" on certificatesigningrequests/approval (certificates.k8s.io): ` : '';
        await withdraw(`approving CSR ${csrName} refused: ${hint}${why}`);
      }
      opts.log(`approved CSR ${csrName}`);
    } else {
      opts.log(`waiting up to ${formatDuration(opts.waitMs / 1000)} for an admin to run: kubectl certificate approve ${csrName}`);
    }

    const deadline = started + opts.waitMs;
    for (;;) {
      const got = await kubectl.run(['get', 'csr', csrName, '-o', 'json']);
      if (interrupted) return interrupted;
      if (got.code !== 0) {
        if (/NotFound|not found/.test(got.stderr)) throw new CsrError(`CSR ${csrName} was deleted before a certificate was issued`);
        throw new CsrError(`reading CSR ${csrName}: ${kubectlMessage(got.stderr)}`);
      }
      const csr = JSON.parse(got.stdout) as CsrObject;
      if (uid && csr.metadata.uid !== uid) throw new CsrError(`CSR ${csrName} was replaced by another request of the same name`);
      const denied = condition(csr, 'Denied');
      if (denied) throw new CsrError(`CSR ${csrName} was denied${denied.reason ? ` (${denied.reason})` : ''}${denied.message ? `: ${denied.message}` : ''}`);
      const failed = condition(csr, 'Failed');
      if (failed) throw new CsrError(`CSR ${csrName}: the signer failed${failed.reason ? ` (${failed.reason})` : ''}${failed.message ? `: ${failed.message}` : ''}`);
      if (csr.status?.certificate) return Buffer.from(csr.status.certificate, 'base64').toString('utf8');
      if (Date.now() >= deadline) {
        const approved = condition(csr, 'Approved') !== undefined;
        await withdraw(
          `CSR ${csrName} was ${approved ? 'approved but not signed' : 'not approved'} within --wait ${formatDuration(opts.waitMs / 1000)}${approved ? ` (is kube-controller-manager running its csrsigning controller with --cluster-signing-cert-file?)` : ''}`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(opts.pollMs ?? 1000, Math.max(0, deadline - Date.now()))));
    }
  }

  async function finish(certPem: string, elapsedMs: number): Promise<RequestCertResult> {
    const cert = await checkCertificate(csrName, certPem, material.csr, opts, signerCa);
    const lifetime = (cert.notAfter.getTime() - Date.now()) / 1000;
    if (lifetime < opts.expirationSeconds - 600) {
      opts.log(`note: the signer shortened the certificate to end ${cert.notAfter.toISOString()} (kube-controller-manager caps it at --cluster-signing-duration)`);
    }

    const files: PlannedFile[] = [{ path: plan.certFile, content: certPem.endsWith('\n') ? certPem : `${certPem}\n`, mode: 0o644 }];
    if (plan.keyOut !== undefined && material.keyPem !== undefined) files.push({ path: plan.keyOut, content: material.keyPem, mode: 0o600 });
    if (opts.output !== undefined && material.keyPem !== undefined) {
      files.push({
        path: opts.output,
        mode: 0o600,
        content: buildKubeconfig({
          server: opts.server!,
          certificateAuthority: opts.proxyCa!,
          user: opts.name,
          credentials: { clientCertificate: certPem, clientKey: material.keyPem },
        }),
      });
    }
    try {
      await writeAll(files, false);
    } catch (err) {
      if (err instanceof PkiError) throw new CsrError(err.message);
      throw err;
    }
    return {
      csrName,
      certFile: plan.certFile,
      ...(plan.keyOut !== undefined ? { keyFile: plan.keyOut } : opts.keyFile !== undefined ? { keyFile: opts.keyFile } : {}),
      ...(opts.output !== undefined ? { kubeconfigFile: opts.output } : {}),
      notAfter: cert.notAfter,
      elapsedMs,
    };
  }
}

/** The files this run will write: the certificate always; the key only when made here. */
function outputPlan(opts: RequestCertOptions): { certFile: string; keyOut?: string } {
  if (opts.csrFile !== undefined) return { certFile: opts.certFile ?? `${stem(opts.csrFile, /\.(csr|pem|req)$/)}.crt` };
  if (opts.output === undefined) throw new CsrError('-o: required (the kubeconfig to write)');
  if (opts.keyFile !== undefined) return { certFile: opts.certFile ?? `${stem(opts.keyFile, /\.(key|pem)$/)}.crt` };
  const base = stem(opts.output, /\.(kubeconfig|yaml|yml|conf|config)$/);
  return { certFile: opts.certFile ?? `${base}.crt`, keyOut: `${base}.key` };
}

function stem(path: string, ext: RegExp): string {
  return ext.test(path) ? path.replace(ext, '') : path;
}

interface Material {
  csrPem: string;
  csr: x509.Pkcs10CertificateRequest;
  /** PKCS#8 PEM, only when this run made the key or was given it. */
  keyPem?: string;
}

async function requestMaterial(opts: RequestCertOptions): Promise<Material> {
  if (opts.csrFile !== undefined) {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(readFileSync(opts.csrFile, 'utf8'));
    } catch (err) {
      throw new CsrError(`--csr-file ${opts.csrFile}: ${isNotFound(err) ? 'not found' : 'not a PEM certificate request'}`);
    }
    if (!(await csr.verify().catch(() => false))) throw new CsrError(`--csr-file ${opts.csrFile}: its signature does not verify`);
    const mismatch = subjectMismatch(csr.subjectName, opts.name, opts.groups);
    if (mismatch) throw new CsrError(`--csr-file ${opts.csrFile}: the request's subject is ${mismatch}`);
    return { csrPem: csr.toString('pem'), csr };
  }
  let keys: webcrypto.CryptoKeyPair;
  let keyPem: string;
  if (opts.keyFile !== undefined) {
    ({ keys, keyPem } = await importKey(opts.keyFile));
  } else {
    keys = (await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const der = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey));
    keyPem = `${x509.PemConverter.encode(der, 'PRIVATE KEY')}\n`;
  }
  const name = new x509.Name([{ CN: [opts.name] }, ...opts.groups.map((g) => ({ O: [g] }))]);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name,
    keys: keys as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: keys.privateKey.algorithm.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-256' } : keys.privateKey.algorithm,
  });
  return { csrPem: csr.toString('pem'), csr, keyPem };
}

async function importKey(path: string): Promise<{ keys: webcrypto.CryptoKeyPair; keyPem: string }> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CsrError(`--key-file ${path}: ${isNotFound(err) ? 'not found' : 'cannot read'}`);
  }
  let key;
  try {
    key = createPrivateKey(text);
  } catch {
    throw new CsrError(`--key-file ${path}: not a PEM private key (or it is encrypted)`);
  }
  let algorithm: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType === 'ec' && (curve === 'prime256v1' || curve === 'secp384r1')) {
    algorithm = { name: 'ECDSA', namedCurve: curve === 'prime256v1' ? 'P-256' : 'P-384' };
  } else if (key.asymmetricKeyType === 'rsa') {
    algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  } else {
    throw new CsrError(`--key-file ${path}: a ${key.asymmetricKeyType}${curve ? ` ${curve}` : ''} key; use ECDSA P-256/P-384 or RSA`);
  }
  const pkcs8 = key.export({ type: 'pkcs8', format: 'der' });
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const privateKey = await subtle.importKey('pkcs8', pkcs8, algorithm, true, ['sign']);
  const publicKey = await subtle.importKey('spki', spki, algorithm, true, ['verify']);
  return { keys: { privateKey, publicKey }, keyPem: `${x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')}\n` };
}

/** The admin kubeconfig's cluster CA (PEM), if it names one. */
async function clusterCa(kubectl: Kubectl): Promise<string | undefined> {
  const view = await kubectl.run(['config', 'view', '--raw', '--minify', '--flatten', '-o', 'json']);
  if (view.code !== 0) throw new CsrError(`--kubeconfig: ${kubectlMessage(view.stderr)}`);
  const config = JSON.parse(view.stdout) as { clusters?: { cluster?: Record<string, unknown> }[] };
  const data = config.clusters?.[0]?.cluster?.['certificate-authority-data'];
  return typeof data === 'string' && data !== '' ? Buffer.from(data, 'base64').toString('utf8') : undefined;
}

async function checkCertificate(csrName: string, pem: string, csr: x509.Pkcs10CertificateRequest, opts: RequestCertOptions, signerCa: string | undefined): Promise<x509.X509Certificate> {
  const fail = (what: string) => new CsrError(`the certificate issued for CSR ${csrName} ${what}; not written`);
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(x509.PemConverter.decode(pem)[0]!);
  } catch {
    throw fail('is not a PEM certificate');
  }
  const mismatch = subjectMismatch(cert.subjectName, opts.name, opts.groups);
  if (mismatch) throw fail(`has subject ${mismatch}`);
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  const usages = (eku?.usages ?? []).map(String);
  if (usages.length !== 1 || usages[0] !== CLIENT_AUTH_OID) throw fail(`has extended key usages [${usages.join(', ') || 'none'}], not exactly client auth (${CLIENT_AUTH_OID})`);
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (basic?.ca) throw fail('is a CA certificate');
  if (!Buffer.from(cert.publicKey.rawData).equals(Buffer.from(csr.publicKey.rawData))) throw fail('has another public key than the request');
  if (signerCa !== undefined) {
    const cas = x509.PemConverter.decode(signerCa).map((der) => new x509.X509Certificate(der));
    let signed = false;
    for (const ca of cas) {
      if (await cert.verify({ publicKey: ca, signatureOnly: true }).catch(() => false)) signed = true;
    }
    if (!signed) throw fail(`is not signed by the cluster CA (${cas.map((c) => c.subject).join('; ')}); give the signer's CA with --signer-ca`);
  }
  return cert;
}

/** Undefined when `name` is exactly CN=user and one O per group (in any order), nothing else. */
export function subjectMismatch(name: x509.Name, user: string, groups: string[]): string | undefined {
  const cn: string[] = [];
  const o: string[] = [];
  const other: string[] = [];
  for (const rdn of name.toJSON()) {
    for (const [type, values] of Object.entries(rdn)) {
      for (const value of values) {
        if (type === 'CN') cn.push(value);
        else if (type === 'O') o.push(value);
        else other.push(`${type}=${value}`);
      }
    }
  }
  const same = cn.length === 1 && cn[0] === user && other.length === 0 && [...o].sort().join('\n') === [...groups].sort().join('\n');
  if (same) return undefined;
  return `"${name.toString()}", not ${describeSubject(user, groups)}`;
}

function describeSubject(user: string, groups: string[]): string {
  return `CN=${user}${groups.map((g) => `, O=${g}`).join('')}`;
}

function condition(csr: CsrObject, type: string) {
  return csr.status?.conditions?.find((c) => c.type === type && (c.status ?? 'True') === 'True');
}

export function stateOf(csr: CsrObject): string {
  if (condition(csr, 'Denied')) return 'Denied';
  if (condition(csr, 'Failed')) return 'Failed';
  if (csr.status?.certificate) return 'Issued';
  if (condition(csr, 'Approved')) return 'Approved';
  return 'Pending';
}

function isObjectName(name: string): boolean {
  return name.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(name);
}

function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === 'ENOENT';
}

/** Go-style durations: 720h, 90m, 1h30m, 3600s, and also 30d. */
export function parseDuration(flag: string, value: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(value.trim());
  if (!m || value.trim() === '') throw new CsrError(`${flag}: "${value}" is not a duration (e.g. 720h, 90m, 1h30m)`);
  return Number(m[1] ?? 0) * 86400 + Number(m[2] ?? 0) * 3600 + Number(m[3] ?? 0) * 60 + Number(m[4] ?? 0);
}

export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${r || (!h && !m) ? `${r}s` : ''}`;
}

export interface ListedCert {
  csrName: string;
  user: string;
  groups: string[];
  state: string;
  /** notAfter of an issued certificate. */
  notAfter?: Date;
  expirationSeconds?: number;
  created?: string;
}

/** The proxy's CSRs (label app.kubernetes.io/managed-by=kube-front-proxy), or with `all` every kube-apiserver-client one. */
export async function listCerts(kubeconfig: string, all: boolean): Promise<ListedCert[]> {
  const kubectl = new Kubectl(kubeconfig);
  const args = all ? ['get', 'csr'] : ['get', 'csr', '-l', `${MANAGED_BY_LABEL}=${MANAGED_BY}`];
  const list = await kubectl.json<{ items: CsrObject[] }>('listing CSRs', args);
  const rows: ListedCert[] = [];
  for (const csr of list.items) {
    if (csr.spec.signerName !== SIGNER) continue;
    let user = '?';
    let groups: string[] = [];
    try {
      const request = new x509.Pkcs10CertificateRequest(Buffer.from(csr.spec.request, 'base64').toString('utf8'));
      user = request.subjectName.getField('CN')[0] ?? '?';
      groups = request.subjectName.getField('O');
    } catch {
      // an unreadable request is listed with "?"
    }
    let state = stateOf(csr);
    let notAfter: Date | undefined;
    if (csr.status?.certificate) {
      try {
        notAfter = new x509.X509Certificate(x509.PemConverter.decode(Buffer.from(csr.status.certificate, 'base64').toString('utf8'))[0]!).notAfter;
        if (notAfter.getTime() < Date.now()) state = 'Expired';
      } catch {
        // listed without an expiry
      }
    }
    rows.push({
      csrName: csr.metadata.name,
      user,
      groups,
      state,
      ...(notAfter ? { notAfter } : {}),
      ...(csr.spec.expirationSeconds !== undefined ? { expirationSeconds: csr.spec.expirationSeconds } : {}),
      ...(csr.metadata.creationTimestamp ? { created: csr.metadata.creationTimestamp } : {}),
    });
  }
  return rows.sort((a, b) => a.csrName.localeCompare(b.csrName));
}
