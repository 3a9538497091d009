// `npm run demo`: kube-front-proxy on a generated dev PKI with two kubeconfigs to try it with the
// real kubectl. Its upstream is the real control plane of `npm run cluster` when that is already
// built (test/cluster/build.sh), otherwise the test suite's kube-apiserver stand-in, which
// authenticates like the real one but serves little else; the banner says which. Not for
// production: see README "On a kubeadm control-plane node" and "Deployment shapes".
//
//   DEMO_LISTEN    the proxy's address (default 127.0.0.1:8443)
//   DEMO_DIR       where the PKI, users file and kubeconfigs go (default certs/demo)
//   DEMO_UPSTREAM  cluster | standin | auto (default: cluster when built)

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildKubeconfig } from '../src/pki/kubeconfig.js';
import { cliArgs, PROJECT_ROOT } from '../test/helpers/proxy.js';
import { bcryptLine, settingsToFlags, writeUsersFile } from '../test/helpers/setup.js';
import { checkPortFree, takeDemoLock } from './demo-lock.js';
import { builtClusterBinaries, startClusterUpstream, startStandInUpstream, type DemoUpstream } from './demo-upstreams.js';

const dir = resolve(PROJECT_ROOT, process.env.DEMO_DIR ?? join('certs', 'demo'));
const listen = process.env.DEMO_LISTEN ?? '127.0.0.1:8443';
const choice = process.env.DEMO_UPSTREAM ?? 'auto';
if (!['auto', 'cluster', 'standin'].includes(choice)) fail(`DEMO_UPSTREAM=${choice}: use cluster, standin or auto`);

// Before anything is written: another demo's files and port are left alone.
const lock = takeDemoLock(dir);
if (!lock.ok) fail(lock.message);
const portProblem = await checkPortFree(listen);
if (portProblem) {
  lock.release();
  fail(portProblem);
}

mkdirSync(dir, { recursive: true });
const binaries = choice === 'standin' ? undefined : builtClusterBinaries();
if (choice === 'cluster' && !binaries) {
  lock.release();
  fail('DEMO_UPSTREAM=cluster, but the real control plane is not built: run test/cluster/build.sh first (about 5 minutes, once)');
}
const password = randomBytes(12).toString('base64url');
const usersFile = writeUsersFile(dir, [bcryptLine({ name: 'alice', password, groups: ['devs', 'ops'] }, 10)]);
let upstream: DemoUpstream;
try {
  upstream = binaries ? await startClusterUpstream(dir, usersFile) : await startStandInUpstream(dir, usersFile);
} catch (err) {
  lock.release();
  fail((err as Error).message);
}

const server = `https://${listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}`;
const basicConfig = join(dir, 'basic.kubeconfig');
const certConfig = join(dir, 'cert.kubeconfig');
writeFileSync(basicConfig, buildKubeconfig({ server, certificateAuthority: upstream.proxyCa, user: 'alice', credentials: { username: 'alice', password } }), { mode: 0o600 });
writeFileSync(certConfig, buildKubeconfig({ server, certificateAuthority: upstream.proxyCa, user: 'alice', credentials: { clientCertificate: upstream.alice.cert, clientKey: upstream.alice.key } }), { mode: 0o600 });

const proxy: ChildProcess = spawn(process.execPath, cliArgs(['serve', ...settingsToFlags(upstream.settings), '--listen', listen]), { stdio: ['ignore', 'pipe', 'inherit'] });
proxy.stdout?.pipe(process.stdout);
// The banner once kubectl can connect: after the proxy's start-up line.
await new Promise<void>((resolve) => {
  let seen = '';
  const onData = (chunk: Buffer) => {
    seen = (seen + chunk.toString('utf8')).slice(-4096);
    if (!seen.includes('"msg":"listening on')) return;
    proxy.stdout?.off('data', onData);
    resolve();
  };
  proxy.stdout?.on('data', onData);
  proxy.once('exit', () => resolve());
});
if (proxy.exitCode !== null) {
  await upstream.stop();
  lock.release();
  fail(`the proxy exited with code ${proxy.exitCode} (its message is above)`);
}
process.stderr.write(
  [
    '',
    `kube-front-proxy demo: proxy at ${server}, dev PKI and kubeconfigs in ${dir}`,
    `  upstream: ${upstream.description}`,
    ...upstream.notes.map((note) => `    ${note}`),
    `  user alice (groups devs, ops), password ${password}, or the client certificate in ${certConfig}`,
    `  kubectl --kubeconfig ${basicConfig} auth whoami`,
    `  kubectl --kubeconfig ${certConfig} get pods`,
    'Ctrl-C stops it all.',
    '',
  ].join('\n'),
);

let stopping = false;
const stop = async (code: number) => {
  if (stopping) return;
  stopping = true;
  if (proxy.exitCode === null) proxy.kill('SIGTERM');
  await upstream.stop();
  lock.release();
  process.exit(code);
};
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));
proxy.on('exit', (code) => void stop(code ?? 0));

function fail(message: string): never {
  process.stderr.write(`npm run demo: ${message}\n`);
  process.exit(1);
}
