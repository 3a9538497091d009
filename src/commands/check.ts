// `kube-front-proxy check`: the start-up preflight (upstream/preflight.ts) on its own, run with
// serve's command line. Prints one line per upstream when all matches, and one per problem or note.
// Exit 0: every upstream matches; 1: something does not, or could not be read; 2: bad settings.

import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError, fileErrorText, loadConfig } from '../config/index.js';
import { configSources } from '../config/command-line.js';
import { loadMaterial } from '../material/material.js';
import { MATCHES, preflight } from '../upstream/preflight.js';
import type { UpstreamTls } from '../upstream/tls.js';

export function registerCheck(program: Command): void {
  const serve = program.commands.find((c) => c.name() === 'serve');
  if (!serve) throw new Error('registerCheck needs serve registered first');
  const check = program
    .command('check')
    .description("compare each apiserver's requestheader settings (ConfigMap kube-system/extension-apiserver-authentication) with the proxy's front-proxy certificate and identity headers; takes serve's flags")
    .option('--kubeconfig <file>', "when an apiserver refuses the proxy's front-proxy certificate, read its settings with this kubeconfig's client certificate instead (e.g. /etc/kubernetes/admin.conf) to say why");
  // The same flags, config file and environment as serve: an operator runs check with serve's command line.
  for (const option of serve.options) check.addOption(option);
  check.action(async (options: Record<string, unknown>) => {
    const config = loadConfig(configSources(options, process.env));
    const upstream = loadMaterial(config).upstream;
    const kubeconfig = options.kubeconfig as string | undefined;
    // Same apiservers, same verification of their certificates; only the client identity differs.
    const fallback: UpstreamTls | undefined = kubeconfig ? { ...upstream, ...kubeconfigCertificate(kubeconfig) } : undefined;
    let ok = true;
    for (const { upstream: origin, findings } of await preflight(config.upstreams, upstream, { fallback })) {
      const problems = findings.filter((f) => f.severity !== 'note');
      if (problems.length === 0) process.stdout.write(`${origin}: ${MATCHES}\n`);
      for (const finding of findings) process.stdout.write(`${origin}: ${finding.text}\n`);
      ok &&= problems.length === 0;
    }
    process.exitCode = ok ? 0 : 1;
  });
}

interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name: string; context?: { user?: string } }[];
  users?: { name: string; user?: Record<string, string | undefined> }[];
}

/** The current user's client certificate and key (data or files, as kubectl reads them). */
function kubeconfigCertificate(path: string): { cert: Buffer; key: Buffer } {
  const fail = (problem: string): never => {
    throw new ConfigError(`--kubeconfig ${path}: ${problem}`);
  };
  let doc: Kubeconfig;
  try {
    doc = (parseYaml(readFileSync(path, 'utf8')) ?? {}) as Kubeconfig;
  } catch (err) {
    return fail((err as NodeJS.ErrnoException).code ? fileErrorText(err) : `not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const userName = doc.contexts?.find((c) => c.name === doc['current-context'])?.context?.user;
  const user = doc.users?.find((u) => u.name === userName)?.user ?? {};
  // Relative file names are relative to the kubeconfig, as kubectl resolves them.
  const read = (dataKey: string, fileKey: string): Buffer | undefined => {
    const data = user[dataKey];
    const file = user[fileKey];
    if (data) return Buffer.from(data, 'base64');
    if (!file) return undefined;
    try {
      return readFileSync(resolve(dirname(path), file));
    } catch (err) {
      return fail(`${fileKey} ${file}: ${fileErrorText(err)}`);
    }
  };
  const cert = read('client-certificate-data', 'client-certificate');
  const key = read('client-key-data', 'client-key');
  if (!cert || !key) return fail(`the current context's user ${userName ?? '(none)'} has no client certificate and key (check reads with certificate users only, as kubeadm's admin.conf)`);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    return fail(`the client certificate and key of user ${userName ?? '(none)'} cannot be used: ${(err as Error).message}`);
  }
  return { cert, key };
}
