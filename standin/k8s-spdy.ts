// The server side of SPDY/3 as kubectl speaks it: kubectl's SPDY client is moby/spdystream (the
// "SPDY/3.1" in the Upgrade header notwithstanding, it frames SPDY/3 and ignores SETTINGS and
// WINDOW_UPDATE, i.e. no flow control). Only what exec/attach/port-forward need: the client
// opens every stream (SYN_STREAM, odd ids), the server answers each with an empty SYN_REPLY,
// then DATA both ways, FIN for half-close, RST_STREAM, PING echo, GOAWAY.
//
// Header blocks are zlib with the SPDY/3 dictionary, one compression context per direction for
// the whole connection. Incoming blocks are inflated by re-inflating everything received so far
// (header blocks are few and tiny), which keeps the parser synchronous. Outgoing blocks are
// zlib "stored" (uncompressed) deflate blocks, each followed by the empty stored block of a sync
// flush: a valid continuation of one zlib stream that references no dictionary, so it needs no
// deflate state at all (Go's zlib reader accepts a stream without FDICT even when it was given a
// dictionary).
//
// A hand-written framer rather than spdy-transport (indutny, last release 2018): that library
// implements SPDY/3.1 flow control, and since spdystream never sends WINDOW_UPDATE, a server
// honouring a 64 KiB window would stall after 64 KiB towards kubectl.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { constants as zlibConstants, inflateSync } from 'node:zlib';

const WORDS = [
  'options',
  'head',
  'post',
  'put',
  'delete',
  'trace',
  'accept',
  'accept-charset',
  'accept-encoding',
  'accept-language',
  'accept-ranges',
  'age',
  'allow',
  'authorization',
  'cache-control',
  'connection',
  'content-base',
  'content-encoding',
  'content-language',
  'content-length',
  'content-location',
  'content-md5',
  'content-range',
  'content-type',
  'date',
  'etag',
  'expect',
  'expires',
  'from',
  'host',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'pragma',
  'proxy-authenticate',
  'proxy-authorization',
  'range',
  'referer',
  'retry-after',
  'server',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'user-agent',
  'vary',
  'via',
  'warning',
  'www-authenticate',
  'method',
  'get',
  'status',
  '200 OK',
  'version',
  'HTTP/1.1',
  'url',
  'public',
  'set-cookie',
  'keep-alive',
  'origin',
];
const TAIL =
  '100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505' +
  '203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 ' +
  'Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 ' +
  'Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, ' +
  'Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,' +
  'application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=' +
  'gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.';

/** The SPDY/3 header compression dictionary (spdy-protocol-draft3 §2.6.10.1), 1423 bytes. */
export const SPDY_DICTIONARY = Buffer.concat([
  ...WORDS.map((w) => {
    const b = Buffer.alloc(4 + w.length);
    b.writeUInt32BE(w.length, 0);
    b.write(w, 4, 'latin1');
    return b;
  }),
  Buffer.from(TAIL, 'latin1'),
]);

/** KFP_SPDY_DEBUG=1 logs every frame to stderr. */
const DEBUG = Boolean(process.env.KFP_SPDY_DEBUG);

const enum Type {
  SynStream = 1,
  SynReply = 2,
  RstStream = 3,
  Settings = 4,
  Ping = 6,
  GoAway = 7,
  Headers = 8,
  WindowUpdate = 9,
}
const FLAG_FIN = 0x01;
const MAX_DATA = 0xffffff;
// RST_STREAM status codes used here.
export const RST_CANCEL = 5;
const RST_INVALID_STREAM = 2;

/** Header names (lower-case) to values; a NUL-separated value becomes several. */
export type SpdyHeaders = Record<string, string[]>;

export function encodeHeaderBlock(headers: SpdyHeaders): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n, 0);
    return b;
  };
  const names = Object.keys(headers);
  parts.push(u32(names.length));
  for (const name of names) {
    const n = Buffer.from(name.toLowerCase());
    const v = Buffer.from(headers[name]!.join('\0'));
    parts.push(u32(n.length), n, u32(v.length), v);
  }
  return Buffer.concat(parts);
}

export function decodeHeaderBlock(block: Buffer): SpdyHeaders {
  const headers: SpdyHeaders = {};
  let off = 0;
  const count = block.readUInt32BE(off);
  off += 4;
  for (let i = 0; i < count; i++) {
    const nl = block.readUInt32BE(off);
    const name = block.toString('utf8', off + 4, off + 4 + nl).toLowerCase();
    off += 4 + nl;
    const vl = block.readUInt32BE(off);
    const value = block.toString('utf8', off + 4, off + 4 + vl);
    off += 4 + vl;
    (headers[name] ??= []).push(...value.split('\0'));
  }
  return headers;
}

/** One end of a SPDY stream opened by the client. */
export class SpdyStream extends EventEmitter {
  /** Remote side sent FIN (or the stream was reset / the session closed). */
  remoteEnded = false;
  /** We sent FIN. */
  localEnded = false;
  reset = false;
  private replied = false;

  constructor(
    readonly session: SpdySession,
    readonly id: number,
    readonly headers: SpdyHeaders,
  ) {
    super();
  }

  header(name: string): string | undefined {
    return this.headers[name.toLowerCase()]?.[0];
  }

  /** SYN_REPLY with no headers, as kubelet's stream handler sends at once. */
  reply(): void {
    if (this.replied || this.reset) return;
    this.replied = true;
    this.session.sendSynReply(this.id);
  }

  /** Queues DATA frames; false when the transport's buffer is full (see SpdySession.drain). */
  write(data: Buffer): boolean {
    if (this.localEnded || this.reset || data.length === 0) return true;
    let ok = true;
    for (let off = 0; off < data.length; off += MAX_DATA) {
      ok = this.session.sendData(this.id, data.subarray(off, off + MAX_DATA), false);
    }
    return ok;
  }

  /** Half-close: an empty DATA frame with FIN. */
  end(data?: Buffer): void {
    if (data) this.write(data);
    if (this.localEnded || this.reset) return;
    this.localEnded = true;
    this.session.sendData(this.id, Buffer.alloc(0), true);
    this.session.maybeForget(this);
  }

  /** RST_STREAM (CANCEL by default). */
  resetStream(status = RST_CANCEL): void {
    if (this.reset) return;
    this.session.sendRst(this.id, status);
    this.remoteClosed(true);
  }

  /** @internal */
  remoteClosed(reset: boolean): void {
    if (reset) {
      if (this.reset) return;
      this.reset = true;
      this.localEnded = true;
    }
    if (!this.remoteEnded) {
      this.remoteEnded = true;
      this.emit('end');
    }
    if (reset) this.emit('reset');
    this.session.maybeForget(this);
  }
}

export interface SpdySessionEvents {
  stream: [SpdyStream];
  close: [];
}

/**
 * The server side of a SPDY/3 connection over any byte duplex (a TLS socket after the 101, or a
 * WebSocket stream for SPDY/3.1+portforward.k8s.io tunneling). Emits 'stream' for every
 * SYN_STREAM (the stream is not yet replied to) and 'close' once the transport is gone.
 */
export class SpdySession extends EventEmitter<SpdySessionEvents> {
  readonly streams = new Map<number, SpdyStream>();
  closed = false;
  private pending: Buffer = Buffer.alloc(0);
  private inflateInput: Buffer = Buffer.alloc(0);
  private inflatedLength = 0;
  private deflateStarted = false;
  private lastStreamId = 0;

  constructor(readonly transport: Duplex) {
    super();
    transport.on('data', (chunk: Buffer) => this.onData(chunk));
    transport.on('end', () => {
      // The client closed its side: every stream it had open is over.
      for (const s of this.streams.values()) s.remoteClosed(false);
      transport.end();
    });
    transport.on('error', () => transport.destroy());
    transport.on('close', () => {
      this.closed = true;
      for (const s of this.streams.values()) s.remoteClosed(true);
      this.streams.clear();
      this.emit('close');
    });
  }

  /** Resolves when the transport can take more (for back-pressure in echo loops). */
  drain(): Promise<void> {
    if (!this.transport.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.transport.off('drain', done);
        this.transport.off('close', done);
        resolve();
      };
      this.transport.on('drain', done);
      this.transport.on('close', done);
    });
  }

  /** GOAWAY then end the transport (after what is queued). */
  goAway(): void {
    if (this.closed || this.transport.writableEnded) return;
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(this.lastStreamId, 0);
    this.writeControl(Type.GoAway, 0, payload);
    this.transport.end();
  }

  destroy(): void {
    this.transport.destroy();
  }

  // -------------------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 8 && !this.closed) {
      const first = this.pending.readUInt32BE(0);
      const flags = this.pending[4]!;
      const length = this.pending.readUInt32BE(4) & 0xffffff;
      if (this.pending.length < 8 + length) break;
      const payload = this.pending.subarray(8, 8 + length);
      this.pending = this.pending.subarray(8 + length);
      if (DEBUG) console.error('spdy <-', (first >>> 0).toString(16), flags, length);
      try {
        if (first & 0x80000000) this.onControl(first & 0xffff, flags, payload);
        else this.onDataFrame(first & 0x7fffffff, flags, payload);
      } catch (err) {
        if (DEBUG) console.error('spdy frame error', err);
        // A frame we cannot parse: like spdystream, give up on the connection.
        this.transport.destroy();
        return;
      }
    }
  }

  private inflate(block: Buffer): SpdyHeaders {
    this.inflateInput = Buffer.concat([this.inflateInput, block]);
    const out = inflateSync(this.inflateInput, {
      dictionary: SPDY_DICTIONARY,
      finishFlush: zlibConstants.Z_SYNC_FLUSH,
    });
    const fresh = out.subarray(this.inflatedLength);
    this.inflatedLength = out.length;
    return decodeHeaderBlock(fresh);
  }

  private onControl(type: number, flags: number, payload: Buffer): void {
    switch (type) {
      case Type.SynStream: {
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const headers = this.inflate(payload.subarray(10));
        if (id === 0 || id % 2 === 0 || id <= this.lastStreamId) {
          this.sendRst(id, RST_INVALID_STREAM);
          return;
        }
        this.lastStreamId = id;
        const stream = new SpdyStream(this, id, headers);
        this.streams.set(id, stream);
        this.emit('stream', stream);
        if (flags & FLAG_FIN) stream.remoteClosed(false);
        return;
      }
      case Type.SynReply:
      case Type.Headers: {
        // Not expected from a client, but the block must still go through the inflater.
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        this.inflate(payload.subarray(4));
        if (flags & FLAG_FIN) this.streams.get(id)?.remoteClosed(false);
        return;
      }
      case Type.RstStream: {
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        this.streams.get(id)?.remoteClosed(true);
        return;
      }
      case Type.Ping: {
        // Client pings have odd ids; echo them (spdystream's handlePingFrame does the same).
        if (payload.readUInt32BE(0) % 2 === 1) this.writeControl(Type.Ping, 0, payload);
        return;
      }
      case Type.GoAway:
        // The client is done (spdystream closes the connection once its streams are gone).
        this.transport.end();
        return;
      case Type.Settings:
      case Type.WindowUpdate:
      default:
        return;
    }
  }

  private onDataFrame(id: number, flags: number, data: Buffer): void {
    const stream = this.streams.get(id);
    if (!stream || stream.remoteEnded) return;
    if (data.length > 0) stream.emit('data', data);
    if (flags & FLAG_FIN) stream.remoteClosed(false);
  }

  /** @internal */
  maybeForget(stream: SpdyStream): void {
    if (stream.remoteEnded && stream.localEnded) this.streams.delete(stream.id);
  }

  private write(buf: Buffer): boolean {
    if (this.closed || this.transport.destroyed || this.transport.writableEnded) return true;
    if (DEBUG) console.error('spdy ->', buf.subarray(0, 24).toString('hex'));
    return this.transport.write(buf);
  }

  private writeControl(type: Type, flags: number, payload: Buffer): boolean {
    const head = Buffer.alloc(8);
    head.writeUInt32BE((0x8000 | 3) * 0x10000 + type, 0);
    head.writeUInt32BE(flags * 0x1000000 + payload.length, 4);
    return this.write(Buffer.concat([head, payload]));
  }

  /** A zlib continuation holding `block` as one stored deflate block. */
  private compress(block: Buffer): Buffer {
    const parts: Buffer[] = [];
    if (!this.deflateStarted) {
      this.deflateStarted = true;
      parts.push(Buffer.from([0x78, 0x01])); // zlib header: deflate, 32K window, no FDICT
    }
    // Header blocks here are far below a stored block's 65535-byte limit.
    if (block.length > 0xffff) throw new Error('SPDY header block too large');
    const len = block.length;
    // BFINAL=0, BTYPE=00 (stored), padded to the byte; then LEN and NLEN, little-endian.
    parts.push(Buffer.from([0x00, len & 0xff, len >> 8, ~len & 0xff, (~len >> 8) & 0xff]), block);
    // Then an empty stored block, as a zlib Z_SYNC_FLUSH ends: Go's flate hands out what it has
    // decoded only at that marker, and without it reads past the frame and fails for good.
    parts.push(Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]));
    return Buffer.concat(parts);
  }

  /** @internal */
  sendSynReply(id: number, headers: SpdyHeaders = {}): void {
    const sid = Buffer.alloc(4);
    sid.writeUInt32BE(id, 0);
    this.writeControl(Type.SynReply, 0, Buffer.concat([sid, this.compress(encodeHeaderBlock(headers))]));
  }

  /** @internal */
  sendData(id: number, data: Buffer, fin: boolean): boolean {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(id & 0x7fffffff, 0);
    head.writeUInt32BE((fin ? FLAG_FIN : 0) * 0x1000000 + data.length, 4);
    if (data.length === 0) return this.write(head);
    this.write(head);
    return this.write(data);
  }

  /** @internal */
  sendRst(id: number, status: number): void {
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(id, 0);
    payload.writeUInt32BE(status, 4);
    this.writeControl(Type.RstStream, 0, payload);
  }
}
