// Prometheus metrics, served on the admin listener. Every label set is bounded: no user names
// or paths, and resources (which come from the URL a client sends) are capped.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { droppedLogLines } from './destination.js';
import { SESSION_CLOSE_REASONS, STREAM_RESET_REASONS, type SessionCloseReason, type StreamResetReason } from '../edge/http2-abuse.js';

const PREFIX = 'kube_front_proxy_';
/** Distinct resource label values kept; later ones are counted as "other". */
const MAX_RESOURCES = 200;

/** What the gauges read of each apiserver at scrape time (the upstream pool's targets). */
export interface UpstreamGaugeSource {
  readonly origin: string;
  readonly healthy: boolean;
  readonly outstanding: number;
}

export type StreamKind = 'watch' | 'follow' | 'exec' | 'attach' | 'portforward' | 'upgrade';

export class ProxyMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'verb' | 'resource' | 'code' | 'upstream'>;
  private readonly duration: Histogram<'verb' | 'resource' | 'code' | 'upstream'>;
  private readonly authentications: Counter<'method' | 'outcome'>;
  private readonly streams: Gauge<'kind'>;
  private readonly refusedConnections: Counter;
  private readonly withdrawn: Counter<'kind'>;
  private readonly http2SessionsClosed: Counter<'reason'>;
  private readonly http2StreamsReset: Counter<'reason'>;
  private readonly http2ParkedStreams: Gauge;
  private readonly abuserConnectionsRefused: Counter;
  private readonly resources = new Set<string>();

  /** `upstreams`: the apiservers as they are now; `http2`: the upstream HTTP/2 sessions' counts, when watches go over HTTP/2. */
  constructor(upstreams: readonly UpstreamGaugeSource[], http2?: () => { sessions: number; streams: number }) {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    this.requests = new Counter({ name: `${PREFIX}requests_total`, help: 'Requests answered, by Kubernetes verb, resource, HTTP code and upstream.', labelNames: ['verb', 'resource', 'code', 'upstream'], registers: [this.registry] });
    this.duration = new Histogram({
      name: `${PREFIX}request_duration_seconds`,
      help: 'Request duration, from arrival to the last byte of the response (long-lived requests excluded).',
      labelNames: ['verb', 'resource', 'code', 'upstream'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    this.authentications = new Counter({
      name: `${PREFIX}authentications_total`,
      help: 'Authentication results, by method (basic, x509, bearer, none) and outcome (success or the failure reason; for bearer with --token-passthrough: passthrough when forwarded, token-rejected when the apiserver answered 401).',
      labelNames: ['method', 'outcome'],
      registers: [this.registry],
    });
    this.refusedConnections = new Counter({ name: `${PREFIX}connections_refused_total`, help: 'Client connections reset at accept because their address already held --max-connections-per-client.', registers: [this.registry] });
    this.withdrawn = new Counter({
      name: `${PREFIX}withdrawn_credential_closes_total`,
      help: 'Watches and log follows (kind="stream") and tunnels (kind="tunnel") ended by a reload that revoked the certificate or removed or changed the user that opened them.',
      labelNames: ['kind'],
      registers: [this.registry],
    });
    this.http2SessionsClosed = new Counter({
      name: `${PREFIX}http2_sessions_closed_total`,
      help: 'Client HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM for abuse, by reason: rapid-reset, ping-flood, settings-flood, continuation-flood, frame-flood (another flood nghttp2 detected), idle-streams (streams whose request never came), parked-streams (answers the client gives no flow-control window for).',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    this.http2StreamsReset = new Counter({
      name: `${PREFIX}http2_streams_reset_total`,
      help: 'Client HTTP/2 streams reset by the proxy after --keep-alive-timeout without progress, by reason: stalled-response (an answer the client gives no window for), stalled-request (a request body that does not come).',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    this.http2ParkedStreams = new Gauge({ name: `${PREFIX}http2_parked_streams`, help: 'Client HTTP/2 streams whose answer has waited a quarter second or more for the client to give it flow-control window.', registers: [this.registry] });
    this.abuserConnectionsRefused = new Counter({
      name: `${PREFIX}http2_abuser_connections_refused_total`,
      help: 'Client connections reset at accept because their address had an HTTP/2 connection ended for abuse in the last 10 s.',
      registers: [this.registry],
    });
    new Counter({
      name: `${PREFIX}log_lines_dropped_total`,
      help: 'Log lines (traffic log and the process log) dropped because their destination took none while 16 MiB waited (a stdout nobody reads).',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(droppedLogLines);
      },
    });
    this.streams = new Gauge({ name: `${PREFIX}open_streams`, help: 'Long-lived requests open now, by kind.', labelNames: ['kind'], registers: [this.registry] });
    new Gauge({
      name: `${PREFIX}upstream_healthy`,
      help: '1 while the upstream is in the pool, 0 while it is ejected.',
      labelNames: ['upstream'],
      registers: [this.registry],
      collect() {
        for (const target of upstreams) this.set({ upstream: target.origin }, target.healthy ? 1 : 0);
      },
    });
    new Gauge({
      name: `${PREFIX}upstream_in_flight`,
      help: 'Requests and streams in flight to the upstream.',
      labelNames: ['upstream'],
      registers: [this.registry],
      collect() {
        for (const target of upstreams) this.set({ upstream: target.origin }, target.outstanding);
      },
    });
    if (http2) {
      new Gauge({
        name: `${PREFIX}upstream_http2_sessions`,
        help: 'HTTP/2 connections to the apiservers carrying watches and log follows.',
        registers: [this.registry],
        collect() {
          this.set(http2().sessions);
        },
      });
      new Gauge({
        name: `${PREFIX}upstream_http2_streams`,
        help: 'Watches and log follows open on those connections.',
        registers: [this.registry],
        collect() {
          this.set(http2().streams);
        },
      });
    }
    for (const reason of SESSION_CLOSE_REASONS) this.http2SessionsClosed.inc({ reason }, 0);
    for (const reason of STREAM_RESET_REASONS) this.http2StreamsReset.inc({ reason }, 0);
    for (const kind of ['watch', 'follow', 'exec', 'attach', 'portforward', 'upgrade'] satisfies StreamKind[]) this.streams.set({ kind }, 0);
  }

  authenticated(method: string, outcome: string): void {
    this.authentications.inc({ method, outcome });
  }

  requestDone(labels: { verb: string; resource: string; code: number; upstream: string }, seconds: number | undefined): void {
    const values = { verb: labels.verb || 'none', resource: this.boundedResource(labels.resource), code: String(labels.code), upstream: labels.upstream || 'none' };
    this.requests.inc(values);
    if (seconds !== undefined) this.duration.observe(values, seconds);
  }

  connectionRefused(): void {
    this.refusedConnections.inc();
  }

  withdrawnClosed(streams: number, tunnels: number): void {
    this.withdrawn.inc({ kind: 'stream' }, streams);
    this.withdrawn.inc({ kind: 'tunnel' }, tunnels);
  }

  http2SessionClosed(reason: SessionCloseReason): void {
    this.http2SessionsClosed.inc({ reason });
  }

  http2StreamReset(reason: StreamResetReason): void {
    this.http2StreamsReset.inc({ reason });
  }

  abuserConnectionRefused(): void {
    this.abuserConnectionsRefused.inc();
  }

  http2Parked(streams: number): void {
    this.http2ParkedStreams.set(streams);
  }

  streamOpened(kind: StreamKind): void {
    this.streams.inc({ kind });
  }

  streamClosed(kind: StreamKind): void {
    this.streams.dec({ kind });
  }

  private boundedResource(resource: string): string {
    if (resource === '') return '';
    if (this.resources.has(resource)) return resource;
    if (this.resources.size >= MAX_RESOURCES) return 'other';
    this.resources.add(resource);
    return resource;
  }
}
