// Ports for servers the tests cannot start on port 0 (programs that do not report the port they got).
import { once } from 'node:events';
import { createServer } from 'node:net';

/** A loopback port free at the moment of asking. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}
