// The mutual-TLS connection pool to the apiserver. Built by hand rather than from plain undici
// options: given options, @fastify/reply-from turns certificate verification off, and undici's
// 300 s body timeout would cut quiet watches (../shared/STACK.md).

import { createSecureContext } from 'node:tls';
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

export function createUpstreamAgent(tls: UpstreamTls, options: UpstreamAgentOptions): Agent {
  // One SecureContext for every connection: undici would otherwise parse the key and CA
  // again for each new connection.
  const secureContext = createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key });
  return new Agent({
    connect: {
      secureContext,
      servername: tls.serverName,
      rejectUnauthorized: true,
      timeout: 10_000,
    },
    headersTimeout: options.headersTimeoutMs,
    // A watch or `logs -f` may be quiet for hours; a client hang-up still ends it at once.
    bodyTimeout: 0,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
  });
}

/** Node/OpenSSL codes that mean the TLS handshake with the apiserver failed. */
export function isTlsFailure(code: string | undefined): boolean {
  if (!code) return false;
  return (
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_TLS_') ||
    code.startsWith('CERT_') ||
    code.startsWith('UNABLE_TO_') ||
    code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
    code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
    code === 'HOSTNAME_MISMATCH' ||
    code === 'EPROTO'
  );
}
