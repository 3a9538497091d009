// Start-up: a good configuration prints one line saying where it listens; each bad one stops
// with exit code 2 and one stderr line naming the setting, the file and the problem.
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { createTestPki } from './helpers/pki.js';
import { runCli, startProxy } from './helpers/proxy.js';
import { ALICE, bcryptLine, proxyFlags, withFlag, writeUsersFile } from './helpers/setup.js';

const pki = await createTestPki();
const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)]);
const good = proxyFlags(pki, { upstream: 'https://127.0.0.1:6443', usersFile });

t.test('a good configuration starts and says where it listens, which auth and which upstreams', async (t) => {
  const proxy = await startProxy(good);
  t.teardown(() => proxy.stop());
  t.equal(proxy.logs.length, 1, 'exactly one start-up line');
  const line = proxy.logs.find((l) => l.msg.startsWith('listening on'));
  t.match(line?.msg, /^listening on https:\/\/127\.0\.0\.1:\d+; auth: basic \(1 user\), x509 client certificates; upstreams: https:\/\/127\.0\.0\.1:6443 as front-proxy-client$/);
  t.equal(await proxy.stop(), 0, 'SIGTERM exits 0');
});

t.test('settings come from flag > environment > config file > default', async (t) => {
  const configFile = join(pki.dir, 'precedence.yaml');
  writeFileSync(configFile, `upstreams: [https://file.example:6443]\nupstreamServerName: from-file\nlogLevel: warn\n`);
  const withoutUpstream = withFlag(good, '--upstream', undefined);
  const proxy = await startProxy(['--config', configFile, ...withoutUpstream, '--log-level', 'info'], {
    KUBE_FRONT_PROXY_UPSTREAM: 'https://env.example:6443',
  });
  t.teardown(() => proxy.stop());
  const line = proxy.logs.find((l) => l.msg.startsWith('listening on'));
  // env beat the file for upstreams; the flag beat the file for logLevel (else no info line).
  t.same(line?.upstreams, ['https://env.example:6443']);
});

interface BadCase {
  name: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  line: RegExp;
}

const garbage = join(pki.dir, 'garbage.pem');
writeFileSync(garbage, 'this is not a certificate\n');
const md5Users = writeUsersFile(pki.dir, [bcryptLine(ALICE), 'bob:$apr1$Qk0vHq0y$2mY0Xm0y6w0qvMPLBd5d0/'], 'md5.htpasswd');
const unknownKeyConfig = join(pki.dir, 'unknown-key.yaml');
writeFileSync(unknownKeyConfig, 'listen: 127.0.0.1:0\nupstreamz: [https://x:6443]\n');
const badYaml = join(pki.dir, 'bad.yaml');
writeFileSync(badYaml, 'listen: [unclosed\n');
// Settings from a config file are named by their key there (and the file), not by a flag.
const badDurationConfig = join(pki.dir, 'bad-duration.yaml');
writeFileSync(badDurationConfig, 'healthInterval: soon\n');
const missingCertConfig = join(pki.dir, 'missing-cert.yaml');
writeFileSync(missingCertConfig, `tlsCertFile: ${join(pki.dir, 'nope.crt')}\n`);

const busy = createServer();
await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
const busyPort = (busy.address() as { port: number }).port;
t.teardown(() => busy.close());

const cases: BadCase[] = [
  { name: 'no serving certificate', args: withFlag(good, '--tls-cert-file', undefined), line: /^kube-front-proxy: --tls-cert-file: required/ },
  { name: 'missing serving certificate file', args: withFlag(good, '--tls-cert-file', join(pki.dir, 'nope.crt')), line: /^kube-front-proxy: --tls-cert-file \S+nope\.crt: no such file$/ },
  { name: 'a file that is not PEM', args: withFlag(good, '--upstream-ca-file', garbage), line: /^kube-front-proxy: --upstream-ca-file \S+garbage\.pem: no PEM certificate found/ },
  {
    name: 'key that does not match its certificate',
    args: withFlag(good, '--tls-private-key-file', pki.path('user-alice', 'key')),
    line: /^kube-front-proxy: --tls-private-key-file \S+user-alice\.key: key does not match the certificate in \S+proxy-server\.crt$/,
  },
  {
    name: 'expired front-proxy client certificate',
    args: withFlag(withFlag(good, '--proxy-client-cert-file', pki.path('user-expired', 'crt')), '--proxy-client-key-file', pki.path('user-expired', 'key')),
    line: /^kube-front-proxy: --proxy-client-cert-file \S+user-expired\.crt: certificate expired on \d{4}-/,
  },
  {
    name: 'a serving certificate used as the front-proxy client certificate',
    args: withFlag(withFlag(good, '--proxy-client-cert-file', pki.path('proxy-server', 'crt')), '--proxy-client-key-file', pki.path('proxy-server', 'key')),
    line: /^kube-front-proxy: --proxy-client-cert-file \S+proxy-server\.crt: certificate does not allow client authentication/,
  },
  { name: 'an MD5 htpasswd line', args: withFlag(good, '--htpasswd-file', md5Users), line: /^kube-front-proxy: --htpasswd-file \S+md5\.htpasswd: line 3: user "bob": unsupported hash, MD5 \(\$apr1\$/ },
  { name: 'missing users file', args: withFlag(good, '--htpasswd-file', join(pki.dir, 'none.htpasswd')), line: /^kube-front-proxy: --htpasswd-file \S+none\.htpasswd: no such file$/ },
  { name: 'neither auth method', args: withFlag(withFlag(good, '--htpasswd-file', undefined), '--client-ca-file', ''), line: /^kube-front-proxy: no authentication method enabled/ },
  { name: 'plain-http upstream', args: withFlag(good, '--upstream', 'http://127.0.0.1:8080'), line: /^kube-front-proxy: --upstream: "http:\/\/127\.0\.0\.1:8080" must be https:\/\/$/ },
  { name: 'kubeadm default upstream CA absent', args: withFlag(good, '--upstream-ca-file', undefined), line: /^kube-front-proxy: --upstream-ca-file \/etc\/kubernetes\/pki\/ca\.crt: no such file$/ },
  { name: 'unknown key in the config file', args: ['--config', unknownKeyConfig, ...good], line: /^kube-front-proxy: --config \S+unknown-key\.yaml: \(top level\): unknown setting upstreamz$/ },
  { name: 'config file that is not YAML', args: ['--config', badYaml, ...good], line: /^kube-front-proxy: --config \S+bad\.yaml: not valid YAML/ },
  { name: 'bad duration from the environment', args: good, env: { KUBE_FRONT_PROXY_AUTH_CACHE_TTL: 'soon' }, line: /^kube-front-proxy: KUBE_FRONT_PROXY_AUTH_CACHE_TTL: "soon" is not a duration/ },
  { name: 'bad duration in the config file', args: ['--config', badDurationConfig, ...good], line: /^kube-front-proxy: \S+bad-duration\.yaml: healthInterval: "soon" is not a duration/ },
  { name: 'missing file named in the config file', args: ['--config', missingCertConfig, ...withFlag(good, '--tls-cert-file', undefined)], line: /^kube-front-proxy: \S+missing-cert\.yaml: tlsCertFile \S+nope\.crt: no such file$/ },
  {
    name: 'a certificate where the key belongs',
    args: withFlag(good, '--tls-private-key-file', pki.path('proxy-server', 'crt')),
    line: /^kube-front-proxy: --tls-private-key-file \S+proxy-server\.crt: this is a certificate, not a private key/,
  },
  { name: 'listen address in use', args: [...withFlag(good, '--listen', undefined), '--listen', `127.0.0.1:${busyPort}`], line: new RegExp(`^kube-front-proxy: --listen 127\\.0\\.0\\.1:${busyPort}: address already in use$`) },
];

t.test('bad configurations stop start-up with exit 2 and one line', async (t) => {
  // Two at a time: each is a separate process start.
  const results: Awaited<ReturnType<typeof runCli>>[] = [];
  for (let i = 0; i < cases.length; i += 2) {
    results.push(...(await Promise.all(cases.slice(i, i + 2).map((c) => runCli(['serve', '--listen', '127.0.0.1:0', ...c.args], c.env)))));
  }
  cases.forEach((c, i) => {
    const result = results[i]!;
    t.equal(result.code, 2, `${c.name}: exit code`);
    const lines = result.stderr.trimEnd().split('\n');
    t.equal(lines.length, 1, `${c.name}: one line (${result.stderr.trim()})`);
    t.match(lines[0], c.line, `${c.name}: names the setting, file and problem`);
    t.equal(result.stdout, '', `${c.name}: nothing on stdout`);
  });
});

t.test('--help lists the command and serve --help lists every flag', async (t) => {
  const top = await runCli(['--help']);
  t.equal(top.code, 0);
  t.match(top.stdout, /serve \[options\]\s+run the proxy/);
  const serve = await runCli(['serve', '--help']);
  t.equal(serve.code, 0);
  for (const flag of [
    '--listen',
    '--tls-cert-file',
    '--tls-private-key-file',
    '--client-ca-file',
    '--htpasswd-file',
    '--upstream ',
    '--upstream-ca-file',
    '--upstream-server-name',
    '--proxy-client-cert-file',
    '--proxy-client-key-file',
    '--config',
  ]) {
    t.ok(serve.stdout.includes(flag), `serve --help mentions ${flag.trim()}`);
  }
});
