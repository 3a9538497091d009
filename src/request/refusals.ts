// The HTTP answer to a refused login, kept apart from the verdict (as k8s.io/apiserver's
// WithAuthentication hands failures to its `failed` handler): the same Status for a plain
// request and an upgrade.

import { retryAfterSeconds, type AuthRefusal } from '../auth/method.js';
import { StatusError, unauthorized } from '../edge/status.js';

/** 401 with a Basic challenge; 429 with Retry-After when the failed-login limits hold the client back; 503 when no check could be made. */
export function refusalStatus(refusal: AuthRefusal): StatusError {
  switch (refusal.reason) {
    case 'overloaded':
      return new StatusError('ServiceUnavailable', refusal.message, { 'retry-after': '1' });
    case 'rate-limited':
      return new StatusError('TooManyRequests', refusal.message, { 'retry-after': String(retryAfterSeconds(refusal.retryAfterMs)) });
    default:
      return unauthorized(refusal.message);
  }
}
