// The streaming subresources of the kube-apiserver stand-in: exec/attach over WebSocket
// (v5.channel.k8s.io / v4.channel.k8s.io) and over SPDY (X-Stream-Protocol-Version
// v4.channel.k8s.io), port-forward over SPDY (portforward.k8s.io) and over SPDY tunnelled in
// WebSocket (SPDY/3.1+portforward.k8s.io), plus the raw echo tunnels of /test/upgrade-echo.
//
// No process runs: a few commands are emulated (cat, echo, sleep, sh -c 'exit N', true, false).
// The wire behaviour follows what kubectl 1.32 (client-go tools/remotecommand, portforward)
// expects from kube-apiserver 1.32 + kubelet:
// - WebSocket: every binary message is [channel, ...data]; 0 stdin, 1 stdout, 2 stderr,
//   3 error (one metav1.Status JSON at the end), 4 resize; v5 adds [255, channel] = "this
//   channel is closed" (kubectl sends [255, 0] when its stdin ends). The server ends with the
//   Status on channel 3 and a close frame 1000, which client-go reads as EOF on every stream.
// - SPDY: the client opens one stream per channel (header streamType: error, stdin, stdout,
//   stderr, resize); the server replies to each, writes, then FINs its side of each.
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, type WebSocket } from 'ws';
import { SpdySession, type SpdyStream } from './k8s-spdy.js';

export const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC11B56';
export const STREAM_PROTOCOL_V5 = 'v5.channel.k8s.io';
export const STREAM_PROTOCOL_V4 = 'v4.channel.k8s.io';
export const PORT_FORWARD_PROTOCOL = 'portforward.k8s.io';
export const PORT_FORWARD_TUNNEL_PROTOCOL = 'SPDY/3.1+portforward.k8s.io';
/** Container ports of the stand-in's pods that accept port-forward connections (they echo). */
export const ECHO_PORTS = [80];

const enum Channel {
  Stdin = 0,
  Stdout = 1,
  Stderr = 2,
  Error = 3,
  Resize = 4,
  Close = 255,
}

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
export function webSocketAccept(key: string): string {
  return createHash('sha1').update(`${key}${WEBSOCKET_GUID}`).digest('base64');
}

// ---------------------------------------------------------------------------------------------
// Emulated processes

export interface StreamOptions {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

export interface ExecRequest extends StreamOptions {
  /** Empty for attach. */
  command: string[];
  attach: boolean;
}

/** The query of an exec/attach request, as the apiserver reads it (?stdin=true&command=a&command=b). */
export function parseExecQuery(query: URLSearchParams, attach: boolean): ExecRequest {
  const flag = (name: string) => ['true', '1'].includes(query.get(name) ?? '');
  return {
    command: query.getAll('command'),
    stdin: flag('stdin'),
    stdout: flag('stdout'),
    stderr: flag('stderr'),
    tty: flag('tty'),
    attach,
  };
}

interface ProcessIO {
  /** Next chunk of stdin, or null once stdin is closed (or was never attached). */
  readStdin(): Promise<Buffer | null>;
  stdout(data: Buffer | string): void;
  stderr(data: Buffer | string): void;
  signal: AbortSignal;
}

/** Stdin as the emulated process sees it: chunks queued until read. */
class StdinQueue {
  private chunks: Buffer[] = [];
  private ended = false;
  private waiter: (() => void) | null = null;

  push(data: Buffer): void {
    if (this.ended || data.length === 0) return;
    this.chunks.push(data);
    this.wake();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  async read(): Promise<Buffer | null> {
    while (this.chunks.length === 0 && !this.ended) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    return this.chunks.shift() ?? null;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** Runs an emulated command; resolves to its exit code. */
async function run(argv: string[], io: ProcessIO): Promise<number> {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case undefined:
    case 'cat': {
      if (cmd === 'cat' && args.length > 0) {
        io.stderr(`cat: ${args[0]}: No such file or directory\n`);
        return 1;
      }
      for (let chunk = await io.readStdin(); chunk; chunk = await io.readStdin()) io.stdout(chunk);
      return 0;
    }
    case 'echo': {
      const noNewline = args[0] === '-n';
      io.stdout(`${(noNewline ? args.slice(1) : args).join(' ')}${noNewline ? '' : '\n'}`);
      return 0;
    }
    case 'sleep': {
      const seconds = Number(args[0]);
      if (!Number.isFinite(seconds) || seconds < 0) {
        io.stderr(`sleep: invalid time interval '${args[0] ?? ''}'\n`);
        return 1;
      }
      await sleep(seconds * 1000, io.signal);
      return 0;
    }
    case 'true':
      return 0;
    case 'false':
      return 1;
    case 'sh':
    case '/bin/sh':
    case 'bash':
    case '/bin/bash': {
      if (args[0] !== '-c' || args[1] === undefined) {
        io.stderr(`${cmd}: only "${cmd} -c SCRIPT" is emulated\n`);
        return 2;
      }
      const script = args[1].trim();
      const exit = /^exit(?:\s+(\d+))?$/.exec(script);
      if (exit) return Number(exit[1] ?? '0') & 0xff;
      return run(
        script.split(/\s+/).filter((w) => w.length > 0),
        io,
      );
    }
    default:
      io.stderr(`exec: "${cmd}": executable file not found in $PATH\n`);
      return 127;
  }
}

/** The metav1.Status kubelet writes on the error channel (v4+), as JSON. */
export function exitStatus(command: string[], code: number): object {
  if (code === 0) return { metadata: {}, status: 'Success' };
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${code}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
  };
}

/** Runs the request's command (or attach, which behaves like cat) and returns the Status JSON. */
async function runRequest(req: ExecRequest, stdin: StdinQueue, out: (channel: Channel.Stdout | Channel.Stderr, data: Buffer) => void, signal: AbortSignal): Promise<Buffer> {
  const write = (channel: Channel.Stdout | Channel.Stderr) => (data: Buffer | string) => {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    // A TTY merges stderr into stdout; a stream the client did not ask for is dropped.
    const target = req.tty ? Channel.Stdout : channel;
    if (buf.length > 0 && (target === Channel.Stdout ? req.stdout : req.stderr)) out(target, buf);
  };
  if (!req.stdin) stdin.end();
  const argv = req.attach ? [] : req.command;
  const code = await run(argv, { readStdin: () => stdin.read(), stdout: write(Channel.Stdout), stderr: write(Channel.Stderr), signal });
  return Buffer.from(JSON.stringify(exitStatus(req.command, code)));
}

// ---------------------------------------------------------------------------------------------
// exec/attach over WebSocket

/** Serves one exec/attach session on an open WebSocket whose subprotocol is v5 or v4. */
export function serveExecWebSocket(ws: WebSocket, req: ExecRequest): void {
  const v5 = ws.protocol === STREAM_PROTOCOL_V5;
  const stdin = new StdinQueue();
  const abort = new AbortController();
  const send = (channel: Channel, data: Buffer) => {
    if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([channel]), data]));
  };
  ws.on('message', (msg: Buffer, isBinary: boolean) => {
    if (!isBinary || msg.length === 0) return;
    const channel = msg[0]!;
    if (channel === Channel.Stdin) stdin.push(msg.subarray(1));
    else if (v5 && channel === Channel.Close && msg[1] === Channel.Stdin) stdin.end();
    // Resize messages ({"Width":..,"Height":..}) are accepted and ignored.
  });
  ws.on('close', () => {
    stdin.end();
    abort.abort();
  });
  ws.on('error', () => ws.terminate());
  // Like wsstream.Conn: an empty message on the lowest writable channel says "ready".
  const first = req.stdout ? Channel.Stdout : !req.tty && req.stderr ? Channel.Stderr : Channel.Error;
  send(first, Buffer.alloc(0));
  void runRequest(req, stdin, send, abort.signal).then((status) => {
    send(Channel.Error, status);
    if (ws.readyState === ws.OPEN) ws.close(1000);
  });
}

// ---------------------------------------------------------------------------------------------
// exec/attach over SPDY

/** Serves one exec/attach session on a SPDY connection (X-Stream-Protocol-Version v4/v5). */
export function serveExecSpdy(session: SpdySession, req: ExecRequest): void {
  const expected = new Set(['error']);
  if (req.stdin) expected.add('stdin');
  if (req.stdout) expected.add('stdout');
  if (req.stderr && !req.tty) expected.add('stderr');
  if (req.tty) expected.add('resize');
  const streams = new Map<string, SpdyStream>();
  const stdin = new StdinQueue();
  const abort = new AbortController();
  let started = false;

  session.on('close', () => {
    stdin.end();
    abort.abort();
  });
  session.on('stream', (stream) => {
    const type = stream.header('streamtype') ?? '';
    if (!expected.has(type) || streams.has(type)) {
      stream.resetStream();
      return;
    }
    stream.reply();
    streams.set(type, stream);
    if (type === 'stdin') {
      stream.on('data', (d: Buffer) => stdin.push(d));
      stream.on('end', () => stdin.end());
    }
    if (!started && streams.size === expected.size) {
      started = true;
      void runRequest(req, stdin, (channel, data) => streams.get(channel === Channel.Stdout ? 'stdout' : 'stderr')?.write(data), abort.signal).then((status) => {
        streams.get('error')?.write(status);
        for (const s of streams.values()) s.end();
        // kubelet closes the connection here; closing at once can race spdystream's frame
        // workers (a queued DATA frame is dropped once the connection is gone), so let the
        // client close it: it resets its streams and sends GOAWAY when the command is over.
        const timer = setTimeout(() => session.destroy(), 10_000);
        session.once('close', () => clearTimeout(timer));
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------
// port-forward over SPDY

/**
 * portforward.k8s.io: per forwarded connection the client opens an error stream and a data
 * stream with the same requestID. Ports in ECHO_PORTS echo the data stream (FIN after FIN);
 * other ports get kubelet's "connection refused" text on the error stream.
 */
export function servePortForwardSpdy(session: SpdySession, podName: string, podUID: string): void {
  const pairs = new Map<string, { error?: SpdyStream; data?: SpdyStream }>();
  session.on('stream', (stream) => {
    const type = stream.header('streamtype');
    const id = stream.header('requestid') ?? '';
    const port = Number(stream.header('port'));
    if ((type !== 'error' && type !== 'data') || !Number.isInteger(port)) {
      stream.resetStream();
      return;
    }
    stream.reply();
    const pair = pairs.get(id) ?? {};
    pairs.set(id, pair);
    pair[type] = stream;
    if (type === 'error') {
      // The client half-closes it at once and reads it to the end.
      if (pair.data?.localEnded) stream.end();
      return;
    }
    const finish = () => {
      stream.end();
      pair.error?.end();
      pairs.delete(id);
    };
    if (!ECHO_PORTS.includes(port)) {
      const message = `error forwarding port ${port} to pod ${podName}, uid ${podUID}: failed to connect to ` + `localhost:${port} inside namespace: dial tcp4 127.0.0.1:${port}: connect: connection refused`;
      if (pair.error) pair.error.write(Buffer.from(message));
      finish();
      return;
    }
    stream.on('data', (d: Buffer) => {
      if (!stream.write(d) && !session.transport.isPaused()) {
        session.transport.pause();
        void session.drain().then(() => session.transport.resume());
      }
    });
    stream.on('end', finish);
  });
}

// ---------------------------------------------------------------------------------------------
// Transports

/** A SPDY server session on a socket that just answered 101 (the head bytes come first). */
export function spdyOnSocket(socket: Duplex, head: Buffer): SpdySession {
  if (head.length > 0) socket.unshift(head);
  return new SpdySession(socket);
}

/** A SPDY server session tunnelled in WebSocket binary messages (SPDY/3.1+portforward.k8s.io). */
export function spdyOverWebSocket(ws: WebSocket): SpdySession {
  const duplex = createWebSocketStream(ws);
  return new SpdySession(duplex);
}

/** /test/upgrade-echo: every byte back unchanged, back-pressured, ending after the client does. */
export function echoTunnel(socket: Duplex, head: Buffer): void {
  if (head.length > 0) socket.unshift(head);
  socket.pipe(socket);
}
