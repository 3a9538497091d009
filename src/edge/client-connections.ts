// The client connections of the user-facing listener, for a graceful drain and idle timeouts.
// The listener speaks HTTP/2 and HTTP/1.1 (ALPN), and Node's closeIdleConnections() exists only
// on an HTTP/1 server, so we keep the books: an HTTP/1.1 connection is idle between requests and
// is closed then; an HTTP/2 session gets GOAWAY (its open streams finish, no new ones start).
// An HTTP/2 session is idle only when no stream is open: a quiet watch (client-go keeps dozens
// on one connection) is not idleness, whatever the traffic on the wire.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2SecureServer, Http2ServerRequest, ServerHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export class ClientConnections {
  /** `idleTimeoutMs`: an HTTP/2 session with no open stream gets GOAWAY after this (--keep-alive-timeout). */
  constructor(private readonly idleTimeoutMs: number) {}

  /** HTTP/1.1 connections and how many responses each has in flight. */
  private readonly http1 = new Map<Socket, number>();
  /**
   * Bytes each HTTP/1.1 connection had received when it last had nothing in flight: more since
   * means a request has begun to arrive, and the connection is not idle (Node's own
   * closeIdleConnections() spares those too). Closing it then would reset a request the client
   * has sent, where its end gets an answer (503 while draining).
   */
  private readonly readWhenIdle = new WeakMap<Socket, number>();
  private readonly sessions = new Set<ServerHttp2Session>();
  /**
   * Every TCP connection handed to the server, until it closes. The server never listens itself
   * (listeners.ts, or the primary under --workers, accepts), so its close() cannot wait for them:
   * the drain waits here.
   */
  private readonly accepted = new Set<Socket>();
  private whenDrained: (() => void) | undefined;

  attach(server: Http2SecureServer): void {
    server.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol === 'h2') return; // counted as a session
      this.http1.set(socket, 0);
      this.readWhenIdle.set(socket, socket.bytesRead);
      socket.once('close', () => this.http1.delete(socket));
    });
    server.on('session', (session: ServerHttp2Session) => {
      this.sessions.add(session);
      let open = 0;
      let idle: NodeJS.Timeout | undefined;
      const arm = () => {
        idle = setTimeout(() => {
          if (open === 0 && !session.closed) session.close();
        }, this.idleTimeoutMs);
        idle.unref();
      };
      session.on('stream', (stream) => {
        open++;
        clearTimeout(idle);
        stream.once('close', () => {
          if (--open === 0 && !session.closed) arm();
        });
      });
      session.once('close', () => {
        clearTimeout(idle);
        this.sessions.delete(session);
      });
      arm();
    });
    server.on('request', (req: IncomingMessage | Http2ServerRequest, res: ServerResponse) => {
      if (req.httpVersionMajor !== 1) return;
      const socket = req.socket as Socket;
      const inFlight = this.http1.get(socket);
      if (inFlight === undefined) return;
      this.http1.set(socket, inFlight + 1);
      res.once('close', () => {
        const now = this.http1.get(socket);
        if (now === undefined) return;
        this.http1.set(socket, Math.max(0, now - 1));
        if (now <= 1) this.readWhenIdle.set(socket, socket.bytesRead);
      });
    });
    // An upgraded connection belongs to its tunnel from now on (the upgrade proxy ends those).
    server.on('upgrade', (_req: IncomingMessage, socket: Socket) => this.http1.delete(socket));
  }

  /** Counts `socket`, a connection about to be handed to the server, until it closes. */
  track(socket: Socket): void {
    this.accepted.add(socket);
    socket.once('close', () => {
      this.accepted.delete(socket);
      if (this.accepted.size === 0) this.whenDrained?.();
    });
  }

  /** Resolves once every tracked connection has closed. */
  drained(): Promise<void> {
    if (this.accepted.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.whenDrained = resolve));
  }

  get open(): number {
    return this.http1.size + this.sessions.size;
  }

  /** HTTP/1.1 connections between requests (nothing received since the last) are closed; HTTP/2 sessions get GOAWAY. */
  closeIdle(): void {
    for (const [socket, inFlight] of this.http1) if (inFlight === 0 && socket.bytesRead === this.readWhenIdle.get(socket)) socket.destroy();
    for (const session of this.sessions) if (!session.closed) session.close();
  }

  closeAll(): void {
    for (const socket of this.http1.keys()) socket.destroy();
    for (const session of this.sessions) session.destroy();
    // Handshakes still running, and tunnels (their upgrade proxy ends them first).
    for (const socket of this.accepted) socket.destroy();
  }
}
