// The kube-apiserver stand-in as a process of its own, so its CPU is counted apart from the
// proxy's and the load generator's. Usage:
//
//   node --import tsx bench/apiserver-process.ts <pki-dir> [--pods N]
//
// (<pki-dir> is a directory written by createTestPki). Prints {"url": ...} on stdout once it
// listens. --pods: pods per namespace in lists; the default (payload.ts PAYLOAD_PODS) makes
// GET /api/v1/namespaces/default/pods a ~50 KB PodList, the bench's "large GET"; single-pod GETs
// (/pods/pod-0) are the same whatever the count.
//
// Control channel, for the watch benchmark (bench/watches.ts): commands arrive as IPC messages
// when the process was spawned with an 'ipc' stdio entry, and as lines on stdin otherwise
// (when stdin is /dev/null, as bench.ts starts it, there are simply none). Each command gets
// one answer: an IPC message, or a JSON line on stdout.
//
//   {"cmd":"emit"} or "emit"    -> sendWatchEvent('MODIFIED', a Pod whose annotations carry the
//                                  event's sequence number and its send time, epoch ms with
//                                  sub-ms precision); answers {"emitted":seq,"sentAt":ms,
//                                  "watches":n,"flowing":bool,"writeMs":ms}
//   {"cmd":"count"} or "count"  -> answers {"count": openWatches()}

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { startApiServer } from '../standin/apiserver.js';
import { PAYLOAD_PODS } from './payload.js';
import { SENT_AT_ANNOTATION, SEQ_ANNOTATION, nowEpochMs } from './watch-clients.js';

const args = process.argv.slice(2);
const dir = args[0];
const podsFlag = args.indexOf('--pods');
const pods = podsFlag === -1 ? PAYLOAD_PODS : Number(args[podsFlag + 1]);
if (!dir || dir.startsWith('--') || !Number.isSafeInteger(pods) || pods < 1) {
  process.stderr.write('usage: apiserver-process.ts <pki-dir> [--pods N]\n');
  process.exit(2);
}
const pem = (file: string): string => readFileSync(join(dir, file), 'utf8');

const apiserver = await startApiServer({
  cert: pem('apiserver.crt'),
  key: pem('apiserver.key'),
  requestHeaderCA: pem('front-proxy-ca.crt'),
  // Lets the direct (baseline) client log in with the cluster-admin certificate.
  clientCA: pem('cluster-ca.crt'),
  pods,
});

// The stand-in keeps every request (and the proxy's health checks) for the tests to inspect; here
// that would only grow the heap.
setInterval(() => {
  apiserver.requests.length = 0;
  apiserver.healthChecks.length = 0;
}, 1_000).unref();

const stop = (): void => {
  void apiserver.close().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

// ---------------------------------------------------------------------------------------------
// Control channel

let seq = 0;

/** A Pod as watchers get it: pod-0 with the send time stamped in; the event line is ~710 bytes. */
function eventPod(n: number, sentAt: number): object {
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name: 'pod-0',
      namespace: 'default',
      uid: '00000000-0000-4000-8000-000000000000',
      resourceVersion: String(1000 + n),
      creationTimestamp: new Date(Math.floor(sentAt / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      labels: { app: 'demo' },
      // Sequence first: clients find both with one regular expression, in this order.
      annotations: { [SEQ_ANNOTATION]: String(n), [SENT_AT_ANNOTATION]: sentAt.toFixed(3) },
    },
    spec: { nodeName: 'node-1', containers: [{ name: 'app', image: 'registry.k8s.io/pause:3.10', ports: [{ name: 'http', containerPort: 80, protocol: 'TCP' }] }] },
    status: {
      phase: 'Running',
      podIP: '10.244.0.2',
      containerStatuses: [{ name: 'app', image: 'registry.k8s.io/pause:3.10', ready: true, started: true, restartCount: 0, state: { running: {} } }],
    },
  };
}

function command(cmd: string): Record<string, unknown> {
  switch (cmd) {
    case 'emit': {
      const n = ++seq;
      const sentAt = nowEpochMs();
      const flowing = apiserver.sendWatchEvent('MODIFIED', eventPod(n, sentAt));
      // How long the stand-in itself took to write the line to every watch (part of every latency).
      const writeMs = nowEpochMs() - sentAt;
      return { emitted: n, sentAt, watches: apiserver.openWatches(), flowing, writeMs };
    }
    case 'count':
      return { count: apiserver.openWatches() };
    default:
      return { error: `unknown command ${JSON.stringify(cmd)} (emit, count)` };
  }
}

function commandOf(message: unknown): string {
  if (typeof message === 'string') return message.trim();
  if (message && typeof message === 'object' && typeof (message as { cmd?: unknown }).cmd === 'string') return (message as { cmd: string }).cmd;
  return String(message);
}

if (process.send) {
  process.on('message', (message: unknown) => process.send?.(command(commandOf(message))));
  // The parent going away (its IPC channel closing) ends us too, so no stand-in is left behind.
  process.on('disconnect', stop);
} else {
  createInterface({ input: process.stdin })
    .on('line', (line) => {
      if (!line.trim()) return;
      let message: unknown = line;
      if (line.trim().startsWith('{')) {
        try {
          message = JSON.parse(line);
        } catch {
          // answered as an unknown command
        }
      }
      process.stdout.write(`${JSON.stringify(command(commandOf(message)))}\n`);
    })
    // stdin at EOF (/dev/null, as bench.ts starts us) must not stop the server.
    .on('close', () => {});
}

process.stdout.write(`${JSON.stringify({ url: apiserver.url, pods })}\n`);
