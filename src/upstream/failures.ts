// Classifying what went wrong between the proxy and an apiserver.

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

const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** The apiserver could not be reached or its connection broke (as opposed to a slow answer). */
export function isUnreachable(code: string | undefined): boolean {
  return code !== undefined && UNREACHABLE.has(code);
}

/** A failure that says the upstream itself is unusable: passive ejection takes it out. */
export function isConnectionFailure(code: string | undefined): boolean {
  return isUnreachable(code) || isTlsFailure(code);
}

/** The apiserver refused an HTTP/2 stream before processing it (RST_STREAM REFUSED_STREAM): safe to send again. */
export const REFUSED_STREAM = 'KFP_HTTP2_REFUSED_STREAM';

/**
 * An HTTP/2 stream that never reached the apiserver's handlers: refused, or its session was
 * going away or out of stream ids (RFC 9113 §8.7: safe to send again, whatever the request).
 */
export function wasNotProcessed(code: string | undefined): boolean {
  return code === REFUSED_STREAM || code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_INVALID_SESSION' || code === 'ERR_HTTP2_OUT_OF_STREAMS';
}

/** Every upstream is out: answered at once with 503, not after a hang. */
export class NoHealthyUpstreamError extends Error {
  readonly code = 'KFP_NO_HEALTHY_UPSTREAM';
  constructor(readonly outage: string) {
    super(`no healthy apiserver: ${outage}`);
    this.name = 'NoHealthyUpstreamError';
  }
}

/** An error that says which apiserver failed, for the Status message and the log. */
export type UpstreamError = Error & { upstream?: string };

/** Marks `err` as the failure of `origin` (read back by upstreamFailure). */
export function tagUpstream<E extends Error>(err: E, origin: string): E & { upstream: string } {
  Object.defineProperty(err, 'upstream', { value: origin, configurable: true, enumerable: false });
  return err as E & { upstream: string };
}

export function errorCode(err: unknown): string | undefined {
  const error = err as { code?: unknown; cause?: { code?: unknown } } | undefined;
  const code = error?.code ?? error?.cause?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Why an apiserver refuses the proxy's own identity, for the health state, the Status and the log.
 * kube-apiserver's requestheader authenticator (k8s.io/apiserver x509request.Verifier) fails a
 * connection whose certificate does not chain to --requestheader-client-ca-file or whose CN is not
 * in a non-empty --requestheader-allowed-names; with nothing else authenticating the request, the
 * answer is 401 whatever X-Remote-User says.
 */
export const PROXY_IDENTITY_REFUSED =
  "did not accept the front-proxy client certificate (401 to a request with it and X-Remote-User): check the apiserver's " +
  '--requestheader-client-ca-file (must hold the CA that signed --proxy-client-cert-file) and --requestheader-allowed-names ' +
  "(must list that certificate's CN, or be empty); `kube-front-proxy check` says which";

/** A forwarded request met an apiserver that refuses the proxy's identity: the proxy's misconfiguration, not the user's. */
export class ProxyIdentityRefusedError extends Error {
  readonly code = 'KFP_PROXY_IDENTITY_REFUSED';
  constructor(readonly origins: string[]) {
    super(`the apiserver${origins.length > 1 ? 's' : ''} ${origins.join(', ')} ${PROXY_IDENTITY_REFUSED}`);
    this.name = 'ProxyIdentityRefusedError';
  }
}
