// Clients for end-to-end tests: undici with the proxy's CA (and optionally a user certificate),
// and a raw TLS client for byte-exact requests (header case, repetition, malformed input).

import { connect } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import type { PkiName, TestPki } from './pki.js';
import type { TestUser } from './setup.js';

export interface ClientIdentity {
  /** A user certificate from the test PKI (`user-alice`, ...). */
  cert?: PkiName;
}

/** An undici Agent that trusts the proxy's CA and presents `cert` if given. */
export function proxyClient(pki: TestPki, identity: ClientIdentity = {}): Agent {
  const tls = identity.cert ? { cert: pki.pem[identity.cert].cert, key: pki.pem[identity.cert].key } : {};
  return new Agent({
    connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...tls },
    keepAliveTimeout: 10,
    keepAliveMaxTimeout: 10,
  });
}

export function basicAuth(user: Pick<TestUser, 'name' | 'password'>): string {
  return `Basic ${Buffer.from(`${user.name}:${user.password}`).toString('base64')}`;
}

export interface JsonResponse {
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  body: unknown;
  text: string;
}

export async function call(dispatcher: Dispatcher, url: string, options: Omit<Dispatcher.RequestOptions, 'origin' | 'path'> & { path?: never } = { method: 'GET' }): Promise<JsonResponse> {
  const response = await request(url, { dispatcher, ...options });
  const text = await response.body.text();
  let body: unknown = undefined;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: response.statusCode, headers: response.headers, body, text };
}

export interface RawResponse {
  statusCode: number;
  /** Header lines as received, in order. */
  headerLines: string[];
  body: Buffer;
}

/**
 * Sends `head` (request line and headers, CRLF-separated, without the blank line) and `body`
 * over a fresh TLS connection, then reads until the server closes (send `Connection: close`).
 */
export function rawRequest(port: number, pki: TestPki, head: string, body: Buffer | string = '', identity: ClientIdentity = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const tlsIdentity = identity.cert ? { cert: pki.pem[identity.cert].cert, key: pki.pem[identity.cert].key } : {};
    const socket = connect({ host: '127.0.0.1', port, ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...tlsIdentity }, () => {
      // Not end(): a client that half-closes before the answer may be taken for one that left.
      socket.write(`${head}\r\n\r\n`);
      if (body.length > 0) socket.write(body);
    });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('raw request timed out')));
    socket.on('close', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const headText = all.subarray(0, split === -1 ? all.length : split).toString('latin1');
      const [statusLine = '', ...headerLines] = headText.split('\r\n');
      resolve({ statusCode: Number(statusLine.split(' ')[1]), headerLines, body: split === -1 ? Buffer.alloc(0) : all.subarray(split + 4) });
    });
  });
}

/** A watch read line by line, as kubectl reads one. */
export interface WatchReader {
  lines: string[];
  next(count: number, timeoutMs?: number): Promise<string>;
  /** Resolves 'end' on a clean end of the body, 'error' on a torn one. */
  ended: Promise<'end' | 'error'>;
  statusCode: number;
  headers: Dispatcher.ResponseData['headers'];
  close(): void;
}

export async function openWatch(dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}): Promise<WatchReader> {
  const res = await request(url, { dispatcher, headers });
  const lines: string[] = [];
  let buffered = '';
  const waiters = new Set<() => void>();
  res.body.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    let i: number;
    while ((i = buffered.indexOf('\n')) !== -1) {
      lines.push(buffered.slice(0, i));
      buffered = buffered.slice(i + 1);
    }
    for (const w of waiters) w();
  });
  const ended = new Promise<'end' | 'error'>((resolve) => {
    res.body.once('end', () => resolve('end'));
    res.body.once('error', () => resolve('error'));
  });
  return {
    lines,
    ended,
    statusCode: res.statusCode,
    headers: res.headers,
    close: () => res.body.destroy(),
    next: (count, timeoutMs = 5000) =>
      new Promise<string>((resolve, reject) => {
        const check = () => {
          if (lines.length >= count) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(lines[count - 1] as string);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`watch event ${count} did not arrive within ${timeoutMs} ms (have ${lines.length})`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}
