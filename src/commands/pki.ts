// `kube-front-proxy pki init | issue-user`: a development PKI with kubeadm's file names, and
// client certificates for users, generated in-process (no openssl).

import type { Command } from 'commander';
import { ConfigError } from '../config.js';
import { PkiError, issueUserCertificate, pkiInit } from '../pki/init.js';

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

function asConfigError(err: unknown): never {
  if (err instanceof PkiError) throw new ConfigError(err.message);
  throw err;
}

function positiveInteger(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new ConfigError(`${flag}: "${value}" is not a whole number of days`);
  return Number(value);
}

export function registerPki(program: Command): void {
  const pki = program.command('pki').description('generate certificates: a dev PKI, or client certificates for users');

  pki
    .command('init')
    .description('write a complete dev PKI with kubeadm\'s file names (keys 0600; never over existing files without --force)')
    .option('--dir <dir>', 'where to write', 'certs')
    .option('--san <name>', 'a DNS name or IP of the proxy\'s serving certificate (repeatable; default localhost and 127.0.0.1)', collect)
    .option('--apiserver-san <name>', 'another name for the demo apiserver\'s certificate, e.g. its compose service (repeatable)', collect)
    .option('--rsa', 'RSA 2048 keys instead of ECDSA P-256')
    .option('--days <n>', 'validity of the leaf certificates in days', '365')
    .option('--force', 'overwrite existing files')
    .action(async (flags: { dir: string; san?: string[]; apiserverSan?: string[]; rsa?: boolean; days: string; force?: boolean }) => {
      const result = await pkiInit({
        dir: flags.dir,
        sans: flags.san ?? ['localhost', '127.0.0.1'],
        apiserverSans: flags.apiserverSan ?? [],
        algorithm: flags.rsa ? 'rsa-2048' : 'ecdsa-p256',
        force: flags.force === true,
        days: positiveInteger('--days', flags.days),
      }).catch(asConfigError);
      process.stdout.write(`wrote ${result.written.length} files to ${flags.dir}\n`);
    });

  pki
    .command('issue-user')
    .description('sign a client certificate for a user with the user CA (CN = NAME, O = each group)')
    .argument('<name>', 'the user name')
    .option('--group <group>', 'a group (repeatable)', collect)
    .option('--dir <dir>', 'the PKI directory (user-ca.crt and user-ca.key)', 'certs')
    .option('--days <n>', 'validity in days', '365')
    .option('--force', 'overwrite an existing certificate for this user')
    .action(async (name: string, flags: { group?: string[]; dir: string; days: string; force?: boolean }) => {
      const written = await issueUserCertificate({ dir: flags.dir, name, groups: flags.group ?? [], days: positiveInteger('--days', flags.days), force: flags.force === true }).catch(asConfigError);
      process.stdout.write(`wrote ${written.cert} and ${written.key}\n`);
    });
}
