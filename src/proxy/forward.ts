// Plain (non-upgrade) requests: forwarded with @fastify/http-proxy over our own undici Agent,
// bodies streamed both ways, identity headers rewritten, errors answered as Kubernetes Status.

import { fastifyHttpProxy, type FastifyHttpProxyOptions } from '@fastify/http-proxy';
import type { IncomingHttpHeaders } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest, RawServerBase, RequestGenericInterface } from 'fastify';
import type { RequestInfo } from '../observe/requestinfo.js';
import { kReportUpstream } from '../upstream/dispatcher.js';
import type { Dispatcher } from 'undici';
import { StatusError, sendStatus } from '../status.js';
import { NoHealthyUpstreamError, isTlsFailure, isUnreachable } from '../upstream/failures.js';
import { downstreamResponseHeaders, upstreamRequestHeaders, withRepeatedHeaders, type HeaderPolicy, type HeaderRecord } from './headers.js';

export interface ForwardOptions {
  /** Where http-proxy builds URLs against; the dispatcher picks the real upstream per request. */
  upstream: URL;
  dispatcher: Dispatcher;
  headerPolicy: HeaderPolicy;
  streams: StreamRegistry;
  /** A watch or log follow got its response headers: the stream is open. */
  onStreamStart: (request: FastifyRequest<RequestGenericInterface, RawServerBase>, statusCode: number, elapsedMs: number) => void;
}

/** Long-lived responses (watches, log follows) in flight, so a drain can end them cleanly. */
export class StreamRegistry {
  private readonly open = new Set<() => void>();

  get size(): number {
    return this.open.size;
  }

  add(end: () => void): () => void {
    this.open.add(end);
    return () => this.open.delete(end);
  }

  endAll(): void {
    for (const end of [...this.open]) end();
    this.open.clear();
  }
}

/** A watch or `logs -f`: a response that never ends on its own. */
export function isLongRunning(info: RequestInfo, url: string): boolean {
  if (info.verb === 'watch') return true;
  if (info.subresource !== 'log' || !url.includes('follow=')) return false;
  const follow = new URLSearchParams(url.slice(url.indexOf('?') + 1)).get('follow');
  return follow !== null && follow !== '0' && follow.toLowerCase() !== 'false';
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export async function registerForwarding(app: FastifyInstance, options: ForwardOptions): Promise<void> {
  const proxyOptions: FastifyHttpProxyOptions = {
    upstream: options.upstream.origin,
    undici: options.dispatcher,
    httpMethods: [...METHODS],
    disableRequestLogging: true,
    // The apiserver's Location headers are its own; leave them alone.
    internalRewriteLocationHeader: false,
    replyOptions: {
      // http-proxy re-serializes the query string; send the client's bytes instead, so
      // selectors such as labelSelector=app%3Dweb,tier!=db reach the apiserver unchanged.
      queryString: (_search, url) => rawQuery(url),
      rewriteRequestHeaders: (request, headers) => {
        const identity = request.identity;
        // The onRequest auth hook guarantees an identity; fail closed if that ever changes.
        if (!identity) throw new StatusError('InternalError', 'request reached forwarding without an identity');
        // HTTP/2 requests have no joined headers to restore.
        const received = 'headersDistinct' in request.raw ? withRepeatedHeaders(headers, request.raw) : headers;
        const outgoing: Record<string | symbol, unknown> = upstreamRequestHeaders(received, identity, request.forwardedFor, options.headerPolicy);
        outgoing[kReportUpstream] = (origin: string) => (request.upstream = origin);
        return outgoing as IncomingHttpHeaders;
      },
      rewriteHeaders: (headers) => downstreamResponseHeaders(headers as HeaderRecord) as IncomingHttpHeaders,
      onResponse: (request, reply, upstreamResponse) => {
        const { headers, stream } = upstreamResponse as unknown as { headers: HeaderRecord; stream: Readable };
        // On HTTP/2 the socket is shared by every stream: count this response's body instead.
        if (request.raw.httpVersionMajor === 2) stream.on('data', (chunk: Buffer) => (request.bytesOut += chunk.length));
        if (headers['content-length'] !== undefined) {
          void reply.send(stream);
          return;
        }
        // A response of unknown length (a watch, logs -f, a chunked list) gets its headers now,
        // not with its first body byte: a watch may be silent for minutes, and client-go's
        // Watch() and kubectl wait for the headers before they report the watch as open.
        const raw = reply.raw;
        raw.once('pipe', () => {
          if (raw.headersSent) return;
          // HTTP/2's compatibility response has no flushHeaders(); writeHead sends HEADERS at once.
          if ('flushHeaders' in raw) raw.flushHeaders();
          else (raw as { writeHead(status: number): void }).writeHead(raw.statusCode);
        });
        if (!request.info || !isLongRunning(request.info, request.url)) {
          void reply.send(stream);
          return;
        }
        options.onStreamStart(request, reply.statusCode, reply.elapsedTime);
        // A watch ends cleanly (last chunk, not a torn connection) when its apiserver goes away or
        // the proxy drains: kubectl and informers then re-establish it, on a healthy upstream.
        const body = new PassThrough();
        const end = () => {
          stream.unpipe(body);
          body.end();
          stream.destroy();
        };
        stream.on('error', end);
        stream.pipe(body);
        const forget = options.streams.add(end);
        // The client went away (or the response is done): let go of the apiserver's stream.
        raw.once('close', () => {
          forget();
          stream.destroy();
        });
        void reply.send(body);
      },
      onError: (reply, { error }) => {
        if ((reply.request.raw as { aborted?: boolean }).aborted === true) {
          // The client hung up (or sent a body its parser refused): nobody to answer, no apiserver to blame.
          reply.request.log.debug({ err: error.cause ?? error }, 'client went away before the response');
          reply.raw.destroy();
          return;
        }
        const failure = upstreamFailure(error);
        reply.request.log.warn({ err: error.cause ?? error }, failure.message);
        void sendStatus(reply, failure);
      },
      // reply-from would retry a GET up to 10 times on a 503, which the apiserver answers for an
      // unavailable aggregated API. Failover belongs to the upstream pool, not here.
      retryDelay: () => null,
    },
  };
  await app.register(fastifyHttpProxy, proxyOptions);
}

function rawQuery(url: string): string {
  const index = url.indexOf('?');
  return index === -1 ? '' : url.slice(index + 1);
}

/** What a forwarding failure means for the client, as a Status. */
export function upstreamFailure(error: Error): StatusError {
  const cause = (error.cause ?? error) as NodeJS.ErrnoException & { upstream?: string };
  if (cause instanceof NoHealthyUpstreamError) {
    return new StatusError('ServiceUnavailable', cause.message, { 'retry-after': '1' });
  }
  const code = cause.code;
  const detail = cause.message || code || 'unknown error';
  const upstream = cause.upstream ?? 'upstream';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || error.name === 'GatewayTimeoutError') {
    return new StatusError('Timeout', `the apiserver ${upstream} did not answer in time`);
  }
  if (isTlsFailure(code)) {
    return new StatusError('BadGateway', `TLS connection to the apiserver ${upstream} failed: ${detail}`);
  }
  if (isUnreachable(code)) {
    return new StatusError('ServiceUnavailable', `the apiserver ${upstream} is unavailable: ${detail}`, { 'retry-after': '1' });
  }
  return new StatusError('BadGateway', `error talking to the apiserver ${upstream}: ${detail}`);
}
