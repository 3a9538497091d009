// A kubeconfig whose server is the proxy: the proxy's CA embedded, and the user's credentials
// as kubectl expects them (username/password, or an embedded client certificate and key).

import { stringify } from 'yaml';

export interface KubeconfigCredentials {
  username?: string;
  password?: string;
  /** PEM */
  clientCertificate?: string;
  /** PEM */
  clientKey?: string;
  /** A bearer token (e.g. a ServiceAccount's, for --token-passthrough). */
  token?: string;
}

export interface KubeconfigOptions {
  /** https://host:port of the proxy. */
  server: string;
  /** PEM of the CA that signed the proxy's serving certificate. */
  certificateAuthority: string;
  user: string;
  credentials: KubeconfigCredentials;
  /** Context, cluster and user entry name (default "kube-front-proxy"). */
  name?: string;
  namespace?: string;
}

const base64 = (pem: string) => Buffer.from(pem).toString('base64');

export function buildKubeconfig(options: KubeconfigOptions): string {
  const name = options.name ?? 'kube-front-proxy';
  const { username, password, clientCertificate, clientKey, token } = options.credentials;
  const user: Record<string, string> = {};
  if (username !== undefined) user.username = username;
  if (password !== undefined) user.password = password;
  if (clientCertificate !== undefined) user['client-certificate-data'] = base64(clientCertificate);
  if (clientKey !== undefined) user['client-key-data'] = base64(clientKey);
  if (token !== undefined) user.token = token;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: { server: options.server, 'certificate-authority-data': base64(options.certificateAuthority) } }],
    users: [{ name: `${options.user}@${name}`, user }],
    contexts: [{ name, context: { cluster: name, user: `${options.user}@${name}`, ...(options.namespace ? { namespace: options.namespace } : {}) } }],
    'current-context': name,
  });
}
