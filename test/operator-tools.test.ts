// From nothing to kubectl through the proxy with the operator commands alone: pki init, user
// add, pki issue-user, kubeconfig; the proxy started on what they wrote, in front of the
// stand-in, and the real kubectl as a password user and as a certificate user.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startApiServer } from '../standin/apiserver.js';
import { kubectl, requireKubectl } from './helpers/kubectl.js';
import { runCli, startProxy } from './helpers/proxy.js';
import type { TapTest } from './helpers/setup.js';
import { tempDir } from './helpers/temp.js';

requireKubectl();
const dir = tempDir('kfp-operator-');
const pkiDir = join(dir, 'certs');
const usersFile = join(dir, 'users.htpasswd');
const read = (name: string) => readFileSync(join(pkiDir, name), 'utf8');

async function cli(t: TapTest, args: string[], stdin?: string) {
  const result = await runCli(args, {}, stdin);
  t.equal(result.code, 0, `${args.slice(0, 2).join(' ')}: ${result.stderr.trim()}`);
  return result;
}

t.test('pki init, user add, pki issue-user, kubeconfig, then kubectl through the proxy', async (t) => {
  await cli(t, ['pki', 'init', '--dir', pkiDir]);
  const again = await runCli(['pki', 'init', '--dir', pkiDir]);
  t.equal(again.code, 2, 'a second init without --force refuses');
  t.match(again.stderr, /^kube-front-proxy: .*(exists|already)/);
  await cli(t, ['user', 'add', 'alice', '--htpasswd-file', usersFile, '--groups', 'devs,ops', '--cost', '4'], 'alice-password\n');
  t.equal(statSync(usersFile).mode & 0o777, 0o600, 'the users file is private');
  t.notOk(readFileSync(usersFile, 'utf8').includes('alice-password'));
  await cli(t, ['pki', 'issue-user', 'bob', '--group', 'viewers', '--dir', pkiDir]);

  const apiserver = await startApiServer({ cert: read('apiserver.crt'), key: read('apiserver.key'), requestHeaderCA: read('front-proxy-ca.crt') });
  t.teardown(() => apiserver.close());
  const proxy = await startProxy([
    '--tls-cert-file',
    join(pkiDir, 'proxy.crt'),
    '--tls-private-key-file',
    join(pkiDir, 'proxy.key'),
    '--client-ca-file',
    join(pkiDir, 'user-ca.crt'),
    '--htpasswd-file',
    usersFile,
    '--upstream',
    apiserver.url,
    '--upstream-ca-file',
    join(pkiDir, 'ca.crt'),
    '--proxy-client-cert-file',
    join(pkiDir, 'front-proxy-client.crt'),
    '--proxy-client-key-file',
    join(pkiDir, 'front-proxy-client.key'),
    '--admin-listen',
    '127.0.0.1:0',
  ]);
  t.teardown(() => proxy.stop());

  const aliceConfig = join(dir, 'alice.kubeconfig');
  await cli(t, ['kubeconfig', '--user', 'alice', '--password-stdin', '--server', proxy.url, '--ca', join(pkiDir, 'proxy-ca.crt'), '-o', aliceConfig], 'alice-password\n');
  t.equal(statSync(aliceConfig).mode & 0o777, 0o600, 'a kubeconfig with a password is private');
  const bobConfig = join(dir, 'bob.kubeconfig');
  await cli(t, ['kubeconfig', '--user', 'bob', '--client-cert', join(pkiDir, 'users', 'bob.crt'), '--client-key', join(pkiDir, 'users', 'bob.key'), '--server', proxy.url, '--ca', join(pkiDir, 'proxy-ca.crt'), '-o', bobConfig]);

  for (const [config, user, groups] of [
    [aliceConfig, 'alice', ['devs', 'ops']],
    [bobConfig, 'bob', ['viewers']],
  ] as const) {
    const whoami = await kubectl(config, ['auth', 'whoami', '-o', 'json']);
    t.equal(whoami.code, 0, whoami.stderr);
    t.match(JSON.parse(whoami.stdout), { status: { userInfo: { username: user, groups: [...groups, 'system:authenticated'] } } }, `kubectl auth whoami as ${user}`);
  }

  const listed = await cli(t, ['user', 'list', '--htpasswd-file', usersFile]);
  t.match(listed.stdout, /^alice\tdevs,ops\t\$2b\$4\n$/);
  const bad = await runCli(['kubeconfig', '--user', 'x', '--password-stdin', '--client-cert', 'a', '--server', proxy.url, '--ca', join(pkiDir, 'proxy-ca.crt')]);
  t.equal(bad.code, 2, 'password and certificate together is a usage error');
  const kubeconfigOf = (password: string) => runCli(['kubeconfig', '--user', 'x', '--password-stdin', '--server', proxy.url, '--ca', join(pkiDir, 'proxy-ca.crt')], {}, password);
  for (const stdin of ['', '\n']) {
    const none = await kubeconfigOf(stdin);
    t.equal(none.code, 2, `no password on standard input (${JSON.stringify(stdin)}) is a usage error`);
    t.equal(none.stderr.trim(), 'kube-front-proxy: --password-stdin: standard input had no password');
  }
  const utf8 = await kubeconfigOf('pässwörd\r\nthe rest\n');
  t.equal(utf8.code, 0, utf8.stderr);
  t.match(utf8.stdout, /password: "?pässwörd"?\n/, 'the first line, without its CR LF, as it was given');
});
