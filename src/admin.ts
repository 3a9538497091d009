// The proxy's own health and metrics on a separate plain-HTTP listener: every path of the user-facing port
// belongs to the apiserver, so /healthz and /readyz there are the apiserver's, not ours.

import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { ProxyMetrics } from './observe/metrics.js';
import type { UpstreamPool } from './upstream/pool.js';

export interface AdminState {
  pool: UpstreamPool;
  metrics: ProxyMetrics;
  /** True once shutdown has begun: a load balancer should stop sending new connections. */
  draining: () => boolean;
}

export function createAdminServer(state: AdminState, logger: FastifyBaseLogger): FastifyInstance {
  const admin = Fastify({ loggerInstance: logger.child({ listener: 'admin' }), logController: new LogController({ disableRequestLogging: true }) });
  admin.get('/healthz', async (_request, reply) => reply.type('text/plain').send('ok'));
  admin.get('/metrics', async (_request, reply) => reply.type(state.metrics.registry.contentType).send(await state.metrics.registry.metrics()));
  admin.get('/livez', async (_request, reply) => reply.type('text/plain').send('ok'));
  admin.get('/readyz', async (_request, reply) => {
    if (state.draining()) return reply.code(503).type('text/plain').send('shutting down');
    const healthy = state.pool.healthyCount;
    const lines = state.pool.targets.map((t) => `${t.healthy ? '[+]' : '[-]'}${t.origin}${t.healthy ? ' ok' : ` ${t.lastError ?? 'unhealthy'}`}`);
    return reply
      .code(healthy > 0 ? 200 : 503)
      .type('text/plain')
      .send(`${lines.join('\n')}\n${healthy > 0 ? `ok: ${healthy} of ${state.pool.targets.length} upstreams healthy` : 'no healthy upstream'}\n`);
  });
  return admin;
}
