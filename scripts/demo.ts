// `npm run demo`: kube-front-proxy on a generated dev PKI, in front of the test suite's
// kube-apiserver stand-in (which authenticates like the real one), so the proxy can be tried
// with the real kubectl on any machine. Not for production: see README "Running it".

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildKubeconfig } from '../src/pki/kubeconfig.js';
import { startApiServer } from '../test/helpers/apiserver.js';
import { createTestPki } from '../test/helpers/pki.js';
import { cliArgs, PROJECT_ROOT } from '../test/helpers/proxy.js';
import { bcryptLine, proxyFlags, writeUsersFile } from '../test/helpers/setup.js';

const dir = join(PROJECT_ROOT, 'certs', 'demo');
const listen = process.env.DEMO_LISTEN ?? '127.0.0.1:8443';
mkdirSync(dir, { recursive: true });

// A fresh PKI and password each run: nothing here is worth keeping.
const pki = await createTestPki(dir);
const password = randomBytes(12).toString('base64url');
const usersFile = writeUsersFile(dir, [bcryptLine({ name: 'alice', password, groups: ['devs', 'ops'] }, 10)]);
const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert });

const server = `https://${listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}`;
const basicConfig = join(dir, 'basic.kubeconfig');
const certConfig = join(dir, 'cert.kubeconfig');
writeFileSync(basicConfig, buildKubeconfig({ server, certificateAuthority: pki.pem['proxy-ca'].cert, user: 'alice', credentials: { username: 'alice', password } }), { mode: 0o600 });
writeFileSync(certConfig, buildKubeconfig({ server, certificateAuthority: pki.pem['proxy-ca'].cert, user: 'alice', credentials: { clientCertificate: pki.pem['user-alice'].cert, clientKey: pki.pem['user-alice'].key } }), { mode: 0o600 });

const proxy = spawn(process.execPath, cliArgs(['serve', ...proxyFlags(pki, { upstream: apiserver.url, usersFile }), '--listen', listen]), { stdio: ['ignore', 'inherit', 'inherit'] });
process.stderr.write(
  [
    '',
    `kube-front-proxy demo: stand-in apiserver at ${apiserver.url}, proxy at ${server}, dev PKI in ${dir}`,
    `  user alice (groups devs, ops), password ${password}, or the client certificate ${join(dir, 'user-alice.crt')}`,
    `  kubectl --kubeconfig ${basicConfig} auth whoami`,
    `  kubectl --kubeconfig ${certConfig} get pods -w`,
    'Ctrl-C stops both.',
    '',
  ].join('\n'),
);

const stop = () => {
  proxy.kill('SIGTERM');
  void apiserver.close();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
proxy.on('exit', (code) => {
  void apiserver.close();
  process.exitCode = code ?? 0;
});
