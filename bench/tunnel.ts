// Throughput of one upgrade tunnel (what kubectl cp and port-forward ride on): an SPDY upgrade
// to the stand-in's raw echo, then N bytes sent while the echo is read back.

import { once } from 'node:events';
import { connect } from 'node:tls';

export interface TunnelTarget {
  port: number;
  ca: string;
  servername: string;
  cert?: { cert: string; key: string };
}

/** MiB/s of payload through one tunnel, counting each byte once (it goes out and comes back). */
export async function tunnelThroughput(target: TunnelTarget, bytes: number): Promise<number> {
  const socket = connect({ host: '127.0.0.1', port: target.port, ca: target.ca, servername: target.servername, ...target.cert });
  await once(socket, 'secureConnect');
  socket.write('POST /test/upgrade-echo HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n');
  let head = Buffer.alloc(0);
  while (head.indexOf('\r\n\r\n') === -1) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    head = Buffer.concat([head, chunk]);
  }
  if (!head.toString('latin1').startsWith('HTTP/1.1 101')) throw new Error(`tunnel refused: ${head.toString('latin1').split('\r\n')[0]}`);
  let received = head.length - (head.indexOf('\r\n\r\n') + 4);
  const started = performance.now();
  const done = new Promise<void>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= bytes) resolve();
    });
  });
  const block = Buffer.alloc(256 * 1024, 0x5a);
  for (let sent = 0; sent < bytes; sent += block.length) {
    if (!socket.write(block)) await once(socket, 'drain');
  }
  await done;
  const seconds = (performance.now() - started) / 1000;
  socket.destroy();
  return bytes / 1048576 / seconds;
}
