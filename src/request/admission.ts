// Admission: the one step every request passes before the proxy does anything for it, plain
// requests (server.ts, fastify's onRequest) and upgrades (proxy/upgrade.ts) alike: who the client
// is, whether the request is framed so that it can be trusted, whether the proxy still takes
// requests, and who the user is. It yields the request's context, or a refusal for the edge to
// answer as a Status in its own way (as k8s.io/apiserver's WithAuthentication hands failures to
// its `failed` handler). Refused logins are counted and logged here, once for both kinds.
// HTTP/2's rapid-reset check stays at the fastify edge (server.ts): upgrades arrive over HTTP/1.1.

import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ClientAddressResolver } from '../auth/client-address.js';
import type { Authenticator } from '../auth/index.js';
import { followsFramingError, framingError } from '../edge/http1-limits.js';
import type { AccessLog } from '../observe/accesslog.js';
import type { ProxyMetrics } from '../observe/metrics.js';
import { requestInfo } from './requestinfo.js';
import { clientAuditId } from '../proxy/headers.js';
import { refusalStatus } from './refusals.js';
import type { RequestContext } from './context.js';
import { pathOf, shuttingDown, type StatusError } from '../edge/status.js';

/**
 * The request's ID, which is also its audit ID, one ID from the proxy's log to the apiserver's
 * audit event: the client's Audit-ID if it is safe (headers.ts clientAuditId), else a random UUID
 * (what the apiserver would generate). It goes upstream as Audit-ID, and the apiserver adopts it.
 */
export function requestId(headers: IncomingHttpHeaders): string {
  return clientAuditId(headers['audit-id']) ?? randomUUID();
}

export interface Arrival {
  /** requestId(), already given (fastify names the request before its hooks run). */
  reqId: string;
  /** The request as Node parsed it (over HTTP/1.1 or HTTP/2). */
  request: IncomingMessage | Http2ServerRequest;
  /** The client's TLS connection: one object per connection, also over HTTP/2 (its certificate verdict is cached on it). */
  connection: Socket;
  /** A WebSocket upgrade's Sec-WebSocket-Protocol, where a bearer token may ride (--token-passthrough). */
  websocketProtocols?: string | undefined;
}

export type AdmissionResult =
  | { admitted: true; context: RequestContext }
  /**
   * `answer`: the Status to answer with, then to close if it says `connection: close`.
   * Undefined: answer nothing and process nothing more on the connection (a request pipelined
   * behind a badly framed one may be a smuggled one).
   */
  | { admitted: false; answer: StatusError | undefined };

export interface AdmissionOptions {
  authenticator: Authenticator;
  clientAddresses: ClientAddressResolver;
  metrics: ProxyMetrics;
  accessLog: AccessLog;
}

export class Admission {
  private draining = false;

  constructor(private readonly options: AdmissionOptions) {}

  /**
   * The drain has begun: a request arriving on a connection opened before it (kept alive, or an
   * exec on a connection of its own) is sent elsewhere, never tunnelled or forwarded after the
   * drain has ended the long-lived work.
   */
  beginDrain(): void {
    this.draining = true;
  }

  async admit({ reqId, request, connection, websocketProtocols }: Arrival): Promise<AdmissionResult> {
    const started = performance.now();
    const { authenticator, metrics, accessLog } = this.options;
    // Read at arrival: by the log line the socket may be gone, and its counter moved on.
    const bytesWrittenBefore = connection.bytesWritten;
    const address = this.options.clientAddresses.resolve(connection.remoteAddress ?? '', request.headers['x-forwarded-for']);
    // Framing before anything else: a badly framed request may hide another one (smuggling), and
    // a request pipelined behind it may be that one, plain or upgrade.
    if (followsFramingError(request)) return { admitted: false, answer: undefined };
    const badFraming = framingError(request);
    if (badFraming) return { admitted: false, answer: badFraming };
    if (this.draining) return { admitted: false, answer: shuttingDown() };

    const method = request.method ?? 'GET';
    const url = request.url ?? '/';
    const userAgent = request.headers['user-agent'];
    const outcome = await authenticator.authenticate(connection as TLSSocket, authenticator.authorizationOf(request.rawHeaders, request.headers.authorization), address.client, websocketProtocols);
    if (!outcome.ok) {
      const answer = refusalStatus(outcome);
      metrics.authenticated(outcome.method ?? 'none', outcome.reason);
      accessLog.authFailure({ reqId, client: address.client, auth: outcome.method ?? 'none', reason: outcome.reason, claimedUser: outcome.claimedUser, method, path: pathOf(url), status: answer.code, userAgent: userAgent ?? '' });
      return { admitted: false, answer };
    }
    const { identity } = outcome;
    metrics.authenticated(identity.method, identity.upstreamAuth === 'client-token' ? 'passthrough' : 'success');
    return {
      admitted: true,
      context: {
        reqId,
        clientAddress: address.client,
        forwardedFor: address.forwardedFor,
        identity,
        info: requestInfo(method, url),
        method,
        protocol: `HTTP/${request.httpVersion}`,
        userAgent,
        started,
        upstream: undefined,
        streamKind: undefined,
        bytesWrittenBefore,
        bytesOut: 0,
      },
    };
  }
}
