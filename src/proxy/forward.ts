// Plain (non-upgrade) requests: forwarded with @fastify/http-proxy over our own undici Agent,
// bodies streamed both ways, identity headers rewritten, errors answered as Kubernetes Status.

import { fastifyHttpProxy, type FastifyHttpProxyOptions } from '@fastify/http-proxy';
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { Dispatcher } from 'undici';
import { StatusError } from '../status.js';
import { isTlsFailure } from '../upstream/tls.js';
import { downstreamResponseHeaders, upstreamRequestHeaders, withRepeatedHeaders, type HeaderPolicy, type HeaderRecord } from './headers.js';

export interface ForwardOptions {
  upstream: URL;
  agent: Dispatcher;
  headerPolicy: HeaderPolicy;
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export async function registerForwarding(app: FastifyInstance, options: ForwardOptions): Promise<void> {
  const upstreamName = options.upstream.origin;
  const proxyOptions: FastifyHttpProxyOptions = {
    upstream: upstreamName,
    undici: options.agent,
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
        const distinct = 'headersDistinct' in request.raw ? (request.raw.headersDistinct as Record<string, string[]>) : {};
        return upstreamRequestHeaders(withRepeatedHeaders(headers, distinct), identity, request.clientAddress, options.headerPolicy) as IncomingHttpHeaders;
      },
      rewriteHeaders: (headers) => downstreamResponseHeaders(headers as HeaderRecord) as IncomingHttpHeaders,
      onResponse: (_request, reply, upstreamResponse) => {
        const { headers, stream } = upstreamResponse as unknown as { headers: HeaderRecord; stream: Readable };
        // A response of unknown length (a watch, logs -f, a chunked list) gets its headers now,
        // not with its first body byte: a watch may be silent for minutes, and client-go's
        // Watch() and kubectl wait for the headers before they report the watch as open.
        if (headers['content-length'] === undefined) {
          const raw = reply.raw;
          raw.once('pipe', () => {
            if (!raw.headersSent && 'flushHeaders' in raw) raw.flushHeaders();
          });
        }
        void reply.send(stream);
      },
      onError: (reply, { error }) => {
        const failure = upstreamFailure(error, upstreamName);
        reply.request.log.warn({ err: error.cause ?? error, upstream: upstreamName }, failure.message);
        void reply.code(failure.code).headers(failure.headers).type('application/json').send(failure.toStatus());
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

const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** What a forwarding failure means for the client, as a Status. */
export function upstreamFailure(error: Error, upstream: string): StatusError {
  const cause = (error.cause ?? error) as NodeJS.ErrnoException;
  const code = cause.code;
  const detail = cause.message || code || 'unknown error';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || error.name === 'GatewayTimeoutError') {
    return new StatusError('Timeout', `the apiserver ${upstream} did not answer in time`);
  }
  if (isTlsFailure(code)) {
    return new StatusError('BadGateway', `TLS connection to the apiserver ${upstream} failed: ${detail}`);
  }
  if (code !== undefined && UNREACHABLE.has(code)) {
    return new StatusError('ServiceUnavailable', `the apiserver ${upstream} is unavailable: ${detail}`, { 'retry-after': '1' });
  }
  return new StatusError('BadGateway', `error talking to the apiserver ${upstream}: ${detail}`);
}
