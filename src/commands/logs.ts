// `kube-front-proxy logs`: the traffic-log viewer (observe/logview.ts) on the command line.

import { Option, type Command } from 'commander';
import { ConfigError } from '../config/index.js';
import { runLogs } from './logview.js';

export function registerLogs(program: Command): void {
  program
    .command('logs')
    .description('read a traffic log (a file, or standard input) and print it for people')
    .argument('[file]', 'the access-log file (--access-log); default: standard input')
    .option('-f, --follow', 'keep reading as the file grows, across rotation')
    .option('--user <name>', 'only this user (also their failed logins)')
    .option('--verb <verb>', 'only this Kubernetes verb (get, list, watch, create, ...)')
    .option('--resource <resource>', 'only this resource (pods, pods/log, deployments.apps, or a path)')
    .option('--namespace <namespace>', 'only this namespace')
    .option('--status <status>', '2xx, 3xx, 4xx, 5xx or an exact code')
    .option('--since <duration>', 'only lines newer than this (30s, 10m, 1h, 2d)')
    .option('--audit-id <id>', "only the request with this ID: the log's reqId (auditID in the audit format), the Audit-Id response header and the apiserver audit event's auditID")
    .addOption(new Option('-o, --output <format>', "table for people, wide for the table with each request's audit ID, json for the matching lines as they are").choices(['table', 'wide', 'json']).default('table'))
    .option('--stats', 'print a summary instead: by user, by verb, by status, and the slowest calls')
    .option('--no-color', 'no colours even on a terminal')
    .action(
      async (
        file: string | undefined,
        options: { follow?: boolean; user?: string; verb?: string; resource?: string; namespace?: string; status?: string; since?: string; auditId?: string; output: 'table' | 'wide' | 'json'; stats?: boolean; color: boolean },
      ) => {
        const controller = new AbortController();
        process.once('SIGINT', () => controller.abort());
        process.once('SIGTERM', () => controller.abort());
        try {
          process.exitCode = await runLogs(
            {
              file,
              follow: options.follow === true,
              user: options.user,
              verb: options.verb,
              resource: options.resource,
              namespace: options.namespace,
              status: options.status,
              since: options.since,
              auditId: options.auditId,
              output: options.output,
              stats: options.stats === true,
              ...(options.color ? {} : { color: false }),
            },
            process.stdout,
            process.stdin,
            controller.signal,
          );
        } catch (err) {
          throw new ConfigError(err instanceof Error ? err.message : String(err));
        }
      },
    );
}
