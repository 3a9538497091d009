// `kube-front-proxy user add | set-password | remove | list`: edit the users file the proxy
// reads (and reloads on change). Passwords come from a prompt or standard input, never argv.
// `user request-cert | list-certs`: certificate users signed by the cluster's own CSR signer
// (kubernetes.io/kube-apiserver-client), through kubectl and an admin kubeconfig.

import type { Command } from 'commander';
import { loadCaBundle } from '../material/certfiles.js';
import { ConfigError } from '../config/index.js';
import { parseServer } from './kubeconfig.js';
import { CsrError } from '../csr/kubectl.js';
import { MIN_EXPIRATION_SECONDS, formatDuration, listCerts, parseDuration, requestCert } from '../csr/request.js';
import { DEFAULT_COST, UsersFileError, addUser, listUsers, removeUser, setPassword } from '../auth/users-file.js';
import { readPassword } from './input.js';

interface FileFlags {
  htpasswdFile?: string;
}

function usersFile(flags: FileFlags): string {
  const path = flags.htpasswdFile ?? process.env.KUBE_FRONT_PROXY_HTPASSWD_FILE;
  if (!path) throw new ConfigError('--htpasswd-file: required (or KUBE_FRONT_PROXY_HTPASSWD_FILE)');
  return path;
}

function groupsOf(value: string | undefined): string[] | undefined {
  return value === undefined
    ? undefined
    : value
        .split(',')
        .map((g) => g.trim())
        .filter(Boolean);
}

function cost(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 4 || Number(value) > 31) throw new ConfigError(`--cost: "${value}" is not a bcrypt cost from 4 to 31`);
  return Number(value);
}

async function edit<T>(work: () => Promise<T> | T): Promise<T> {
  try {
    return await work();
  } catch (err: unknown) {
    if (err instanceof UsersFileError) throw new ConfigError(err.message);
    throw err;
  }
}

/** From a terminal: a prompt without echo (asked twice when setting). From a pipe: the first line. */
function password(confirm: boolean): Promise<string> {
  return readPassword(process.stdin, process.stderr, 'Password: ', confirm && process.stdin.isTTY === true);
}

export function registerUser(program: Command): void {
  const user = program.command('user').description('edit the users file (--htpasswd-file): bcrypt, groups, atomic rewrites');
  const withFile = (command: Command) => command.option('--htpasswd-file <file>', 'the users file (env KUBE_FRONT_PROXY_HTPASSWD_FILE)');

  withFile(user.command('add').description('add a user; the password is read from a prompt or standard input').argument('<name>'))
    .option('--groups <a,b>', 'comma-separated groups')
    .option('--cost <n>', 'bcrypt cost', String(DEFAULT_COST))
    .action(async (name: string, flags: FileFlags & { groups?: string; cost: string }) => {
      const path = usersFile(flags);
      await edit(async () => addUser(path, name, await password(true), groupsOf(flags.groups) ?? [], { cost: cost(flags.cost) }));
      process.stderr.write(`added ${name} to ${path}\n`);
    });

  withFile(user.command('set-password').description("change a user's password (and groups, with --groups)").argument('<name>'))
    .option('--groups <a,b>', 'replace the groups')
    .option('--cost <n>', 'bcrypt cost', String(DEFAULT_COST))
    .action(async (name: string, flags: FileFlags & { groups?: string; cost: string }) => {
      const path = usersFile(flags);
      const groups = groupsOf(flags.groups);
      await edit(async () => setPassword(path, name, await password(true), { cost: cost(flags.cost), ...(groups ? { groups } : {}) }));
      process.stderr.write(`changed the password of ${name} in ${path}\n`);
    });

  withFile(user.command('remove').description('remove a user').argument('<name>')).action(async (name: string, flags: FileFlags) => {
    const path = usersFile(flags);
    await edit(() => removeUser(path, name));
    process.stderr.write(`removed ${name} from ${path}\n`);
  });

  withFile(user.command('list').description('list the users, their groups and bcrypt cost')).action(async (flags: FileFlags) => {
    const users = await edit(() => listUsers(usersFile(flags)));
    for (const entry of users) process.stdout.write(`${entry.name}\t${entry.groups.join(',') || '-'}\t${entry.scheme}${entry.cost}\n`);
  });

  const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];
  user
    .command('request-cert')
    .description(
      "a client certificate for <name> from the cluster's signer (kubernetes.io/kube-apiserver-client): key and CSR made here, CertificateSigningRequest submitted with kubectl, approved (--approve) or awaited, checked, then key, certificate and a kubeconfig through the proxy written",
    )
    .argument('<name>', "the user name (the certificate's CN)")
    .option('--group <group>', 'a group (an O of the certificate); repeat for more', collect)
    .option('--expiration <duration>', 'certificate lifetime asked of the signer (expirationSeconds; at least 10m, capped by kube-controller-manager --cluster-signing-duration, default 8760h)', '720h')
    .option('--approve', 'approve the CSR too (needs "approve" on the signer); otherwise print the approve line for an admin and wait')
    .option('--wait <duration>', 'give up (exit 1, CSR deleted) if no certificate by then', '5m')
    .requiredOption('--kubeconfig <file>', 'kubeconfig of the admin who submits (and approves); kubectl must be on PATH')
    .option('-o, --output <file>', 'the kubeconfig to write (0600); the key (0600) and certificate go beside it as .key and .crt')
    .option('--server <url>', "the proxy, https://HOST:PORT (the kubeconfig's server)")
    .option('--ca <file>', "CA that signed the proxy's serving certificate", 'certs/proxy-ca.crt')
    .option('--key-file <file>', "the user's own private key (PEM): the CSR is signed with it, the key is left where it is and the certificate written beside it")
    .option('--csr-file <file>', "the user's own PKCS#10 request (PEM) with CN=<name> and O=each --group: submitted and fetched only, the certificate written beside it; no key, no kubeconfig")
    .option('--cert-file <file>', 'where the certificate goes instead')
    .option('--csr-name <name>', "the CertificateSigningRequest's name (default <name>)")
    .option('--signer-ca <file>', 'CA the certificate must be signed by (default: the --kubeconfig cluster CA)')
    .action(async (name: string, flags: RequestCertFlags) => {
      const groups = flags.group ?? [];
      const seconds = asConfig(() => parseDuration('--expiration', flags.expiration));
      if (seconds < MIN_EXPIRATION_SECONDS) throw new ConfigError(`--expiration: "${flags.expiration}" is under 10m, the least the API accepts`);
      if (seconds > 2 ** 31 - 1) throw new ConfigError(`--expiration: "${flags.expiration}" is too long`);
      const waitSeconds = asConfig(() => parseDuration('--wait', flags.wait));
      if (waitSeconds < 1) throw new ConfigError('--wait: must be at least 1s');
      if (name.trim() === '' || name !== name.trim()) throw new ConfigError(`"${name}" is not a user name`);
      if (groups.some((g) => g.trim() === '' || g !== g.trim())) throw new ConfigError('--group: empty or padded group');
      if (groups.includes('system:masters')) {
        throw new ConfigError('--group system:masters: refused; such a certificate bypasses RBAC everywhere and the cluster cannot revoke it (bind a ClusterRole to another group instead)');
      }
      if (flags.keyFile && flags.csrFile) throw new ConfigError('--key-file and --csr-file: give one (the request already carries its key)');
      let server: string | undefined;
      let proxyCa: string | undefined;
      if (flags.csrFile) {
        if (flags.output) throw new ConfigError('-o: not with --csr-file (no key here); the user writes the kubeconfig with "kube-front-proxy kubeconfig --client-cert --client-key"');
      } else {
        if (!flags.output) throw new ConfigError('-o: required (the kubeconfig to write)');
        if (!flags.server) throw new ConfigError('--server: required (the proxy, https://HOST:PORT)');
        server = parseServer(flags.server);
        proxyCa = loadCaBundle({ flag: '--ca', path: flags.ca }).toString('utf8');
      }
      const signerCa = flags.signerCa ? loadCaBundle({ flag: '--signer-ca', path: flags.signerCa }).toString('utf8') : undefined;
      try {
        const result = await requestCert({
          name,
          groups,
          expirationSeconds: seconds,
          approve: flags.approve === true,
          waitMs: waitSeconds * 1000,
          kubeconfig: flags.kubeconfig,
          ...(flags.output ? { output: flags.output } : {}),
          ...(server ? { server } : {}),
          ...(proxyCa ? { proxyCa } : {}),
          ...(flags.keyFile ? { keyFile: flags.keyFile } : {}),
          ...(flags.csrFile ? { csrFile: flags.csrFile } : {}),
          ...(flags.certFile ? { certFile: flags.certFile } : {}),
          ...(flags.csrName ? { csrName: flags.csrName } : {}),
          ...(signerCa ? { signerCa } : {}),
          withdrawOnSignal: true,
          log: (line) => process.stderr.write(`${line}\n`),
        });
        const written = [result.kubeconfigFile, result.certFile, result.keyFile !== flags.keyFile ? result.keyFile : undefined].filter(Boolean).join(', ');
        process.stderr.write(`issued CSR ${result.csrName} in ${(result.elapsedMs / 1000).toFixed(1)}s: ${name}${groups.length ? ` (groups ${groups.join(',')})` : ''}, valid until ${result.notAfter.toISOString()}; wrote ${written}\n`);
        if (flags.csrFile) {
          process.stderr.write(`the user makes the kubeconfig: kube-front-proxy kubeconfig --user ${name} --client-cert ${result.certFile} --client-key THEIR.key --server https://PROXY:8443 --ca PROXY-CA.crt -o ${name}.kubeconfig\n`);
        }
      } catch (err) {
        if (err instanceof CsrError) failed(err.message);
        throw err;
      }
    });

  user
    .command('list-certs')
    .description("the proxy users' CertificateSigningRequests in the cluster (label app.kubernetes.io/managed-by=kube-front-proxy): user, groups, state, expiry")
    .requiredOption('--kubeconfig <file>', 'an admin kubeconfig (list on certificatesigningrequests); kubectl must be on PATH')
    .option('--all', 'every kubernetes.io/kube-apiserver-client CSR, not only those request-cert made')
    .action(async (flags: { kubeconfig: string; all?: boolean }) => {
      try {
        const rows = await listCerts(flags.kubeconfig, flags.all === true);
        process.stdout.write('CSR\tUSER\tGROUPS\tSTATE\tEXPIRES\n');
        for (const row of rows) {
          const expires = row.notAfter ? row.notAfter.toISOString() : row.expirationSeconds !== undefined ? `(asks ${formatDuration(row.expirationSeconds)})` : '-';
          process.stdout.write(`${row.csrName}\t${row.user}\t${row.groups.join(',') || '-'}\t${row.state}\t${expires}\n`);
        }
      } catch (err) {
        if (err instanceof CsrError) failed(err.message);
        throw err;
      }
    });
}

interface RequestCertFlags {
  group?: string[];
  expiration: string;
  approve?: boolean;
  wait: string;
  kubeconfig: string;
  output?: string;
  server?: string;
  ca: string;
  keyFile?: string;
  csrFile?: string;
  certFile?: string;
  csrName?: string;
  signerCa?: string;
}

/** A failure of the request itself (cluster said no, timed out, wrong certificate): one line, exit 1. */
function failed(message: string): never {
  process.stderr.write(`kube-front-proxy: ${message}\n`);
  process.exit(1);
}

function asConfig<T>(work: () => T): T {
  try {
    return work();
  } catch (err) {
    if (err instanceof CsrError) throw new ConfigError(err.message);
    throw err;
  }
}
