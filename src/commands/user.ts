// `kube-front-proxy user add | set-password | remove | list`: edit the users file the proxy
// reads (and reloads on change). Passwords come from a prompt or standard input, never argv.

import type { Command } from 'commander';
import { ConfigError } from '../config.js';
import { DEFAULT_COST, UsersFileError, addUser, listUsers, readPassword, removeUser, setPassword } from '../auth/users-file.js';


interface FileFlags {
  htpasswdFile?: string;
}

function usersFile(flags: FileFlags): string {
  const path = flags.htpasswdFile ?? process.env.KUBE_FRONT_PROXY_HTPASSWD_FILE;
  if (!path) throw new ConfigError('--htpasswd-file: required (or KUBE_FRONT_PROXY_HTPASSWD_FILE)');
  return path;
}

function groupsOf(value: string | undefined): string[] | undefined {
  return value === undefined ? undefined : value.split(',').map((g) => g.trim()).filter(Boolean);
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

  withFile(user.command('set-password').description('change a user\'s password (and groups, with --groups)').argument('<name>'))
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
}
