// The floor (issue 23): the least a Node process can do on the proxy's path, so that each hop's
// CPU per request is also a multiple of what Node itself costs. A bare `https` server (TLS in
// with the proxy's serving certificate, a client certificate requested), the identity from a
// verified certificate (CN, O) or from one fixed Authorization value (what a verified-credential
// cache amounts to), the client's headers copied less hop-by-hop and identity headers,
// X-Remote-User/-Group set, and undici to the apiserver with the front-proxy client certificate
// (TLS out), its answer relayed chunk by chunk as the proxy relays a plain read. Nothing else:
// no fastify, no logging, no metrics, no limits.
//
// Started as its own process, like the proxy:  node --import tsx bench/floor.ts CONFIG.json
// It prints one JSON line {"msg":"listening on","listen":"https://127.0.0.1:PORT"} when ready.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { createSecureContext, type TLSSocket } from 'node:tls';
import { pathToFileURL } from 'node:url';
import { Agent, util, type Dispatcher } from 'undici';

export interface FloorConfig {
  tlsCertFile: string;
  tlsKeyFile: string;
  clientCaFile: string;
  upstream: string;
  upstreamCaFile: string;
  /** The apiserver certificate's name ("kubernetes"). */
  upstreamName: string;
  proxyClientCertFile: string;
  proxyClientKeyFile: string;
  /** The one password user: its exact Authorization header value and who it is. */
  basic?: { authorization: string; user: string; groups: string[] };
}

/** As src/proxy/forward.ts's. */
const HTTP1_STREAM_WINDOW_BYTES = 256 * 1024;

interface Identity {
  user: string;
  groups: string[];
}

/** Request headers that are the connection's or the identity's, never forwarded as sent. */
const DROPPED_REQUEST = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'authorization', 'x-remote-user', 'x-remote-group', 'x-remote-uid']);
const DROPPED_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

function asList(value: string | string[] | undefined): string[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

/** A verified certificate's CN and O, once per connection (keep-alive reuses the verdict). */
const certIdentities = new WeakMap<TLSSocket, Identity | null>();
function certIdentity(socket: TLSSocket): Identity | null {
  let identity = certIdentities.get(socket);
  if (identity === undefined) {
    const subject = socket.authorized ? socket.getPeerCertificate().subject : undefined;
    const cn = asList(subject?.CN)[0];
    identity = cn ? { user: cn, groups: asList(subject?.O) } : null;
    certIdentities.set(socket, identity);
  }
  return identity;
}

function forwardedHeaders(incoming: IncomingHttpHeaders, identity: Identity): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in incoming) {
    if (DROPPED_REQUEST.has(name) || name.startsWith('x-remote-extra-')) continue;
    const value = incoming[name];
    if (value !== undefined) out[name] = value;
  }
  out['x-remote-user'] = identity.user;
  // One header line per group, the form the apiserver reads.
  if (identity.groups.length > 0) out['x-remote-group'] = identity.groups;
  return out;
}

function responseHeaders(upstream: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in upstream) {
    const value = upstream[name];
    if (value !== undefined && !DROPPED_RESPONSE.has(name)) out[name] = value;
  }
  return out;
}

export function startFloor(config: FloorConfig): Promise<string> {
  const read = (file: string): string => readFileSync(file, 'utf8');
  const agent = new Agent({
    pipelining: 1,
    keepAliveTimeout: 60_000,
    headersTimeout: 0,
    bodyTimeout: 0,
    // One secure context for every upstream connection (undici would build one per connection).
    connect: {
      secureContext: createSecureContext({ ca: read(config.upstreamCaFile), cert: read(config.proxyClientCertFile), key: read(config.proxyClientKeyFile) }),
      servername: config.upstreamName,
      rejectUnauthorized: true,
    },
  });
  const origin = config.upstream;
  const unauthorized = (res: ServerResponse): void => {
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Basic realm="kubernetes"' });
    res.end('Unauthorized\n');
  };
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const identity = certIdentity(req.socket as TLSSocket) ?? (config.basic && req.headers.authorization === config.basic.authorization ? config.basic : null);
    if (!identity) return unauthorized(res);
    const method = req.method ?? 'GET';
    const hasBody = method !== 'GET' && method !== 'HEAD';
    const fail = (err: Error): void => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`upstream: ${err.message}\n`);
      } else {
        res.destroy(err);
      }
    };
    let resume: () => void = () => {};
    // undici's handler as the proxy's plain reads use it: headers written as they come, the body
    // chunk by chunk, the apiserver paused once HTTP1_STREAM_WINDOW_BYTES wait unsent (what
    // src/proxy/forward.ts does, and why).
    const handler = {
      onConnect: () => {},
      onHeaders: (statusCode: number, rawHeaders: Buffer[], resumeUpstream: () => void): boolean => {
        resume = resumeUpstream;
        res.writeHead(statusCode, responseHeaders(util.parseHeaders(rawHeaders)));
        return true;
      },
      onData: (chunk: Buffer): boolean => {
        if (res.write(chunk) || res.writableLength <= HTTP1_STREAM_WINDOW_BYTES) return true;
        res.once('drain', () => resume());
        return false;
      },
      onComplete: () => res.end(),
      onError: fail,
    };
    try {
      agent.dispatch({ origin, path: req.url ?? '/', method: method as 'GET', headers: forwardedHeaders(req.headers, identity), body: hasBody ? req : null }, handler as unknown as Dispatcher.DispatchHandler);
    } catch (err) {
      fail(err as Error);
    }
  };
  const server = createServer({ key: read(config.tlsKeyFile), cert: read(config.tlsCertFile), ca: read(config.clientCaFile), requestCert: true, rejectUnauthorized: false, noDelay: true, keepAliveTimeout: 60_000 }, handle);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`https://127.0.0.1:${(server.address() as { port: number }).port}`));
  });
}

// As a process: the config file is the one argument.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FloorConfig;
  const url = await startFloor(config);
  // exit() on SIGTERM: a --cpu-prof profile is written on a normal exit.
  process.once('SIGTERM', () => process.exit(0));
  process.stdout.write(`${JSON.stringify({ msg: `listening on ${url}`, listen: url })}\n`);
}
