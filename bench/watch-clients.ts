// Many idle watches from one process of their own, so the client side's CPU and memory are
// neither the proxy's nor the orchestrator's (bench/watches.ts drives it). Each watch is
// `GET /api/v1/namespaces/default/pods?watch=1` with a client certificate, either
//
//   h2:    M TLS connections carrying watches/M streams each, as client-go multiplexes (kubelets,
//          controllers, `kubectl get -w`); keep watches/M under the server's concurrent-stream
//          limit (the proxy's --http2-max-streams-per-connection, default 1000), or
//   http1: one TLS connection per watch (HTTP/1.1 has no multiplexing), spread over source
//          addresses 127.0.x.y, --per-address at a time, so the proxy's per-address connection
//          limit (--max-connections-per-client, default 256) is not what is measured.
//
// A watch counts as open when its 200 headers arrive. Every event line is timestamped as it
// arrives (epoch ms, performance.timeOrigin + performance.now(), the clock the stand-in stamps
// the send time with) and its latency is the receive time minus the send time in the event's
// annotations.
//
// Standalone:
//   node --import tsx bench/watch-clients.ts --url https://127.0.0.1:PORT --pki DIR \
//     [--cert user-alice] [--ca proxy-ca] [--servername localhost] [--protocol h2|http1] \
//     [--watches 1000] [--connections 2] [--open-concurrency 100] [--per-address 200]
// prints {"opened":...} once the watches are open, then takes commands as IPC messages (when
// spawned with an 'ipc' stdio entry) or as lines on stdin, answering each with one JSON line:
//   {"cmd":"collect","seq":N,"timeoutMs":T}  wait until every open watch has event N (or T ms):
//                                            {"seq","expected","received","p50Ms","p99Ms","maxMs"}
//   {"cmd":"summary"}                        every event so far together (same fields + "events")
//   {"cmd":"status"}                         {"open","ended","errors","firstError"}
//   {"cmd":"close"}                          closes every watch and exits
// (on stdin, "collect 3", "summary", "status", "close" work too).

import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as http2Connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';

/** Annotations of the stand-in's timed event (bench/apiserver-process.ts "emit"). */
export const SEQ_ANNOTATION = 'bench.kube-front-proxy.io/seq';
export const SENT_AT_ANNOTATION = 'bench.kube-front-proxy.io/sent-at';
/** What every watcher watches. */
export const WATCH_PATH = '/api/v1/namespaces/default/pods?watch=1';

/** Wall-clock epoch milliseconds with sub-millisecond precision, comparable across processes. */
export function nowEpochMs(): number {
  return performance.timeOrigin + performance.now();
}

export type WatchProtocol = 'h2' | 'http1';

export interface WatchClientOptions {
  /** https://host:port of the proxy or the stand-in. */
  url: string;
  path: string;
  protocol: WatchProtocol;
  watches: number;
  /** h2: TLS connections the watches are spread over (streams per connection = watches / connections). */
  connections: number;
  /** Watches waiting for their headers at any one time (TLS handshakes in flight, for http1). */
  openConcurrency: number;
  /** http1: connections per source address (127.0.1.1, 127.0.1.2, ...); 0 = all from the default address. */
  perAddress: number;
  ca: string;
  servername: string;
  cert: string;
  key: string;
}

/** Latency statistics of one event (or of all events) over the watchers that got it. */
export interface LatencyStats {
  expected: number;
  received: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

const EVENT = new RegExp(`"${SEQ_ANNOTATION.replace(/\./g, '\\.')}":"(\\d+)","${SENT_AT_ANNOTATION.replace(/\./g, '\\.')}":"([\\d.]+)"`);

/** Nearest-rank percentile of ascending samples; NaN when there are none. */
function percentile(sorted: Float64Array | number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function stats(samples: number[], expected: number): LatencyStats {
  const sorted = Float64Array.from(samples).sort();
  return { expected, received: sorted.length, p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), maxMs: sorted.length ? sorted[sorted.length - 1]! : NaN };
}

/** 127.0.1.1, 127.0.1.2, ... 127.0.1.254, 127.0.2.1, ...: never the default 127.0.0.1. */
function sourceAddress(i: number): string {
  return `127.0.${1 + Math.floor(i / 254)}.${(i % 254) + 1}`;
}

class Watchers {
  open = 0;
  ended = 0;
  errors = 0;
  firstError: string | undefined;
  /** Latencies (ms) per event sequence number. */
  private readonly latencies = new Map<number, number[]>();
  private readonly waiters = new Set<() => void>();
  private readonly sessions: ClientHttp2Session[] = [];
  private readonly closers: (() => void)[] = [];
  private agent: HttpsAgent | undefined;

  constructor(private readonly o: WatchClientOptions) {}

  fail(what: string): void {
    this.errors++;
    this.firstError ??= what;
  }

  /** Feeds one watch's text; returns the carried-over partial line. */
  private onText(buffer: string, chunk: string, receivedAt: number): string {
    let text = buffer + chunk;
    let newline: number;
    while ((newline = text.indexOf('\n')) !== -1) {
      const line = text.slice(0, newline);
      text = text.slice(newline + 1);
      const m = EVENT.exec(line);
      if (!m) continue;
      const seq = Number(m[1]);
      let list = this.latencies.get(seq);
      if (!list) this.latencies.set(seq, (list = []));
      list.push(receivedAt - Number(m[2]));
      if (list.length >= this.open) for (const wake of this.waiters) wake();
    }
    return text;
  }

  /** Opens every watch; resolves when each has its headers or has failed. */
  async openAll(): Promise<{ opened: number; failed: number; seconds: number }> {
    const started = performance.now();
    const { o } = this;
    let next = 0;
    let failed = 0;
    const openers: (() => Promise<void>)[] = [];
    if (o.protocol === 'h2') {
      const perSession = Math.ceil(o.watches / o.connections);
      for (let c = 0; c < o.connections; c++) {
        const session = http2Connect(o.url, {
          ca: o.ca,
          servername: o.servername,
          cert: o.cert,
          key: o.key,
          // Hundreds of streams on one session: nghttp2's default 10 MB accounting is tight.
          maxSessionMemory: 100,
        });
        session.on('error', (err) => this.fail(`h2 session: ${err.message}`));
        session.on('goaway', (code) => this.fail(`h2 session got GOAWAY (code ${code})`));
        this.sessions.push(session);
        // Streams only after the server's SETTINGS (its concurrent-stream limit) have arrived.
        // (events.once rejects if the session emits 'error' first.)
        await once(session, 'remoteSettings');
        for (let s = 0; s < perSession && c * perSession + s < o.watches; s++) openers.push(() => this.openH2(session));
      }
    } else {
      this.agent = new HttpsAgent({ keepAlive: true, maxSockets: Infinity, ca: o.ca, cert: o.cert, key: o.key, servername: o.servername });
      for (let i = 0; i < o.watches; i++) {
        const localAddress = o.perAddress > 0 ? sourceAddress(Math.floor(i / o.perAddress)) : undefined;
        openers.push(() => this.openHttp1(localAddress));
      }
    }
    const worker = async (): Promise<void> => {
      while (next < openers.length) {
        const open = openers[next++]!;
        try {
          await open();
        } catch (err) {
          failed++;
          this.fail((err as Error).message);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, o.openConcurrency) }, worker));
    return { opened: this.open, failed, seconds: (performance.now() - started) / 1000 };
  }

  private openH2(session: ClientHttp2Session): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = session.request({ [h2.HTTP2_HEADER_PATH]: this.o.path, accept: 'application/json' });
      stream.setEncoding('utf8');
      let buffer = '';
      let isOpen = false;
      stream.once('response', (headers) => {
        const status = Number(headers[h2.HTTP2_HEADER_STATUS]);
        if (status !== 200) {
          stream.close();
          reject(new Error(`watch answered HTTP ${status}`));
          return;
        }
        isOpen = true;
        this.open++;
        resolve();
      });
      stream.on('data', (chunk: string) => {
        const at = nowEpochMs();
        buffer = this.onText(buffer, chunk, at);
      });
      stream.once('close', () => {
        if (!isOpen) return reject(new Error(`watch stream closed before its headers (RST code ${stream.rstCode})`));
        this.open--;
        this.ended++;
      });
      stream.on('error', (err) => {
        if (isOpen) this.fail(`watch stream: ${err.message}`);
      });
      this.closers.push(() => stream.close());
    });
  }

  private openHttp1(localAddress: string | undefined): Promise<void> {
    const url = new URL(this.o.path, this.o.url);
    return new Promise((resolve, reject) => {
      const req = httpsRequest({
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        agent: this.agent,
        headers: { accept: 'application/json' },
        ...(localAddress ? { localAddress } : {}),
      });
      let isOpen = false;
      req.once('response', (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`watch answered HTTP ${res.statusCode}`));
          return;
        }
        isOpen = true;
        this.open++;
        resolve();
        res.setEncoding('utf8');
        let buffer = '';
        res.on('data', (chunk: string) => {
          const at = nowEpochMs();
          buffer = this.onText(buffer, chunk, at);
        });
        res.once('close', () => {
          this.open--;
          this.ended++;
        });
        res.on('error', (err) => this.fail(`watch response: ${err.message}`));
      });
      req.once('error', (err) => {
        if (isOpen) this.fail(`watch connection: ${err.message}`);
        else reject(err);
      });
      req.end();
      this.closers.push(() => req.destroy());
    });
  }

  /** Waits until every open watch has event `seq` or `timeoutMs` passes. */
  async collect(seq: number, timeoutMs: number): Promise<LatencyStats & { seq: number }> {
    const have = (): number => this.latencies.get(seq)?.length ?? 0;
    if (have() < this.open) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          if (have() < this.open) return;
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(() => {
          this.waiters.delete(done);
          resolve();
        }, timeoutMs);
        this.waiters.add(done);
      });
    }
    return { seq, ...stats(this.latencies.get(seq) ?? [], this.open) };
  }

  summary(): LatencyStats & { events: number } {
    const all: number[] = [];
    for (const list of this.latencies.values()) for (const v of list) all.push(v);
    return { events: this.latencies.size, ...stats(all, this.open * this.latencies.size) };
  }

  status(): Record<string, unknown> {
    return { open: this.open, ended: this.ended, errors: this.errors, firstError: this.firstError };
  }

  close(): void {
    for (const close of this.closers) close();
    for (const session of this.sessions) session.destroy();
    this.agent?.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// The process

function flag(args: string[], name: string, fallback?: string): string {
  const i = args.indexOf(`--${name}`);
  const value = i === -1 ? fallback : args[i + 1];
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
}

/** Options from the command line (see the header); PEMs are read from the PKI directory. */
export function optionsFromArgs(args: string[]): WatchClientOptions {
  const pki = flag(args, 'pki');
  const pem = (name: string, kind: 'crt' | 'key'): string => readFileSync(join(pki, `${name}.${kind}`), 'utf8');
  const certName = flag(args, 'cert', 'user-alice');
  const protocol = flag(args, 'protocol', 'h2');
  if (protocol !== 'h2' && protocol !== 'http1') throw new Error(`--protocol ${protocol}: h2 or http1`);
  return {
    url: flag(args, 'url'),
    path: flag(args, 'path', WATCH_PATH),
    protocol,
    watches: Number(flag(args, 'watches', '1000')),
    connections: Number(flag(args, 'connections', '2')),
    openConcurrency: Number(flag(args, 'open-concurrency', '100')),
    perAddress: Number(flag(args, 'per-address', '200')),
    ca: pem(flag(args, 'ca', 'proxy-ca'), 'crt'),
    servername: flag(args, 'servername', 'localhost'),
    cert: pem(certName, 'crt'),
    key: pem(certName, 'key'),
  };
}

async function main(): Promise<void> {
  const options = optionsFromArgs(process.argv.slice(2));
  const watchers = new Watchers(options);
  const send = (message: Record<string, unknown>): void => {
    if (process.send) process.send(message);
    else process.stdout.write(`${JSON.stringify(message)}\n`);
  };

  // Commands may arrive while the watches open; they wait for that to finish.
  let opening: Promise<unknown> = Promise.resolve();
  const handle = async (message: Record<string, unknown>): Promise<void> => {
    await opening;
    const id = message.id;
    switch (message.cmd) {
      case 'collect':
        send({ id, ...(await watchers.collect(Number(message.seq), Number(message.timeoutMs ?? 10_000))) });
        return;
      case 'summary':
        send({ id, ...watchers.summary() });
        return;
      case 'status':
        send({ id, ...watchers.status() });
        return;
      case 'close':
        watchers.close();
        send({ id, closed: true });
        setTimeout(() => process.exit(0), 100);
        return;
      default:
        send({ id, error: `unknown command ${JSON.stringify(message.cmd)}` });
    }
  };
  if (process.send) {
    process.on('message', (message: Record<string, unknown>) => void handle(message));
    process.on('disconnect', () => process.exit(0));
  } else {
    createInterface({ input: process.stdin }).on('line', (line) => {
      const text = line.trim();
      if (!text) return;
      if (text.startsWith('{')) return void handle(JSON.parse(text) as Record<string, unknown>);
      const [cmd, seq, timeoutMs] = text.split(/\s+/);
      void handle({ cmd, seq, timeoutMs });
    });
  }

  const opened = watchers.openAll();
  opening = opened;
  const result = await opened;
  send({ ...result, ...watchers.status(), pid: process.pid });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.stderr.write(`watch-clients: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
