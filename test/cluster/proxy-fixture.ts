// The proxy as an operator runs it in front of the real control plane: the PKI `pki init` wrote,
// the cluster CA for client certificates (kubeadm's default), a users file; and kubeconfigs
// through it for password and certificate users.
import { randomUUID } from 'node:crypto';
import { Agent } from 'undici';
import { bcryptLine, settingsToFlags, writeUsersFile, type TestUser } from '../helpers/setup.js';
import { writeKubeconfig } from '../helpers/kubectl.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import type { RawSettings } from '../../src/config/index.js';
import type { ControlPlane } from './control-plane.js';

export const ALICE: TestUser = { name: 'alice', password: 'alice-password-1', groups: ['devs', 'ops'] };
export const CAROL: TestUser = { name: 'carol', password: 'carol-password-2', groups: [] };

export interface ProxyInFront {
  proxy: ProxyProcess;
  usersFile: string;
  /** A kubeconfig through the proxy for a password user. */
  passwordKubeconfig(user: TestUser): string;
  /** Issues a certificate (cluster CA; CN = name, O = groups) and a kubeconfig through the proxy with it. */
  certificateKubeconfig(name: string, groups: string[]): Promise<{ kubeconfig: string; cert: string; key: string }>;
  /** An undici Agent that trusts the proxy's serving CA (and presents a certificate if given). */
  client(identity?: { cert: string; key: string }): Agent;
}

export interface ProxyInFrontOptions {
  users?: TestUser[];
  /** Settings beyond the defaults here (later flags win). */
  settings?: RawSettings;
  flags?: string[];
}

export function proxySettingsFor(cp: ControlPlane, usersFile: string): RawSettings {
  const f = cp.pki.file;
  return {
    tlsCertFile: f('proxy.crt'),
    tlsPrivateKeyFile: f('proxy.key'),
    clientCaFile: f('ca.crt'),
    htpasswdFile: usersFile,
    upstreams: cp.apiservers.map((a) => a.url),
    upstreamCaFile: f('ca.crt'),
    proxyClientCertFile: f('front-proxy-client.crt'),
    proxyClientKeyFile: f('front-proxy-client.key'),
    adminListen: '127.0.0.1:0',
    workers: 1,
  };
}

export async function startProxyInFront(t: { teardown(fn: () => unknown): void }, cp: ControlPlane, options: ProxyInFrontOptions = {}): Promise<ProxyInFront> {
  const users = options.users ?? [ALICE, CAROL];
  const usersFile = writeUsersFile(
    cp.dir,
    users.map((u) => bcryptLine(u)),
    `users-${randomUUID()}.htpasswd`,
  );
  const settings = { ...proxySettingsFor(cp, usersFile), ...options.settings };
  const proxy = await startProxy([...settingsToFlags(settings), ...(options.flags ?? [])]);
  t.teardown(() => proxy.stop());
  const proxyCa = cp.pki.read('proxy-ca.crt');
  return {
    proxy,
    usersFile,
    passwordKubeconfig: (user) => writeKubeconfig(proxy.url, proxyCa, { username: user.name, password: user.password }),
    async certificateKubeconfig(name, groups) {
      const pair = await cp.pki.issueUser(`${name}-${randomUUID().slice(0, 8)}`, { commonName: name, organizations: groups });
      return { kubeconfig: writeKubeconfig(proxy.url, proxyCa, { clientCertificate: pair.cert, clientKey: pair.key }), cert: pair.cert, key: pair.key };
    },
    client: (identity) => new Agent({ connect: { ca: proxyCa, servername: 'localhost', ...identity }, keepAliveTimeout: 10, keepAliveMaxTimeout: 10 }),
  };
}
