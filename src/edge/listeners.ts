// The TCP ports the proxy serves (the user-facing one and the admin one), bound before any of
// them serves: start-up is all or nothing. Every port is bound first; one that cannot be ends
// start-up with one line (ConfigError) after the others are closed again, and nothing has been
// answered. Only then are they opened, together. A connection that reaches a bound port before
// that is reset, never answered (the bound-but-closed time is the few microseconds between the
// binds; before the first bind a client is simply refused).
//
// The servers (fastify's) never listen themselves: an open listener hands each connection to
// its sink, which gives it to a server in this process or sends it to a worker.

import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { ConfigError, type ListenAddress } from '../config/index.js';

export interface ListenerSpec {
  address: ListenAddress;
  /** The setting it comes from, for the error line (--listen, --admin-listen). */
  flag: string;
  /**
   * Connections arrive paused (nothing read from them): needed when they are sent to another
   * process, whose server must see the client's first bytes.
   */
  pause?: boolean;
}

export class GatedListener {
  private sink: ((socket: Socket) => void) | undefined;

  private constructor(private readonly server: Server) {
    server.on('connection', (socket: Socket) => {
      if (this.sink) this.sink(socket);
      else socket.resetAndDestroy();
    });
  }

  /** Binds `spec` with its gate closed; throws a one-line ConfigError when the port cannot be had. */
  static async bind(spec: ListenerSpec): Promise<GatedListener> {
    const server = createServer({ pauseOnConnect: spec.pause === true });
    const listener = new GatedListener(server);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: spec.address.host, port: spec.address.port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      server.close();
      const code = (err as NodeJS.ErrnoException).code;
      const problem = code === 'EADDRINUSE' ? 'address already in use' : code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)' : (err as Error).message;
      throw new ConfigError(`${spec.flag} ${spec.address.host}:${spec.address.port}: ${problem}`);
    }
    return listener;
  }

  /** From now on, every connection goes to `sink`. */
  open(sink: (socket: Socket) => void): void {
    this.sink = sink;
  }

  /** Stops accepting (connections already handed over are the sink's). */
  close(): void {
    this.sink = undefined;
    if (this.server.listening) this.server.close();
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** https://host:port or http://host:port of the bound address. */
  url(scheme: 'http' | 'https'): string {
    const { address, family, port } = this.address();
    return `${scheme}://${family === 'IPv6' ? `[${address}]` : address}:${port}`;
  }
}

/** Binds every spec in order; if one fails, those bound are closed again and its error thrown. */
export async function bindAll(specs: ListenerSpec[]): Promise<GatedListener[]> {
  const bound: GatedListener[] = [];
  try {
    for (const spec of specs) bound.push(await GatedListener.bind(spec));
  } catch (err) {
    for (const listener of bound) listener.close();
    throw err;
  }
  return bound;
}
