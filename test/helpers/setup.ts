// Shared fixtures for end-to-end tests: a test PKI, a users file, and the proxy flags that tie
// them to a stand-in apiserver.

import bcrypt from 'bcryptjs';
import type tap from 'tap';
import { flagName, type RawSettings } from '../../src/config/index.js';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startApiServer, type ApiServer, type ApiServerOptions } from '../../standin/apiserver.js';
import { createTestPki, type TestPki } from './pki.js';
import { startProxy, type ProxyProcess } from './proxy.js';

/** The `t` a tap subtest callback receives. */
export type TapTest = Parameters<Parameters<typeof tap.test>[0]>[0];

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

/** The settings of a correctly configured proxy in front of the stand-in. */
export function proxySettings(pki: TestPki, options: ProxyFlagOptions): RawSettings {
  return {
    tlsCertFile: pki.path('proxy-server', 'crt'),
    tlsPrivateKeyFile: pki.path('proxy-server', 'key'),
    clientCaFile: options.clientCa === false ? '' : pki.path('user-ca', 'crt'),
    ...(options.usersFile ? { htpasswdFile: options.usersFile } : {}),
    upstreams: [options.upstream],
    upstreamCaFile: pki.path('cluster-ca', 'crt'),
    proxyClientCertFile: pki.path('front-proxy-client', 'crt'),
    proxyClientKeyFile: pki.path('front-proxy-client', 'key'),
    // One process (no --workers supervisor): tests read its pid, memory and descriptors.
    workers: 1,
    bcryptWorkers: 1,
    // Tests run many proxies at once: no fixed admin port.
    adminListen: '127.0.0.1:0',
  };
}

/** Settings as command-line flags (lists become repeated flags). */
export function settingsToFlags(settings: RawSettings): string[] {
  return Object.entries(settings).flatMap(([key, value]) => {
    const flag = flagName(key as keyof RawSettings);
    return (Array.isArray(value) ? value : [value]).flatMap((v) => [flag, String(v)]);
  });
}

/** The settings of proxySettings() as command-line flags. */
export function proxyFlags(pki: TestPki, options: ProxyFlagOptions): string[] {
  return settingsToFlags(proxySettings(pki, options));
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

export interface Stack {
  pki: TestPki;
  apiserver: ApiServer;
  proxy: ProxyProcess;
  usersFile: string;
}

export interface StackOptions {
  pki?: TestPki;
  /** Users-file lines; default: ALICE, CAROL and the htpasswd-made HTTPASSWD_USER. */
  users?: string[];
  /** More proxy flags (later ones win). */
  flags?: string[];
  /** Stand-in options beyond the PKI (e.g. websocketExec: false). */
  apiserver?: Partial<ApiServerOptions>;
  env?: NodeJS.ProcessEnv;
}

/** A stand-in apiserver and a proxy in front of it, both stopped when the test ends. */
export async function startStack(t: { teardown(fn: () => unknown): void }, options: StackOptions = {}): Promise<Stack> {
  const pki = options.pki ?? (await createTestPki());
  const usersFile = writeUsersFile(pki.dir, options.users ?? [bcryptLine(ALICE), bcryptLine(CAROL), apacheHtpasswdLine(HTPASSWD_USER)], `users-${randomUUID()}.htpasswd`);
  const apiserver = await startApiServer({ cert: pki.pem.apiserver.cert, key: pki.pem.apiserver.key, requestHeaderCA: pki.pem['front-proxy-ca'].cert, clientCA: pki.pem['cluster-ca'].cert, ...options.apiserver });
  t.teardown(() => apiserver.close());
  const proxy = await startProxy([...proxyFlags(pki, { upstream: apiserver.url, usersFile }), ...(options.flags ?? [])], options.env);
  t.teardown(() => proxy.stop());
  return { pki, apiserver, proxy, usersFile };
}
