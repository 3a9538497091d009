// HTTP/2 sessions to the apiservers, for long-running requests (watches, `logs -f`): many
// streams share one verified TLS connection instead of holding one connection each. Node's own
// client, not undici's: undici's HTTP/2 client joins repeated header fields into one
// ("X-Remote-Group: devs,ops", which kube-apiserver reads as one group), node:http2 sends each
// value of an array as a field of its own. It writes each character of a value as one byte, so
// values come already in that form (UTF-8 identities: headers.ts upstreamWireHeaders).
//
// Per origin, a few sessions: a new one opens when every open one carries as many streams as the
// apiserver allows (its SETTINGS_MAX_CONCURRENT_STREAMS) or our own cap. A session with no
// streams closes after an idle time; each is pinged, so a dead apiserver (no FIN, no RST) ends
// its streams instead of leaving watches hanging. An apiserver whose ALPN answer is http/1.1 is
// remembered, and its long-running requests use the HTTP/1.1 path.

import { connect as http2Connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader, type OutgoingHttpHeaders, type Settings } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { FastifyBaseLogger } from 'fastify';
import { REFUSED_STREAM } from './failures.js';
import type { UpstreamConnector } from './tls.js';

export interface Http2PoolOptions {
  /** Most streams on one session, whatever the apiserver allows (Go's default is 250; kube-apiserver allows 1000). */
  maxStreamsPerSession: number;
  /** A session without streams for this long is closed. */
  idleTimeoutMs: number;
  /** Each session is pinged this often... */
  pingIntervalMs: number;
  /** ...and destroyed, ending its streams, when the answer takes longer than this. */
  pingTimeoutMs: number;
  /** After the TLS handshake (which has the connector's own limit), the apiserver's first SETTINGS frame must arrive within this. */
  connectTimeoutMs: number;
  /** After an apiserver answered ALPN with http/1.1, how long before h2 is tried again. */
  http1RecheckMs: number;
}

const DEFAULTS: Http2PoolOptions = {
  maxStreamsPerSession: 250,
  idleTimeoutMs: 30_000,
  pingIntervalMs: 30_000,
  pingTimeoutMs: 15_000,
  connectTimeoutMs: 10_000,
  http1RecheckMs: 10 * 60_000,
};

// The connection window is handed back by Node as data arrives (a stream its reader paused holds
// only its own 64 KiB window), so a larger one only lets many busy streams flow without waiting
// for WINDOW_UPDATEs.
const SESSION_WINDOW_BYTES = 1024 * 1024;

// Client stream ids are odd 31-bit numbers: a session that has opened this many is retired
// before it runs out.
const MAX_STREAMS_PER_SESSION_LIFETIME = 1_000_000_000;

/** The apiserver negotiated HTTP/1.1: send this request the HTTP/1.1 way. */
export const HTTP1_ONLY = Symbol('kube-front-proxy.http1Only');

/** A failure of the connection or of the stream before its response, with the code failures.ts classifies. */
export class Http2UpstreamError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'Http2UpstreamError';
  }
}

interface Session {
  origin: string;
  /** The TLS connection, until it is handed to the session. */
  socket: TLSSocket | undefined;
  /** Set once the TLS handshake chose h2. */
  session: ClientHttp2Session | undefined;
  /** Resolves when the apiserver's SETTINGS arrived ('h2') or ALPN chose HTTP/1.1. */
  ready: Promise<'h2' | 'http1'>;
  /** Streams open on it, and requests waiting for it to be ready. */
  active: number;
  waiting: number;
  /** Streams it has carried: stream ids run out after about 2^30. */
  opened: number;
  /** Streams it may carry: our cap until the apiserver's SETTINGS say otherwise. */
  limit: number;
  /** False after GOAWAY, an error, a reload or the idle close: no new streams. */
  usable: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  pingTimer: NodeJS.Timeout | undefined;
}

interface Origin {
  sessions: Session[];
  /** Streams per session this apiserver allowed last time: what a new session assumes. */
  limit: number;
  /** Until when requests to it take the HTTP/1.1 path (ms since the epoch). */
  http1Until: number;
}

export interface Http2PoolStats {
  sessions: number;
  streams: number;
}

export class Http2Upstreams {
  private readonly options: Http2PoolOptions;
  private readonly origins = new Map<string, Origin>();
  private closed = false;

  constructor(
    private connector: UpstreamConnector,
    private readonly logger: FastifyBaseLogger,
    options: Partial<Http2PoolOptions> = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
  }

  /**
   * A reloaded front-proxy certificate or upstream CA: new streams go on new sessions, and the
   * old sessions close once their streams have ended (open watches keep their connection).
   */
  setConnector(next: UpstreamConnector): void {
    this.connector = next;
    for (const origin of this.origins.values()) {
      for (const entry of origin.sessions) this.retire(entry);
      // The new identity may be answered differently; ask again.
      origin.http1Until = 0;
    }
  }

  /**
   * Opens a stream to `upstream` with `headers` (pseudo-headers included). Resolves with the
   * stream as soon as it is sent, or HTTP1_ONLY when this apiserver does not speak h2; rejects
   * with the connection's error (refused, TLS, timeout) when no session could be opened.
   */
  async request(upstream: URL, headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream | typeof HTTP1_ONLY> {
    if (this.closed) throw new Http2UpstreamError('the proxy is shutting down', 'UND_ERR_CLOSED');
    const key = upstream.origin;
    let origin = this.origins.get(key);
    if (!origin) {
      origin = { sessions: [], limit: this.options.maxStreamsPerSession, http1Until: 0 };
      this.origins.set(key, origin);
    }
    // A session that closes as soon as it opens (GOAWAY at once) is not retried for ever.
    for (let lost = 0; ;) {
      if (this.closed) throw new Http2UpstreamError('the proxy is shutting down', 'UND_ERR_CLOSED');
      if (lost === 5) throw new Http2UpstreamError(`the apiserver ${key} kept closing new HTTP/2 sessions`, 'ECONNRESET');
      if (origin.http1Until > Date.now()) return HTTP1_ONLY;
      const entry = origin.sessions.find((s) => s.usable && s.active + s.waiting < s.limit) ?? this.open(upstream, origin);
      entry.waiting++;
      let protocol: 'h2' | 'http1';
      try {
        protocol = await entry.ready;
      } finally {
        entry.waiting--;
      }
      if (protocol === 'http1') return HTTP1_ONLY;
      const session = entry.session as ClientHttp2Session;
      // Closed meanwhile, or the apiserver allows fewer streams than we assumed before its
      // SETTINGS came: find another. (A stream over its limit would be queued by nghttp2 until
      // one ends, which for a watch may be never.)
      if (!entry.usable || session.closed || session.destroyed) {
        lost++;
        this.closeIfIdle(entry);
        continue;
      }
      if (entry.active >= entry.limit) continue;
      const stream = session.request(headers, { endStream: true });
      this.take(entry, stream);
      return stream;
    }
  }

  /** Sessions and streams open now (for tests and the bench). */
  stats(): Http2PoolStats {
    let sessions = 0;
    let streams = 0;
    for (const origin of this.origins.values()) {
      for (const entry of origin.sessions) {
        if (!entry.session) continue;
        sessions++;
        streams += entry.active;
      }
    }
    return { sessions, streams };
  }

  /** No new streams; each session closes once its streams have ended. */
  close(): void {
    this.closed = true;
    for (const origin of this.origins.values()) for (const entry of origin.sessions) this.retire(entry);
  }

  /** Every session closed now, its streams with it. */
  destroy(): void {
    this.closed = true;
    for (const origin of this.origins.values()) {
      for (const entry of [...origin.sessions]) {
        entry.usable = false;
        entry.socket?.destroy();
        entry.session?.destroy();
      }
    }
  }

  private open(upstream: URL, origin: Origin): Session {
    const entry: Session = {
      origin: upstream.origin,
      socket: undefined,
      session: undefined,
      ready: Promise.resolve('h2'),
      active: 0,
      waiting: 0,
      opened: 0,
      limit: origin.limit,
      usable: true,
      idleTimer: undefined,
      pingTimer: undefined,
    };
    origin.sessions.push(entry);
    const forget = () => {
      entry.usable = false;
      clearTimeout(entry.idleTimer);
      clearInterval(entry.pingTimer);
      const index = origin.sessions.indexOf(entry);
      if (index !== -1) origin.sessions.splice(index, 1);
    };
    entry.ready = new Promise<'h2' | 'http1'>((resolve, reject) => {
      const fail = (err: Error) => {
        forget();
        reject(err);
      };
      const socket = this.connector.connectHttp2(upstream);
      entry.socket = socket;
      socket.once('error', fail);
      socket.once('secureConnect', () => {
        socket.off('error', fail);
        entry.socket = undefined;
        if (socket.alpnProtocol !== 'h2') {
          socket.destroy();
          forget();
          origin.http1Until = Date.now() + this.options.http1RecheckMs;
          this.logger.info({ upstream: entry.origin, alpn: socket.alpnProtocol || 'none' }, 'apiserver does not offer HTTP/2: its watches and log follows use HTTP/1.1');
          resolve('http1');
          return;
        }
        const session = http2Connect(upstream.origin, { createConnection: () => socket, settings: { enablePush: false } });
        entry.session = session;
        // The apiserver's SETTINGS say how many streams it takes; until they arrive we cannot
        // know, and a watch queued over the limit would wait forever.
        const settingsTimer = setTimeout(() => session.destroy(new Http2UpstreamError(`no HTTP/2 SETTINGS from ${entry.origin} within ${this.options.connectTimeoutMs} ms`, 'UND_ERR_CONNECT_TIMEOUT')), this.options.connectTimeoutMs);
        let settled = false;
        let failure: Error | undefined;
        session.on('remoteSettings', (settings: Settings) => {
          entry.limit = Math.min(this.options.maxStreamsPerSession, settings.maxConcurrentStreams ?? Infinity);
          origin.limit = Math.max(1, entry.limit);
          // 0: the apiserver takes no stream on it for now.
          if (entry.limit === 0) entry.usable = false;
          if (settled) return;
          settled = true;
          clearTimeout(settingsTimer);
          session.setLocalWindowSize(SESSION_WINDOW_BYTES);
          this.keepAlive(entry, session);
          this.logger.debug({ upstream: entry.origin, maxStreams: entry.limit }, 'HTTP/2 session to the apiserver open');
          resolve('h2');
        });
        session.on('goaway', (code: number) => {
          // The apiserver is going away (or rotating connections): open streams finish, new ones go elsewhere.
          entry.usable = false;
          this.logger.debug({ upstream: entry.origin, code }, 'apiserver sent GOAWAY');
        });
        session.on('error', (err: Error) => {
          entry.usable = false;
          failure ??= err;
          if (!settled) return; // reported through the rejected promise
          this.logger.debug({ upstream: entry.origin, err }, 'HTTP/2 session to the apiserver failed');
        });
        session.once('close', () => {
          clearTimeout(settingsTimer);
          forget();
          if (!settled) {
            settled = true;
            reject(failure ?? new Http2UpstreamError(`the apiserver ${entry.origin} closed the HTTP/2 connection before its SETTINGS`, 'ECONNRESET'));
          }
        });
      });
    });
    // Failures reach every request waiting on it; this one keeps an unobserved rejection quiet.
    entry.ready.catch(() => {});
    return entry;
  }

  /** Pings the session; one that does not answer in time is dead: destroyed, its streams end. */
  private keepAlive(entry: Session, session: ClientHttp2Session): void {
    let outstanding = false;
    entry.pingTimer = setInterval(() => {
      if (outstanding || session.destroyed) return;
      outstanding = true;
      const deadline = setTimeout(() => {
        this.logger.warn({ upstream: entry.origin, timeoutMs: this.options.pingTimeoutMs }, 'apiserver did not answer an HTTP/2 PING: closing the session and its watches');
        session.destroy(new Http2UpstreamError(`no PING answer from ${entry.origin} within ${this.options.pingTimeoutMs} ms`, 'ETIMEDOUT'));
      }, this.options.pingTimeoutMs);
      deadline.unref();
      const answered = () => {
        clearTimeout(deadline);
        outstanding = false;
      };
      try {
        if (!session.ping(answered)) answered();
      } catch {
        answered();
      }
    }, this.options.pingIntervalMs);
    entry.pingTimer.unref();
  }

  private take(entry: Session, stream: ClientHttp2Stream): void {
    entry.active++;
    if (++entry.opened >= MAX_STREAMS_PER_SESSION_LIFETIME) entry.usable = false;
    clearTimeout(entry.idleTimer);
    entry.idleTimer = undefined;
    stream.once('close', () => {
      entry.active--;
      this.closeIfIdle(entry);
    });
    // Whoever reads the stream learns of a failure from its end, close and rstCode; an 'error'
    // nobody listens to would take the process down.
    stream.on('error', () => {});
  }

  private closeIfIdle(entry: Session): void {
    if (entry.active > 0 || entry.waiting > 0 || !entry.session) return;
    if (!entry.usable) {
      entry.session.close();
      return;
    }
    if (entry.idleTimer) return;
    entry.idleTimer = setTimeout(() => {
      entry.idleTimer = undefined;
      if (entry.active > 0 || entry.waiting > 0) return;
      entry.usable = false;
      entry.session?.close();
    }, this.options.idleTimeoutMs);
    entry.idleTimer.unref();
  }

  /** No new streams; closed now if it carries none, else when its last stream ends (closeIfIdle). */
  private retire(entry: Session): void {
    entry.usable = false;
    this.closeIfIdle(entry);
  }
}

/**
 * The response headers of `stream`, or the reason none came: the connection broke (ECONNRESET,
 * or the session's own error), the apiserver reset the stream, or `headersTimeoutMs` (0 = none)
 * passed, in which case the stream is cancelled.
 */
export function responseHeaders(stream: ClientHttp2Stream, origin: string, headersTimeoutMs: number): Promise<IncomingHttpHeaders & IncomingHttpStatusHeader> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      stream.off('response', onResponse);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    const onResponse = (headers: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
      done();
      resolve(headers);
    };
    const closedError = (): Error => {
      if (stream.rstCode === constants.NGHTTP2_REFUSED_STREAM) return new Http2UpstreamError(`the apiserver ${origin} refused the stream`, REFUSED_STREAM);
      const session = stream.session;
      if (!session || session.destroyed || session.closed) return new Http2UpstreamError(`the connection to the apiserver ${origin} closed before its response`, 'ECONNRESET');
      return new Http2UpstreamError(`the apiserver ${origin} reset the stream (HTTP/2 error code ${stream.rstCode ?? 'unknown'})`, 'ERR_HTTP2_STREAM_ERROR');
    };
    const onError = (err: Error & { code?: string }) => {
      done();
      // The session's own error (ECONNRESET, a TLS alert) says more than the stream's.
      reject(err.code === 'ERR_HTTP2_STREAM_ERROR' ? closedError() : err);
    };
    const onClose = () => {
      done();
      reject(closedError());
    };
    stream.once('response', onResponse);
    stream.once('error', onError);
    stream.once('close', onClose);
    if (headersTimeoutMs > 0) {
      timer = setTimeout(() => {
        done();
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new Http2UpstreamError(`the apiserver ${origin} did not answer in time`, 'UND_ERR_HEADERS_TIMEOUT'));
      }, headersTimeoutMs);
    }
  });
}
