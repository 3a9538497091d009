// Raw connections for hostile-input tests: exact bytes out over TLS or plain TCP, every byte that
// comes back kept, and how and when the connection ended (FIN, reset, still open).

import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

/** How a connection ended, seen from the client. */
export interface Ending {
  /** 'end': the server closed cleanly (FIN, after close_notify on TLS); 'reset': ECONNRESET/EPIPE; 'error': another error. */
  how: 'end' | 'reset' | 'error';
  /** The error code, if any. */
  code: string | undefined;
  /** Milliseconds from the connection being open (TCP connect or TLS handshake) to 'close'. */
  afterMs: number;
}

export interface RawHttpResponse {
  statusCode: number;
  statusLine: string;
  /** Header pairs as received. */
  headers: [string, string][];
  body: Buffer;
}

/** The first value of header `name` (any case). */
export function headerOf(response: RawHttpResponse, name: string): string | undefined {
  return response.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
}

/** The body as JSON, or undefined when it is not JSON. */
export function jsonOf(response: RawHttpResponse | undefined): unknown {
  if (!response) return undefined;
  try {
    return JSON.parse(response.body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Splits bytes received on one connection into HTTP/1.1 responses (Content-Length or chunked
 * bodies; a response with neither takes the rest). Incomplete trailing bytes are returned in `rest`.
 */
export function parseResponses(bytes: Buffer): { responses: RawHttpResponse[]; rest: Buffer } {
  const responses: RawHttpResponse[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const headEnd = bytes.indexOf('\r\n\r\n', offset);
    if (headEnd === -1) break;
    const [statusLine = '', ...lines] = bytes.subarray(offset, headEnd).toString('latin1').split('\r\n');
    const headers = lines.map((line): [string, string] => {
      const colon = line.indexOf(':');
      return colon === -1 ? [line, ''] : [line.slice(0, colon), line.slice(colon + 1).trim()];
    });
    const response: RawHttpResponse = { statusCode: Number(statusLine.split(' ')[1]), statusLine, headers, body: Buffer.alloc(0) };
    let cursor = headEnd + 4;
    const length = headerOf(response, 'content-length');
    if (length !== undefined) {
      const end = cursor + Number(length);
      if (end > bytes.length) break;
      response.body = bytes.subarray(cursor, end);
      cursor = end;
    } else if (/chunked/i.test(headerOf(response, 'transfer-encoding') ?? '')) {
      const parts: Buffer[] = [];
      let complete = false;
      for (;;) {
        const lineEnd = bytes.indexOf('\r\n', cursor);
        if (lineEnd === -1) break;
        const size = parseInt(bytes.subarray(cursor, lineEnd).toString('latin1'), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          const trailerEnd = bytes.indexOf('\r\n\r\n', lineEnd);
          if (trailerEnd === -1 && bytes.subarray(lineEnd, lineEnd + 4).toString() !== '\r\n\r\n') break;
          cursor = (trailerEnd === -1 ? lineEnd : trailerEnd) + 4;
          complete = true;
          break;
        }
        if (lineEnd + 2 + size + 2 > bytes.length) break;
        parts.push(bytes.subarray(lineEnd + 2, lineEnd + 2 + size));
        cursor = lineEnd + 2 + size + 2;
      }
      if (!complete) break;
      response.body = Buffer.concat(parts);
    } else {
      response.body = bytes.subarray(cursor);
      cursor = bytes.length;
    }
    responses.push(response);
    offset = cursor;
  }
  return { responses, rest: bytes.subarray(offset) };
}

/** One client connection whose received bytes and ending are recorded. */
export class RawConnection {
  readonly openedAt = Date.now();
  /** Resolves when the socket closes, however it closes. */
  readonly closed: Promise<Ending>;
  private readonly chunks: Buffer[] = [];
  private ending: Ending | undefined;
  private error: NodeJS.ErrnoException | undefined;
  private gotEnd = false;
  /** Milliseconds from open to the server's FIN ('end'), if it came. */
  finAfterMs: number | undefined;

  constructor(readonly socket: Socket | TLSSocket) {
    socket.on('data', (chunk: Buffer) => this.chunks.push(chunk));
    socket.on('end', () => {
      this.gotEnd = true;
      this.finAfterMs = Date.now() - this.openedAt;
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (this.error ??= err));
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        const code = this.error?.code;
        const how = this.error === undefined ? 'end' : code === 'ECONNRESET' || code === 'EPIPE' ? 'reset' : this.gotEnd ? 'end' : 'error';
        this.ending = { how, code, afterMs: Date.now() - this.openedAt };
        resolve(this.ending);
      });
    });
  }

  /** Every byte received so far. */
  received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  responses(): RawHttpResponse[] {
    return parseResponses(this.received()).responses;
  }

  /** The ending, if the connection has closed. */
  get ended(): Ending | undefined {
    return this.ending;
  }

  /** Writes exact bytes; resolves once they are handed to the kernel (rejects if the socket is gone). */
  write(bytes: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.destroyed) {
        reject(new Error('socket already closed'));
        return;
      }
      this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** The ending, or undefined if the connection is still open after `timeoutMs`. */
  async waitClosed(timeoutMs: number): Promise<Ending | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)));
    try {
      return await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Milliseconds from open until the server stopped sending (FIN, or the socket closed), or
   * undefined if neither happened within `timeoutMs`. With allowHalfOpen the socket stays open
   * after a FIN, so this does not say whether the server let go of its end.
   */
  async waitFin(timeoutMs: number): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const at = this.finAfterMs ?? this.ending?.afterMs;
      if (at !== undefined) return at;
      if (Date.now() >= deadline) return undefined;
      await sleep(10);
    }
  }

  /** Resolves true once `count` complete responses have arrived, false after `timeoutMs`. */
  async waitResponses(count: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.responses().length < count) {
      if (Date.now() > deadline || this.ending) return this.responses().length >= count;
      await sleep(10);
    }
    return true;
  }

  /** Closes our side at once (no FIN wait). */
  destroy(): void {
    this.socket.destroy();
  }
}

export interface TlsOptions {
  /** PEM of the CA that signed the proxy's serving certificate. */
  ca: string;
  servername?: string;
  localAddress?: string;
  /** Keep our side open after the server's FIN (a client that never closes). */
  allowHalfOpen?: boolean;
  /** Give up on the handshake after this long (default 5 s). */
  handshakeTimeoutMs?: number;
}

/** A TLS connection, resolved once the handshake is done; rejects if the server refuses it. */
export function openTls(port: number, options: TlsOptions): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: options.ca,
      servername: options.servername ?? 'localhost',
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      ...(options.allowHalfOpen ? { allowHalfOpen: true } : {}),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('TLS handshake timed out'));
    }, options.handshakeTimeoutMs ?? 5000);
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(new RawConnection(socket));
    });
  });
}

export interface TcpOptions {
  localAddress?: string;
  allowHalfOpen?: boolean;
}

/** A plain TCP connection, resolved once connected (the server may still reset it just after). */
export function openTcp(port: number, options: TcpOptions = {}): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port, ...(options.localAddress ? { localAddress: options.localAddress } : {}), allowHalfOpen: options.allowHalfOpen ?? false });
    // Recorded from the start: a reset can arrive right after connect.
    const connection = new RawConnection(socket);
    const onError = (err: Error) => reject(err);
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(connection);
    });
  });
}

export interface Exchange {
  responses: RawHttpResponse[];
  /** Bytes after the last complete response. */
  rest: Buffer;
  raw: Buffer;
  /** undefined: still open after the timeout (then destroyed by us). */
  ending: Ending | undefined;
}

/**
 * Sends `bytes` in one write over a fresh TLS connection and waits up to `timeoutMs` for the
 * server to close it. The client does not half-close first: a server that waits for one never ends.
 */
export async function exchange(port: number, options: TlsOptions, bytes: string | Buffer, timeoutMs = 5000): Promise<Exchange> {
  const connection = await openTls(port, options);
  // A server that answers and closes before the last byte is written makes the write fail: fine.
  await connection.write(bytes).catch(() => undefined);
  const ending = await connection.waitClosed(timeoutMs);
  connection.destroy();
  const raw = connection.received();
  const { responses, rest } = parseResponses(raw);
  return { responses, rest, raw, ending };
}

/** Open file descriptors of process `pid` (Linux /proc). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `read` until `done` holds or `timeoutMs` passes; returns the last value read. */
export async function pollUntil<T>(read: () => T | Promise<T>, done: (value: T) => boolean, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() >= deadline) return value;
    await sleep(intervalMs);
  }
}

/**
 * Accepted TCP connections on local `port` that process `pid` still holds a descriptor for (its
 * listening socket aside), from /proc/<pid>/fd and /proc/net/tcp{,6}. Exact where a descriptor
 * count is not: other descriptors (log files, upstream connections) do not enter it.
 */
export function heldConnections(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match?.[1]) inodes.add(match[1]);
    } catch {
      // closed between the listing and the readlink
    }
  }
  let held = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      const localPort = parseInt(fields[1]?.split(':')[1] ?? '', 16);
      const state = fields[3];
      const inode = fields[9] ?? '';
      // 0A = LISTEN
      if (localPort === port && state !== '0A' && inodes.has(inode)) held++;
    }
  }
  return held;
}
