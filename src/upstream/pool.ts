// The apiservers behind the proxy: which are healthy, which to use next. Request code sees only
// pick() and the acquire/release/eject reports; health checking and balancing live here.

import type { FastifyBaseLogger } from 'fastify';
import { NoHealthyUpstreamError } from './failures.js';

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

/** One active check of one upstream; resolves to an error text, or undefined when healthy. */
export type HealthCheck = (target: UpstreamTarget, timeoutMs: number) => Promise<string | undefined>;

export class UpstreamPool {
  readonly targets: UpstreamTarget[];
  private nextIndex = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;

  constructor(
    urls: URL[],
    private readonly strategy: BalancingStrategy,
    private readonly health: HealthPolicy,
    private readonly check: HealthCheck,
    private readonly logger: FastifyBaseLogger,
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
      await Promise.all(this.targets.map(async (target) => this.record(target, await this.check(target, this.health.timeoutMs).catch((err: unknown) => String(err)))));
    } finally {
      this.checking = false;
    }
  }

  private record(target: UpstreamTarget, error: string | undefined): void {
    if (error === undefined) {
      target.consecutiveFailures = 0;
      target.consecutiveSuccesses++;
      if (!target.healthy && target.consecutiveSuccesses >= this.health.healthyThreshold) {
        target.healthy = true;
        target.lastError = undefined;
        this.logger.info({ upstream: target.origin, healthy: this.healthyCount }, 'upstream healthy again');
      }
      return;
    }
    target.consecutiveSuccesses = 0;
    target.consecutiveFailures++;
    target.lastError = error;
    if (target.healthy && target.consecutiveFailures >= this.health.unhealthyThreshold) {
      target.healthy = false;
      this.logger.warn({ upstream: target.origin, reason: error, healthy: this.healthyCount }, 'upstream failed its health checks');
    }
  }
}
