// The identity headers each apiserver trusts besides X-Remote-*: kube-apiserver may be started
// with more names (--requestheader-username-headers=X-Remote-User,X-User, -group-headers,
// -uid-headers, another -extra-headers-prefix), and reads every one of them from the proxy's
// connection. The proxy only knows to remove X-Remote-*, so a client could send X-User itself.
// kube-apiserver publishes its names in ConfigMap kube-system/extension-apiserver-authentication;
// this reads it from every upstream (as preflight.ts does, as PREFLIGHT_USER), at start and then
// every REFRESH_MS, and hands the union to the header rewrite (HeaderPolicy.apiserverTrusted).
//
// Each proxy process reads for itself (the only one, or each worker of --workers): the names are
// then where they are used, with no message from the primary to order against the first request.
// It costs one small GET per upstream per process per interval.
//
// What cannot be read (no RoleBinding for PREFLIGHT_USER: 403; an apiserver down) teaches
// nothing: the fixed X-Remote-* rules hold, names learned before stay, and the proxy serves on.
// serve's start-up preflight already says why and how to allow the read; this logs failures at
// debug, and at info only when the names removed change.

import { isIdentityOrCredentialHeader, type HeaderPolicy, type TrustedHeaderNames } from '../proxy/headers.js';
import { readIdentityHeaderNames } from './preflight.js';
import type { UpstreamConnector } from './tls.js';

/**
 * How often the ConfigMap is read again. The apiserver rewrites it when it starts with other
 * flags, so a change follows a restart of an apiserver; a minute bounds the window in which a
 * newly trusted name would pass, for one GET per upstream per minute (per process).
 */
export const REFRESH_MS = 60_000;
/** Tests shorten it (milliseconds); not a setting. */
const REFRESH_ENV = 'KUBE_FRONT_PROXY_TRUSTED_HEADERS_REFRESH_MS';
const READ_TIMEOUT_MS = 10_000;

export interface TrustedHeadersOptions {
  upstreams: readonly URL[];
  /** The current front-proxy connector (replaced when certificates reload). */
  connector: () => UpstreamConnector;
  /** Its apiserverTrusted is replaced when the names change. */
  policy: HeaderPolicy;
  logger: { debug(obj: object, msg: string): void; info(obj: object, msg: string): void };
  refreshMs?: number;
}

/** Lower-case names and prefixes the fixed rules (x-remote-*) do not already remove; undefined when there are none. */
export function extraTrusted(names: readonly string[], prefixes: readonly string[]): TrustedHeaderNames | undefined {
  const exact = new Set<string>();
  for (const name of names) {
    const lower = name.trim().toLowerCase();
    if (lower !== '' && !isIdentityOrCredentialHeader(lower)) exact.add(lower);
  }
  const starts = new Set<string>();
  for (const prefix of prefixes) {
    const lower = prefix.trim().toLowerCase();
    // Everything under x-remote-extra- goes already; an empty prefix the apiserver refuses.
    if (lower !== '' && !lower.startsWith('x-remote-extra-')) starts.add(lower);
  }
  // A name a prefix covers needs no entry of its own.
  for (const name of exact) if ([...starts].some((p) => name.startsWith(p))) exact.delete(name);
  return exact.size === 0 && starts.size === 0 ? undefined : { names: exact, prefixes: [...starts] };
}

export class TrustedHeaderLearner {
  /** Per upstream origin, the last names read (kept when a later read fails). */
  private readonly learned = new Map<string, { names: string[]; prefixes: string[] }>();
  private readonly failed = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly options: TrustedHeadersOptions) {}

  /** The first read now (serving does not wait for it), then one every refreshMs. */
  start(): void {
    void this.refresh();
    const fromEnv = Number(process.env[REFRESH_ENV]);
    const interval = this.options.refreshMs ?? (Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : REFRESH_MS);
    this.timer = setInterval(() => void this.refresh(), interval);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** One read of every upstream (a read already under way is joined, not doubled). */
  refresh(): Promise<void> {
    this.running ??= this.readAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async readAll(): Promise<void> {
    const { upstreams, connector, logger } = this.options;
    const agent = connector().createAgent({ headersTimeoutMs: READ_TIMEOUT_MS });
    try {
      await Promise.all(
        upstreams.map(async (upstream) => {
          const read = await readIdentityHeaderNames(agent, upstream);
          if ('failure' in read) {
            // Once per upstream until it reads again; serve's preflight has said why at info/warn.
            if (!this.failed.has(upstream.origin)) logger.debug({ upstream: upstream.origin }, `trusted identity headers not read: ${read.failure}`);
            this.failed.add(upstream.origin);
            return;
          }
          this.failed.delete(upstream.origin);
          this.learned.set(upstream.origin, read);
        }),
      );
    } catch (err) {
      logger.debug({ err }, 'trusted identity headers not read');
    } finally {
      void agent.close();
    }
    if (!this.stopped) this.apply();
  }

  private apply(): void {
    const all = [...this.learned.values()];
    const next = extraTrusted(
      all.flatMap((r) => r.names),
      all.flatMap((r) => r.prefixes),
    );
    const { policy, logger } = this.options;
    if (describe(next) === describe(policy.apiserverTrusted)) return;
    policy.apiserverTrusted = next;
    logger.info(
      { names: next ? [...next.names] : [], prefixes: next ? next.prefixes : [] },
      next ? 'removing from every request the other identity headers the apiserver trusts' : 'the apiserver trusts no identity headers besides X-Remote-*',
    );
  }
}

function describe(trusted: TrustedHeaderNames | undefined): string {
  return trusted ? JSON.stringify([[...trusted.names].sort(), [...trusted.prefixes].sort()]) : '';
}
