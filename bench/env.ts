// Benchmark settings come from the environment (BENCH_SECONDS=2 npm run bench).

/** A positive number (or zero, where `allowZero`) from `name`, or `fallback` when it is unset or empty. */
export function envNumber(name: string, fallback: number, allowZero = false): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || (value === 0 && !allowZero)) throw new Error(`${name}=${raw}: expected a ${allowZero ? 'non-negative' : 'positive'} number`);
  return value;
}
