import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { startMirror } from '../serve.js';
import { COMMON_OPTIONS, type Command } from './command.js';

const USAGE = `Usage: sparse-mirror serve [--config FILE]

Runs the mirror (the registry API) until SIGTERM or SIGINT, then shuts down cleanly:
stops accepting, lets downloads in flight finish (or aborts them after 10 s), closes the store.`;

export const serveCommand: Command = {
  name: 'serve',
  summary: 'Run the mirror',
  usage: USAGE,
  async run(args) {
    const { values } = parseArgs({ args, options: COMMON_OPTIONS });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const config = await loadConfig({ path: values.config });
    const running = await startMirror(config);
    await new Promise<void>((resolve) => {
      const shutdown = (signal: string) => {
        running.log.info('shutting down', { signal });
        running.stop().then(resolve, (e: Error) => {
          running.log.error('shutdown failed', { error: e.message });
          resolve();
        });
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
    });
    return 0;
  },
};
