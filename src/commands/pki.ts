// `kube-front-proxy pki init | issue-user | revoke | crl`: a development PKI with kubeadm's file
// names, client certificates for users, and the users CA's revocation list, generated
// in-process (no openssl).

import type { Command } from 'commander';
import { ConfigError } from '../config/index.js';
import { CRL_FILE, renewCrl, revokeCertificate, showCrl, type CrlSummary } from '../pki/crl.js';
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
    .description("write a complete dev PKI with kubeadm's file names (keys 0600; never over existing files without --force)")
    .option('--dir <dir>', 'where to write', 'certs')
    .option('--san <name>', "a DNS name or IP of the proxy's serving certificate (repeatable; default localhost and 127.0.0.1)", collect)
    .option('--apiserver-san <name>', "another name for the demo apiserver's certificate, e.g. its compose service (repeatable)", collect)
    .option('--rsa', 'RSA 2048 keys instead of ECDSA P-256')
    .option('--days <n>', 'validity of the leaf certificates in days', '365')
    .option('--force', 'overwrite existing files')
    .addHelpText('after', `\nIt also writes an empty, signed ${CRL_FILE} (valid for --days), for serve --client-crl-file.`)
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

  const crlDaysHelp = 'the CRL is valid for this many days: re-sign it before then (pki crl --renew, or any pki revoke), because the proxy refuses an expired CRL';

  pki
    .command('revoke')
    .description(
      `add a user certificate to the users CA's revocation list (<dir>/${CRL_FILE}, created if missing) and re-sign it; a proxy started with --client-crl-file on it refuses the certificate within seconds, on open connections too`,
    )
    .requiredOption('--cert <file>', 'the certificate to revoke (PEM or DER), issued by <dir>/user-ca.crt')
    .option('--dir <dir>', 'the PKI directory (user-ca.crt, user-ca.key, user-ca.crl)', 'certs')
    .option('--days <n>', crlDaysHelp, '365')
    .addHelpText('after', '\nRevoking a certificate that is already on the list keeps its revocation date and only re-signs the list.')
    .action(async (flags: { cert: string; dir: string; days: string }) => {
      const result = await revokeCertificate({ dir: flags.dir, cert: flags.cert, days: positiveInteger('--days', flags.days) }).catch(asConfigError);
      const what = `${result.subject} (serial ${result.serial})`;
      const head = result.alreadyRevokedAt ? `${what} was already revoked on ${result.alreadyRevokedAt.toISOString()}; re-signed ${result.path}` : `revoked ${what} in ${result.path}`;
      process.stdout.write(`${head}: ${describe(result)}; re-sign it before then with "kube-front-proxy pki crl --renew --dir ${flags.dir}"\n`);
    });

  pki
    .command('crl')
    .description(`show the users CA's revocation list (<dir>/${CRL_FILE}): its revoked serials and when it must be re-signed; --renew re-signs it`)
    .option('--dir <dir>', 'the PKI directory (user-ca.crt, user-ca.key, user-ca.crl)', 'certs')
    .option('--renew', 're-sign the list (next CRL number, fresh dates; an empty list if there is none) before showing it')
    .option('--days <n>', `with --renew: ${crlDaysHelp}`, '365')
    .action(async (flags: { dir: string; renew?: boolean; days: string }) => {
      const days = positiveInteger('--days', flags.days);
      const crl = await (flags.renew ? renewCrl({ dir: flags.dir, days }) : showCrl(flags.dir)).catch(asConfigError);
      const lines = [`${flags.renew ? 'wrote ' : ''}${crl.path}: ${describe(crl)}`];
      if (crl.nextUpdate && crl.nextUpdate.getTime() < Date.now()) {
        lines.push(`EXPIRED: the proxy refuses this CRL; re-sign it with "kube-front-proxy pki crl --renew --dir ${flags.dir}"`);
      }
      // A CRL names serials, not people: match them with `openssl x509 -noout -serial -in CERT`.
      if (crl.entries.length > 0) {
        lines.push('SERIAL\tREVOKED');
        for (const entry of crl.entries) lines.push(`${entry.serialNumber}\t${entry.revocationDate.toISOString()}`);
      }
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}

function describe(crl: CrlSummary): string {
  const count = crl.entries.length === 1 ? '1 revoked certificate' : `${crl.entries.length} revoked certificates`;
  const number = crl.crlNumber === undefined ? '' : `CRL number ${crl.crlNumber}, `;
  return `${number}${count}, signed by ${crl.issuer} on ${crl.thisUpdate.toISOString()}, next update ${crl.nextUpdate?.toISOString() ?? 'not set'}`;
}
