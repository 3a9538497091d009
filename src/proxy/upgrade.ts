// Upgrade requests (kubectl exec, attach, cp, port-forward: SPDY/3.1 or WebSocket). They arrive
// on the server's 'upgrade' event, pass the same admission and get their identity headers exactly
// like plain requests, and go to the apiserver on a fresh mTLS connection. The apiserver's
// answer decides: a 101 is relayed verbatim and the two sockets are spliced byte for byte; any
// other answer (403 from RBAC, 404, 400) is relayed as an ordinary response, so kubectl prints
// the apiserver's message or falls back from WebSocket to SPDY. Frames are never parsed.

import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { FastifyBaseLogger } from 'fastify';
import { requestId, type Admission } from '../request/admission.js';
import type { Authenticator } from '../auth/index.js';
import type { ProxyMetrics, StreamKind } from '../observe/metrics.js';
import type { TrafficLog } from '../observe/traffic.js';
import { StatusError, statusResponseBytes } from '../edge/status.js';
import { failover, type Attempt } from '../upstream/failover.js';
import { NoHealthyUpstreamError, ProxyIdentityRefusedError, type UpstreamError } from '../upstream/failures.js';
import type { UpstreamPool } from '../upstream/pool.js';
import type { UpstreamConnector } from '../upstream/tls.js';
import { upstreamFailure } from './forward.js';
import { downstreamResponseHeaders, upstreamWireHeaders, withRepeatedHeaders, type HeaderPolicy } from './headers.js';
import type { LongLivedEntry, LongLivedWork } from './long-lived.js';

export interface UpgradeOptions {
  admission: Admission;
  /** For the failed logins of passed-through tokens the apiserver refused. */
  authenticator: Authenticator;
  /** Where tunnels are registered for the drain and for reloads, from their arrival on. */
  longLived: LongLivedWork;
  pool: UpstreamPool;
  /** The current connector: replaced when the front-proxy certificate or upstream CA is reloaded. */
  connector: () => UpstreamConnector;
  /** The connector without a client certificate, for passed-through tokens (--token-passthrough); undefined when off. */
  tokenConnector?: () => UpstreamConnector | undefined;
  headerPolicy: HeaderPolicy;
  logger: FastifyBaseLogger;
  traffic: TrafficLog;
  metrics: ProxyMetrics;
}

const TCP_KEEPALIVE_MS = 30_000;
/** After one side has gone, how long the other may take to flush before it is destroyed. */
const CLOSE_GRACE_MS = 5_000;

/** The tunnel's upstream socket, once there is one: the drain and reloads end it with the client's. */
interface TunnelRecord {
  upstream: Duplex | undefined;
}

export class UpgradeProxy {
  constructor(private readonly options: UpgradeOptions) {}

  /** Upgrade requests in flight or tunnels open. */
  get open(): number {
    return this.options.longLived.count('tunnel');
  }

  /** The 'upgrade' listener of the HTTPS server. Never throws: a client's bytes cannot crash us. */
  readonly handle = (req: IncomingMessage, client: Duplex, head: Buffer): void => {
    // A tunnel must survive the client's half-close (kubectl ends stdin, then still reads
    // stdout); an https socket otherwise ends our side the moment the client's FIN arrives.
    // Set here, not on the server: plain requests keep Node's usual close-on-FIN.
    (client as Duplex & { allowHalfOpen: boolean }).allowHalfOpen = true;
    const record: TunnelRecord = { upstream: undefined };
    // Registered on arrival: the drain ends it whether it is being admitted, answered or spliced.
    const registered = this.options.longLived.add('tunnel', () => {
      client.destroy();
      record.upstream?.destroy();
    });
    client.once('close', () => registered.forget());
    client.on('error', (err) => this.options.logger.debug({ err }, 'upgrade client socket error'));
    this.proxy(req, client, head, record, registered).catch((err: unknown) => {
      this.options.logger.error({ err }, 'upgrade failed');
      respondAndClose(client, new StatusError('InternalError', 'internal error in the proxy'));
    });
  };

  private async proxy(req: IncomingMessage, client: Duplex, head: Buffer, record: TunnelRecord, registered: LongLivedEntry): Promise<void> {
    const reqId = requestId(req.headers);
    const websocket = /^websocket$/i.test(String(req.headers.upgrade ?? ''));
    const admitted = await this.options.admission.admit({ reqId, request: req, connection: client as TLSSocket, websocketProtocols: websocket ? req.headers['sec-websocket-protocol'] : undefined });
    if (!admitted.admitted) {
      // Refused: not long-lived work any more, and the drain must not cut its 503 short
      // (respondAndClose bounds how long it may take).
      registered.forget();
      // No answer: it followed a badly framed request on this connection, and nothing else will close it.
      if (!admitted.answer) client.destroy();
      else respondAndClose(client, withAuditId(admitted.answer, reqId));
      return;
    }
    if (client.destroyed) return;
    const { context } = admitted;
    const { identity, clientAddress, forwardedFor, started } = context;
    registered.openedBy(identity);
    const { pool, headerPolicy, traffic, metrics } = this.options;
    // A passed-through token never travels on the front-proxy certificate (upstream/tls.ts).
    const connector = identity.upstreamAuth === 'client-token' ? (this.options.tokenConnector ?? (() => undefined)) : this.options.connector;
    const kind = streamKindOf(context.info.subresource);

    const headers = upstreamWireHeaders(withRepeatedHeaders(req.headers, req), identity, forwardedFor, headerPolicy, reqId);
    // The one hop-by-hop pair that must cross: it is the request.
    headers.connection = 'Upgrade';
    headers.upgrade = req.headers.upgrade ?? '';

    // The traffic log's lines and counts, as for plain requests: 'start' when the tunnel opens,
    // 'end' when it closes, or one line for an answer that was not an upgrade.
    const log = (status: number, upstream: string | undefined, bytes: { bytesIn: number; bytesOut: number } = { bytesIn: 0, bytesOut: 0 }, phase?: 'start' | 'end') => {
      const durationMs = performance.now() - started;
      context.upstream = upstream;
      if (phase === 'start') {
        context.streamKind = kind;
        traffic.started(context, status, durationMs);
      } else traffic.finished(context, status, bytes, durationMs);
    };
    const fail = (err: Error, upstream: string | undefined) => {
      const failure = upstreamFailure(err);
      // The pool has already said why (one line per apiserver and change): no line per request.
      if (err instanceof NoHealthyUpstreamError || err instanceof ProxyIdentityRefusedError) this.options.logger.debug({ upstream }, failure.message);
      else this.options.logger.warn({ err, upstream }, failure.message);
      log(failure.code, upstream);
      respondAndClose(client, withAuditId(failure, reqId));
    };

    const send = (attempt: Attempt): void => {
      const { target } = attempt;
      let connected = false;
      const upstreamRequest = httpRequest({
        method: req.method,
        path: req.url,
        headers: { ...headers, host: target.url.host },
        createConnection: () => {
          const chosen = connector();
          if (!chosen) throw new Error('a bearer token to pass through, and no upstream connector without a client certificate');
          const socket = chosen.connect(target.url);
          socket.once('secureConnect', () => (connected = true));
          record.upstream = socket;
          return socket;
        },
      });

      // The client left before the apiserver answered: abandon the upstream request.
      const abandon = () => upstreamRequest.destroy();
      client.once('close', abandon);

      upstreamRequest.on('upgrade', (res: IncomingMessage, upstreamSocket: Duplex, upstreamHead: Buffer) => {
        client.off('close', abandon);
        if (client.destroyed) {
          attempt.release();
          upstreamSocket.destroy();
          return;
        }
        // The apiserver writes the kubelet's 101 as it is, without its Audit-Id: name the request here.
        const rawHeaders = res.headers['audit-id'] === undefined ? [...res.rawHeaders, 'Audit-Id', reqId] : res.rawHeaders;
        client.write(responseHead(res, rawHeaders), 'latin1');
        if (upstreamHead.length > 0) client.write(upstreamHead);
        if (head.length > 0) upstreamSocket.write(head);
        // An open tunnel counts as outstanding on its upstream until it closes.
        log(101, target.origin, undefined, 'start');
        metrics.streamOpened(kind);
        splice(client, upstreamSocket, (bytes) => {
          attempt.release();
          metrics.streamClosed(kind);
          log(101, target.origin, bytes, 'end');
        });
      });

      // Not upgraded: relay the answer as an ordinary response and close, as the apiserver does.
      const relay = (res: IncomingMessage) => {
        const relayed = downstreamResponseHeaders(res.headers);
        relayed['audit-id'] ??= reqId;
        const lines = Object.entries(relayed).flatMap(([name, value]) => (Array.isArray(value) ? value : [value]).map((v) => [name, v]));
        client.write(responseHead(res, [...lines.flat(), 'connection', 'close']), 'latin1');
        res.pipe(client);
        res.on('error', () => client.destroy());
        res.on('close', attempt.release);
        res.on('end', () => log(res.statusCode ?? 0, target.origin));
        if (res.statusCode === 401 && identity.upstreamAuth === 'client-token') {
          // The apiserver refused the token: a failed login for the client address.
          metrics.authenticated('bearer', 'token-rejected');
          void this.options.authenticator.recordTokenRejected(identity, clientAddress);
        }
      };
      upstreamRequest.on('response', (res: IncomingMessage) => {
        client.off('close', abandon);
        // A 401 to our front-proxy identity is the proxy's misconfiguration, not the user's (forward.ts).
        if (res.statusCode === 401 && identity.upstreamAuth === 'front-proxy') {
          void pool.confirmIdentityRefused(target.origin, started).then((refused) => {
            if (!refused) return relay(res);
            res.resume();
            attempt.release();
            fail(new ProxyIdentityRefusedError([target.origin]), target.origin);
          });
          return;
        }
        relay(res);
      });

      upstreamRequest.on('error', (err: Error) => {
        client.off('close', abandon);
        // Once the TLS connection is up the apiserver may be running the exec: a failure from then
        // on is this request's, never sent again nor held against the apiserver.
        attempt.failed(err, { committed: connected, clientGone: client.destroyed });
      });

      upstreamRequest.end();
    };
    // Nothing of a tunnel reaches the apiserver before its connection is up.
    failover(pool, { replayable: true }, send, (error: UpstreamError) => {
      if (!client.destroyed) fail(error, error.upstream);
    });
  }
}

function streamKindOf(subresource: string): StreamKind {
  return subresource === 'exec' || subresource === 'attach' || subresource === 'portforward' ? subresource : 'upgrade';
}

/** The head as the apiserver sent it: Node read its bytes as Latin-1, so it is written back as Latin-1. */
function responseHead(res: IncomingMessage, rawHeaders: string[]): string {
  let head = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n`;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/** `error` with the request's Audit-Id header, as the apiserver names its answers. */
function withAuditId(error: StatusError, reqId: string): StatusError {
  return new StatusError(error.reason, error.message, { ...error.headers, 'Audit-Id': reqId });
}

function respondAndClose(client: Duplex, error: StatusError): void {
  if (client.destroyed) return;
  client.end(statusResponseBytes(error));
  // A client that never reads its answer must not hold the socket open.
  const timer = setTimeout(() => client.destroy(), CLOSE_GRACE_MS);
  client.once('close', () => clearTimeout(timer));
}

/**
 * Pipes bytes both ways until both directions are done. pipe() ends the destination when the
 * source ends, which is how one side's half-close reaches the other; back-pressure is pipe's.
 * When either socket closes outright (reset, error, upstream gone), the other is ended and, if
 * it does not finish in time, destroyed.
 */
function splice(client: Duplex, upstream: Duplex, done: (bytes: { bytesIn: number; bytesOut: number }) => void): void {
  for (const socket of [client, upstream] as const) {
    const net = socket as Duplex & { setKeepAlive?: (on: boolean, ms: number) => void; setTimeout?: (ms: number) => void };
    net.setKeepAlive?.(true, TCP_KEEPALIVE_MS);
    net.setTimeout?.(0); // a quiet exec or port-forward is not idle in any sense that matters
  }
  let bytesIn = 0;
  let bytesOut = 0;
  client.on('data', (chunk: Buffer) => (bytesIn += chunk.length));
  upstream.on('data', (chunk: Buffer) => (bytesOut += chunk.length));
  upstream.on('error', () => client.destroy());
  client.on('error', () => upstream.destroy());
  client.pipe(upstream);
  upstream.pipe(client);

  let closed = 0;
  const onClose = (other: Duplex) => () => {
    closed++;
    if (closed === 2) {
      done({ bytesIn, bytesOut });
      return;
    }
    if (!other.destroyed) {
      other.end();
      const timer = setTimeout(() => other.destroy(), CLOSE_GRACE_MS);
      other.once('close', () => clearTimeout(timer));
    }
  };
  client.once('close', onClose(upstream));
  upstream.once('close', onClose(client));
}
