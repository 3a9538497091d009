// The traffic log and request metrics of admitted requests, plain and upgraded alike: one line
// per finished request, and one more when a long-lived one (watch, log follow, tunnel) opens, so
// a tail shows it live. (Refused logins are logged by admission.)

import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyRequest, RawServerBase, RequestGenericInterface } from 'fastify';
import type { RequestContext } from '../request/context.js';
import { accessRecord, type AccessLog } from './accesslog.js';
import type { ProxyMetrics } from './metrics.js';

type AnyRequest = FastifyRequest<RequestGenericInterface, RawServerBase>;

export class TrafficLog {
  constructor(
    private readonly accessLog: AccessLog,
    private readonly metrics: ProxyMetrics,
  ) {}

  /** A long-lived request got its answer: its 'start' line (set context.streamKind first). */
  started(context: RequestContext, status: number, durationMs: number): void {
    this.accessLog.request(accessRecord(context, { status, bytesIn: 0, bytesOut: 0, durationMs, upstream: context.upstream, phase: 'start' }));
  }

  /** A request is over: its line ('end' for a long-lived one) and its count. */
  finished(context: RequestContext, status: number, bytes: { bytesIn: number; bytesOut: number }, durationMs: number): void {
    const longLived = context.streamKind !== undefined;
    this.accessLog.request(accessRecord(context, { status, ...bytes, durationMs, upstream: context.upstream, ...(longLived ? { phase: 'end' as const } : {}) }));
    // A stream's duration says how long someone watched, not how fast we were: not timed.
    this.metrics.requestDone({ verb: context.info.verb, resource: context.info.resource, code: status, upstream: context.upstream ?? '' }, longLived ? undefined : durationMs / 1000);
  }
}

/**
 * Logs and counts every admitted plain request when its response ends. Returns the callback that
 * forwarding calls when a response turns out to be a stream (watch, log follow), which is then
 * logged once more, when it opens. (Tunnels report to the TrafficLog from the upgrade proxy.)
 */
export function observeTraffic(app: FastifyInstance, traffic: TrafficLog, metrics: ProxyMetrics): (context: RequestContext, statusCode: number, elapsedMs: number) => void {
  // A callback hook, not an async one: no promise to make and settle on every request.
  app.addHook('onResponse', (request: AnyRequest, reply, done) => {
    const context = request.context;
    if (!context) return done();
    // One response at a time per HTTP/1.1 connection: the socket's counter moved by exactly this
    // one. HTTP/2 multiplexes: forwarding counted the body bytes of this stream.
    const socket = request.raw.socket as Socket | null;
    const bytesOut = request.raw.httpVersionMajor === 2 ? context.bytesOut : socket ? socket.bytesWritten - context.bytesWrittenBefore : 0;
    const bytesIn = Number(request.headers['content-length'] ?? 0) || 0;
    if (context.streamKind) metrics.streamClosed(context.streamKind);
    traffic.finished(context, reply.statusCode, { bytesIn, bytesOut }, reply.elapsedTime);
    done();
  });

  return (context, statusCode, elapsedMs) => {
    context.streamKind = context.info.verb === 'watch' ? 'watch' : 'follow';
    metrics.streamOpened(context.streamKind);
    traffic.started(context, statusCode, elapsedMs);
  };
}
