// Observing plain requests as they finish: the traffic-log line and the metrics. (Tunnels are
// observed by the upgrade proxy itself; refused logins by the auth hook.)

import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyRequest, RawServerBase, RequestGenericInterface } from 'fastify';
import { accessRecord, type AccessLog, type RequestFacts } from './accesslog.js';
import type { ProxyMetrics } from './metrics.js';

type AnyRequest = FastifyRequest<RequestGenericInterface, RawServerBase>;

function factsOf(request: AnyRequest): RequestFacts | undefined {
  if (!request.identity || !request.info) return undefined;
  return { reqId: request.id, client: request.clientAddress, identity: request.identity, method: request.method, protocol: `HTTP/${request.raw.httpVersion}`, info: request.info, userAgent: request.headers['user-agent'] };
}

/**
 * Logs and counts every authenticated request when its response ends. Returns the callback that
 * forwarding calls when a response turns out to be a stream (watch, log follow), which is then
 * logged once more, when it opens.
 */
export function observeTraffic(app: FastifyInstance, accessLog: AccessLog, metrics: ProxyMetrics): (request: AnyRequest, statusCode: number, elapsedMs: number) => void {
  app.addHook('onResponse', async (request, reply) => {
    const facts = factsOf(request);
    if (!facts) return;
    const durationMs = reply.elapsedTime;
    // One response at a time per HTTP/1.1 connection: the socket's counter moved by exactly this
    // one. HTTP/2 multiplexes: forwarding counted the body bytes of this stream.
    const socket = request.raw.socket as Socket | null;
    const bytesOut = request.raw.httpVersionMajor === 2 ? request.bytesOut : socket ? socket.bytesWritten - request.bytesWrittenBefore : 0;
    const bytesIn = Number(request.headers['content-length'] ?? 0) || 0;
    if (request.streamKind) metrics.streamClosed(request.streamKind);
    accessLog.request(accessRecord(facts, { status: reply.statusCode, bytesIn, bytesOut, durationMs, upstream: request.upstream, ...(request.streamKind ? { phase: 'end' as const } : {}) }));
    // A stream's duration says how long someone watched, not how fast we were: not timed.
    metrics.requestDone({ verb: facts.info.verb, resource: facts.info.resource, code: reply.statusCode, upstream: request.upstream ?? '' }, request.streamKind ? undefined : durationMs / 1000);
  });

  return (request, statusCode, elapsedMs) => {
    const facts = factsOf(request);
    if (!facts) return;
    request.streamKind = facts.info.verb === 'watch' ? 'watch' : 'follow';
    metrics.streamOpened(request.streamKind);
    accessLog.request(accessRecord(facts, { status: statusCode, bytesIn: 0, bytesOut: 0, durationMs: elapsedMs, upstream: request.upstream, phase: 'start' }));
  };
}
