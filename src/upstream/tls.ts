// The mutual-TLS identity the proxy presents to the apiserver, and the ways it is used: an
// undici Agent for plain requests, raw TLS sockets for upgrade tunnels, and TLS connections
// offering h2 for the HTTP/2 sessions that carry watches (./h2.ts). Built by hand
// rather than from plain undici options: given options, @fastify/reply-from turns certificate
// verification off, and undici's 300 s body timeout would cut quiet watches (../shared/STACK.md).

import { connect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { Agent } from 'undici';

export interface UpstreamTls {
  /** CA bundle that signed the apiserver's serving certificate. */
  ca: Buffer;
  /** Front-proxy client certificate and key (CN front-proxy-client on kubeadm). */
  cert: Buffer;
  key: Buffer;
  /** Name verified against the apiserver's certificate, and sent as SNI. */
  serverName: string;
}

export interface UpstreamAgentOptions {
  /** Longest wait for response headers; 0 = none. Bodies are never timed out. */
  headersTimeoutMs: number;
}

const CONNECT_TIMEOUT_MS = 10_000;
const TCP_KEEPALIVE_MS = 30_000;

export class UpstreamConnector {
  // One SecureContext for every connection: building one per connection would parse the key
  // and CA again each time.
  readonly secureContext: SecureContext;
  readonly serverName: string;

  /** False for withoutClientCertificate()'s connector. */
  readonly presentsClientCertificate: boolean;

  constructor(tls: UpstreamTls | (Omit<UpstreamTls, 'cert' | 'key'> & { cert?: undefined; key?: undefined })) {
    this.secureContext = tls.cert === undefined ? createSecureContext({ ca: tls.ca }) : createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key });
    this.serverName = tls.serverName;
    this.presentsClientCertificate = tls.cert !== undefined;
  }

  /**
   * A connector to the same apiservers, verified the same way, that presents no client
   * certificate: for --token-passthrough. A request carried over it is authenticated by its own
   * token or not at all: the front-proxy certificate, which the apiserver trusts to set
   * X-Remote-User, is never on its connection, so nothing the client sends can borrow that trust
   * (whatever the cluster's --client-ca-file or --requestheader-allowed-names say). A token the
   * apiserver refuses is its 401 (its anonymous authenticator never takes a request whose token
   * failed: union.NewFailOnError in kube-apiserver's authenticator config).
   */
  static withoutClientCertificate(tls: UpstreamTls): UpstreamConnector {
    return new UpstreamConnector({ ca: tls.ca, serverName: tls.serverName });
  }

  /** A pooled, keep-alive dispatcher for plain requests. */
  createAgent(options: UpstreamAgentOptions): Agent {
    return new Agent({
      connect: {
        secureContext: this.secureContext,
        servername: this.serverName,
        rejectUnauthorized: true,
        timeout: CONNECT_TIMEOUT_MS,
      },
      headersTimeout: options.headersTimeoutMs,
      // A watch or `logs -f` may be quiet for hours; a client hang-up still ends it at once.
      bodyTimeout: 0,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
    });
  }

  /**
   * A fresh verified TLS connection for one upgrade tunnel (never pooled: after the 101 it
   * belongs to the tunnel). Half-open is allowed so each direction can end on its own.
   */
  connect(upstream: URL): TLSSocket {
    return this.open(upstream, ['http/1.1'], { allowHalfOpen: true });
  }

  /**
   * A verified TLS connection for an HTTP/2 session (./h2.ts). HTTP/1.1 is offered too: an
   * apiserver without h2 then answers with it instead of failing the handshake (Go refuses a
   * client whose ALPN list it shares nothing with), and the caller uses its HTTP/1.1 path.
   */
  connectHttp2(upstream: URL): TLSSocket {
    return this.open(upstream, ['h2', 'http/1.1'], {});
  }

  private open(upstream: URL, protocols: string[], extra: object): TLSSocket {
    const socket = connect({
      host: upstream.hostname.replace(/^\[|\]$/g, ''),
      port: Number(upstream.port || 443),
      servername: this.serverName,
      secureContext: this.secureContext,
      rejectUnauthorized: true,
      ALPNProtocols: protocols,
      // e.g. allowHalfOpen, which tls.connect passes to its TLSSocket; @types/node leaves it out of ConnectionOptions.
      ...extra,
    });
    socket.setKeepAlive(true, TCP_KEEPALIVE_MS);
    socket.setNoDelay(true);
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(Object.assign(new Error(`connect to ${upstream.host} timed out`), { code: 'UND_ERR_CONNECT_TIMEOUT' })));
    socket.once('secureConnect', () => socket.setTimeout(0));
    return socket;
  }
}
