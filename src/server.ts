// Builds the user-facing HTTPS server and wires the parts in request order:
// TLS accept -> admit (client address, framing, drain, authenticate) -> rewrite identity headers ->
// pick upstream -> forward or tunnel -> log.

import { constants as cryptoConstants } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { Socket } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Agent } from 'undici';
import { Admission, requestId } from './request/admission.js';
import { BasicAuthenticator } from './auth/basic.js';
import { BcryptPool } from './auth/bcrypt-pool.js';
import { ClientAddressResolver } from './auth/client-address.js';
import { CrlExpiryWarning } from './auth/crl.js';
import { FailureLimiter } from './auth/failure-limiter.js';
import { Authenticator } from './auth/index.js';
import { credentialExpiry } from './auth/credential-expiry.js';
import { localLoginLimiter, withdrawnUsers, type LoginLimiter } from './auth/login-limiter.js';
import { ClientConnections } from './edge/client-connections.js';
import type { Config } from './config/index.js';
import { ConnectionLimit } from './edge/connection-limit.js';
import type { SessionCloseReason } from './edge/http2-abuse.js';
import { AbuserCooldown } from './edge/http2-abuser-cooldown.js';
import { Http2FrameLimits } from './edge/http2-frame-limits.js';
import { ParkedStreams } from './edge/http2-parked-streams.js';
import { answerClientError, limitHttp1 } from './edge/http1-limits.js';
import type { Material } from './material/material.js';
import { AccessLog } from './observe/accesslog.js';
import { ProxyMetrics } from './observe/metrics.js';
import { observeTraffic, TrafficLog } from './observe/traffic.js';
import { registerForwarding, type Forwarding } from './proxy/forward.js';
import type { HeaderPolicy } from './proxy/headers.js';
import { LongLivedWork } from './proxy/long-lived.js';
import { UpgradeProxy } from './proxy/upgrade.js';
import type { RequestContext } from './request/context.js';
import { StatusError, sendStatus } from './edge/status.js';
import { PoolDispatcher } from './upstream/dispatcher.js';
import { Http2Upstreams } from './upstream/h2.js';
import { readyzCheck } from './upstream/health.js';
import { UpstreamPool } from './upstream/pool.js';
import { UpstreamConnector } from './upstream/tls.js';
import { TrustedHeaderLearner } from './upstream/trusted-headers.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by admission (the onRequest hook) before any handler runs; null only on refused requests. */
    context: RequestContext | null;
  }
}

export interface ProxyServer {
  app: FastifyInstance;
  metrics: ProxyMetrics;
  accessLog: AccessLog;
  pool: UpstreamPool;
  upgrades: UpgradeProxy;
  /** Watches, log follows and tunnels in flight. */
  longLived: LongLivedWork;
  /** Serves a client connection accepted elsewhere (listeners.ts, or the primary under --workers). */
  accept(socket: Socket): void;
  /**
   * Swaps in re-read certificates, keys and users; established connections keep theirs, except
   * that a client certificate is checked again against re-read client CAs and CRL (its next
   * request is refused if no longer trusted), and watches, log follows and tunnels whose
   * certificate is now untrusted or revoked or whose user was removed or changed are ended.
   */
  applyMaterial(next: Material): void;
  /**
   * Ends long-lived streams, lets short requests finish for up to `graceMs`, then closes what
   * is left, the upstream connections and the worker threads. Whoever hands it connections
   * (accept) stops first.
   */
  close(graceMs?: number): Promise<void>;
}

function servingContext(config: Config, material: Material): SecureContextOptions {
  return {
    key: material.serving.key,
    cert: material.serving.cert,
    ...(material.clientCa ? { ca: material.clientCa } : {}),
    minVersion: config.tlsMinVersion,
    ciphers: config.tlsCiphers,
    honorCipherOrder: true,
    // The certificate read once per connection must stay the one the connection uses.
    secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
  };
}

/** What a worker of --workers gets from the primary instead of keeping its own (it counts connections per client, too). */
export interface SharedState {
  /** Failed-login limits kept by the primary. */
  loginLimiter: LoginLimiter | undefined;
  /** The key every worker hashes credentials under (BasicAuthOptions.credentialKey). */
  credentialKey: Buffer;
}

export async function createProxyServer(config: Config, material: Material, logger: FastifyBaseLogger, shared?: SharedState): Promise<ProxyServer> {
  const http2App = Fastify({
    loggerInstance: logger,
    // One access-log line per request comes from our onResponse hook instead.
    logController: new LogController({ disableRequestLogging: true }),
    // The request ID is the request's audit ID (admission.ts requestId), as for upgrades.
    // fastify's own requestIdHeader would take any value: off.
    requestIdHeader: false,
    genReqId: (req) => requestId(req.headers),
    // No pino child logger per request (an allocation and a bindings string each, for lines
    // written only on errors): those few name their reqId themselves.
    childLoggerFactory: (logger) => logger,
    trustProxy: false,
    // Drain is ours (ClientConnections): Node's closeIdleConnections() is HTTP/1-only.
    forceCloseConnections: false,
    // HTTP/2 and HTTP/1.1 on one port, by ALPN: kubectl and client-go multiplex over HTTP/2;
    // upgrades (exec, attach, port-forward) arrive over HTTP/1.1, which kubectl then picks.
    http2: true,
    // Off: fastify's would GOAWAY a session whose only streams are quiet watches. ClientConnections
    // closes sessions that have no open stream instead.
    http2SessionTimeout: 0,
    // While draining we answer ourselves, with a Status (fastify's own 503 is not one).
    return503OnClosing: false,
    https: {
      ...servingContext(config, material),
      allowHTTP1: true,
      // Node's HTTP/1 server turns Nagle off; a TLS server (which the HTTP/2 one is) does not,
      // and a response written in several pieces then waits out the client's delayed ACK (~40 ms).
      noDelay: true,
      // A slow client (slowloris) gets this long for its TLS handshake; see below for headers.
      handshakeTimeout: config.requestHeaderTimeoutMs,
      settings: { maxConcurrentStreams: config.http2MaxStreamsPerConnection, maxHeaderListSize: config.maxRequestHeaderBytes },
      // Ask for a client certificate without requiring one, so password users share the port;
      // the verdict is read in the auth step (STACK.md "TLS in and out").
      requestCert: material.clientCa !== undefined,
      rejectUnauthorized: false,
    },
    clientErrorHandler: (err: Error & { code?: string }, socket: Socket) => answerClientError(err, socket),
  });
  // One server object, two protocols: handlers see Http2ServerRequest or IncomingMessage, both
  // with the fields used here (headers, method, url, socket.remoteAddress, httpVersionMajor).
  const app = http2App as unknown as FastifyInstance;
  const listener = http2App.server;

  limitHttp1(listener, config);
  const connections = new ClientConnections(config.keepAliveTimeoutMs);
  connections.attach(listener);

  const bcrypt = new BcryptPool(config.bcryptWorkers, config.bcryptQueueLimit);
  const basic = material.users
    ? new BasicAuthenticator(material.users, bcrypt, { cacheTtlMs: config.authCacheTtlMs, cacheSize: config.authCacheSize, credentialKey: shared?.credentialKey, warn: (fields, msg) => logger.warn(fields, msg) })
    : undefined;
  /** The users file in force: a reload tells the limits whose credentials it withdraws. */
  let usersInForce = material.users;
  const failures = shared ? shared.loginLimiter : config.authFailureLimit > 0 ? localLoginLimiter(new FailureLimiter({ limit: config.authFailureLimit, windowMs: config.authFailureWindowMs })) : undefined;
  const authenticator = new Authenticator({
    certificates: material.clientCa !== undefined,
    basic,
    revocations: material.clientCrl,
    clientCas: material.clientCas,
    failures,
    refusalDelayMs: config.authFailureDelayMs,
    tokenPassthrough: config.tokenPassthrough,
  });
  const clientAddresses = new ClientAddressResolver(config.trustedProxies);
  const crlExpiry = new CrlExpiryWarning(config.clientCrlFile, logger);
  crlExpiry.watch(material.clientCrl);

  // The upstream identity can be reloaded: requests read the current connector and agent.
  let connector = new UpstreamConnector(material.upstream);
  let agent: Agent = connector.createAgent({ headersTimeoutMs: config.upstreamHeaderTimeoutMs });
  const pool = new UpstreamPool(
    config.upstreams,
    config.upstreamStrategy,
    { intervalMs: config.healthIntervalMs, timeoutMs: config.healthTimeoutMs, unhealthyThreshold: config.unhealthyThreshold, healthyThreshold: config.healthyThreshold },
    readyzCheck(() => agent),
    logger,
  );
  // --token-passthrough: tokens go over connections that present no client certificate
  // (tls.ts withoutClientCertificate), so that a token can never ride on the front-proxy identity.
  let tokenConnector = config.tokenPassthrough ? UpstreamConnector.withoutClientCertificate(material.upstream) : undefined;
  let tokenAgent: Agent | undefined = tokenConnector?.createAgent({ headersTimeoutMs: config.upstreamHeaderTimeoutMs });
  const dispatcher = new PoolDispatcher(
    pool,
    () => agent,
    () => tokenAgent,
  );
  // Watches and log follows share a few HTTP/2 sessions per apiserver instead of a connection each.
  const http2 = config.upstreamHttp2 ? new Http2Upstreams(connector, logger) : undefined;
  const longLived = new LongLivedWork((identity) => authenticator.stillHolds(identity));
  const metrics = new ProxyMetrics(pool.targets, http2 ? () => http2.stats() : undefined);
  const accessLog = AccessLog.open(config.accessLog, config.accessLogFormat, logger);
  const traffic = new TrafficLog(accessLog, metrics);
  const admission = new Admission({ authenticator, clientAddresses, metrics, accessLog });
  new ConnectionLimit({
    // Under --workers the primary, which accepts every connection, counts them for the proxy.
    perClient: shared ? 0 : config.maxConnectionsPerClient,
    isExempt: (address) => clientAddresses.isTrusted(address),
    onRefused: (address) => {
      metrics.connectionRefused();
      logger.debug({ client: address }, 'connection refused: --max-connections-per-client reached');
    },
  }).attach(listener);
  // HTTP/2 clients that send frames only to cost us work, or leave answers and streams parked:
  // their connection is ended, and their address refused for a while.
  const cooldown = new AbuserCooldown({
    isExempt: (address) => clientAddresses.isTrusted(address),
    onRefused: (address) => {
      metrics.abuserConnectionRefused();
      logger.debug({ client: address }, 'connection refused: the address abused HTTP/2 moments ago');
    },
  });
  cooldown.attach(listener);
  const onAbusiveSession = (reason: SessionCloseReason, address: string) => {
    metrics.http2SessionClosed(reason);
    cooldown.abused(address);
    logger.warn({ client: address, reason }, 'HTTP/2 connection ended for abuse');
  };
  new Http2FrameLimits({ onSessionClosed: onAbusiveSession }).attach(listener);
  const parkedStreams = new ParkedStreams({
    stallTimeoutMs: config.keepAliveTimeoutMs,
    isExempt: (address) => clientAddresses.isTrusted(address),
    onStreamReset: (reason) => metrics.http2StreamReset(reason),
    onSessionClosed: onAbusiveSession,
    onParked: (streams) => metrics.http2Parked(streams),
  });
  parkedStreams.attach(listener);

  app.decorateRequest('context', null);
  // Registered below, after the hooks, which must come before the routes; requests arrive only once the app is ready.
  const forwarding: { registered?: Forwarding } = {};

  app.addHook('onRequest', async (request, reply) => {
    // Every answer names its request, as the apiserver's do (Audit-Id): the proxy's own refusals
    // too. A forwarded response gets the apiserver's echo of the same ID in its place.
    reply.header('audit-id', request.id);
    if (request.raw.httpVersionMajor === 2) {
      // Rapid reset (CVE-2023-44487): a client sends HEADERS and RST_STREAM together, and nghttp2
      // hands us the stream before it reads the reset. One turn of the event loop lets it read
      // the rest of what arrived; a stream the client has already reset is not authenticated
      // and forwarded (that cost an upstream request, and an upstream connection, each).
      // HTTP/2 only, so here rather than in admission: upgrades arrive over HTTP/1.1.
      await new Promise((resolve) => setImmediate(resolve));
      if (streamReset(request.raw as unknown as Http2ServerRequest)) {
        reply.hijack();
        return;
      }
    }
    const admitted = await admission.admit({ reqId: request.id, request: request.raw, connection: connectionOf(request.raw) });
    if (admitted.admitted) {
      request.context = admitted.context;
      // A plain read (most requests) is forwarded from here: the route's stages (http-proxy's
      // handler, its path checks, the handler's promise) have nothing to add to it.
      await forwarding.registered?.readNow(request, reply);
      return;
    }
    // No answer: the connection closes after the answer to the badly framed request before it.
    if (!admitted.answer) {
      reply.hijack();
      return;
    }
    await sendStatus(reply, admitted.answer);
  });

  const onStreamStart = observeTraffic(app, traffic, metrics);

  app.setErrorHandler((error: FastifyError | StatusError, request, reply) => {
    const status = error instanceof StatusError ? error : statusForFastifyError(error);
    if (status.code >= 500) request.log.error({ err: error, reqId: request.id }, 'request failed');
    void sendStatus(reply, status);
  });

  app.setNotFoundHandler((request, reply) => {
    const status = new StatusError('MethodNotAllowed', `method ${request.method} is not supported`);
    void sendStatus(reply, status);
  });

  const headerPolicy: HeaderPolicy = { allowImpersonation: config.allowImpersonation };
  // The apiservers' other identity header names, removed from every request like X-Remote-*:
  // learned by this process (each worker of --workers too), at start and every minute.
  const trustedHeaders = new TrustedHeaderLearner({ upstreams: config.upstreams, connector: () => connector, policy: headerPolicy, logger });
  forwarding.registered = await registerForwarding(app, {
    upstream: config.upstreams[0] as URL,
    dispatcher,
    headerPolicy,
    longLived,
    onStreamStart,
    http2,
    pool,
    upstreamHeaderTimeoutMs: config.upstreamHeaderTimeoutMs,
    onTokenRejected: (context) => {
      // The apiserver refused the token: a failed login for the client address, as a wrong password is.
      metrics.authenticated('bearer', 'token-rejected');
      void authenticator.recordTokenRejected(context.identity, context.clientAddress);
    },
  });

  // exec, attach, cp, port-forward: Node hands HTTP/1.1 upgrade requests to this event instead
  // of the request handler.
  const upgrades = new UpgradeProxy({ admission, authenticator, longLived, pool, connector: () => connector, tokenConnector: () => tokenConnector, headerPolicy, logger, traffic, metrics });
  listener.on('upgrade', upgrades.handle);
  // fastify.close() waits for every socket, and a tunnel or a watch can last for hours.
  app.addHook('preClose', async () => longLived.endAll());

  // New requests meet an untrusted or revoked certificate or a removed user at the auth step;
  // long-lived work already open never does, so a reload checks it against the new material once.
  const closeWithdrawn = () => {
    const { stream: streamUsers, tunnel: tunnelUsers } = longLived.endWithdrawn();
    if (streamUsers.length === 0 && tunnelUsers.length === 0) return;
    metrics.withdrawnClosed(streamUsers.length, tunnelUsers.length);
    const users = [...new Set([...streamUsers, ...tunnelUsers])].sort();
    logger.warn({ streams: streamUsers.length, tunnels: tunnelUsers.length, users }, 'closed streams and tunnels of withdrawn credentials');
  };
  // A client certificate that expires ends what it opened then, as a reload ends a revoked one.
  const stopExpiryWatch = credentialExpiry.onExpiry(closeWithdrawn);

  pool.start();
  trustedHeaders.start();
  await app.ready();
  // Node starts the HTTP/1.1 header-timeout checks on 'listening'; this server never listens
  // itself (connections come through accept()), so it is told that it serves now.
  listener.emit('listening');

  return {
    app,
    metrics,
    accessLog,
    pool,
    upgrades,
    longLived,
    accept(socket: Socket) {
      // What the server's own accept would do with `noDelay: true` (see above): it did not accept this one.
      socket.setNoDelay(true);
      connections.track(socket);
      listener.emit('connection', socket);
    },
    applyMaterial(next: Material) {
      // New handshakes get the new serving certificate and client CA; open connections keep
      // theirs, and their certificates meet the new client CAs at the auth step (x509.ts).
      listener.setSecureContext(servingContext(config, next));
      authenticator.setClientCas(next.clientCas);
      authenticator.setRevocations(next.clientCrl);
      crlExpiry.watch(next.clientCrl);
      if (next.users && basic) {
        basic.setUsers(next.users);
        failures?.usersChanged(withdrawnUsers(usersInForce, next.users));
        usersInForce = next.users;
      }
      const previous = agent;
      connector = new UpstreamConnector(next.upstream);
      agent = connector.createAgent({ headersTimeoutMs: config.upstreamHeaderTimeoutMs });
      // close() lets requests and watches on the old connections finish; it drops none.
      void previous.close();
      if (tokenConnector) {
        const previousToken = tokenAgent;
        tokenConnector = UpstreamConnector.withoutClientCertificate(next.upstream);
        tokenAgent = tokenConnector.createAgent({ headersTimeoutMs: config.upstreamHeaderTimeoutMs });
        void previousToken?.close();
      }
      // New watches open new HTTP/2 sessions; the old ones close when their last stream ends.
      http2?.setConnector(connector);
      closeWithdrawn();
    },
    async close(graceMs = config.shutdownGraceMs) {
      admission.beginDrain();
      stopExpiryWatch();
      pool.stop();
      trustedHeaders.stop();
      parkedStreams.stop();
      // Node closes idle keep-alive connections once, when the server closes; one whose response
      // finishes later (kubectl keeps its connection for 90 s) would hold the drain to its grace.
      const sweep = setInterval(() => connections.closeIdle(), 100);
      const force = setTimeout(() => {
        logger.warn({ graceMs }, 'shutdown grace period over: closing the remaining connections');
        connections.closeAll();
      }, graceMs);
      force.unref();
      try {
        await app.close();
        // The server never listened, so its close() did not wait for the connections.
        await connections.drained();
      } finally {
        clearInterval(sweep);
        clearTimeout(force);
        await accessLog.close();
        http2?.destroy();
        await Promise.allSettled([agent.destroy(), tokenAgent?.destroy(), bcrypt.close()]);
      }
    },
  };
}

/**
 * The client's TLS connection as one stable object. Over HTTP/2, `req.socket` is a new proxy per
 * stream, so the certificate verdict cached per connection (x509.ts) was worked out again for
 * every request; the session's proxy socket is one per connection.
 */
function connectionOf(raw: IncomingMessage | Http2ServerRequest): Socket {
  return (raw.httpVersionMajor === 2 ? ((raw as Http2ServerRequest).stream.session?.socket ?? raw.socket) : raw.socket) as Socket;
}

/** The client reset this HTTP/2 stream, or its connection is gone. */
function streamReset(raw: Http2ServerRequest): boolean {
  return raw.stream.destroyed || raw.stream.closed;
}

function statusForFastifyError(error: FastifyError): StatusError {
  const code = error.statusCode ?? 500;
  if (code === 413) return new StatusError('RequestEntityTooLarge', error.message);
  if (code === 404) return new StatusError('NotFound', error.message);
  if (code >= 400 && code < 500) return new StatusError('BadRequest', error.message);
  return new StatusError('InternalError', `internal error in the proxy: ${error.message}`);
}
