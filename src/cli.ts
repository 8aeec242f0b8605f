#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.js';
import { startMirror } from './serve.js';

const USAGE = `Usage: sparse-mirror <command> [options]

Commands:
  serve              Run the mirror (HTTP registry API)

Options:
  -c, --config FILE  Config file (default: mirror.config.ts, or $MIRROR_CONFIG)
  -h, --help         Show help

Environment: MIRROR_HOST, MIRROR_PORT, MIRROR_UPSTREAM, MIRROR_PLATFORMS, MIRROR_DATA,
MIRROR_OFFLINE, MIRROR_CONFIG override the config file.`;

/** Exit codes: 0 ok, 1 failed, 2 bad usage. */
async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  switch (command) {
    case 'serve':
      return serveCommand(rest);
    default:
      console.error(`sparse-mirror: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

async function serveCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log('Usage: sparse-mirror serve [--config FILE]\n\nRuns the mirror until SIGTERM or SIGINT.');
    return 0;
  }
  const config = await loadConfig({ path: values.config });
  const running = await startMirror(config);
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      running.log.info('shutting down', { signal });
      running.stop().then(resolve, resolve);
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof ConfigError) {
      console.error(`sparse-mirror: ${e.message}`);
      process.exit(1);
    }
    if ((e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (e as { code?: string }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      console.error(`sparse-mirror: ${(e as Error).message}`);
      process.exit(2);
    }
    console.error(`sparse-mirror: ${(e as Error).stack ?? e}`);
    process.exit(1);
  },
);
