// A keep-alive HTTPS/1.1 client that writes request bytes exactly as given (header case,
// repetition, obs-text, malformed lines) and reads the answers with a small response parser:
// interim 1xx answers skipped, Content-Length and chunked bodies, read-to-close otherwise.
// One request at a time per connection; the caller opens a new connection when `closed`.

import { connect, type TLSSocket } from 'node:tls';
import type { PkiName, TestPki } from './pki.js';

export interface KeepAliveResponse {
  statusCode: number;
  /** Header pairs of the final response as received (latin1). */
  headers: [string, string][];
  body: Buffer;
  /** Status codes of interim (1xx) responses that came first, e.g. [100] after Expect. */
  interim: number[];
}

/** The first value of response header `name` (any case). */
export function responseHeader(response: KeepAliveResponse, name: string): string | undefined {
  const lower = name.toLowerCase();
  return response.headers.find(([n]) => n.toLowerCase() === lower)?.[1];
}

interface Pending {
  resolve: (response: KeepAliveResponse) => void;
  reject: (err: Error) => void;
  interim: number[];
  timer: NodeJS.Timeout;
}

type Parsed = { kind: 'need-more' } | { kind: 'response'; response: Omit<KeepAliveResponse, 'interim'>; consumed: number } | { kind: 'read-to-close'; statusCode: number; headers: [string, string][]; bodyStart: number };

/** Parses one response head (and body, when its length is known) at the start of `buffer`. */
function parseOne(buffer: Buffer): Parsed {
  const headEnd = buffer.indexOf('\r\n\r\n');
  if (headEnd === -1) return { kind: 'need-more' };
  const [statusLine = '', ...lines] = buffer.subarray(0, headEnd).toString('latin1').split('\r\n');
  const statusCode = Number(statusLine.split(' ')[1]);
  const headers = lines.map((line): [string, string] => {
    const colon = line.indexOf(':');
    return colon === -1 ? [line, ''] : [line.slice(0, colon), line.slice(colon + 1).trim()];
  });
  const header = (name: string) => headers.find(([n]) => n.toLowerCase() === name)?.[1];
  const bodyStart = headEnd + 4;
  if ((statusCode >= 100 && statusCode < 200) || statusCode === 204 || statusCode === 304) {
    return { kind: 'response', response: { statusCode, headers, body: Buffer.alloc(0) }, consumed: bodyStart };
  }
  const length = header('content-length');
  if (length !== undefined) {
    const end = bodyStart + Number(length);
    if (end > buffer.length) return { kind: 'need-more' };
    return { kind: 'response', response: { statusCode, headers, body: buffer.subarray(bodyStart, end) }, consumed: end };
  }
  if (/chunked/i.test(header('transfer-encoding') ?? '')) {
    const parts: Buffer[] = [];
    let cursor = bodyStart;
    for (;;) {
      const lineEnd = buffer.indexOf('\r\n', cursor);
      if (lineEnd === -1) return { kind: 'need-more' };
      const size = parseInt(buffer.subarray(cursor, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) throw new Error(`bad chunk size line ${JSON.stringify(buffer.subarray(cursor, lineEnd).toString('latin1'))}`);
      if (size === 0) {
        // Last chunk, then trailer lines up to an empty line.
        let trailer = lineEnd + 2;
        for (;;) {
          const end = buffer.indexOf('\r\n', trailer);
          if (end === -1) return { kind: 'need-more' };
          if (end === trailer) return { kind: 'response', response: { statusCode, headers, body: Buffer.concat(parts) }, consumed: end + 2 };
          trailer = end + 2;
        }
      }
      if (lineEnd + 2 + size + 2 > buffer.length) return { kind: 'need-more' };
      parts.push(buffer.subarray(lineEnd + 2, lineEnd + 2 + size));
      cursor = lineEnd + 2 + size + 2;
    }
  }
  return { kind: 'read-to-close', statusCode, headers, bodyStart };
}

export class KeepAliveConnection {
  private buffer: Buffer = Buffer.alloc(0);
  private pending: Pending | undefined;
  private ended = false;
  private error: Error | undefined;

  private constructor(private readonly socket: TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      this.drain();
    });
    socket.on('error', (err) => {
      this.error = err;
    });
    socket.on('close', () => {
      this.ended = true;
      this.drain();
    });
  }

  /** Opens a TLS connection to the proxy, presenting `cert` from the test PKI if given. */
  static open(port: number, pki: TestPki, cert?: PkiName): Promise<KeepAliveConnection> {
    return new Promise((resolve, reject) => {
      const identity = cert ? { cert: pki.pem[cert].cert, key: pki.pem[cert].key } : {};
      const socket = connect({ host: '127.0.0.1', port, ca: pki.pem['proxy-ca'].cert, servername: 'localhost', ...identity });
      socket.once('secureConnect', () => {
        socket.off('error', reject);
        resolve(new KeepAliveConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  /** The server closed the connection (or it failed): open a new one. */
  get closed(): boolean {
    return this.ended || this.socket.destroyed;
  }

  /** Writes `bytes` (one whole request) and resolves with the final response to it. */
  send(bytes: Buffer, timeoutMs = 10_000): Promise<KeepAliveResponse> {
    if (this.pending) return Promise.reject(new Error('one request at a time'));
    if (this.closed) return Promise.reject(new Error('connection is closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        this.socket.destroy();
        reject(new Error(`no response within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending = { resolve, reject, interim: [], timer };
      this.socket.write(bytes);
      this.drain();
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private settle(outcome: { response: Omit<KeepAliveResponse, 'interim'> } | { error: Error }): void {
    const pending = this.pending;
    if (!pending) return;
    this.pending = undefined;
    clearTimeout(pending.timer);
    if ('error' in outcome) pending.reject(outcome.error);
    else pending.resolve({ ...outcome.response, interim: pending.interim });
  }

  private drain(): void {
    while (this.pending) {
      let parsed: Parsed;
      try {
        parsed = parseOne(this.buffer);
      } catch (err) {
        this.socket.destroy();
        this.settle({ error: err as Error });
        return;
      }
      if (parsed.kind === 'response') {
        this.buffer = this.buffer.subarray(parsed.consumed);
        const { statusCode } = parsed.response;
        if (statusCode >= 100 && statusCode < 200 && statusCode !== 101) {
          this.pending.interim.push(statusCode);
          continue;
        }
        this.settle({ response: parsed.response });
        return;
      }
      if (!this.ended) return;
      // The connection is gone: a read-to-close body is complete, anything else is cut short.
      if (parsed.kind === 'read-to-close') {
        const body = this.buffer.subarray(parsed.bodyStart);
        this.buffer = Buffer.alloc(0);
        this.settle({ response: { statusCode: parsed.statusCode, headers: parsed.headers, body } });
      } else {
        const detail = this.error ? `: ${this.error.message}` : '';
        this.settle({ error: new Error(`connection closed before a complete response (${this.buffer.length} bytes buffered)${detail}`) });
      }
      return;
    }
  }
}
