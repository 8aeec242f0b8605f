import { ConfigError } from '../config/load.js';
import { BucketUnavailableError } from '../store/bucket.js';
import { StoreMissingError, UsageError, type Command } from './command.js';
import { exportCommand } from './export.js';
import { gcCommand } from './gc.js';
import { importCommand } from './import.js';
import { lsCommand } from './ls.js';
import { prefetchCommand } from './prefetch.js';
import { serveCommand } from './serve.js';
import { verifyCommand } from './verify.js';

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

/** Runs the command `argv` names; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
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
