// The bench's "large GET": a ~50 KB JSON PodList, the size of a namespace of a few dozen pods
// as `kubectl get pods -o json` reads it. The bench stand-in (apiserver-process.ts) serves
// PAYLOAD_PODS pods per namespace by default, so PAYLOAD_PATH is that list; the small GET
// (/api/v1/namespaces/default/pods/pod-0, ~600 bytes) is unchanged by the count.
//
// Standalone check, through a freshly started stand-in and proxy (builds dist/ first):
//   node --import tsx bench/payload.ts

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { request, Agent } from 'undici';
import { createTestPki, type TestPki } from '../test/helpers/pki.js';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';
import { proxyFlags } from '../test/helpers/setup.js';
import { buildProxy, installCleanup, spawnNode, waitForJsonLine } from './processes.js';

/** Pods per namespace in the bench stand-in's lists: 84 × ~607 bytes = 50,970 bytes of JSON. */
export const PAYLOAD_PODS = 84;
/** A ~50 KB JSON GET (a PodList of PAYLOAD_PODS pods). */
export const PAYLOAD_PATH = '/api/v1/namespaces/default/pods';
/** The same size as opaque bytes, if JSON does not matter: the stand-in's pattern endpoint. */
export const PAYLOAD_BYTES_PATH = '/test/bytes?n=51200';

export interface PayloadCheck {
  path: string;
  status: number;
  contentType: string;
  bytes: number;
  items: number;
}

/**
 * GETs `path` from `url` (the proxy: CA proxy-ca, name localhost; user-alice's certificate) and
 * says what came back; throws unless it is a 200 PodList of JSON.
 */
export async function checkPayload(pki: TestPki, url: string, path = PAYLOAD_PATH): Promise<PayloadCheck> {
  const dispatcher = new Agent({ connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key } });
  try {
    const response = await request(new URL(path, url), { dispatcher, headers: { accept: 'application/json' } });
    const body = Buffer.from(await response.body.arrayBuffer());
    const contentType = String(response.headers['content-type'] ?? '');
    if (response.statusCode !== 200) throw new Error(`GET ${path}: HTTP ${response.statusCode}: ${body.toString('utf8').slice(0, 300)}`);
    const list = JSON.parse(body.toString('utf8')) as { kind?: string; items?: unknown[] };
    if (list.kind !== 'PodList' || !Array.isArray(list.items)) throw new Error(`GET ${path}: not a PodList (kind ${list.kind})`);
    return { path, status: response.statusCode, contentType, bytes: body.length, items: list.items.length };
  } finally {
    await dispatcher.close();
  }
}

async function main(): Promise<void> {
  installCleanup();
  buildProxy();
  const work = mkdtempSync(join(tmpdir(), 'kfp-payload-'));
  try {
    const pki = await createTestPki(join(work, 'pki'));
    const standin = spawnNode('apiserver', ['--import', 'tsx', join(PROJECT_ROOT, 'bench', 'apiserver-process.ts'), pki.dir], work, PROJECT_ROOT);
    const upstream = await waitForJsonLine(standin, (line) => (typeof line.url === 'string' ? line.url : undefined));
    const proxy = spawnNode('proxy', [join(PROJECT_ROOT, 'dist', 'cli.js'), 'serve', '--listen', '127.0.0.1:0', '--log-level', 'warn', ...proxyFlags(pki, { upstream })], work, PROJECT_ROOT);
    // The start-up line is printed whatever the log level.
    const url = await proxyUrl(proxy);
    const check = await checkPayload(pki, url);
    process.stdout.write(`${JSON.stringify(check)}\n`);
    await Promise.all([proxy.stop(), standin.stop()]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The proxy's URL, from its start-up line. */
async function proxyUrl(proxy: ReturnType<typeof spawnNode>): Promise<string> {
  return waitForJsonLine(proxy, (line) => (typeof line.msg === 'string' && line.msg.startsWith('listening on') ? String(line.listen) : undefined));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
