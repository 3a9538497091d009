#!/usr/bin/env node
// The kube-front-proxy command. Start-up problems and bad arguments end the process with exit
// code 2 and one line on stderr that names the setting, the file and the problem.

import { Command, CommanderError } from 'commander';
import { registerCheck } from './commands/check.js';
import { registerKubeconfig } from './commands/kubeconfig.js';
import { registerLogs } from './commands/logs.js';
import { registerPki } from './commands/pki.js';
import { registerServe } from './commands/serve.js';
import { registerUser } from './commands/user.js';
import { ConfigError } from './config/index.js';

const EXIT_CONFIG = 2;

function fatal(message: string): never {
  process.stderr.write(`kube-front-proxy: ${message}\n`);
  process.exit(EXIT_CONFIG);
}

function buildProgram(): Command {
  const program = new Command('kube-front-proxy')
    .description('Authenticating reverse proxy for kube-apiserver: basic auth or client certificates in, front-proxy mutual TLS and X-Remote-* identity headers out.')
    .showHelpAfterError()
    .exitOverride();
  registerServe(program);
  registerCheck(program);
  registerLogs(program);
  registerKubeconfig(program);
  registerPki(program);
  registerUser(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) fatal(err.message);
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG);
    throw err;
  }
}

await main(process.argv);
