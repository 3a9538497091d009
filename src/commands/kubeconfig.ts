// `kube-front-proxy kubeconfig`: a kubeconfig whose server is the proxy, with the proxy's CA
// embedded and the user's credentials, ready for `kubectl --kubeconfig FILE`.

import { closeSync, fchmodSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Command } from 'commander';
import { loadCaBundle, loadKeyPair } from '../material/certfiles.js';
import { ConfigError, fileErrorText } from '../config/index.js';
import { buildKubeconfig, type KubeconfigCredentials } from '../pki/kubeconfig.js';
import { readFirstLine } from './input.js';

interface KubeconfigFlags {
  user: string;
  passwordStdin?: boolean;
  clientCert?: string;
  clientKey?: string;
  server: string;
  ca: string;
  output?: string;
  name: string;
}

export function registerKubeconfig(program: Command): void {
  program
    .command('kubeconfig')
    .description('write a kubeconfig for a user of the proxy (password from stdin, or a client certificate)')
    .requiredOption('--user <name>', 'the user name (the CN of a client certificate)')
    .option('--password-stdin', 'read the password from the first line of standard input')
    .option('--client-cert <file>', "the user's client certificate (PEM), embedded")
    .option('--client-key <file>', 'its private key (PEM), embedded')
    .requiredOption('--server <url>', 'the proxy, https://HOST:PORT')
    .option('--ca <file>', "CA that signed the proxy's serving certificate", 'certs/proxy-ca.crt')
    .option('-o, --output <file>', 'write here (mode 0600) instead of standard output')
    .option('--name <name>', 'cluster and context name', 'kube-front-proxy')
    .action(async (flags: KubeconfigFlags) => {
      const server = parseServer(flags.server);
      const certificateAuthority = loadCaBundle({ flag: '--ca', path: flags.ca }).toString('utf8');
      const credentials = await credentialsFrom(flags);
      const text = buildKubeconfig({ server, certificateAuthority, user: flags.user, credentials, name: flags.name });
      if (!flags.output) {
        process.stdout.write(text);
        return;
      }
      writePrivateFile(flags.output, text);
      const how = credentials.password !== undefined ? 'password' : 'client certificate';
      process.stdout.write(`wrote ${flags.output} (mode 0600): user ${flags.user} (${how}) at ${server}; try: kubectl --kubeconfig ${flags.output} auth whoami\n`);
    });
}

/** --server as an https:// origin, or a one-line ConfigError. */
export function parseServer(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`--server: "${value}" is not a URL (e.g. https://proxy.example.com:8443)`);
  }
  if (url.protocol !== 'https:') throw new ConfigError(`--server: "${value}" must be https://`);
  return url.origin;
}

async function credentialsFrom(flags: KubeconfigFlags): Promise<KubeconfigCredentials> {
  const certificate = flags.clientCert !== undefined || flags.clientKey !== undefined;
  if (flags.passwordStdin === certificate) {
    throw new ConfigError('give either --password-stdin or --client-cert with --client-key');
  }
  if (flags.passwordStdin) {
    const password = await readFirstLine(process.stdin).catch(() => '');
    if (password === '') throw new ConfigError('--password-stdin: standard input had no password');
    return { username: flags.user, password };
  }
  if (!flags.clientCert || !flags.clientKey) throw new ConfigError('--client-cert and --client-key go together');
  // The same checks the proxy will make: key matches, valid now, allowed for client auth.
  const pair = loadKeyPair({ flag: '--client-cert', path: flags.clientCert }, { flag: '--client-key', path: flags.clientKey }, 'client');
  return { clientCertificate: pair.cert.toString('utf8'), clientKey: pair.key.toString('utf8') };
}

/**
 * Writes a file that holds a secret (a password, a private key): mode 0600 whatever the umask or
 * the mode of a file it replaces, and atomically (a temporary file renamed over it).
 */
export function writePrivateFile(path: string, text: string): void {
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(temporary, 'wx', 0o600);
    fchmodSync(fd, 0o600);
    writeSync(fd, text);
    closeSync(fd);
    fd = undefined;
    renameSync(temporary, path);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(temporary, { force: true });
    throw new ConfigError(`-o ${path}: ${fileErrorText(err)}`);
  }
}
