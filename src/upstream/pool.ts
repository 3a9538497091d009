// The apiservers behind the proxy: which are healthy, which to use next. Request code sees only
// pick() and the acquire/release/eject reports; health checking and balancing live here.

import type { FastifyBaseLogger } from 'fastify';
import { NoHealthyUpstreamError, ProxyIdentityRefusedError } from './failures.js';

export type BalancingStrategy = 'least-outstanding' | 'round-robin';

export interface UpstreamTarget {
  url: URL;
  /** scheme://host:port, the key undici pools connections by. */
  origin: string;
  healthy: boolean;
  /** Requests and streams in flight on this upstream. */
  outstanding: number;
  consecutiveFailures: number;
  consecutiveSuccesses: number;
  /** Why it was last taken out, for the 503 message and the log. */
  lastError: string | undefined;
}

export interface HealthPolicy {
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive failed checks that take a healthy upstream out. */
  unhealthyThreshold: number;
  /** Consecutive passed checks that bring an ejected upstream back. */
  healthyThreshold: number;
}

/** What one check found wrong with an upstream. */
export interface HealthFailure {
  reason: string;
  /**
   * The apiserver refused the proxy's own identity (health.ts): a misconfiguration, not a blip, so
   * it takes the upstream out at the first check instead of after --unhealthy-threshold.
   */
  identityRefused?: boolean;
}

/** One active check of one upstream; resolves to what is wrong, or undefined when healthy. */
export type HealthCheck = (target: UpstreamTarget, timeoutMs: number) => Promise<HealthFailure | undefined>;

export class UpstreamPool {
  readonly targets: UpstreamTarget[];
  private nextIndex = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  /** The latest check of each upstream begun by confirmIdentityRefused(), settled or in flight. */
  private readonly confirming = new Map<UpstreamTarget, { startedAt: number; failure: Promise<HealthFailure | undefined> }>();
  /** Upstreams whose last verdict was a refusal of the proxy's identity: logged once per change. */
  private readonly refusing = new Set<UpstreamTarget>();

  constructor(
    urls: URL[],
    private readonly strategy: BalancingStrategy,
    private readonly health: HealthPolicy,
    private readonly check: HealthCheck,
    private readonly logger: FastifyBaseLogger,
    /**
     * Whether this pool logs what its health checks find at info/warn. Under --workers every
     * worker checks the same apiservers: one of them saying so is enough (the others: debug).
     */
    private readonly reportsHealth = true,
  ) {
    // Optimistic start: a dead upstream costs one failed connect (retried elsewhere) and is
    // ejected at once, rather than every upstream waiting for a first check.
    this.targets = urls.map((url) => ({ url, origin: url.origin, healthy: true, outstanding: 0, consecutiveFailures: 0, consecutiveSuccesses: 0, lastError: undefined }));
  }

  get healthyCount(): number {
    return this.targets.filter((t) => t.healthy).length;
  }

  /**
   * The upstream for the next request, or undefined when none is healthy. `exclude` holds
   * those a retry has already tried.
   */
  pick(exclude?: ReadonlySet<UpstreamTarget>): UpstreamTarget | undefined {
    const count = this.targets.length;
    const start = this.nextIndex;
    let best: UpstreamTarget | undefined;
    let bestIndex = -1;
    // Walk from the round-robin cursor so that, among equals, each gets its turn.
    for (let step = 0; step < count; step++) {
      const index = (start + step) % count;
      const target = this.targets[index] as UpstreamTarget;
      if (!target.healthy || exclude?.has(target)) continue;
      if (this.strategy === 'round-robin') {
        best = target;
        bestIndex = index;
        break;
      }
      if (!best || target.outstanding < best.outstanding) {
        best = target;
        bestIndex = index;
      }
    }
    if (best) this.nextIndex = (bestIndex + 1) % count;
    return best;
  }

  acquire(target: UpstreamTarget): void {
    target.outstanding++;
  }

  release(target: UpstreamTarget): void {
    target.outstanding = Math.max(0, target.outstanding - 1);
  }

  /** Passive ejection: a connection or TLS failure takes the upstream out until checks pass. */
  eject(target: UpstreamTarget, reason: string): void {
    target.lastError = reason;
    target.consecutiveSuccesses = 0;
    if (!target.healthy) return;
    target.healthy = false;
    this.logger.warn({ upstream: target.origin, reason, healthy: this.healthyCount }, 'upstream ejected');
  }

  /**
   * Whether the apiserver at `origin` refuses the proxy's own identity, asked after it answered
   * 401 to a request forwarded with the front-proxy certificate and a user. Such a 401 may also be
   * an answer from behind the apiserver (a service or pod proxied through it, an aggregated API),
   * which must reach the user unchanged; /readyz with a user cannot be, so a check decides. Any
   * check begun after the request was sent (`sentAt`, performance.now()) answers for it, so
   * requests meeting 401s at once share one check.
   */
  async confirmIdentityRefused(origin: string | undefined, sentAt: number): Promise<boolean> {
    const target = this.targets.find((t) => t.origin === origin);
    if (!target) return false;
    let latest = this.confirming.get(target);
    if (!latest || latest.startedAt < sentAt) {
      latest = { startedAt: performance.now(), failure: this.checkOne(target) };
      this.confirming.set(target, latest);
    }
    return (await latest.failure)?.identityRefused === true;
  }

  /** The error for a request when no upstream is healthy, or undefined while one is. */
  outage(): Error | undefined {
    return this.healthyCount === 0 ? this.exhausted(new Set(), undefined) : undefined;
  }

  /** Why no upstream can take a request: for the 503 message. */
  describeOutage(): string {
    return this.targets.map((t) => `${t.origin} (${t.lastError ?? 'unhealthy'})`).join(', ');
  }

  /**
   * The error for a request no upstream is left for: with one apiserver tried, its own failure
   * says most (a TLS error stays a 502); with several, or none healthy to begin with, what is
   * wrong with each.
   */
  exhausted(tried: ReadonlySet<UpstreamTarget>, previous: Error | undefined): Error {
    // Every apiserver refuses the proxy's identity: a misconfiguration to name, not an outage to retry.
    if (this.targets.every((t) => this.refusing.has(t))) return new ProxyIdentityRefusedError(this.targets.map((t) => t.origin));
    return previous && tried.size === 1 ? previous : new NoHealthyUpstreamError(this.describeOutage());
  }

  start(): void {
    if (this.timer) return;
    void this.runChecks();
    this.timer = setInterval(() => void this.runChecks(), this.health.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async runChecks(): Promise<void> {
    if (this.checking) return; // a slow round must not pile up behind itself
    this.checking = true;
    try {
      await Promise.all(this.targets.map((target) => this.checkOne(target)));
    } finally {
      this.checking = false;
    }
  }

  private async checkOne(target: UpstreamTarget): Promise<HealthFailure | undefined> {
    const failure = await this.check(target, this.health.timeoutMs).catch((err: unknown): HealthFailure => ({ reason: String(err) }));
    this.record(target, failure);
    return failure;
  }

  private record(target: UpstreamTarget, failure: HealthFailure | undefined): void {
    if (failure === undefined) {
      target.consecutiveFailures = 0;
      target.consecutiveSuccesses++;
      if (!target.healthy && target.consecutiveSuccesses >= this.health.healthyThreshold) {
        target.healthy = true;
        target.lastError = undefined;
        this.refusing.delete(target);
        this.healthLog('info', { upstream: target.origin, healthy: this.healthyCount }, 'upstream healthy again');
      }
      return;
    }
    target.consecutiveSuccesses = 0;
    target.consecutiveFailures++;
    target.lastError = failure.reason;
    if (failure.identityRefused) {
      // One line when it starts refusing (also when it was already out for another reason), none
      // for every check or request after: the reason says what to fix.
      const changed = !this.refusing.has(target);
      this.refusing.add(target);
      target.healthy = false;
      if (changed) this.healthLog('warn', { upstream: target.origin, reason: failure.reason, healthy: this.healthyCount }, "upstream refuses the proxy's identity");
      return;
    }
    this.refusing.delete(target);
    if (target.healthy && target.consecutiveFailures >= this.health.unhealthyThreshold) {
      target.healthy = false;
      this.healthLog('warn', { upstream: target.origin, reason: failure.reason, healthy: this.healthyCount }, 'upstream failed its health checks');
    }
  }

  private healthLog(level: 'info' | 'warn', fields: Record<string, unknown>, msg: string): void {
    this.logger[this.reportsHealth ? level : 'debug'](fields, msg);
  }
}
