// The proxy's own health and metrics on a separate plain-HTTP listener: every path of the user-facing port
// belongs to the apiserver, so /healthz and /readyz there are the apiserver's, not ours.

import type { Socket } from 'node:net';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { UpstreamPool } from '../upstream/pool.js';

export interface Readiness {
  ready: boolean;
  /** One line per upstream (and per worker), then a summary: what /readyz prints. */
  text: string;
}

export interface AdminState {
  readiness: () => Readiness | Promise<Readiness>;
  metrics: () => Promise<{ contentType: string; text: string }>;
  /** True once shutdown has begun: a load balancer should stop sending new connections. */
  draining: () => boolean;
}

/** Ready while at least one upstream is in the pool. */
export function poolReadiness(pool: UpstreamPool): Readiness {
  const healthy = pool.healthyCount;
  const lines = pool.targets.map((t) => `${t.healthy ? '[+]' : '[-]'}${t.origin}${t.healthy ? ' ok' : ` ${t.lastError ?? 'unhealthy'}`}`);
  const summary = healthy > 0 ? `ok: ${healthy} of ${pool.targets.length} upstreams healthy` : 'no healthy upstream';
  return { ready: healthy > 0, text: `${lines.join('\n')}\n${summary}\n` };
}

export function createAdminServer(state: AdminState, logger: FastifyBaseLogger): FastifyInstance {
  const admin = Fastify({ loggerInstance: logger.child({ listener: 'admin' }), logController: new LogController({ disableRequestLogging: true }) });
  admin.get('/healthz', async (_request, reply) => reply.type('text/plain').send('ok'));
  admin.get('/livez', async (_request, reply) => reply.type('text/plain').send('ok'));
  admin.get('/metrics', async (_request, reply) => {
    const { contentType, text } = await state.metrics();
    return reply.type(contentType).send(text);
  });
  admin.get('/readyz', async (_request, reply) => {
    if (state.draining()) return reply.code(503).type('text/plain').send('shutting down');
    const { ready, text } = await state.readiness();
    return reply
      .code(ready ? 200 : 503)
      .type('text/plain')
      .send(text);
  });
  return admin;
}

export interface AdminConnections {
  /** Hands a connection its listener accepted to the admin server. */
  accept: (socket: Socket) => void;
  /**
   * Ends every admin connection, at the end of a drain. The server never listened, so its
   * close() neither waits for them nor closes those in the middle of a request or half-closed.
   */
  closeAll: () => void;
}

/**
 * The admin server ready to serve connections its listener accepts (listeners.ts): it never
 * listens itself. Node starts the HTTP header-timeout checks on 'listening', so it is told.
 */
export async function adminSink(admin: FastifyInstance): Promise<AdminConnections> {
  await admin.ready();
  admin.server.emit('listening');
  const open = new Set<Socket>();
  return {
    accept: (socket) => {
      open.add(socket);
      socket.once('close', () => open.delete(socket));
      admin.server.emit('connection', socket);
    },
    closeAll: () => {
      for (const socket of open) socket.destroy();
    },
  };
}
