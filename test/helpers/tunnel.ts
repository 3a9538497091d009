// A raw TLS client for upgrade requests: sends the request head, reads the response head, and
// hands back the socket for whatever protocol follows the 101.

import { once } from 'node:events';
import { connect, type TLSSocket } from 'node:tls';
import type { ClientIdentity } from './clients.js';
import type { TestPki } from './pki.js';
import type { TapTest } from './setup.js';

export interface UpgradeResponse {
  statusCode: number;
  headerLines: string[];
  header(name: string): string | undefined;
  socket: TLSSocket;
  /** Bytes that arrived after the response head (the start of the tunnel or of the body). */
  rest: Buffer;
}

export interface UpgradeRequest {
  path: string;
  method?: string;
  /** Extra header lines, e.g. `Authorization: Basic ...`. */
  headers?: string[];
  protocol: 'SPDY/3.1' | 'websocket';
  identity?: ClientIdentity;
  /** Trust and name for the server; default: the proxy's CA and `localhost`. */
  ca?: string;
  servername?: string;
}

export async function sendUpgrade(port: number, pki: TestPki, request: UpgradeRequest): Promise<UpgradeResponse> {
  const cert = request.identity?.cert;
  const socket = connect({
    host: '127.0.0.1',
    port,
    ca: request.ca ?? pki.pem['proxy-ca'].cert,
    servername: request.servername ?? 'localhost',
    ...(cert ? { cert: pki.pem[cert].cert, key: pki.pem[cert].key } : {}),
    // So the test can half-close and still read the echo (tls.connect passes it on).
    ...({ allowHalfOpen: true } as object),
  });
  await once(socket, 'secureConnect');
  const protocolHeaders =
    request.protocol === 'websocket'
      ? ['Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${Buffer.from('0123456789abcdef').toString('base64')}`]
      : ['Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: v4.channel.k8s.io', 'X-Stream-Protocol-Version: v3.channel.k8s.io'];
  socket.write([`${request.method ?? (request.protocol === 'websocket' ? 'GET' : 'POST')} ${request.path} HTTP/1.1`, 'Host: localhost', 'Connection: Upgrade', ...protocolHeaders, ...(request.headers ?? []), '', ''].join('\r\n'));

  let received = Buffer.alloc(0);
  while (received.indexOf('\r\n\r\n') === -1) {
    const chunk = await new Promise<Buffer | null>((resolve, reject) => {
      const onData = (data: Buffer) => finish(data);
      const onEnd = () => finish(null);
      const onError = (err: Error) => {
        cleanup();
        reject(err);
      };
      const cleanup = () => {
        socket.off('data', onData).off('end', onEnd).off('error', onError);
      };
      const finish = (data: Buffer | null) => {
        cleanup();
        socket.pause();
        resolve(data);
      };
      socket.on('data', onData).once('end', onEnd).once('error', onError);
      socket.resume();
    });
    if (chunk === null) throw new Error(`connection closed before a response head: ${received.toString()}`);
    received = Buffer.concat([received, chunk]);
  }
  const split = received.indexOf('\r\n\r\n');
  const [statusLine = '', ...headerLines] = received.subarray(0, split).toString('latin1').split('\r\n');
  return {
    statusCode: Number(statusLine.split(' ')[1]),
    headerLines,
    header: (name) => headerLines.find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))?.replace(/^[^:]*:\s*/, ''),
    socket,
    rest: received.subarray(split + 4),
  };
}

/** Reads everything until the peer ends its side (or closes). */
export async function readToEnd(socket: TLSSocket, first: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  const chunks = [first];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.resume();
  await Promise.race([once(socket, 'end'), once(socket, 'close')]);
  return Buffer.concat(chunks);
}

/**
 * A tunnel to the stand-in's /test/upgrade-echo (an exec's shape: upgraded, then bytes both
 * ways), checked with one round trip. `closed` resolves when the proxy ends or closes the
 * client's side.
 */
export async function openEchoTunnel(t: TapTest, port: number, pki: TestPki, request: Omit<UpgradeRequest, 'path'>): Promise<{ tunnel: UpgradeResponse; closed: Promise<Buffer> }> {
  const tunnel = await sendUpgrade(port, pki, { path: '/test/upgrade-echo', ...request });
  t.equal(tunnel.statusCode, 101, 'the tunnel opens');
  const echoed = new Promise<Buffer>((resolve) => tunnel.socket.once('data', resolve));
  tunnel.socket.resume();
  tunnel.socket.write('ping');
  t.equal((await echoed).toString(), 'ping', 'and carries bytes');
  return { tunnel, closed: readToEnd(tunnel.socket) };
}
