// Preflight: does each apiserver trust the proxy the way the proxy speaks to it? kube-apiserver
// publishes its --requestheader-* settings in ConfigMap kube-system/extension-apiserver-
// authentication (its clusterauthenticationtrust controller); this reads it from every upstream
// and says, one line per problem, where it and the proxy disagree. Used by `check` and, in the
// background, by `serve` at start-up.
//
// The read is made the way every proxied request is: the front-proxy certificate, and a user in
// X-Remote-User. Without a user header the apiserver answers 401 on a kubeadm cluster (the
// requestheader authenticator finds no user, and the x509 one fails on a certificate its
// --client-ca-file did not sign), so the proxy names itself PREFLIGHT_USER, which needs the
// built-in Role extension-apiserver-authentication-reader. A 401 therefore means the apiserver
// refuses the front-proxy identity itself; the ConfigMap can then only be read with other
// credentials (`fallback`: check --kubeconfig) to say why.

import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { readGoSubject } from '../auth/x509-name.js';
import { bundleCertificates, issuedBy } from '../auth/trusted-cas.js';
import { commonName } from '../material/certfiles.js';
import { isIdentityOrCredentialHeader } from '../proxy/headers.js';
import { errorCode } from './failures.js';
import { UpstreamConnector, type UpstreamTls } from './tls.js';

export const PREFLIGHT_USER = 'kube-front-proxy:preflight';
const CONFIGMAP = 'kube-system/extension-apiserver-authentication';
const CONFIGMAP_PATH = '/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication';
export const ROLEBINDING_COMMAND = `kubectl create rolebinding kube-front-proxy-preflight --namespace kube-system --role extension-apiserver-authentication-reader --user ${PREFLIGHT_USER}`;
const READ_TIMEOUT_MS = 10_000;

/**
 * mismatch: the apiserver and the proxy disagree (serve warns). unchecked: the settings could
 * not be read (a refusal, no ConfigMap). unreachable: no answer at all, which the health checks
 * already report. note: worth knowing, not a problem (check still exits 0).
 */
export type Severity = 'mismatch' | 'unchecked' | 'unreachable' | 'note';

export interface Finding {
  severity: Severity;
  text: string;
}

export interface UpstreamPreflight {
  upstream: string;
  /** Empty: everything matches. */
  findings: Finding[];
}

export const MATCHES = "matches: the apiserver's requestheader CA, allowed names and identity headers agree with the proxy's";

/** The identity headers the proxy sets, and what a client could do with another name the apiserver reads. */
const HEADER_SETTINGS = [
  { key: 'requestheader-username-headers', ours: 'X-Remote-User', ignored: 'the apiserver does not see the user the proxy sends', abuse: 'pose as any user' },
  { key: 'requestheader-group-headers', ours: 'X-Remote-Group', ignored: 'the apiserver ignores the groups the proxy sends', abuse: 'claim any group' },
  { key: 'requestheader-extra-headers-prefix', ours: 'X-Remote-Extra-', ignored: 'the apiserver ignores the extra values the proxy sends', abuse: 'add extra values', prefix: true },
  // The proxy sends no UID; it removes X-Remote-Uid, the one name the apiserver allows here.
  { key: 'requestheader-uid-headers', ours: undefined, ignored: '', abuse: 'set its UID' },
] as const;

type Read = { data: Record<string, string> } | { status: number; message: string } | { error: string };

export interface PreflightOptions {
  /** Credentials to read the ConfigMap with when the apiserver refuses the proxy's (check --kubeconfig). */
  fallback?: UpstreamTls;
}

/** Reads and compares, every upstream at once; results in the order of `upstreams`. */
export async function preflight(upstreams: readonly URL[], proxy: UpstreamTls, options: PreflightOptions = {}): Promise<UpstreamPreflight[]> {
  const ours = ourSide(proxy.cert);
  const agent = new UpstreamConnector(proxy).createAgent({ headersTimeoutMs: READ_TIMEOUT_MS });
  const fallback = options.fallback ? new UpstreamConnector(options.fallback).createAgent({ headersTimeoutMs: READ_TIMEOUT_MS }) : undefined;
  try {
    return await Promise.all(
      upstreams.map(async (upstream) => {
        const read = await readConfigMap(agent, upstream, { 'x-remote-user': PREFLIGHT_USER });
        if ('data' in read) return { upstream: upstream.origin, findings: compareWith(read.data, ours, { proxyReadsIt: true }) };
        const findings = [refusal(read, ours, fallback !== undefined)];
        if (fallback && 'status' in read) {
          const second = await readConfigMap(fallback, upstream, {});
          findings.push(...('data' in second ? compareWith(second.data, ours, { proxyReadsIt: false }) : [{ severity: 'unchecked' as const, text: `--kubeconfig's user could not read it either: ${describe(second)}` }]));
        }
        return { upstream: upstream.origin, findings };
      }),
    );
  } finally {
    await Promise.all([agent.close(), fallback?.close()]);
  }
}

/** serve's start-up check: one log line per finding (mismatches warn), or one that all is well. */
export async function logPreflight(upstreams: readonly URL[], proxy: UpstreamTls, logger: Logger): Promise<void> {
  try {
    for (const { upstream, findings } of await preflight(upstreams, proxy)) {
      if (findings.every((f) => f.severity === 'note')) logger.info({ upstream }, `preflight: ${MATCHES}`);
      for (const { severity, text } of findings) {
        const level = severity === 'mismatch' ? 'warn' : severity === 'unchecked' || severity === 'note' ? 'info' : 'debug';
        logger[level]({ upstream }, `preflight: ${text}`);
      }
    }
  } catch (err) {
    logger.warn({ err }, 'preflight failed');
  }
}

/** The identity header names an apiserver publishes it trusts, as it wrote them; or why they could not be read. */
export type IdentityHeaderRead = { names: string[]; prefixes: string[] } | { failure: string };

/**
 * Reads one upstream's ConfigMap as PREFLIGHT_USER (with `agent`: the front-proxy certificate)
 * for every identity header name the apiserver reads: the username, group and UID headers, and
 * the extra-header prefixes. upstream/trusted-headers.ts strips them from forwarded requests.
 */
export async function readIdentityHeaderNames(agent: ReturnType<UpstreamConnector['createAgent']>, upstream: URL): Promise<IdentityHeaderRead> {
  const read = await readConfigMap(agent, upstream, { 'x-remote-user': PREFLIGHT_USER });
  if (!('data' in read)) return { failure: describe(read) };
  const names: string[] = [];
  const prefixes: string[] = [];
  for (const setting of HEADER_SETTINGS) {
    const list = jsonList(read.data, setting.key);
    if (!Array.isArray(list)) return { failure: list };
    ('prefix' in setting ? prefixes : names).push(...list);
  }
  return { names, prefixes };
}

interface OurSide {
  leaf: X509Certificate;
  /** Intermediates sent after the leaf, which the apiserver may chain through. */
  intermediates: X509Certificate[];
  /** As the apiserver reads it (Go keeps the last CN). */
  cn: string;
  /** "CN=front-proxy-client, issued by CN=front-proxy-ca" */
  described: string;
}

function ourSide(proxyCert: Buffer): OurSide {
  const [leaf, ...intermediates] = bundleCertificates(proxyCert) as [X509Certificate, ...X509Certificate[]];
  let cn: string;
  try {
    cn = readGoSubject(leaf.raw).commonName;
  } catch {
    cn = commonName(leaf);
  }
  return { leaf, intermediates, cn, described: `CN=${cn}, issued by ${oneLine(leaf.issuer)}` };
}

async function readConfigMap(agent: ReturnType<UpstreamConnector['createAgent']>, upstream: URL, headers: Record<string, string>): Promise<Read> {
  try {
    const response = await agent.request({
      origin: upstream.origin,
      path: CONFIGMAP_PATH,
      method: 'GET',
      headers: { accept: 'application/json', ...headers },
      signal: AbortSignal.timeout(READ_TIMEOUT_MS),
    });
    const text = await response.body.text();
    if (response.statusCode !== 200) return { status: response.statusCode, message: statusMessage(text) };
    return { data: (JSON.parse(text) as { data?: Record<string, string> }).data ?? {} };
  } catch (err) {
    const code = errorCode(err);
    return { error: `${code ? `${code} ` : ''}${(err as Error).message}` };
  }
}

/** The message of a Kubernetes Status body, else the start of the body. */
function statusMessage(body: string): string {
  try {
    const message = (JSON.parse(body) as { message?: unknown }).message;
    if (typeof message === 'string') return message;
  } catch {
    // not JSON
  }
  return body.trim().slice(0, 200);
}

const REASONS: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found' };

function describe(read: Exclude<Read, { data: unknown }>): string {
  if ('error' in read) return read.error;
  return `${read.status}${REASONS[read.status] ? ` ${REASONS[read.status]}` : ''}: ${read.message}`;
}

/** Why the proxy's own read failed, and what to do about it. */
function refusal(read: Exclude<Read, { data: unknown }>, ours: OurSide, hasFallback: boolean): Finding {
  if ('error' in read) return { severity: 'unreachable', text: `cannot read ${CONFIGMAP}: ${read.error}` };
  switch (read.status) {
    case 401:
      return {
        severity: 'mismatch',
        text: `401 Unauthorized: the apiserver does not accept the proxy's front-proxy certificate (${ours.described}) with the user in X-Remote-User${hasFallback ? '' : '; `kube-front-proxy check --kubeconfig /etc/kubernetes/admin.conf` says why'}`,
      };
    case 403:
      return { severity: 'unchecked', text: `403 Forbidden: ${PREFLIGHT_USER} may not read ${CONFIGMAP}; allow it: ${ROLEBINDING_COMMAND}` };
    default:
      return { severity: 'unchecked', text: `cannot read ${CONFIGMAP}: ${describe(read)}` };
  }
}

/** What in the apiserver's published settings (the ConfigMap's data) disagrees with the proxy's front-proxy certificate (PEM) and headers. */
export function compare(data: Record<string, string>, proxyCert: Buffer, read: ReadBy = { proxyReadsIt: false }): Finding[] {
  return compareWith(data, ourSide(proxyCert), read);
}

/**
 * `proxyReadsIt`: the proxy's own identity read the ConfigMap, so serve learns the identity
 * header names in it too and removes them from clients' requests (upstream/trusted-headers.ts).
 */
interface ReadBy {
  proxyReadsIt: boolean;
}

/** One finding per problem. */
function compareWith(data: Record<string, string>, ours: OurSide, read: ReadBy): Finding[] {
  const mismatch = (text: string): Finding => ({ severity: 'mismatch', text });
  const caBundle = data['requestheader-client-ca-file'];
  if (!caBundle) return [mismatch('no requestheader-client-ca-file: the apiserver trusts no front proxy (it runs without --requestheader-client-ca-file)')];
  const findings: Finding[] = [];

  const cas = bundleCertificates(Buffer.from(caBundle));
  if (!chainsTo(ours, cas)) {
    findings.push(mismatch(`the proxy's front-proxy certificate (${ours.described}) is not signed by a CA in requestheader-client-ca-file (${cas.map((ca) => oneLine(ca.subject)).join('; ')})`));
  }

  const allowed = jsonList(data, 'requestheader-allowed-names');
  if (!Array.isArray(allowed)) findings.push(mismatch(allowed));
  // An empty list allows any CN the CA signed (x509request.Verifier.verifySubject).
  else if (allowed.length > 0 && !allowed.includes(ours.cn)) {
    findings.push(mismatch(`requestheader-allowed-names ${JSON.stringify(allowed)} does not include the proxy's CN ${ours.cn}`));
  }

  for (const setting of HEADER_SETTINGS) {
    const names = jsonList(data, setting.key);
    if (!Array.isArray(names)) {
      findings.push(mismatch(names));
      continue;
    }
    // Go compares header names case-insensitively (canonical keys; EqualFold for prefixes).
    const lower = names.map((n) => n.toLowerCase());
    if (setting.ours && !lower.includes(setting.ours.toLowerCase())) {
      findings.push(mismatch(`${setting.key} ${JSON.stringify(names)} does not include ${setting.ours}: ${setting.ignored}`));
    }
    // A name the apiserver reads that the proxy does not remove reaches it from any client.
    for (const name of names) {
      const lowerName = name.toLowerCase();
      if (setting.ours && lowerName === setting.ours.toLowerCase()) continue;
      // For a prefix: whether a header that starts with it is removed (the proxy removes by exact
      // name, and everything under x-remote-extra-).
      if (isIdentityOrCredentialHeader('prefix' in setting ? `${lowerName}x` : lowerName)) continue;
      if (read.proxyReadsIt) findings.push({ severity: 'note', text: `${setting.key} has ${name} too: serve removes it from every client request (it reads this list at start and every minute)` });
      else findings.push(mismatch(`${setting.key} has ${name}, which the proxy passes on from clients while it cannot read this ConfigMap itself: any user of the proxy could ${setting.abuse}`));
    }
  }
  return findings;
}

/** As Go's Verify with the bundle as roots and our intermediates: some bundle certificate issued a link of our chain. */
function chainsTo(ours: OurSide, cas: X509Certificate[]): boolean {
  let link = ours.leaf;
  const left = [...ours.intermediates];
  for (;;) {
    if (cas.some((ca) => issuedBy(link, ca))) return true;
    const next = left.findIndex((candidate) => issuedBy(link, candidate));
    if (next === -1) return false;
    link = left.splice(next, 1)[0] as X509Certificate;
  }
}

/** A JSON list of strings, as the controller writes them; a missing key is an empty list; otherwise the problem. */
function jsonList(data: Record<string, string>, key: string): string[] | string {
  const text = data[key];
  if (text === undefined || text === '') return [];
  try {
    const value: unknown = JSON.parse(text);
    if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value;
  } catch {
    // below
  }
  return `${key} is not a JSON list of strings: ${text.slice(0, 100)}`;
}

function oneLine(name: string): string {
  return name.split('\n').join(', ');
}
