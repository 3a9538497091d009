// The results as a plain-text table for the terminal and the same table as Markdown for the README.

export interface Row {
  scenario: string;
  requests: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** undefined where the proxy is not in the path, or its CPU is shared by two kinds of request. */
  proxyCpuUsPerRequest: number | undefined;
  /** Proxy CPU seconds per wall-clock second (1.00 = one core busy), all threads. */
  proxyCores: number | undefined;
  standinCpuUsPerRequest: number | undefined;
  /** CPU of the load generator itself, and of every other process on the machine, in cores. */
  loadgenCores: number;
  otherCores: number;
  errors: number;
}

export interface Ratio {
  label: string;
  value: string;
}

const HEADERS = ['scenario', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'proxy CPU µs/req', 'proxy cores', 'stand-in CPU µs/req', 'load-gen cores', 'other cores', 'errors'];

function cells(row: Row): string[] {
  const opt = (n: number | undefined, digits: number): string => (n === undefined ? '—' : n.toFixed(digits));
  return [
    row.scenario,
    String(row.requests),
    row.perSecond.toFixed(0),
    ms(row.p50Ms),
    ms(row.p99Ms),
    opt(row.proxyCpuUsPerRequest, 0),
    opt(row.proxyCores, 2),
    opt(row.standinCpuUsPerRequest, 0),
    row.loadgenCores.toFixed(2),
    row.otherCores.toFixed(2),
    String(row.errors),
  ];
}

function ms(value: number): string {
  return value < 10 ? value.toFixed(2) : value.toFixed(1);
}

/** `a / b` as "1.23x" (how many times b a is). */
export function times(a: number, b: number): string {
  return `${(a / b).toFixed(2)}x`;
}

export function textTable(rows: Row[], ratios: Ratio[]): string {
  const table = [HEADERS, ...rows.map(cells)];
  const widths = HEADERS.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const line = (r: string[]): string => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [line(HEADERS), ...rows.map((row) => line(cells(row))), '', ...ratios.map((r) => `${r.label}: ${r.value}`)].join('\n');
}

export function markdown(rows: Row[], ratios: Ratio[], setup: string[]): string {
  const line = (r: string[]): string => `| ${r.join(' | ')} |`;
  const align = HEADERS.map((_, c) => (c === 0 ? '---' : '---:'));
  return [...setup.map((s) => `${s}  `), '', line(HEADERS), line(align), ...rows.map((row) => line(cells(row))), '', ...ratios.map((r) => `- ${r.label}: ${r.value}`), ''].join('\n');
}

/**
 * `existing` (bench/results.md) with its section under `heading` (to the end of the file)
 * replaced by `section`, and a comment saying that part is from a partial run of `date`
 * (BENCH_REAL=only keeps the last full run's other sections).
 */
export function replaceLastSection(existing: string, heading: string, section: string, date: string): string {
  const at = existing.indexOf(`\n${heading}\n`);
  let kept = at === -1 ? existing : existing.slice(0, at);
  const comment = kept.lastIndexOf('\n<!-- The section below');
  if (comment !== -1) kept = kept.slice(0, comment);
  return `${kept.trimEnd()}\n\n\n<!-- The section below is from a BENCH_REAL=only run on ${date}; the sections above from the last full run. -->\n${section}`;
}
