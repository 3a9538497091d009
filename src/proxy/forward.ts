// Plain (non-upgrade) requests, routed by @fastify/http-proxy, identity headers rewritten,
// errors answered as Kubernetes Status. Three ways to the apiserver:
// - plain reads (a get, a list: most requests) through the pool's undici dispatcher directly,
//   written into the client's response as they arrive (forwardRead);
// - long-running GETs (watches, `logs -f`) over multiplexed HTTP/2 sessions (../upstream/h2.ts),
//   when enabled and the apiserver speaks h2;
// - everything else (writes with their bodies, the proxy subresource) through reply-from.

import { fastifyHttpProxy, type FastifyHttpProxyOptions } from '@fastify/http-proxy';
import type { IncomingHttpHeaders } from 'node:http';
import { constants as http2, type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerBase, RequestGenericInterface, RouteGenericInterface } from 'fastify';
import type { RequestInfo } from '../request/requestinfo.js';
import type { RequestContext } from '../request/context.js';
import { kDispatchContext, type LegacyDispatchHandler } from '../upstream/dispatcher.js';
import { util as undiciUtil, type Dispatcher } from 'undici';
import { StatusError, sendStatus } from '../edge/status.js';
import { failover, type Attempt } from '../upstream/failover.js';
import { NoHealthyUpstreamError, ProxyIdentityRefusedError, errorCode, isTlsFailure, isUnreachable, type UpstreamError } from '../upstream/failures.js';
import { HTTP1_ONLY, responseHeaders, type Http2Upstreams } from '../upstream/h2.js';
import type { UpstreamPool } from '../upstream/pool.js';
import { downstreamResponseHeaders, downstreamResponseHeadersOfLines, upstreamWireHeaders, withRepeatedHeaders, type HeaderPolicy, type HeaderRecord, type OutgoingHeaders } from './headers.js';
import type { LongLivedWork } from './long-lived.js';

export interface ForwardOptions {
  /** Where http-proxy builds URLs against; the dispatcher picks the real upstream per request. */
  upstream: URL;
  dispatcher: Dispatcher;
  headerPolicy: HeaderPolicy;
  /** Where watches and log follows are registered for the drain and for reloads. */
  longLived: LongLivedWork;
  /** A watch or log follow got its response headers: the stream is open. */
  onStreamStart: (context: RequestContext, statusCode: number, elapsedMs: number) => void;
  /** HTTP/2 sessions for watches and log follows; undefined sends them over HTTP/1.1 like everything else. */
  http2?: Http2Upstreams | undefined;
  /** Where the HTTP/2 path picks its apiserver (the HTTP/1.1 path's dispatcher has its own). */
  pool?: UpstreamPool | undefined;
  /** Longest wait for response headers on the HTTP/2 path; 0 = none. */
  upstreamHeaderTimeoutMs?: number | undefined;
  /** The apiserver answered 401 for a passed-through bearer token (--token-passthrough). */
  onTokenRejected?: ((context: RequestContext) => void) | undefined;
}

type AnyRequest = FastifyRequest<RequestGenericInterface, RawServerBase>;
type AnyReply = FastifyReply<RouteGenericInterface, RawServerBase>;

/** A watch or `logs -f`: a response that never ends on its own. */
export function isLongRunning(info: RequestInfo, url: string): boolean {
  if (info.verb === 'watch') return true;
  if (info.subresource !== 'log' || !url.includes('follow=')) return false;
  const follow = new URLSearchParams(url.slice(url.indexOf('?') + 1)).get('follow');
  return follow !== null && follow !== '0' && follow.toLowerCase() !== 'false';
}

/** Bodies up to this size (by Content-Length) are sent in one piece. */
const SMALL_BODY_BYTES = 64 * 1024;

/**
 * How much of a long answer may wait in a client's response before the apiserver's is paused.
 * undici, resumed after a pause, reads everything its socket has buffered again (one
 * concatenation, then one copy into its parser's memory) and puts back what follows the pause:
 * pausing at every 16 KiB high-water mark copied a 1.2 MB list of Pods over and over, a fifth of
 * the proxy's time for that list (Readable's fromList in a profile). An HTTP/1.1 connection
 * carries one answer at a time. An HTTP/2 connection carries many, and the parked-stream limits
 * (edge/http2-parked-streams.ts) count answers, not bytes: a stream may hold what the gathered
 * start of its answer already put there, and not much more than before.
 */
const HTTP1_STREAM_WINDOW_BYTES = 256 * 1024;
const HTTP2_STREAM_WINDOW_BYTES = SMALL_BODY_BYTES;

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** What the rest of the proxy calls of forwarding, beside the routes it registers. */
export interface Forwarding {
  /**
   * Forwards `request` now if it is a plain read (a get, a list: most requests) whose path needs
   * none of http-proxy's checks, while an apiserver is in the pool; settles once it is answered
   * or its client has gone, and the reply is then sent or hijacked, so fastify runs none of the
   * route's stages for it. Undefined for anything else, which goes the route's way.
   */
  readNow(request: AnyRequest, reply: AnyReply): Promise<void> | undefined;
}

export async function registerForwarding(app: FastifyInstance, options: ForwardOptions): Promise<Forwarding> {
  const proxyOptions: FastifyHttpProxyOptions = {
    upstream: options.upstream.origin,
    undici: options.dispatcher,
    httpMethods: [...METHODS],
    disableRequestLogging: true,
    // http-proxy has checked the path (no traversal) by the time it calls this.
    handler: (request, reply, dest, replyOptions) => {
      // No apiserver to try: answered here, once logged by the pool, rather than as an error
      // reply-from would log again (with a stack) for every request.
      const outage = options.pool?.outage();
      if (outage) {
        fail(request, reply, outage);
        return reply;
      }
      const h2 = options.http2;
      // A passed-through token goes over HTTP/1.1 only: the HTTP/2 sessions present the front-proxy
      // certificate, and a token must never travel on that identity (upstream/tls.ts).
      const context = request.context;
      if (h2 && options.pool && context && context.identity.upstreamAuth === 'front-proxy' && request.method === 'GET' && isLongRunning(context.info, request.url) && !hasBody(request)) {
        forwardOverHttp2(request, reply, dest, h2, options.pool, options, () => reply.from(dest, replyOptions)).catch((err: unknown) => {
          if (!reply.sent && !reply.raw.headersSent) fail(request, reply, err as Error);
          else reply.raw.destroy();
        });
        // A reply is a thenable that settles when the response has been sent.
        return reply;
      }
      // (fastify reads no body for GET and HEAD, nor does reply-from send one.)
      if (hasBody(request) && request.method !== 'GET' && request.method !== 'HEAD') request.body = detachedBody(request.raw);
      return reply.from(dest, replyOptions);
    },
    // The apiserver's Location headers are its own; leave them alone.
    internalRewriteLocationHeader: false,
    replyOptions: {
      // http-proxy re-serializes the query string; send the client's bytes instead, so
      // selectors such as labelSelector=app%3Dweb,tier!=db reach the apiserver unchanged.
      queryString: (_search, url) => rawQuery(url),
      rewriteRequestHeaders: (request, headers) => {
        const outgoing: Record<string | symbol, unknown> = headersFor(request, headers, options.headerPolicy);
        // The dispatcher picks the connections by it (a client token never rides on the
        // front-proxy certificate) and names the apiserver that served the request in it.
        outgoing[kDispatchContext] = contextOf(request);
        return outgoing as IncomingHttpHeaders;
      },
      rewriteHeaders: (headers) => downstreamResponseHeaders(headers as HeaderRecord) as IncomingHttpHeaders,
      onResponse: (request, reply, upstreamResponse) => {
        const { headers, stream, statusCode } = upstreamResponse as unknown as { headers: HeaderRecord; stream: Readable; statusCode: number };
        const context = contextOf(request);
        if (statusCode === 401 && context.identity.upstreamAuth === 'client-token') options.onTokenRejected?.(context);
        if (statusCode === 401 && context.identity.upstreamAuth === 'front-proxy' && options.pool) {
          // Sent with the front-proxy certificate and a user: either the apiserver refuses the
          // proxy itself, or the 401 came from behind it. The body waits (unread) for the verdict.
          const origin = context.upstream;
          options.pool.confirmIdentityRefused(origin, sentAt(reply)).then(
            (refused) => {
              if (!refused) return relayResponse(request, reply, stream, headers, options, () => stream.destroy());
              // Read and dropped (a Status of a few bytes): destroying it would tear the client's connection down.
              stream.resume();
              answerIdentityRefused(request, reply, origin ?? 'upstream');
            },
            () => relayResponse(request, reply, stream, headers, options, () => stream.destroy()),
          );
          return;
        }
        relayResponse(request, reply, stream, headers, options, () => stream.destroy());
      },
      onError: (reply, { error }) => {
        if ((reply.request.raw as { aborted?: boolean }).aborted === true) {
          // The client hung up (or sent a body its parser refused): nobody to answer, no apiserver to blame.
          reply.request.log.debug({ err: error.cause ?? error }, 'client went away before the response');
          reply.raw.destroy();
          return;
        }
        const failure = upstreamFailure(error);
        logFailure(reply.request, error, failure);
        sendFailure(reply.request, reply, failure);
      },
      // reply-from would retry a GET up to 10 times on a 503, which the apiserver answers for an
      // unavailable aggregated API. Failover belongs to the upstream pool, not here.
      retryDelay: () => null,
    },
  };
  await app.register(fastifyHttpProxy, proxyOptions);
  return {
    readNow: (request, reply) => {
      const context = request.context;
      if (!context || !isPlainRead(request, context) || !needsNoPathCheck(request.url) || options.pool?.outage()) return undefined;
      return forwardRead(request, reply, context, options);
    },
  };
}

/**
 * What may not pass http-proxy's path checks (no traversal after decoding, no absolute URL, no
 * backslash or control character): such a path takes the route, where they run. A path without
 * any of these characters (nearly all; a query is not checked) passes them as it is.
 */
const PATH_NEEDING_CHECKS = /[%\\\x00-\x1f\x7f]|\.\.|^(?!\/)|^\/\//;

function needsNoPathCheck(url: string): boolean {
  const query = url.indexOf('?');
  return !PATH_NEEDING_CHECKS.test(query === -1 ? url : url.slice(0, query));
}

/**
 * Sends an upstream response body to the client. A response of unknown length that may stream
 * from a backend gets its headers at once; a long-running one (watch, log follow) is registered
 * for the drain, ends cleanly whatever happens upstream, and `cancel`s the upstream stream when
 * the client goes away.
 */
function relayResponse(request: AnyRequest, reply: AnyReply, stream: Readable, headers: HeaderRecord, options: ForwardOptions, cancel: () => void): void {
  const context = contextOf(request);
  // On HTTP/2 the socket is shared by every stream: count this response's body instead.
  const http2Client = request.raw.httpVersionMajor === 2;
  const length = headers['content-length'];
  // A small answer (most are: a get, a short list) is gathered and sent in one write; piping it
  // costs stream and event bookkeeping per chunk. HEAD, 204 and 304 carry no body to gather.
  if (length !== undefined && Number(length) <= SMALL_BODY_BYTES && request.method !== 'HEAD' && reply.statusCode !== 204 && reply.statusCode !== 304) {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('end', () => {
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      if (http2Client) context.bytesOut += body.length;
      void reply.send(body);
    });
    stream.once('error', (err) => void reply.send(err));
    return;
  }
  if (length === undefined && isLongRunning(context.info, request.url)) {
    relayLongRunning(context, reply, stream, options, cancel);
    return;
  }
  if (http2Client) stream.on('data', (chunk: Buffer) => (context.bytesOut += chunk.length));
  if (length === undefined && mayStream(context.info)) {
    // What a backend behind the apiserver answers (a service or pod proxy, say a server-sent
    // events stream) may send its headers long before its first byte: the client gets them now.
    // Anything else of unknown length (most answers of kube-apiserver: a get or a list, chunked)
    // gets its headers with its first body bytes, one TLS record and one write instead of two.
    reply.raw.once('pipe', () => sendHeadersNow(reply.raw));
  }
  void reply.send(stream);
}

/**
 * A watch or log follow: relayed chunk by chunk straight into the client's stream, outside
 * fastify's send (a PassThrough and two pipes per watch cost 6 KiB each: 26 -> 20 KiB per watch
 * at 10,000 watches). It gets its headers at once, is registered for the drain, ends cleanly whatever
 * happens upstream, and `cancel`s the upstream stream when the client goes away. fastify still
 * runs the onResponse hooks (traffic log, gauges) on the response's 'finish' or 'error'.
 */
function relayLongRunning(context: RequestContext, reply: AnyReply, source: Readable, options: ForwardOptions, cancel: () => void): void {
  const raw = reply.raw;
  const headers = reply.getHeaders();
  reply.hijack();
  raw.writeHead(reply.statusCode, headers as OutgoingHttpHeaders);
  // A watch may be silent for minutes, and client-go's Watch() and kubectl wait for the headers
  // before they report the watch as open.
  sendHeadersNow(raw);
  options.onStreamStart(context, reply.statusCode, reply.elapsedTime);

  // HTTP/2 clients: write to the stream itself (the compatibility response re-checks its state
  // per write) and count this response's bytes (the session's socket is shared).
  const http2Client = reply.request.raw.httpVersionMajor === 2;
  const sink = (http2Client ? (raw as unknown as { stream: Writable }).stream : raw) as Writable;
  const resume = () => source.resume();
  const onData = (chunk: Buffer) => {
    if (http2Client) context.bytesOut += chunk.length;
    if (!sink.write(chunk)) {
      source.pause();
      sink.once('drain', resume);
    }
  };
  let ended = false;
  // A watch ends cleanly (last chunk, not a torn connection) when its apiserver goes away or the
  // proxy drains: kubectl and informers then re-establish it, on a healthy upstream.
  const end = () => {
    if (ended) return;
    ended = true;
    source.off('data', onData);
    if (!raw.writableEnded && !raw.destroyed) raw.end();
    cancel();
  };
  source.on('data', onData);
  source.once('end', end);
  source.on('error', end);
  // An HTTP/2 stream whose session died or that the apiserver reset closes without 'end'.
  source.once('close', end);
  const registered = options.longLived.add('stream', end, context.identity);
  // The end line and the open-streams gauge, also when the client leaves mid-stream.
  finishOnHangUp(raw);
  // The client went away (or the response is done): let go of the apiserver's stream.
  raw.once('close', () => {
    registered.forget();
    ended = true;
    source.off('data', onData);
    cancel();
  });
}

/**
 * A GET of a resource (a get, a list): not a watch or log follow, nor what the proxy
 * subresource relays from a backend that may stream, nor a non-resource path (discovery,
 * OpenAPI, /version...), which mayStream() leaves to the path that sends headers at once.
 */
function isPlainRead(request: AnyRequest, context: RequestContext): boolean {
  return request.method === 'GET' && !hasBody(request) && !mayStream(context.info) && !isLongRunning(context.info, request.url);
}

/**
 * A plain read, dispatched to the pool and written into the client's response as it arrives, as
 * the floor does (bench/floor.ts): no request object, body stream or pipe of reply-from's. An
 * answer up to SMALL_BODY_BYTES (nearly all) is gathered and sent in one write with its headers;
 * a longer one streams from there. Same header contract, failover, Status answers and traffic
 * log as every other request. Settles when the response closes: answered, or its client gone
 * (the reply is then hijacked, so that fastify runs no route for it).
 */
function forwardRead(request: AnyRequest, reply: AnyReply, context: RequestContext, options: ForwardOptions): Promise<void> {
  const outgoing: Record<string | symbol, unknown> = headersFor(request, request.headers as HeaderRecord, options.headerPolicy);
  outgoing[kDispatchContext] = context;
  const raw = reply.raw;
  const http2Client = request.raw.httpVersionMajor === 2;
  let abort: ((err?: Error) => void) | undefined;
  let resumeUpstream: (() => void) | undefined;
  let clientGone = false;
  let done = false;
  let statusCode = 0;
  let headers: HeaderRecord = {};
  /** A 401 to the proxy's own identity: held until the pool says whose it is. */
  let held: Buffer[] | undefined;
  let gathered: Buffer[] = [];
  let gatheredBytes = 0;
  let streaming = false;
  const closed = new Promise<void>((settled) =>
    raw.once('close', () => {
      clientGone = true;
      if (!done) abort?.();
      if (!reply.sent) reply.hijack();
      settled();
    }),
  );

  // The apiserver's status and headers (over the proxy's Audit-Id in getHeaders()' copy), written
  // outside fastify's send, which a body in hand or a body streamed as it comes needs nothing of.
  const writeHead = (contentLength?: number) => {
    const merged = Object.assign(reply.getHeaders(), headers) as OutgoingHttpHeaders;
    if (contentLength !== undefined) merged['content-length'] = contentLength;
    reply.hijack();
    raw.writeHead(statusCode, merged);
  };
  // Headers and what was gathered go out together; the rest of a long answer streams after them.
  const startStreaming = (): boolean => {
    streaming = true;
    writeHead();
    finishOnHangUp(raw);
    const first = gathered.length === 1 ? (gathered[0] as Buffer) : Buffer.concat(gathered);
    gathered = [];
    return write(first);
  };
  const sink = (http2Client ? (raw as unknown as { stream: Writable }).stream : raw) as Writable;
  const window = http2Client ? HTTP2_STREAM_WINDOW_BYTES : HTTP1_STREAM_WINDOW_BYTES;
  const write = (chunk: Buffer): boolean => {
    if (http2Client) context.bytesOut += chunk.length;
    if (sink.write(chunk) || sink.writableLength <= window) return true;
    sink.once('drain', () => resumeUpstream?.());
    return false;
  };
  // A whole answer, headers and body in one write.
  const sendGathered = (body: Buffer[]) => {
    // (After a held 401's verdict the client may have gone.)
    if (clientGone) return;
    const payload = body.length === 1 ? (body[0] as Buffer) : Buffer.concat(body);
    if (http2Client) context.bytesOut += payload.length;
    // A 204 or 304 has no body (RFC 9110 §8.6): its headers go as the apiserver sent them.
    if (statusCode === 204 || statusCode === 304) {
      writeHead();
      raw.end();
      return;
    }
    writeHead(payload.length);
    raw.end(payload);
  };

  const handler: LegacyDispatchHandler = {
    onConnect: (abortUpstream) => {
      abort = abortUpstream;
      if (clientGone) abortUpstream();
    },
    onHeaders: (code, rawHeaders, resume) => {
      statusCode = code;
      resumeUpstream = resume;
      // Named as undici names them for reply-from's responses: lower case, repeats as arrays.
      headers = downstreamResponseHeadersOfLines(rawHeaders, undiciUtil.headerNameToString);
      if (code === 401 && context.identity.upstreamAuth === 'client-token') options.onTokenRejected?.(context);
      if (code === 401 && context.identity.upstreamAuth === 'front-proxy' && options.pool) held = [];
      return true;
    },
    onData: (chunk) => {
      if (clientGone) return true;
      if (held) {
        held.push(chunk);
        return true;
      }
      if (streaming) return write(chunk);
      gathered.push(chunk);
      gatheredBytes += chunk.length;
      return gatheredBytes > SMALL_BODY_BYTES ? startStreaming() : true;
    },
    onComplete: () => {
      done = true;
      if (clientGone) return;
      if (streaming) {
        raw.end();
        return;
      }
      if (!held) {
        sendGathered(gathered);
        return;
      }
      // Sent with the front-proxy certificate and a user: either the apiserver refuses the
      // proxy itself, or the 401 came from behind it.
      const body = held;
      const origin = context.upstream;
      void options.pool!.confirmIdentityRefused(origin, sentAt(reply)).then(
        (refused) => (refused ? answerIdentityRefused(request, reply, origin ?? 'upstream') : sendGathered(body)),
        () => sendGathered(body),
      );
    },
    onError: (err) => {
      done = true;
      if (clientGone) {
        request.log.debug({ reqId: request.id, err }, 'client went away before the response');
        return;
      }
      // Part of a long answer is out: nothing to answer with but a torn connection, as the apiserver's own would be.
      if (streaming) raw.destroy();
      else fail(request, reply, err);
    },
  };
  try {
    options.dispatcher.dispatch({ origin: options.upstream.origin, path: request.url, method: 'GET', headers: outgoing as unknown as IncomingHttpHeaders, body: null }, handler as unknown as Dispatcher.DispatchHandler);
  } catch (err) {
    // undici refuses some requests before sending anything (a header value it will not write).
    if (!done) handler.onError?.(err as Error);
  }
  return closed;
}

/**
 * A hijacked HTTP/1.1 response whose client left mid-answer never finishes, and fastify runs its
 * onResponse hooks (the traffic log, the open-streams gauge) only on 'finish' or 'error': report
 * the hang-up as the error it is, after fastify's own close handling, which ignores it. (HTTP/2's
 * compatibility response emits 'finish' when its stream closes.)
 */
function finishOnHangUp(raw: AnyReply['raw']): void {
  let finished = false;
  raw.once('finish', () => (finished = true));
  raw.once('close', () => {
    if (!finished) setImmediate(() => raw.listenerCount('error') > 0 && raw.emit('error', Object.assign(new Error('the client closed the connection mid-answer'), { code: 'ECONNRESET' })));
  });
}

/** A response that may stream from a backend: the proxy subresource, the old /proxy/ paths, or a non-resource path. */
function mayStream(info: RequestInfo): boolean {
  return !info.isResourceRequest || info.verb === 'proxy' || info.subresource === 'proxy';
}

/** Sends the response headers before any body byte. */
function sendHeadersNow(raw: AnyReply['raw']): void {
  // HTTP/1.1: headersSent turns true at writeHead(), before anything is on the wire.
  if ('flushHeaders' in raw) raw.flushHeaders();
  // HTTP/2's compatibility response has no flushHeaders(); writeHead sends HEADERS at once.
  else if (!raw.headersSent) (raw as { writeHead(status: number): void }).writeHead(raw.statusCode);
}

/** The headers the apiserver gets for `request`: `headers` as received, with the proxy's identity. */
function headersFor(request: AnyRequest, headers: HeaderRecord, policy: HeaderPolicy): OutgoingHeaders {
  const context = contextOf(request);
  // Node joins repeated header lines and fields (HTTP/1.1 and HTTP/2): restore them.
  // The request's ID is its audit ID (admission.ts requestId): the apiserver's audit event takes it.
  return upstreamWireHeaders(withRepeatedHeaders(headers, request.raw), context.identity, context.forwardedFor, policy, context.reqId);
}

/** The request's context: admission (server.ts onRequest) sets it before any handler runs; fail closed if that ever changes. */
function contextOf(request: AnyRequest): RequestContext {
  if (!request.context) throw new StatusError('InternalError', 'request reached forwarding without an identity');
  return request.context;
}

/**
 * The request body as undici reads it: a stream of its own, fed from the client's. undici
 * destroys the body it was given when the apiserver cannot be reached, and destroying Node's
 * request destroys the client's connection: a PUT then got no answer at all where a GET gets its
 * 503 Status. The client's own abort still reaches undici, marked as such (dispatcher.ts
 * clientAborted), and what it leaves unread gets the grace of refused-body.ts.
 */
function detachedBody(raw: AnyRequest['raw']): PassThrough {
  const body = new PassThrough();
  raw.pipe(body);
  const clientGone = (err?: Error) => {
    if (raw.complete) return;
    Object.assign(body, { aborted: true });
    body.destroy(err ?? Object.assign(new Error('the client closed the connection before its request body ended'), { code: 'ECONNRESET' }));
  };
  raw.once('aborted', () => clientGone());
  raw.once('error', clientGone);
  raw.once('close', () => clientGone());
  return body;
}

function hasBody(request: AnyRequest): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

// Connection-specific fields an HTTP/2 request must not carry (RFC 9113 §8.2.2); Node's client
// refuses them. upstreamRequestHeaders already drops the hop-by-hop ones; these remain.
const NOT_OVER_HTTP2 = ['host', 'http2-settings'];

/**
 * A watch or log follow over an HTTP/2 session: the same upstream choice, header contract,
 * failover (../upstream/failover.ts) and Status answers as the HTTP/1.1 path, with one stream
 * instead of one connection. Falls back to `http1` (reply-from) for an apiserver that does not
 * speak h2, or for headers HTTP/2 cannot carry. Settles once the request is answered or handed on.
 */
async function forwardOverHttp2(request: AnyRequest, reply: AnyReply, dest: string, h2: Http2Upstreams, pool: UpstreamPool, options: ForwardOptions, http1: () => void): Promise<void> {
  const context = contextOf(request);
  const outgoing: OutgoingHttpHeaders = headersFor(request, request.headers as HeaderRecord, options.headerPolicy);
  for (const name of NOT_OVER_HTTP2) delete outgoing[name];
  const query = rawQuery(request.url);
  const path = query ? `${dest}?${query}` : dest;

  let clientGone = reply.raw.destroyed;
  let current: ClientHttp2Stream | undefined;
  reply.raw.once('close', () => {
    clientGone = true;
    // Still waiting for the response headers: nobody is left to read them.
    if (current && !reply.sent) current.close(http2.NGHTTP2_CANCEL);
  });
  if (clientGone) return;

  await new Promise<void>((done, crashed) => {
    // One attempt: `done` once it answered the request or handed it on; a failure goes back to
    // the loop, which tries again or ends in answerFailure.
    const send = async (attempt: Attempt): Promise<void> => {
      const { target } = attempt;
      context.upstream = target.origin;
      let responded = false;
      try {
        const stream = await h2.request(target.url, { ...outgoing, ':method': 'GET', ':path': path, ':authority': target.url.host, ':scheme': 'https' });
        if (stream === HTTP1_ONLY) {
          attempt.release();
          if (!clientGone) http1();
          return done();
        }
        current = stream;
        stream.once('close', attempt.release);
        if (clientGone) {
          stream.close(http2.NGHTTP2_CANCEL);
          return done();
        }
        const headers = await responseHeaders(stream, target.origin, options.upstreamHeaderTimeoutMs ?? 0);
        responded = true;
        const statusCode = Number(headers[':status']);
        // A 401 to the front-proxy certificate and a user: the apiserver may refuse the proxy itself.
        if (statusCode === 401 && (await pool.confirmIdentityRefused(target.origin, sentAt(reply)).catch(() => false))) {
          stream.close(http2.NGHTTP2_CANCEL);
          if (!clientGone) answerIdentityRefused(request, reply, target.origin);
          return done();
        }
        // (The client may have left while that was checked.)
        if (clientGone) {
          stream.close(http2.NGHTTP2_CANCEL);
          return done();
        }
        void reply.code(statusCode);
        void reply.headers(downstreamResponseHeaders(headers as HeaderRecord));
        relayResponse(request, reply, stream, headers as HeaderRecord, options, () => {
          if (!stream.closed) stream.close(http2.NGHTTP2_CANCEL);
        });
        done();
      } catch (err) {
        attempt.failed(err as Error, { committed: responded, clientGone });
      }
    };
    const answerFailure = (error: Error): void => {
      if (clientGone) request.log.debug({ reqId: request.id, err: error }, 'client went away before the response');
      // Headers HTTP/2 forbids (a repeated single-value field, a connection-specific one): this
      // request goes the HTTP/1.1 way, where they are legal.
      else if (cannotCarry(errorCode(error))) http1();
      else fail(request, reply, error);
      done();
    };
    // A watch changes nothing when sent twice.
    failover(
      pool,
      { replayable: true },
      (attempt) => void send(attempt).catch(crashed),
      (error) => {
        try {
          answerFailure(error);
        } catch (err) {
          crashed(err as Error);
        }
      },
    );
  });
}

/** Node's HTTP/2 client refused the headers themselves. */
function cannotCarry(code: string | undefined): boolean {
  return code === 'ERR_HTTP2_HEADER_SINGLE_VALUE' || code === 'ERR_HTTP2_INVALID_CONNECTION_HEADERS' || code === 'ERR_INVALID_HTTP_TOKEN' || code === 'ERR_INVALID_CHAR' || code === 'ERR_HTTP2_INVALID_HEADER_VALUE';
}

function fail(request: AnyRequest, reply: AnyReply, error: Error): void {
  const failure = upstreamFailure(error);
  logFailure(request, error, failure);
  sendFailure(request, reply, failure);
}

/**
 * Answers with the proxy's own failure: a Status, except a 502 to API discovery (GET /api, /apis),
 * which is plain text. client-go reads a discovery answer with Result.Raw(), which never decodes
 * a Status: of a JSON 502 kubectl shows only `an error on the server ("unknown")`, of a text one
 * the text. Nearly every kubectl command starts with discovery. (Of a 503 or 504 it shows a fixed
 * sentence either way.)
 */
function sendFailure(request: AnyRequest, reply: AnyReply, failure: StatusError): void {
  if (failure.code !== 502 || !isDiscovery(request)) {
    void sendStatus(reply, failure);
    return;
  }
  void reply.code(failure.code).headers(failure.headers).type('text/plain; charset=utf-8').send(`${failure.message}\n`);
}

function isDiscovery(request: AnyRequest): boolean {
  if (request.method !== 'GET') return false;
  const path = request.url.split('?', 1)[0];
  return path === '/api' || path === '/api/' || path === '/apis' || path === '/apis/';
}

/**
 * A request's failure, logged: a warning with the error, except when the pool has already logged
 * the reason (once per apiserver per change of state) and every request would repeat it.
 */
function logFailure(request: AnyRequest, error: Error, failure: StatusError): void {
  const cause = error.cause ?? error;
  if (cause instanceof NoHealthyUpstreamError || cause instanceof ProxyIdentityRefusedError) request.log.debug({ reqId: request.id }, failure.message);
  else request.log.warn({ reqId: request.id, err: cause }, failure.message);
}

/**
 * The apiserver refused the proxy's own identity for this request (UpstreamPool.confirmIdentityRefused):
 * the answer names the proxy's misconfiguration, not the user's credentials. Nothing of the
 * apiserver's response is kept but the request's Audit-Id.
 */
function answerIdentityRefused(request: AnyRequest, reply: AnyReply, origin: string): void {
  for (const name of Object.keys(reply.getHeaders())) if (name !== 'audit-id') reply.removeHeader(name);
  const error = new ProxyIdentityRefusedError([origin]);
  request.log.debug({ reqId: request.id, upstream: origin }, error.message);
  sendFailure(request, reply, upstreamFailure(error));
}

/** When the request arrived (performance.now()): its forwarding began no earlier. */
function sentAt(reply: AnyReply): number {
  return performance.now() - reply.elapsedTime;
}

function rawQuery(url: string): string {
  const index = url.indexOf('?');
  return index === -1 ? '' : url.slice(index + 1);
}

/** What a forwarding failure means for the client, as a Status. */
export function upstreamFailure(error: Error): StatusError {
  const cause = (error.cause ?? error) as NodeJS.ErrnoException & UpstreamError;
  if (cause instanceof ProxyIdentityRefusedError) {
    // No Retry-After: retrying cannot help until the apiserver's flags or the proxy's certificate change.
    return new StatusError('BadGateway', cause.message);
  }
  if (cause instanceof NoHealthyUpstreamError) {
    return new StatusError('ServiceUnavailable', cause.message, { 'retry-after': '1' });
  }
  const code = cause.code;
  const detail = cause.message || code || 'unknown error';
  const upstream = cause.upstream ?? 'upstream';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || error.name === 'GatewayTimeoutError') {
    return new StatusError('Timeout', `the apiserver ${upstream} did not answer in time`);
  }
  if (code === 'EMFILE' || code === 'ENFILE') {
    // Our own shortage, not the apiserver's: say so, and do not blame (or eject) the upstream.
    return new StatusError('ServiceUnavailable', `kube-front-proxy is out of file descriptors (${code}); raise its open-files limit`, { 'retry-after': '1' });
  }
  if (isTlsFailure(code)) {
    return new StatusError('BadGateway', `TLS connection to the apiserver ${upstream} failed: ${detail}`);
  }
  if (isUnreachable(code)) {
    return new StatusError('ServiceUnavailable', `the apiserver ${upstream} is unavailable: ${detail}`, { 'retry-after': '1' });
  }
  return new StatusError('BadGateway', `error talking to the apiserver ${upstream}: ${detail}`);
}
