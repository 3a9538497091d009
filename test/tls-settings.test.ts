// The user-facing TLS settings: TLS 1.2 at least, forward-secret AEAD suites only by default,
// both adjustable with kube-apiserver's words; and private keys others can read are refused at
// start-up, as ssh refuses them.
import { chmodSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type ConnectionOptions, type SecureVersion } from 'node:tls';
import t from 'tap';
import { createTestPki } from './helpers/pki.js';
import { runCli, startProxy } from './helpers/proxy.js';
import { startStack, withFlag, proxyFlags, bcryptLine, ALICE, writeUsersFile } from './helpers/setup.js';

const pki = await createTestPki();

interface Handshake {
  ok: boolean;
  protocol?: string | null;
  cipher?: string;
  error?: string;
}

/** One TLS handshake with the proxy, as a client restricted to `options` would make it. */
function handshake(port: number, options: Partial<ConnectionOptions>): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.pem['proxy-ca'].cert, ...options });
    socket.once('secureConnect', () => {
      resolve({ ok: true, protocol: socket.getProtocol(), cipher: socket.getCipher().name });
      socket.destroy();
    });
    socket.once('error', (err) => resolve({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message }));
  });
}

const tls12 = (ciphers: string): Partial<ConnectionOptions> => ({ minVersion: 'TLSv1.2' as SecureVersion, maxVersion: 'TLSv1.2' as SecureVersion, ciphers });

t.test('defaults: TLS 1.3 and TLS 1.2 with ECDHE + AEAD; CBC suites and TLS 1.1 refused', async (t) => {
  const { proxy } = await startStack(t, { pki });
  const v13 = await handshake(proxy.port, {});
  t.same([v13.ok, v13.protocol], [true, 'TLSv1.3'], 'a modern client gets TLS 1.3');
  const gcm = await handshake(proxy.port, tls12('ECDHE-ECDSA-AES128-GCM-SHA256'));
  t.same([gcm.ok, gcm.protocol, gcm.cipher], [true, 'TLSv1.2', 'ECDHE-ECDSA-AES128-GCM-SHA256'], 'TLS 1.2 with AES-GCM works (kubectl built with old Go)');
  const chacha = await handshake(proxy.port, tls12('ECDHE-ECDSA-CHACHA20-POLY1305'));
  t.ok(chacha.ok, 'TLS 1.2 with ChaCha20-Poly1305 works');
  // Node's own default list would accept these two; ours must not.
  const cbc = await handshake(proxy.port, tls12('ECDHE-ECDSA-AES128-SHA256'));
  t.equal(cbc.ok, false, `TLS 1.2 offering only a CBC suite is refused (${cbc.error})`);
  const sha1 = await handshake(proxy.port, tls12('ECDHE-ECDSA-AES256-SHA'));
  t.equal(sha1.ok, false, `TLS 1.2 offering only a SHA-1 CBC suite is refused (${sha1.error})`);
  const old = await handshake(proxy.port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' });
  t.equal(old.ok, false, `TLS 1.1 is refused (${old.error})`);
});

t.test('--tls-min-version VersionTLS13 refuses TLS 1.2 clients', async (t) => {
  const { proxy } = await startStack(t, { pki, flags: ['--tls-min-version', 'VersionTLS13'] });
  t.equal((await handshake(proxy.port, tls12('ECDHE-ECDSA-AES128-GCM-SHA256'))).ok, false, 'TLS 1.2 refused');
  t.equal((await handshake(proxy.port, {})).protocol, 'TLSv1.3', 'TLS 1.3 accepted');
});

t.test('--tls-cipher-suites takes the IANA names kube-apiserver takes', async (t) => {
  const { proxy } = await startStack(t, { pki, flags: ['--tls-cipher-suites', 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,TLS_AES_128_GCM_SHA256'] });
  t.equal((await handshake(proxy.port, tls12('ECDHE-ECDSA-AES128-GCM-SHA256'))).ok, false, 'a suite left out of the list is refused');
  t.equal((await handshake(proxy.port, tls12('ECDHE-ECDSA-CHACHA20-POLY1305'))).cipher, 'ECDHE-ECDSA-CHACHA20-POLY1305', 'the listed suite is used');
  t.equal((await handshake(proxy.port, {})).protocol, 'TLSv1.3', 'TLS 1.3 is unaffected');
});

t.test('bad TLS settings and exposed private keys stop start-up with one line', async (t) => {
  const usersFile = writeUsersFile(pki.dir, [bcryptLine(ALICE)], 'tls-settings.htpasswd');
  const good = proxyFlags(pki, { upstream: 'https://127.0.0.1:6443', usersFile });
  const exposedServingKey = join(pki.dir, 'serving-0644.key');
  copyFileSync(pki.path('proxy-server', 'key'), exposedServingKey);
  chmodSync(exposedServingKey, 0o644);
  const groupReadableClientKey = join(pki.dir, 'front-proxy-0640.key');
  copyFileSync(pki.path('front-proxy-client', 'key'), groupReadableClientKey);
  chmodSync(groupReadableClientKey, 0o640);
  const privateKey = join(pki.dir, 'serving-0400.key');
  copyFileSync(pki.path('proxy-server', 'key'), privateKey);
  chmodSync(privateKey, 0o400);

  const cases = [
    {
      name: 'world-readable serving key',
      args: withFlag(good, '--tls-private-key-file', exposedServingKey),
      line: /^kube-front-proxy: --tls-private-key-file \S+serving-0644\.key: private key is accessible by other users \(mode 0644\); chmod 600 it$/,
    },
    {
      name: 'group-readable front-proxy key we own',
      args: withFlag(good, '--proxy-client-key-file', groupReadableClientKey),
      line: /^kube-front-proxy: --proxy-client-key-file \S+front-proxy-0640\.key: private key is accessible by other users \(mode 0640\)/,
    },
    { name: 'unknown cipher suite', args: [...good, '--tls-cipher-suites', 'TLS_RSA_WITH_RC4_128_SHA'], line: /^kube-front-proxy: --tls-cipher-suites: unknown or insecure cipher suite "TLS_RSA_WITH_RC4_128_SHA"/ },
    { name: 'unknown TLS version', args: [...good, '--tls-min-version', 'VersionTLS10'], line: /^kube-front-proxy: --tls-min-version: / },
    { name: 'trusted proxy that is not an address', args: [...good, '--trusted-proxies', '10.0.0.0/33'], line: /^kube-front-proxy: --trusted-proxies: "10\.0\.0\.0\/33" is not an IP address or CIDR/ },
  ];
  for (const c of cases) {
    const result = await runCli(['serve', '--listen', '127.0.0.1:0', ...c.args]);
    t.equal(result.code, 2, `${c.name}: exit code`);
    const lines = result.stderr.trimEnd().split('\n');
    t.equal(lines.length, 1, `${c.name}: one line (${result.stderr.trim()})`);
    t.match(lines[0], c.line, `${c.name}: names the setting and the problem`);
  }

  // Commander's own argument errors come with usage help, but still exit 2 and name the flag.
  const typo = await runCli(['serve', ...good, '--allow-impersonation=flase']);
  t.equal(typo.code, 2, 'a boolean flag with a typo: exit 2');
  t.match(typo.stderr, /--allow-impersonation.*"flase" is not true or false/, 'a boolean flag with a typo is named, not read as false');

  const owner = await startProxy(['--listen', '127.0.0.1:0', ...withFlag(good, '--tls-private-key-file', privateKey), '--admin-listen', '']);
  t.equal(await owner.stop(), 0, 'a key readable by its owner only (0400) is accepted');
});
