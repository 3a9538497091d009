// What keeps a second `npm run demo` from breaking the first: a lock beside the demo's folder,
// taken before any file is written, and a check that the proxy's port is free.

import { mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, relative } from 'node:path';
import { PROJECT_ROOT } from '../test/helpers/proxy.js';

export type DemoLock = { ok: true; release(): void } | { ok: false; message: string };

const OTHER_PLACE = 'DEMO_DIR=certs/demo2 DEMO_LISTEN=127.0.0.1:8444 npm run demo';

/** Takes `<dir>.lock` (holding this pid); a lock whose process is gone is taken over. */
export function takeDemoLock(dir: string): DemoLock {
  const path = `${dir}.lock`;
  mkdirSync(dirname(path), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        rmSync(path, { force: true });
      };
      process.once('exit', release);
      return { ok: true, release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isSafeInteger(pid) && pid > 0 && isRunning(pid)) {
        const inProject = relative(PROJECT_ROOT, dir);
        const shown = inProject && !inProject.startsWith('..') ? inProject : dir;
        return { ok: false, message: `another demo (pid ${pid}) is running on ${shown}/; nothing was changed. Use that one, stop it (Ctrl-C in its terminal, or kill ${pid}), or run a second one elsewhere: ${OTHER_PLACE}` };
      }
      rmSync(path, { force: true }); // left by a demo that was killed
    }
  }
  return { ok: false, message: `could not take ${path}` };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** undefined when `listen` (host:port) can be bound now, else what to do about it. */
export async function checkPortFree(listen: string): Promise<string | undefined> {
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(listen.slice(colon + 1));
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', (err: NodeJS.ErrnoException) => resolve(`${listen} is in use${err.code === 'EADDRINUSE' ? ' (another kube-front-proxy?)' : `: ${err.message}`}; nothing was changed. Stop what holds it, or: ${OTHER_PLACE}`));
    server.listen(port, host, () => server.close(() => resolve(undefined)));
  });
}
