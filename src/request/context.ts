// What the proxy knows about one admitted request, plain or upgrade: who sent it, what it asks
// the apiserver, and what became of it. Admission (admission.ts) creates it; forwarding, the
// upgrade proxy and the traffic log read it and fill in the outcome.

import type { Identity } from '../auth/identity.js';
import type { StreamKind } from '../observe/metrics.js';
import type { RequestInfo } from './requestinfo.js';

export interface RequestContext {
  readonly reqId: string;
  /** The client: the TCP peer, or who a trusted proxy says; read at arrival (the socket may be gone by the log line). */
  readonly clientAddress: string;
  /** The X-Forwarded-For value sent upstream. */
  readonly forwardedFor: string;
  readonly identity: Identity;
  /** Verb, resource, namespace... as the apiserver will see them. */
  readonly info: RequestInfo;
  readonly method: string;
  /** HTTP/1.1 or HTTP/2.0, as the client spoke it. */
  readonly protocol: string;
  readonly userAgent: string | undefined;
  /** When admission began (performance.now()). Plain requests are timed by fastify (reply.elapsedTime), tunnels from here. */
  readonly started: number;
  /** The apiserver that served the request, once one was picked. */
  upstream: string | undefined;
  /** Set when the answer turned out to be long-lived: a watch, log follow or tunnel. */
  streamKind: StreamKind | undefined;
  /** HTTP/1.1: bytes the client's socket had been sent before this response (keep-alive reuses it). */
  readonly bytesWrittenBefore: number;
  /** HTTP/2 only: body bytes relayed to this stream (the session's socket is shared). */
  bytesOut: number;
}
