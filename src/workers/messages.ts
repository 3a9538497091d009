// What the primary and its workers (--workers N) tell each other over the IPC channel node:cluster
// gives every worker. Every message is tagged `kfp`.

import type { KeyState } from '../auth/failure-limiter.js';
import type { LoginOutcome } from '../auth/login-limiter.js';

/** Failed-login limits, worker to primary (login-limits-authority.ts answers). */
export type LimitsRequest =
  /** Before bcrypt: may this check run? Answered with login-answer. */
  | { kfp: 'login-begin'; id: number; client: string; user: string; credential: string }
  /** Is this client or name locked (and the client not known to use the credential)? Answered with login-answer. */
  | { kfp: 'login-check'; id: number; client: string; user: string; credential: string }
  /** The check `id` let through is over. */
  | { kfp: 'login-finish'; id: number; outcome: LoginOutcome }
  /** The client was let in with a cached credential (of `user`, if told): it is known to use it. */
  | { kfp: 'login-used'; client: string; credential: string; user?: string }
  /** The users file was read again; `users`: those whose credentials it withdrew (LoginLimiter.usersChanged). */
  | { kfp: 'login-forget'; users?: string[] };

/** Failed-login limits, primary to worker (login-limits-client.ts reads them). */
export type LimitsReply =
  | { kfp: 'login-answer'; id: number; waitMs: number }
  /** Keys whose refusal changed (all refused keys when a worker starts): each worker keeps a copy. */
  | { kfp: 'login-keys'; states: KeyState[] };

export type ToWorker =
  | { kfp: 'shutdown' }
  | { kfp: 'reload' }
  | { kfp: 'reopen' }
  | { kfp: 'readiness'; id: number }
  /** Sent with a client connection's socket as the handle; `id` comes back in connection-closed. */
  | { kfp: 'connection'; id: number }
  /** The primary reset a connection (--max-connections-per-client): count it in this worker's metrics. */
  | { kfp: 'connection-refused' }
  | LimitsReply;

export type FromWorker =
  /** Started, with nothing bound: the primary may hand it connections. */
  | { kfp: 'ready' }
  /** Could not start (one line for the operator); the worker exits 2. */
  | { kfp: 'start-error'; message: string }
  | { kfp: 'readiness'; id: number; ready: boolean; text: string }
  | { kfp: 'connection-closed'; id: number }
  | LimitsRequest;

/** The worker side: messages from the primary (with the socket of a `connection`), and a way to answer. */
export function onPrimaryMessage(handler: (message: ToWorker, handle: unknown) => void): void {
  process.on('message', (message: ToWorker, handle: unknown) => {
    if (message && typeof message === 'object' && 'kfp' in message) handler(message, handle);
  });
}

export function tellPrimary(message: FromWorker): void {
  if (process.connected) process.send?.(message);
}
