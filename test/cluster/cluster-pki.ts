// The real cluster's PKI: `pki init`'s kubeadm-named files (the product's own command, so the
// tests run on what operators get), plus the certificates kubeadm also makes that the proxy
// never needs: the admin's, the apiserver's kubelet client and the kubelet's serving certificate.
// User certificates are issued by the cluster CA, so the same certificate can be presented to
// the apiserver directly and through the proxy and the two identities compared.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { issueCertificate, type CertificateAndKey, type CertificateOptions } from '../../src/pki/certificates.js';
import { pkiInit } from '../../src/pki/init.js';

export interface ClusterPki {
  dir: string;
  /** `<dir>/<name>`, e.g. file('ca.crt'). */
  file(name: string): string;
  read(name: string): string;
  clusterCa: CertificateAndKey;
  /** A client certificate from the cluster CA, written as `<dir>/users/<file>.{crt,key}`. */
  issueUser(file: string, options: Omit<CertificateOptions, 'usages'>): Promise<CertificateAndKey & { certFile: string; keyFile: string }>;
}

export async function createClusterPki(dir: string): Promise<ClusterPki> {
  await pkiInit({ dir });
  const file = (name: string) => join(dir, name);
  const read = (name: string) => readFileSync(file(name), 'utf8');
  const clusterCa = { cert: read('ca.crt'), key: read('ca.key') };
  const write = (name: string, pair: CertificateAndKey) => {
    writeFileSync(file(`${name}.crt`), pair.cert, { mode: 0o644 });
    writeFileSync(file(`${name}.key`), pair.key, { mode: 0o600 });
  };
  const client = (commonName: string, organizations: string[]): CertificateOptions => ({ commonName, organizations, usages: ['clientAuth'] });
  // kubeadm's names for the same roles.
  const [admin, kubeletClient, kubeletServing, controllerManager] = await Promise.all([
    issueCertificate(clusterCa, client('kubernetes-admin', ['system:masters'])),
    issueCertificate(clusterCa, client('kube-apiserver-kubelet-client', ['kubeadm:cluster-admins'])),
    issueCertificate(clusterCa, { commonName: 'fake-kubelet', usages: ['serverAuth'], ipAddresses: ['127.0.0.1'], dnsNames: ['localhost'] }),
    issueCertificate(clusterCa, client('system:kube-controller-manager', [])),
  ]);
  write('admin', admin);
  write('apiserver-kubelet-client', kubeletClient);
  write('kubelet', kubeletServing);
  write('controller-manager', controllerManager);

  mkdirSync(file('users'), { recursive: true });
  return {
    dir,
    file,
    read,
    clusterCa,
    async issueUser(name, options) {
      const pair = await issueCertificate(clusterCa, { ...options, usages: ['clientAuth'] });
      const certFile = file(`users/${name}.crt`);
      const keyFile = file(`users/${name}.key`);
      writeFileSync(certFile, pair.cert, { mode: 0o644 });
      writeFileSync(keyFile, pair.key, { mode: 0o600 });
      return { ...pair, certFile, keyFile };
    },
  };
}
