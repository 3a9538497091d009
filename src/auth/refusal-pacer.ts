// Paces the proxy's answers to logins refused by the failed-login limits (429): one per
// --auth-failure-delay per client connection. A delay per request alone bounds nothing over
// HTTP/2, where one connection carries a hundred requests at once: a locked-out client got
// hundreds of refusals a second. Per connection, an address gets at most
// --max-connections-per-client refusals per delay, whatever --workers (each connection lives in
// one process, and the primary caps connections per client for the whole proxy).

/** The client connection a request arrived on: its socket (over HTTP/2, the session's). */
export type Connection = object;

export class RefusalPacer {
  /** When each connection's last refusal is answered; forgotten with the connection. */
  private readonly answeredAt = new WeakMap<Connection, number>();

  constructor(
    private readonly delayMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** How long the refusal of a request on `connection` waits for its answer: queued behind the connection's earlier ones. */
  waitFor(connection: Connection): number {
    const now = this.now();
    const at = Math.max(now, this.answeredAt.get(connection) ?? 0) + this.delayMs;
    this.answeredAt.set(connection, at);
    return at - now;
  }
}
