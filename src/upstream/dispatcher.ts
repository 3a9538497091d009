// An undici Dispatcher over the upstream pool, handed to @fastify/http-proxy as its `undici`
// instance: each request goes through the failover loop (failover.ts), which picks its upstream
// and tries another when sending it again is harmless.

import { Dispatcher, type Agent } from 'undici';
import { failover, type Attempt } from './failover.js';
import type { UpstreamPool } from './pool.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * What the dispatcher reads and writes of the request it sends (the request context fits):
 * whether the client's own token goes upstream, and which apiserver served it, for the traffic
 * log. reply-from hands the dispatcher nothing but its dispatch options, so it travels in the
 * headers under kDispatchContext: a symbol key is copied along with the headers, never sent.
 */
export interface DispatchContext {
  /**
   * 'client-token' (--token-passthrough) goes over the agent that presents no client certificate
   * (tls.ts withoutClientCertificate), never the front-proxy one; without that agent it fails
   * (closed).
   */
  readonly identity: { readonly upstreamAuth: 'front-proxy' | 'client-token' };
  upstream: string | undefined;
}

export const kDispatchContext = Symbol('kube-front-proxy.dispatchContext');

function dispatchContextOf(options: Dispatcher.DispatchOptions): DispatchContext | undefined {
  return (options.headers as Record<symbol, DispatchContext | undefined> | null | undefined)?.[kDispatchContext];
}

/** undici's legacy handler interface: what its own dispatchers call internally, and what this one is handed. */
export interface LegacyDispatchHandler {
  onConnect?: (abort: (err?: Error) => void, context?: object) => void;
  onResponseStarted?: () => void;
  onHeaders?: (statusCode: number, headers: Buffer[], resume: () => void, statusText: string) => boolean;
  onData?: (chunk: Buffer) => boolean;
  onComplete?: (trailers: string[] | null) => void;
  onError?: (err: Error) => void;
  onUpgrade?: (statusCode: number, headers: Buffer[] | string[] | null, socket: unknown) => void;
  onBodySent?: (chunk: unknown) => void;
}

/**
 * The request body failed because its client went away or sent bytes the parser refused: Node
 * marks such a request `aborted` (HTTP/1.1 and HTTP/2 alike) before the body errors, while a body
 * undici destroys over an upstream failure is not. Not the apiserver's fault.
 */
function clientAborted(body: unknown): boolean {
  return (body as { aborted?: unknown } | null | undefined)?.aborted === true;
}

function hasNoBody(body: unknown): boolean {
  return body === undefined || body === null || body === '' || (Buffer.isBuffer(body) && body.length === 0);
}

export class PoolDispatcher extends Dispatcher {
  constructor(
    private readonly pool: UpstreamPool,
    /** The current agent: replaced when the front-proxy certificate or upstream CA is reloaded. */
    private readonly agent: () => Agent,
    /** The agent without a client certificate, for --token-passthrough; undefined when it is off. */
    private readonly tokenAgent: () => Agent | undefined = () => undefined,
  ) {
    super();
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const legacy = handler as unknown as LegacyDispatchHandler;
    const context = dispatchContextOf(options);
    const agent = context?.identity.upstreamAuth === 'client-token' ? this.tokenAgent : this.agent;
    if (!agent()) {
      legacy.onError?.(new Error('a bearer token to pass through, and no upstream agent without a client certificate'));
      return true;
    }
    // A bodiless GET, HEAD or OPTIONS changes nothing when sent twice (a stale keep-alive reset included).
    const replayable = IDEMPOTENT.has(options.method) && hasNoBody(options.body);
    // Read on each attempt (a reload replaces the agent, and --token-passthrough, fixed at start, never removes it).
    failover(
      this.pool,
      { replayable },
      (attempt) => {
        if (context) context.upstream = attempt.target.origin;
        this.send(options, legacy, attempt, agent() as Agent);
      },
      (err) => legacy.onError?.(err),
    );
    return true;
  }

  private send(options: Dispatcher.DispatchOptions, handler: LegacyDispatchHandler, attempt: Attempt, agent: Agent): void {
    const { target } = attempt;
    let responded = false;
    const wrapped: LegacyDispatchHandler = {
      onConnect: (abort, context) => handler.onConnect?.(abort, context),
      onResponseStarted: () => handler.onResponseStarted?.(),
      onHeaders: (statusCode, headers, resume, statusText) => {
        responded = true;
        return handler.onHeaders?.(statusCode, headers, resume, statusText) ?? true;
      },
      onData: (chunk) => handler.onData?.(chunk) ?? true,
      onComplete: (trailers) => {
        attempt.release();
        handler.onComplete?.(trailers);
      },
      onUpgrade: (statusCode, headers, socket) => {
        attempt.release();
        handler.onUpgrade?.(statusCode, headers, socket);
      },
      onBodySent: (chunk) => handler.onBodySent?.(chunk),
      onError: (err) => attempt.failed(err, { committed: responded, clientGone: clientAborted(options.body) }),
    };
    // reply-from names the first configured upstream in Host; the request goes to this one.
    const headers = options.headers as Record<string, unknown> | null | undefined;
    if (headers && !Array.isArray(headers) && typeof headers === 'object') headers.host = target.url.host;
    agent.dispatch({ ...options, origin: target.origin }, wrapped as unknown as Dispatcher.DispatchHandler);
  }

  override async close(): Promise<void> {
    await Promise.all([this.agent().close(), this.tokenAgent()?.close()]);
  }

  override async destroy(): Promise<void> {
    await Promise.all([this.agent().destroy(), this.tokenAgent()?.destroy()]);
  }
}
