// Directories a test process makes under the system's temporary directory, removed when the
// process exits (the PKIs and kubeconfigs of earlier runs were left behind by the thousand).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];

/** A new directory `<tmp>/<prefix>XXXXXX`, removed with what it holds when this process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (made.length === 0) process.once('exit', () => made.forEach((d) => rmSync(d, { recursive: true, force: true })));
  made.push(dir);
  return dir;
}
