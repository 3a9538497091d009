// --workers N: N processes share the port; the primary prints one start-up line, answers the
// admin endpoints for all of them, passes reloads on, replaces a worker that dies, and drains
// them all on SIGTERM.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { basicAuth, call, openWatch, proxyClient } from './helpers/clients.js';
import { ALICE, CAROL, bcryptLine, startStack, writeUsersFile } from './helpers/setup.js';
import type { ProxyProcess } from './helpers/proxy.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function admin(proxy: ProxyProcess, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`${proxy.adminUrl}${path}`);
  return { status: res.status, text: await res.text() };
}

t.test('two workers: one start-up line, both serve, metrics and readiness cover both', async (t) => {
  const { proxy, pki } = await startStack(t, { users: [bcryptLine(ALICE)], flags: ['--workers', '2'] });
  const startup = proxy.logs.filter((l) => l.msg.startsWith('listening on'));
  t.equal(startup.length, 1, 'one start-up line for all workers');
  t.match(startup[0]?.msg, /; 2 workers$/);
  const workers = childPids(proxy.child.pid as number);
  t.equal(workers.length, 2, `the primary runs two worker processes (${workers.join(', ')})`);

  // Each fresh connection goes to the next worker (round-robin in the primary).
  for (let i = 0; i < 8; i++) {
    const client = proxyClient(pki);
    t.equal((await call(client, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(ALICE) } })).status, 200);
    await client.close();
  }
  const servedBy = await waitFor('8 request lines', () => {
    const lines = proxy.logs.filter((l) => l.msg === 'request' && l.path === '/test/identity');
    return lines.length >= 8 ? new Set(lines.map((l) => l.pid as number)) : undefined;
  });
  t.same([...servedBy].sort(), [...workers].sort(), 'requests were served by both workers');

  const readyz = await admin(proxy, '/readyz');
  t.equal(readyz.status, 200, readyz.text);
  t.match(readyz.text, /ok: 2 of 2 workers ready/);
  const metrics = await admin(proxy, '/metrics');
  const served = [...metrics.text.matchAll(/^kube_front_proxy_requests_total\{[^}]*resource=""[^}]*code="200"[^}]*\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  t.equal(
    served,
    8,
    `the primary sums both workers' request counters: ${metrics.text
      .split('\n')
      .filter((l) => l.startsWith('kube_front_proxy_requests_total'))
      .join(' | ')}`,
  );
});

t.test('two workers: SIGHUP reloads every worker; a killed worker is replaced', async (t) => {
  const stack = await startStack(t, { users: [bcryptLine(ALICE)], flags: ['--workers', '2', '--reload-interval', '1h'] });
  const { proxy, pki, usersFile } = stack;
  writeUsersFile(pki.dir, [bcryptLine(ALICE), bcryptLine(CAROL)], usersFile.split('/').at(-1));
  proxy.child.kill('SIGHUP');
  await sleep(300);
  // Several fresh connections, so both workers are asked.
  for (let i = 0; i < 4; i++) {
    const client = proxyClient(pki);
    t.equal((await call(client, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(CAROL) } })).status, 200, `carol, added by the reload, logs in (connection ${i + 1})`);
    await client.close();
  }

  const [victim] = childPids(proxy.child.pid as number);
  process.kill(victim as number, 'SIGKILL');
  const replaced = await waitFor('a replacement worker', () => {
    const pids = childPids(proxy.child.pid as number);
    return pids.length === 2 && !pids.includes(victim as number) ? pids : undefined;
  });
  t.equal(replaced.length, 2, 'two workers again');
  t.ok(
    proxy.logs.some((l) => l.msg.startsWith('worker exited unexpectedly')),
    'the death is logged',
  );
  await waitFor('readiness of both', async () => ((await admin(proxy, '/readyz')).status === 200 ? true : undefined));
  const client = proxyClient(pki);
  t.equal((await call(client, `${proxy.url}/test/identity`, { method: 'GET', headers: { authorization: basicAuth(ALICE) } })).status, 200, 'serving after the replacement');
  await client.close();
});

t.test('two workers drain on SIGTERM: watches end cleanly, every process exits, exit 0', async (t) => {
  const { proxy, pki, apiserver } = await startStack(t, { users: [bcryptLine(ALICE)], flags: ['--workers', '2', '--shutdown-grace', '10s'] });
  const workers = childPids(proxy.child.pid as number);
  const clients = [proxyClient(pki, { cert: 'user-alice' }), proxyClient(pki, { cert: 'user-alice' })];
  t.teardown(() => Promise.all(clients.map((c) => c.close())));
  const watches = await Promise.all(clients.map((c) => openWatch(c, `${proxy.url}/api/v1/namespaces/default/pods?watch=1`)));
  await waitFor('both watches at the apiserver', () => (apiserver.openWatches() === 2 ? true : undefined));
  const started = Date.now();
  const code = await proxy.stop('SIGTERM');
  t.equal(code, 0, 'exit 0');
  t.ok(Date.now() - started < 5000, `drained in ${Date.now() - started} ms`);
  for (const watch of watches) t.equal(await watch.ended, 'end', 'each watch ended with its last chunk, not a reset');
  t.same(workers.filter(alive), [], 'no worker is left behind');
});

t.test('two workers and a port in use: exit 2 with one line', async (t) => {
  const { proxy: busy, pki, usersFile } = await startStack(t, { users: [bcryptLine(ALICE)] });
  const { runCli } = await import('./helpers/proxy.js');
  const { proxyFlags, withFlag } = await import('./helpers/setup.js');
  const flags = withFlag(withFlag(proxyFlags(pki, { upstream: 'https://127.0.0.1:6443', usersFile }), '--workers', '2'), '--listen', `127.0.0.1:${busy.port}`);
  const result = await runCli(['serve', ...flags]);
  t.equal(result.code, 2);
  const lines = result.stderr.trimEnd().split('\n');
  t.equal(lines.length, 1, `one line: ${result.stderr}`);
  t.match(lines[0], new RegExp(`^kube-front-proxy: --listen 127\\.0\\.0\\.1:${busy.port}: address already in use$`));
});
