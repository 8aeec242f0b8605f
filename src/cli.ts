#!/usr/bin/env node
import { ConfigError } from './config/load.js';
import { StoreMissingError, UsageError, type Command } from './commands/command.js';
import { exportCommand } from './commands/export.js';
import { gcCommand } from './commands/gc.js';
import { importCommand } from './commands/import.js';
import { lsCommand } from './commands/ls.js';
import { prefetchCommand } from './commands/prefetch.js';
import { serveCommand } from './commands/serve.js';
import { verifyCommand } from './commands/verify.js';
import { incrementalMarking } from './gc-tuning.js';
import { BucketUnavailableError } from './store/bucket.js';

const COMMANDS: Command[] = [serveCommand, prefetchCommand, lsCommand, gcCommand, verifyCommand, exportCommand, importCommand];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `Usage: sparse-mirror <command> [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

Run 'sparse-mirror <command> --help' for a command's options.
Every command reads mirror.config.ts (or --config FILE, or $MIRROR_CONFIG); MIRROR_HOST,
MIRROR_PORT, MIRROR_UPSTREAM, MIRROR_PLATFORMS, MIRROR_DATA and MIRROR_OFFLINE override it.
Exit codes: 0 ok, 1 failed, 2 bad usage.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '-h' || name === '--help' || name === 'help') {
    console.log(usage());
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    console.error(name ? `sparse-mirror: unknown command "${name}"\n\n${usage()}` : usage());
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    const code = (e as { code?: string }).code ?? '';
    if (e instanceof UsageError || code.startsWith('ERR_PARSE_ARGS')) {
      console.error(`sparse-mirror ${command.name}: ${(e as Error).message}\n\n${command.usage}`);
      return 2;
    }
    if (e instanceof ConfigError || e instanceof StoreMissingError || e instanceof BucketUnavailableError) {
      console.error(`sparse-mirror: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

incrementalMarking.alwaysOff(); // until `serve` says otherwise: the other commands stream blobs throughout
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`sparse-mirror: ${(e as Error).stack ?? String(e)}`);
    process.exitCode = 1;
  },
);
