// A closed-loop load generator: each of N loops sends one request, waits for the whole answer,
// and sends the next, so the offered load adapts to the server (no coordinated-omission
// questions, as there is no schedule to fall behind) and concurrency is exactly N.
// A group with `ratePerSecond` is open-loop instead: requests start on a fixed schedule over N
// keep-alive connections, whether or not earlier ones have been answered, and each latency is
// counted from when its request was due (a server that falls behind is charged for the queue).
// That is the added latency at a given load; a closed loop measures it at saturation, where it
// is mostly queueing: 50 loops / throughput.

import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';

export interface LoadGroup {
  label: string;
  concurrency: number;
  /** Several: loop i uses dispatchers[i % n] (attackers each on their own source address). */
  dispatcher: Dispatcher | readonly Dispatcher[];
  /** Called per request, so a group can vary it (attackers try a new password each time). */
  request: () => Dispatcher.RequestOptions;
  /** Any other status, or a transport error, is counted as an error. */
  expectStatus: number | readonly number[];
  /** Open loop: this many requests a second on a fixed schedule (concurrency = connections of the dispatcher). */
  ratePerSecond?: number;
}

export function expectedStatuses(group: LoadGroup): readonly number[] {
  return typeof group.expectStatus === 'number' ? [group.expectStatus] : group.expectStatus;
}

export function dispatchersOf(group: LoadGroup): readonly Dispatcher[] {
  return Array.isArray(group.dispatcher) ? group.dispatcher : [group.dispatcher as Dispatcher];
}

export interface GroupResult {
  label: string;
  /** Requests completed inside the measured window. */
  requests: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Over the whole run, warm-up included. */
  errors: number;
  firstError: string | undefined;
  /** Answers inside the measured window by HTTP status (0 = transport error). */
  statuses: Record<number, number>;
}

export interface Window {
  seconds: number;
  groups: GroupResult[];
}

export interface LoadTiming {
  warmupMs: number;
  durationMs: number;
  /** Called when the measured window opens and closes (to sample CPU counters). */
  onMark?: (mark: 'start' | 'end') => void;
}

/** Raw samples of one group, in ms: when each counts (see `at`) and its latency. */
interface Samples {
  /**
   * What puts a sample in the window: its completion (closed loop) or when it was due (open
   * loop, so the backlog of a slow start is not counted as steady state).
   */
  at: number[];
  latencies: number[];
  statuses: number[];
  errors: number;
  firstError: string | undefined;
}

/** Runs every group at once: warm-up, then the measured window; returns only the window's numbers. */
export async function runLoad(groups: LoadGroup[], timing: LoadTiming): Promise<Window> {
  const state = { stopped: false };
  const samples = groups.map((): Samples => ({ at: [], latencies: [], statuses: [], errors: 0, firstError: undefined }));
  const loops = groups.flatMap((group, g) =>
    group.ratePerSecond ? [paced(group, group.ratePerSecond, samples[g]!, state)] : Array.from({ length: group.concurrency }, (_, i) => loop(group, dispatchersOf(group)[i % dispatchersOf(group).length]!, samples[g]!, state)),
  );

  await sleep(timing.warmupMs);
  timing.onMark?.('start');
  const start = performance.now();
  await sleep(timing.durationMs);
  timing.onMark?.('end');
  const end = performance.now();
  state.stopped = true;
  await Promise.all(loops);

  const seconds = (end - start) / 1000;
  return { seconds, groups: groups.map((group, g) => summarize(group.label, samples[g]!, start, end)) };
}

async function loop(group: LoadGroup, dispatcher: Dispatcher, samples: Samples, state: { stopped: boolean }): Promise<void> {
  const expected = expectedStatuses(group);
  while (!state.stopped) {
    const sent = performance.now();
    let ok = false;
    let status = 0;
    try {
      const response = await dispatcher.request(group.request());
      await response.body.arrayBuffer(); // a real client reads the whole body
      status = response.statusCode;
      ok = expected.includes(status);
      if (!ok) samples.firstError ??= `HTTP ${response.statusCode}`;
    } catch (err) {
      samples.firstError ??= String(err);
      await sleep(10); // a refused connection must not turn this loop into a busy spin
    }
    const done = performance.now();
    samples.at.push(done);
    samples.latencies.push(done - sent);
    samples.statuses.push(status);
    if (!ok) samples.errors++;
  }
}

/** Open loop: request k is due at start + k / rate; every one is sent when due (or at once if late). */
async function paced(group: LoadGroup, ratePerSecond: number, samples: Samples, state: { stopped: boolean }): Promise<void> {
  const dispatcher = dispatchersOf(group)[0]!;
  const expected = expectedStatuses(group);
  // Every connection opened first (TLS handshakes on both of the proxy's legs): otherwise the
  // schedule starts against a cold pool, and the backlog of the first second, drained only at
  // the rate's margin, reaches into the measured window.
  await Promise.all(
    Array.from({ length: group.concurrency }, () =>
      dispatcher.request(group.request()).then(
        (r) => r.body.arrayBuffer(),
        () => undefined,
      ),
    ),
  );
  const start = performance.now();
  const inFlight = new Set<Promise<void>>();
  const one = async (due: number): Promise<void> => {
    let status = 0;
    try {
      const response = await dispatcher.request(group.request());
      await response.body.arrayBuffer();
      status = response.statusCode;
      if (!expected.includes(status)) samples.firstError ??= `HTTP ${status}`;
    } catch (err) {
      samples.firstError ??= String(err);
    }
    const done = performance.now();
    samples.at.push(due);
    samples.latencies.push(done - due);
    samples.statuses.push(status);
    if (!expected.includes(status)) samples.errors++;
  };
  for (let sent = 0; !state.stopped;) {
    const now = performance.now();
    for (; start + (sent * 1000) / ratePerSecond <= now; sent++) {
      const request = one(start + (sent * 1000) / ratePerSecond);
      inFlight.add(request);
      void request.finally(() => inFlight.delete(request));
    }
    // Timers fire about every millisecond at best: what fell due meanwhile goes out together.
    await sleep(Math.max(0, start + (sent * 1000) / ratePerSecond - performance.now()));
  }
  await Promise.all(inFlight);
}

function summarize(label: string, samples: Samples, start: number, end: number): GroupResult {
  const inWindow: number[] = [];
  const statuses: Record<number, number> = {};
  samples.at.forEach((t, i) => {
    if (t < start || t > end) return;
    inWindow.push(samples.latencies[i]!);
    const status = samples.statuses[i]!;
    statuses[status] = (statuses[status] ?? 0) + 1;
  });
  inWindow.sort((a, b) => a - b);
  return {
    label,
    requests: inWindow.length,
    perSecond: inWindow.length / ((end - start) / 1000),
    p50Ms: percentile(inWindow, 0.5),
    p99Ms: percentile(inWindow, 0.99),
    errors: samples.errors,
    firstError: samples.firstError,
    statuses,
  };
}

/** Nearest-rank percentile of ascending samples; NaN when there are none. */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
