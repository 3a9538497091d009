// Shared fixtures for end-to-end tests: a test PKI, a users file, and the proxy flags that tie
// them to a stand-in apiserver.

import bcrypt from 'bcryptjs';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestPki } from './pki.js';

export interface TestUser {
  name: string;
  password: string;
  groups: string[];
}

export const ALICE: TestUser = { name: 'alice', password: 'correct horse battery staple', groups: ['devs', 'ops'] };
export const CAROL: TestUser = { name: 'carol', password: 'carol-Pa55:with:colons', groups: [] };
/** Her hash comes from Apache's `htpasswd -B` ($2y$), the tool operators already use. */
export const HTPASSWD_USER: TestUser = { name: 'dave', password: 'from-apache-htpasswd', groups: ['admins'] };

/** Cost 4 keeps tests fast; production files use 10-12. */
export function bcryptLine(user: TestUser, cost = 4): string {
  const groups = user.groups.length > 0 ? `:${user.groups.join(',')}` : '';
  return `${user.name}:${bcrypt.hashSync(user.password, cost)}${groups}`;
}

/** A hash made by Apache's htpasswd; the test fails (does not skip) when the tool is missing. */
export function apacheHtpasswdLine(user: TestUser): string {
  let line: string;
  try {
    line = execFileSync('htpasswd', ['-nbB', '-C', '4', user.name, user.password], { encoding: 'utf8' }).trim();
  } catch (err) {
    throw new Error(`Apache's htpasswd is needed for this test (Debian package apache2-utils; .ci/run installs it): ${(err as Error).message}`);
  }
  if (!line.includes(':$2y$')) throw new Error(`htpasswd -B did not produce a $2y$ hash: ${line}`);
  return user.groups.length > 0 ? `${line}:${user.groups.join(',')}` : line;
}

export function writeUsersFile(dir: string, lines: string[], name = 'users.htpasswd'): string {
  const path = join(dir, name);
  writeFileSync(path, `# kube-front-proxy test users\n${lines.join('\n')}\n`, { mode: 0o600 });
  return path;
}

export interface ProxyFlagOptions {
  upstream: string;
  usersFile?: string;
  clientCa?: boolean;
}

/** The flags of a correctly configured proxy in front of the stand-in. */
export function proxyFlags(pki: TestPki, options: ProxyFlagOptions): string[] {
  return [
    '--tls-cert-file', pki.path('proxy-server', 'crt'),
    '--tls-private-key-file', pki.path('proxy-server', 'key'),
    ...(options.clientCa === false ? ['--client-ca-file', ''] : ['--client-ca-file', pki.path('user-ca', 'crt')]),
    ...(options.usersFile ? ['--htpasswd-file', options.usersFile] : []),
    '--upstream', options.upstream,
    '--upstream-ca-file', pki.path('cluster-ca', 'crt'),
    '--proxy-client-cert-file', pki.path('front-proxy-client', 'crt'),
    '--proxy-client-key-file', pki.path('front-proxy-client', 'key'),
    '--bcrypt-workers', '1',
  ];
}

/** Replaces the value of one flag in a flag list (for one-thing-wrong configurations). */
export function withFlag(flags: string[], flag: string, value: string | undefined): string[] {
  const out: string[] = [];
  for (let i = 0; i < flags.length; i++) {
    if (flags[i] === flag) {
      i++;
      continue;
    }
    out.push(flags[i] as string);
  }
  return value === undefined ? out : [...out, flag, value];
}
