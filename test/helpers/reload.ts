// Shared by the tests that reload a running proxy and check what happens to the connections,
// watches and tunnels already open (withdrawn credentials, client CA changes).

import type { ApiServer } from '../../standin/apiserver.js';
import type { LogLine, ProxyProcess } from './proxy.js';
import { pollUntil } from './raw-tls.js';
import type { TapTest } from './setup.js';

/** The line the proxy logs once reloaded material is in force. */
export const RELOADED = 'reloaded certificates, keys and users';

/** Polls `condition` every 20 ms; throws naming `what` after `timeoutMs`. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  if (!(await pollUntil(condition, (done) => done, timeoutMs, 20))) throw new Error(`${what}: not within ${timeoutMs} ms`);
}

/** `promise`, or a rejection naming `what` once `timeoutMs` has passed. */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Sends SIGHUP and waits for the reload to be applied; returns the log lines it wrote. */
export async function reloadBySighup(proxy: ProxyProcess): Promise<LogLine[]> {
  const from = proxy.logs.length;
  proxy.child.kill('SIGHUP');
  await waitFor('the reload line', () => proxy.logs.slice(from).some((l) => l.msg === RELOADED));
  return proxy.logs.slice(from);
}

/** The previous subtest's streams and tunnels are gone at the apiserver too (they close asynchronously). */
export function nothingOpen(apiserver: ApiServer): Promise<void> {
  return waitFor('nothing left open at the apiserver', () => apiserver.openWatches() === 0 && apiserver.openUpgrades() === 0);
}

let events = 0;

/** Sends one watch event and checks that each of `watches` (their lines so far) receives it. */
export async function eventReaches(tt: TapTest, apiserver: ApiServer, watches: Record<string, { lines: string[] }>): Promise<void> {
  const name = `event-${++events}`;
  const counts = Object.fromEntries(Object.entries(watches).map(([who, w]) => [who, w.lines.length]));
  apiserver.sendWatchEvent('MODIFIED', { kind: 'Pod', apiVersion: 'v1', metadata: { name, namespace: 'default' } });
  await waitFor(`event ${name} to reach every watch`, () => Object.entries(watches).every(([who, w]) => w.lines.length > (counts[who] as number)));
  for (const [who, watch] of Object.entries(watches)) {
    tt.match(JSON.parse(watch.lines.at(-1) as string), { type: 'MODIFIED', object: { metadata: { name } } }, `${who}'s watch receives ${name}`);
  }
}
