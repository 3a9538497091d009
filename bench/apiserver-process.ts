// The kube-apiserver stand-in as a process of its own, so its CPU is counted apart from the
// proxy's and the load generator's. Usage: node --import tsx bench/apiserver-process.ts <pki-dir>
// (a directory written by createTestPki). Prints {"url": ...} on stdout once it listens.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startApiServer } from '../test/helpers/apiserver.js';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: apiserver-process.ts <pki-dir>\n');
  process.exit(2);
}
const pem = (file: string): string => readFileSync(join(dir, file), 'utf8');

const apiserver = await startApiServer({
  cert: pem('apiserver.crt'),
  key: pem('apiserver.key'),
  requestHeaderCA: pem('front-proxy-ca.crt'),
  // Lets the direct (baseline) client log in with the cluster-admin certificate.
  clientCA: pem('cluster-ca.crt'),
});

// The stand-in keeps every request for the tests to inspect; here that would only grow the heap.
setInterval(() => {
  apiserver.requests.length = 0;
}, 1_000).unref();

const stop = (): void => {
  void apiserver.close().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

process.stdout.write(`${JSON.stringify({ url: apiserver.url })}\n`);
