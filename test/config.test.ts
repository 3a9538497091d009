// Settings in-process: precedence, parsing and the shipped example files.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, SETTINGS, envVarName, loadConfig, parseDuration } from '../src/config/index.js';
import { PROJECT_ROOT } from './helpers/proxy.js';

const required = { tlsCertFile: '/x/tls.crt', tlsPrivateKeyFile: '/x/tls.key', htpasswdFile: '/x/users' };

t.test('flag beats environment beats file beats default', async (t) => {
  const base = loadConfig({ flags: required, env: {} });
  t.same(base.upstreams.map(String), ['https://127.0.0.1:6443/'], 'default upstream');
  t.equal(base.upstreamServerName, 'kubernetes');
  t.same(base.listen, { host: '0.0.0.0', port: 8443 });
  const env = loadConfig({ flags: required, env: { KUBE_FRONT_PROXY_UPSTREAM_SERVER_NAME: 'from-env', KUBE_FRONT_PROXY_UPSTREAM: 'https://a:1,https://b:2' } });
  t.equal(env.upstreamServerName, 'from-env');
  t.same(
    env.upstreams.map((u) => u.origin),
    ['https://a:1', 'https://b:2'],
    'a list from the environment is comma-separated',
  );
  const flag = loadConfig({ flags: { ...required, upstreamServerName: 'from-flag' }, env: { KUBE_FRONT_PROXY_UPSTREAM_SERVER_NAME: 'from-env' } });
  t.equal(flag.upstreamServerName, 'from-flag');
});

t.test('listen addresses, durations and booleans', async (t) => {
  t.same(loadConfig({ flags: { ...required, listen: '[::1]:9443' }, env: {} }).listen, { host: '::1', port: 9443 });
  t.same(loadConfig({ flags: { ...required, listen: ':9443' }, env: {} }).listen, { host: '0.0.0.0', port: 9443 });
  t.throws(() => loadConfig({ flags: { ...required, listen: 'localhost' }, env: {} }), new ConfigError('--listen: "localhost" is not host:port (e.g. 0.0.0.0:8443 or [::]:8443)'));
  t.equal(parseDuration('authCacheTtl', '500ms'), 500);
  t.equal(parseDuration('authCacheTtl', '2m'), 120_000);
  t.equal(parseDuration('authCacheTtl', 30), 30_000, 'a number is seconds');
  t.equal(loadConfig({ flags: required, env: { KUBE_FRONT_PROXY_ALLOW_IMPERSONATION: 'false' } }).allowImpersonation, false);
  t.throws(() => loadConfig({ flags: required, env: { KUBE_FRONT_PROXY_BCRYPT_WORKERS: 'two' } }), /--bcrypt-workers: "two" is not a whole number|KUBE_FRONT_PROXY_BCRYPT_WORKERS: "two" is not a whole number/);
  t.throws(() => loadConfig({ flags: { ...required, upstreams: ['https://a:1/path'] }, env: {} }), /must be scheme:\/\/host:port with no path/);
});

t.test('the example config files in config/ are valid', async (t) => {
  const dir = join(PROJECT_ROOT, 'config');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  t.ok(files.length >= 2);
  for (const file of files) {
    // Required files may be empty in the reference; the flags supply them.
    const config = loadConfig({ configFile: join(dir, file), flags: required, env: {} });
    t.ok(config.upstreams.length >= 1, `${file} loads`);
  }
});

t.test('the configuration reference (docs/configuration.md) names every setting', async (t) => {
  const reference = readFileSync(join(PROJECT_ROOT, 'docs', 'configuration.md'), 'utf8');
  for (const spec of SETTINGS) {
    t.ok(reference.includes(`| \`--${spec.flag}\` | \`${envVarName(spec)}\` | \`${spec.key}\` |`), `reference row for --${spec.flag}`);
  }
});
