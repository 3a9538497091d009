// Line coverage of src/ over the suite, the proxy processes the end-to-end tests spawn included.
// tap's own coverage sees only the test processes (so .taprc turns it off); here every process
// (test files, the proxies they spawn, their workers) inherits NODE_V8_COVERAGE and V8 writes
// what ran when the process exits, and c8 maps it back to src/*.ts through the source maps tsx
// attaches. A process killed with SIGKILL writes nothing: the few the tests kill that way on
// purpose (a worker crash, a teardown that skips the drain) are missing from the figure. Writing
// coverage makes every exit 0.1-0.4 s slower (measured with a load average of 14 on 2 cores), so
// test/shutdown.test.ts's one-second budgets can fail in this run, and a proxy whose shutdown
// watchdog fires first is killed and writes nothing either: `npm test` is the pass/fail gate.
//
//   npm run coverage                                     the whole suite
//   npm run coverage -- --jobs 1 test/basic-auth.test.ts   some files (any tap arguments)
//
// Report: a summary on stdout, coverage/index.html for line by line.

import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';

const reportsDir = resolve(PROJECT_ROOT, 'coverage');
const rawDir = resolve(reportsDir, 'v8');
const bin = (name: string) => resolve(PROJECT_ROOT, 'node_modules/.bin', name);

rmSync(reportsDir, { recursive: true, force: true });
mkdirSync(rawDir, { recursive: true });

const tap = spawnSync(bin('tap'), process.argv.slice(2), { cwd: PROJECT_ROOT, stdio: 'inherit', env: { ...process.env, NODE_V8_COVERAGE: rawDir } });
if (tap.error) throw tap.error;
const processes = readdirSync(rawDir).length;
if (processes === 0) {
  process.stderr.write('coverage: no process wrote V8 coverage\n');
  process.exit(1);
}

// --all counts the files of src/ that no process loaded, at 0%.
const report = ['--temp-directory', rawDir, '--reports-dir', reportsDir, '--include', 'src/**', '--all', '--src', 'src', '--merge-async', '--reporter', 'text-summary', '--reporter', 'html'];
const c8 = spawnSync(bin('c8'), ['report', ...report], { cwd: PROJECT_ROOT, stdio: 'inherit' });
if (c8.error) throw c8.error;
process.stdout.write(`coverage: from ${processes} V8 coverage files (test files, proxies, workers); tap exited ${tap.status ?? tap.signal}\n`);
// Only V8's raw files are large (every script of every process, node_modules included).
rmSync(rawDir, { recursive: true, force: true });
process.exit(tap.status !== 0 ? (tap.status ?? 1) : (c8.status ?? 1));
