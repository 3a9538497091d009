// Active health checks: GET /readyz over the same verified mTLS connection pool requests use.

import type { Agent } from 'undici';
import { errorCode, PROXY_IDENTITY_REFUSED } from './failures.js';
import type { HealthCheck } from './pool.js';

/**
 * The user the checks are made as. A kubeadm apiserver refuses the front-proxy certificate
 * without a user header (401: the requestheader authenticator finds no user and the x509 one
 * fails on a certificate it does not know), and may run with --anonymous-auth=false; /readyz is
 * open to every authenticated user (system:public-info-viewer). So checks carry this name,
 * which also shows them plainly in the apiserver's audit log.
 *
 * Carrying a user also makes the check a test of the proxy's identity: /readyz is never proxied
 * elsewhere, so a 401 to it can only mean the apiserver refused the front-proxy certificate.
 */
export const HEALTH_CHECK_USER = 'kube-front-proxy:health-check';

export function readyzCheck(agent: () => Agent): HealthCheck {
  return async (target, timeoutMs) => {
    try {
      const response = await agent().request({
        origin: target.origin,
        path: '/readyz',
        method: 'GET',
        headers: { 'x-remote-user': HEALTH_CHECK_USER },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      });
      const body = (await response.body.text()).trim().slice(0, 200);
      if (response.statusCode === 200) return undefined;
      if (response.statusCode === 401) return { reason: PROXY_IDENTITY_REFUSED, identityRefused: true };
      return { reason: `GET /readyz answered ${response.statusCode}${body ? `: ${body}` : ''}` };
    } catch (err) {
      const code = errorCode(err);
      return { reason: `GET /readyz failed: ${code ? `${code} ` : ''}${(err as Error).message}` };
    }
  };
}
