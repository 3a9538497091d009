// Builds the user-facing HTTPS server and wires the parts in request order:
// TLS accept -> authenticate -> rewrite identity headers -> forward -> log.

import { randomUUID } from 'node:crypto';
import { constants as cryptoConstants } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Agent } from 'undici';
import { BasicAuthenticator } from './auth/basic.js';
import { BcryptPool } from './auth/bcrypt-pool.js';
import type { Identity } from './auth/identity.js';
import { Authenticator } from './auth/index.js';
import type { Config } from './config.js';
import type { Material } from './material.js';
import { registerForwarding } from './proxy/forward.js';
import { UpgradeProxy } from './proxy/upgrade.js';
import { StatusError, statusResponseBytes } from './status.js';
import { UpstreamConnector } from './upstream/tls.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook before any handler runs; null only on rejected requests. */
    identity: Identity | null;
    /** The TCP peer, read at arrival: by the time the response is logged the socket may be gone. */
    clientAddress: string;
  }
}

export interface ProxyServer {
  app: FastifyInstance;
  upgrades: UpgradeProxy;
  authenticator: Authenticator;
  agent: Agent;
  /** Stops accepting, closes connections and worker threads. */
  close(): Promise<void>;
}

export async function createProxyServer(config: Config, material: Material, logger: FastifyBaseLogger): Promise<ProxyServer> {
  const app = Fastify({
    loggerInstance: logger,
    // One access-log line per request comes from our onResponse hook instead.
    logController: new LogController({ disableRequestLogging: true }),
    // Request ids are ours: a client-sent id would let one user forge entries in the log.
    requestIdHeader: false,
    genReqId: () => randomUUID(),
    trustProxy: false,
    forceCloseConnections: 'idle',
    https: {
      key: material.serving.key,
      cert: material.serving.cert,
      // Ask for a client certificate without requiring one, so password users share the port;
      // the verdict is read in the auth step (STACK.md "TLS in and out").
      ...(material.clientCa ? { ca: material.clientCa, requestCert: true } : { requestCert: false }),
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      // The certificate read once per connection must stay the one the connection uses.
      secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
    },
    clientErrorHandler: (err: Error & { code?: string }, socket: Socket) => {
      // Malformed HTTP from a client: answer a Status if the socket can still take it, never throw.
      if (socket.writable && err.code !== 'ECONNRESET') {
        const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
        const status = tooLarge
          ? new StatusError('RequestHeaderFieldsTooLarge', 'request headers too large')
          : new StatusError('BadRequest', `malformed HTTP request (${err.code ?? 'parse error'})`);
        socket.end(statusResponseBytes(status));
      } else {
        socket.destroy();
      }
    },
  });

  const pool = new BcryptPool(config.bcryptWorkers);
  const basic = material.users ? new BasicAuthenticator(material.users, pool, { cacheTtlMs: config.authCacheTtlMs, cacheSize: config.authCacheSize }) : undefined;
  const authenticator = new Authenticator({ certificates: material.clientCa !== undefined, basic });
  const connector = new UpstreamConnector(material.upstream);
  const agent = connector.createAgent({ headersTimeoutMs: config.upstreamHeaderTimeoutMs });

  app.decorateRequest('identity', null);
  app.decorateRequest('clientAddress', '');

  app.addHook('onRequest', async (request, reply) => {
    request.clientAddress = request.raw.socket.remoteAddress ?? '';
    const outcome = await authenticator.authenticate(request.raw.socket as TLSSocket, request.headers.authorization);
    if (outcome.ok) {
      request.identity = outcome.identity;
      return;
    }
    request.log.info({ client: request.clientAddress, auth: outcome.method ?? 'none', reason: outcome.reason, claimedUser: outcome.claimedUser, method: request.method, path: pathOf(request.url) }, 'authentication failed');
    await reply.code(outcome.error.code).headers(outcome.error.headers).type('application/json').send(outcome.error.toStatus());
  });

  app.addHook('onResponse', async (request, reply) => {
    if (!request.identity) return; // rejected requests were logged by the auth hook
    request.log.info(
      {
        client: request.clientAddress,
        auth: request.identity.method,
        user: request.identity.user,
        groups: request.identity.groups,
        method: request.method,
        path: pathOf(request.url),
        status: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 10) / 10,
        userAgent: request.headers['user-agent'],
      },
      'request',
    );
  });

  app.setErrorHandler((error: FastifyError | StatusError, request, reply) => {
    const status = error instanceof StatusError ? error : statusForFastifyError(error);
    if (status.code >= 500) request.log.error({ err: error }, 'request failed');
    void reply.code(status.code).headers(status.headers).type('application/json').send(status.toStatus());
  });

  app.setNotFoundHandler((request, reply) => {
    const status = new StatusError('MethodNotAllowed', `method ${request.method} is not supported`);
    void reply.code(status.code).type('application/json').send(status.toStatus());
  });

  const upstream = config.upstreams[0] as URL;
  const headerPolicy = { stripImpersonation: config.stripImpersonationHeaders };
  await registerForwarding(app, { upstream, agent, headerPolicy });

  // exec, attach, cp, port-forward: Node hands HTTP/1.1 upgrade requests to this event instead
  // of the request handler.
  const upgrades = new UpgradeProxy({ authenticator, upstream, connector, headerPolicy, logger });
  app.server.on('upgrade', upgrades.handle);
  // fastify.close() waits for every socket, and a tunnel can last for hours.
  app.addHook('preClose', async () => upgrades.closeAll());

  return {
    app,
    upgrades,
    authenticator,
    agent,
    async close() {
      await app.close();
      await Promise.allSettled([agent.close(), pool.close()]);
    },
  };
}

function statusForFastifyError(error: FastifyError): StatusError {
  const code = error.statusCode ?? 500;
  if (code === 413) return new StatusError('RequestEntityTooLarge', error.message);
  if (code === 404) return new StatusError('NotFound', error.message);
  if (code >= 400 && code < 500) return new StatusError('BadRequest', error.message);
  return new StatusError('InternalError', `internal error in the proxy: ${error.message}`);
}

/** The path without its query: queries may carry tokens (e.g. a proxied service's ?token=). */
export function pathOf(url: string): string {
  const index = url.indexOf('?');
  return index === -1 ? url : url.slice(0, index);
}
