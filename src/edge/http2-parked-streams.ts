// Bounds what an HTTP/2 client can leave parked in the proxy's memory. A client that grants no
// flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE) leaves every answered
// stream holding its response (and, for a forwarded one, the upstream body behind it) for the
// life of the connection: one address took the proxy from 143 to 420 MiB (issue 20). A client
// that opens streams and never sends their request bodies holds a stream and an upstream
// request each. Bounded here by time and by count:
// - a stream that makes no progress for the stall timeout (--keep-alive-timeout) while the
//   client owes us window, or owes us its request body, is reset; a quiet watch owes nothing
//   (nothing is waiting to be written) and is left alone;
// - a session with more than OPEN_REQUEST_BODIES_PER_SESSION requests whose body has not come
//   is ended at once;
// - a session that had STALLED_PER_SESSION such streams, or holds more than PARKED_PER_SESSION
//   answers the client has not taken for a quarter second, is ended, as is the session that
//   takes an address over PARKED_PER_ADDRESS (trusted proxies, which carry many clients, are
//   exempt).

import { constants, type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { endAbusiveSession, resetStream, type SessionCloseReason, type StreamResetReason } from './http2-abuse.js';

/**
 * How often the parked answers are counted, and how long an answer waits before it counts as
 * parked: a burst of streams is caught before its answers pile up (forwarded answers hold
 * about 190 KiB each while parked, measured).
 */
const SWEEP_MS = 250;
/** Answers not taken for SWEEP_MS one connection may hold (kubectl holds a handful; its watches hold none). */
const PARKED_PER_SESSION = 100;
/** The same over all connections from one address (about 46 MiB of forwarded answers). */
const PARKED_PER_ADDRESS = 250;
/**
 * Requests one connection may have open whose body has not all arrived. Each is forwarded at
 * once and holds an upstream request (and an upstream connection) while it waits; a client that
 * opens streams and never sends their bodies holds as many as it opens. kubectl sends each body
 * right after its headers.
 */
const OPEN_REQUEST_BODIES_PER_SESSION = 100;
/** Streams reset for stalling before their whole session is ended. */
const STALLED_PER_SESSION = 10;

export interface ParkedStreamsOptions {
  /** A stream that owes progress is reset after this long without any. */
  stallTimeoutMs: number;
  /** Addresses whose sessions are not added up per address (trusted proxies). */
  isExempt: (address: string) => boolean;
  onStreamReset: (reason: StreamResetReason) => void;
  onSessionClosed: (reason: SessionCloseReason, address: string) => void;
  /** The answers parked now, after each count. */
  onParked: (streams: number) => void;
}

interface SessionBooks {
  session: ServerHttp2Session;
  address: string;
  /** Open streams, and since when each has had output waiting (undefined: none waiting). */
  streams: Map<ServerHttp2Stream, number | undefined>;
  stalledResponses: number;
  stalledRequests: number;
  /** Streams whose request body has not ended yet. */
  openBodies: number;
  parked: number;
}

export class ParkedStreams {
  private readonly sessions = new Map<ServerHttp2Session, SessionBooks>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ParkedStreamsOptions) {}

  attach(server: Http2SecureServer): void {
    server.on('session', (session: ServerHttp2Session) => this.track(session));
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private track(session: ServerHttp2Session): void {
    const books: SessionBooks = { session, address: session.socket?.remoteAddress ?? '', streams: new Map(), stalledResponses: 0, stalledRequests: 0, openBodies: 0, parked: 0 };
    this.sessions.set(session, books);
    session.once('close', () => this.sessions.delete(session));
    session.on('stream', (stream: ServerHttp2Stream) => {
      books.streams.set(stream, undefined);
      // Node's stream timer restarts on every read and write of the stream.
      stream.setTimeout(this.options.stallTimeoutMs);
      stream.on('timeout', () => this.stalled(session, books, stream));
      stream.once('close', () => books.streams.delete(stream));
      if (!stream.endAfterHeaders) this.countBody(session, books, stream);
    });
  }

  private countBody(session: ServerHttp2Session, books: SessionBooks, stream: ServerHttp2Stream): void {
    let open = true;
    const done = () => {
      if (open) books.openBodies--;
      open = false;
    };
    stream.once('end', done);
    stream.once('close', done);
    if (++books.openBodies <= OPEN_REQUEST_BODIES_PER_SESSION) return;
    // 'end' waits for the body to be read, which the upstream may be slow to do: count only
    // the streams whose END_STREAM the client has not sent.
    let owing = 0;
    for (const open of books.streams.keys()) if (!open.endAfterHeaders && !open.destroyed && open.state.remoteClose === 0) owing++;
    if (owing > OPEN_REQUEST_BODIES_PER_SESSION) this.end(session, books, 'idle-streams');
  }

  private stalled(session: ServerHttp2Session, books: SessionBooks, stream: ServerHttp2Stream): void {
    if (stream.destroyed || session.destroyed) return;
    let reason: StreamResetReason;
    if (hasOutputWaiting(stream)) reason = 'stalled-response';
    else if (owesRequestBody(stream)) reason = 'stalled-request';
    else return; // a quiet watch, or an apiserver still working on the answer
    resetStream(stream, constants.NGHTTP2_CANCEL);
    this.options.onStreamReset(reason);
    const count = reason === 'stalled-response' ? ++books.stalledResponses : ++books.stalledRequests;
    if (count >= STALLED_PER_SESSION) this.end(session, books, reason === 'stalled-response' ? 'parked-streams' : 'idle-streams');
  }

  private sweep(): void {
    const now = Date.now();
    const perAddress = new Map<string, SessionBooks[]>();
    for (const [session, books] of this.sessions) {
      books.parked = 0;
      for (const [stream, since] of books.streams) {
        if (!hasOutputWaiting(stream)) books.streams.set(stream, undefined);
        else if (since === undefined) books.streams.set(stream, now);
        else if (now - since >= SWEEP_MS) books.parked++;
      }
      if (books.parked > PARKED_PER_SESSION) this.end(session, books, 'parked-streams');
      else if (books.parked > 0 && !this.options.isExempt(books.address)) perAddress.set(books.address, [...(perAddress.get(books.address) ?? []), books]);
    }
    for (const list of perAddress.values()) {
      let total = list.reduce((sum, books) => sum + books.parked, 0);
      // The sessions holding the most go first, until the address is back under its cap.
      for (const books of list.sort((a, b) => b.parked - a.parked)) {
        if (total <= PARKED_PER_ADDRESS) break;
        total -= books.parked;
        this.end(books.session, books, 'parked-streams');
      }
    }
    let parked = 0;
    for (const books of this.sessions.values()) parked += books.parked;
    this.options.onParked(parked);
  }

  private end(session: ServerHttp2Session, books: SessionBooks, reason: SessionCloseReason): void {
    books.parked = 0;
    if (endAbusiveSession(session)) this.options.onSessionClosed(reason, books.address);
    this.sessions.delete(session);
  }
}

/** Response bytes (or the end of the response) written but not yet sent: the client's window is shut. */
function hasOutputWaiting(stream: ServerHttp2Stream): boolean {
  return stream.headersSent && (stream.writableLength > 0 || (stream.writableEnded && !stream.writableFinished));
}

/** The client has not finished its request, and could send it: our receive window is open. */
function owesRequestBody(stream: ServerHttp2Stream): boolean {
  const state = stream.state;
  return state.remoteClose === 0 && (state.localWindowSize ?? 0) > 0;
}
