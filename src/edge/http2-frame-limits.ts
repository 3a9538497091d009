// Rate limits on the frames an HTTP/2 client sends that cost the proxy work but carry no request:
// streams it resets before they are answered (rapid reset, CVE-2023-44487: each reset stream was
// authenticated and forwarded first), PINGs and SETTINGS. nghttp2 already ends some floods itself
// (a client that does not read the ACKs it is sent, more than 8 CONTINUATION frames, more than
// 1000 resets); those closures are counted here too, under the flood they came from.

import { constants, type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { endAbusiveSession, resetByProxy, TokenBucket, type SessionCloseReason } from './http2-abuse.js';

/**
 * Per session. client-go resets a stream when a watch or request is cancelled, and pings only
 * after 30 s without a frame; these leave a legitimate client far below them.
 */
const RESETS = { burst: 100, perSecond: 20 };
const PINGS = { burst: 100, perSecond: 10 };
const SETTINGS = { burst: 100, perSecond: 10 };

export interface FrameLimitsOptions {
  onSessionClosed: (reason: SessionCloseReason, address: string) => void;
}

export class Http2FrameLimits {
  constructor(private readonly options: FrameLimitsOptions) {}

  attach(server: Http2SecureServer): void {
    server.on('session', (session: ServerHttp2Session) => this.guard(session));
  }

  private guard(session: ServerHttp2Session): void {
    const address = session.socket?.remoteAddress ?? '';
    const resets = new TokenBucket(RESETS.burst, RESETS.perSecond);
    const pings = new TokenBucket(PINGS.burst, PINGS.perSecond);
    const settings = new TokenBucket(SETTINGS.burst, SETTINGS.perSecond);
    // What the client sent most of, to name a flood nghttp2 ended on its own.
    let pingCount = 0;
    let settingsCount = 0;
    const end = (reason: SessionCloseReason) => {
      if (endAbusiveSession(session)) this.options.onSessionClosed(reason, address);
    };
    session.on('stream', (stream: ServerHttp2Stream) => {
      let counted = false;
      const reset = () => {
        // A session going away closes its open streams: that is no reset by the client.
        if (counted || session.closed || session.destroyed) return;
        counted = true;
        if (!resets.take()) end('rapid-reset');
      };
      // 'aborted': the client reset the stream before the response was ended. Its 'close' may
      // wait until the request body is consumed, so this is the earliest sign.
      stream.once('aborted', reset);
      stream.once('close', () => {
        if (resetByClient(stream)) reset();
      });
    });
    session.on('ping', () => {
      pingCount++;
      if (!pings.take()) end('ping-flood');
    });
    session.on('remoteSettings', () => {
      settingsCount++;
      if (!settings.take()) end('settings-flood');
    });
    // nghttp2 ends some floods itself, with a session error: more than 8 CONTINUATION frames
    // (CVE-2024-27316), or frames to acknowledge sent faster than the ACKs are read (FLOODED).
    session.on('error', (err: Error) => {
      if (/CONTINUATION/.test(err.message)) end('continuation-flood');
      else if (/flood/i.test(err.message)) end(pingCount > settingsCount ? 'ping-flood' : settingsCount > 0 ? 'settings-flood' : 'frame-flood');
    });
  }
}

/**
 * The client reset the stream (RST_STREAM with an error code) before its response was all sent.
 * The response may have been complete already: a 401 is written before the reset is read.
 */
function resetByClient(stream: ServerHttp2Stream): boolean {
  return stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR && !stream.writableFinished && !resetByProxy(stream);
}
