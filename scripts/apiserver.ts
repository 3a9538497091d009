// An apiserver for the PKI `kube-front-proxy pki init` wrote, to try the proxy on when no cluster
// is at hand (README "Five minutes from nothing to kubectl through the proxy"): the tests'
// kube-apiserver stand-in (standin/apiserver.ts), which authenticates exactly like
// kube-apiserver with kubeadm's flags and serves little beyond that (pods, namespaces, exec).
//
//   node --import tsx scripts/apiserver.ts --pki certs --listen 127.0.0.1:6443
//
// Like kubeadm's apiserver it serves DIR/apiserver.crt, trusts identity headers from
// certificates of DIR/front-proxy-ca.crt with CN front-proxy-client, and takes client
// certificates of DIR/ca.crt. Runs until Ctrl-C or SIGTERM.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startApiServer } from '../standin/apiserver.js';

const { values } = parseArgs({ options: { pki: { type: 'string', default: 'certs' }, listen: { type: 'string', default: '127.0.0.1:6443' } } });
const dir = values.pki;
const colon = values.listen.lastIndexOf(':');
const host = values.listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
const port = Number(values.listen.slice(colon + 1));

function read(name: string): string {
  try {
    return readFileSync(join(dir, name), 'utf8');
  } catch {
    process.stderr.write(`scripts/apiserver.ts: ${join(dir, name)} cannot be read: run \`kube-front-proxy pki init --dir ${dir}\` first\n`);
    process.exit(2);
  }
}

const files = { cert: read('apiserver.crt'), key: read('apiserver.key'), requestHeaderCA: read('front-proxy-ca.crt'), clientCA: read('ca.crt') };
let apiserver;
try {
  apiserver = await startApiServer({ ...files, host, port });
} catch (err) {
  const code = (err as NodeJS.ErrnoException).code;
  process.stderr.write(`scripts/apiserver.ts: cannot listen on ${values.listen}: ${code === 'EADDRINUSE' ? 'in use (another apiserver? pick another port with --listen)' : (err as Error).message}\n`);
  process.exit(1);
}
process.stderr.write(`kube-apiserver stand-in on ${apiserver.url} for the PKI in ${dir}/ (requestheader CA front-proxy-ca.crt, allowed name front-proxy-client; client CA ca.crt)\n`);
const stop = () => void apiserver.close().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
