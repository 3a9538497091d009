// A closed-loop load generator: each of N loops sends one request, waits for the whole answer,
// and sends the next, so the offered load adapts to the server (no coordinated-omission
// questions, as there is no schedule to fall behind) and concurrency is exactly N.

import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';

export interface LoadGroup {
  label: string;
  concurrency: number;
  dispatcher: Dispatcher;
  /** Called per request, so a group can vary it (attackers try a new password each time). */
  request: () => Dispatcher.RequestOptions;
  /** Any other status, or a transport error, is counted as an error. */
  expectStatus: number;
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
  errors: number;
  firstError: string | undefined;
}

/** Runs every group at once: warm-up, then the measured window; returns only the window's numbers. */
export async function runLoad(groups: LoadGroup[], timing: LoadTiming): Promise<Window> {
  const state = { stopped: false };
  const samples = groups.map((): Samples => ({ ends: [], latencies: [], errors: 0, firstError: undefined }));
  const loops = groups.flatMap((group, g) =>
    Array.from({ length: group.concurrency }, () => loop(group, samples[g]!, state)),
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

async function loop(group: LoadGroup, samples: Samples, state: { stopped: boolean }): Promise<void> {
  while (!state.stopped) {
    const sent = performance.now();
    let ok = false;
    try {
      const response = await group.dispatcher.request(group.request());
      await response.body.arrayBuffer(); // a real client reads the whole body
      ok = response.statusCode === group.expectStatus;
      if (!ok) samples.firstError ??= `HTTP ${response.statusCode}`;
    } catch (err) {
      samples.firstError ??= String(err);
      await sleep(10); // a refused connection must not turn this loop into a busy spin
    }
    const done = performance.now();
    samples.ends.push(done);
    samples.latencies.push(done - sent);
    if (!ok) samples.errors++;
  }
}

function summarize(label: string, samples: Samples, start: number, end: number): GroupResult {
  const inWindow: number[] = [];
  samples.ends.forEach((t, i) => {
    if (t >= start && t <= end) inWindow.push(samples.latencies[i]!);
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
  };
}

/** Nearest-rank percentile of ascending samples; NaN when there are none. */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
