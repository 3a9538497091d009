// A closed-loop load generator: each of N loops sends one request, waits for the whole answer,
// and sends the next, so the offered load adapts to the server (no coordinated-omission
// questions, as there is no schedule to fall behind) and concurrency is exactly N.

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

/** Raw samples of one group: completion time and latency, both in ms. */
interface Samples {
  ends: number[];
  latencies: number[];
  statuses: number[];
  errors: number;
  firstError: string | undefined;
}

/** Runs every group at once: warm-up, then the measured window; returns only the window's numbers. */
export async function runLoad(groups: LoadGroup[], timing: LoadTiming): Promise<Window> {
  const state = { stopped: false };
  const samples = groups.map((): Samples => ({ ends: [], latencies: [], statuses: [], errors: 0, firstError: undefined }));
  const loops = groups.flatMap((group, g) =>
    Array.from({ length: group.concurrency }, (_, i) => loop(group, dispatchersOf(group)[i % dispatchersOf(group).length]!, samples[g]!, state)),
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
    samples.ends.push(done);
    samples.latencies.push(done - sent);
    samples.statuses.push(status);
    if (!ok) samples.errors++;
  }
}

function summarize(label: string, samples: Samples, start: number, end: number): GroupResult {
  const inWindow: number[] = [];
  const statuses: Record<number, number> = {};
  samples.ends.forEach((t, i) => {
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
