#!/usr/bin/env node
// The CLI's entry: only what must come first is imported here, the commands after.
import { configFileFor, preloadConfigFile } from './config/config-file.js';
import { incrementalMarking } from './gc-tuning.js';

const argv = process.argv.slice(2);
// The config file starts loading now, in its worker, while this thread loads the commands and the
// mirror (~0.5 s of modules): serve's start-up no longer waits for the two one after the other.
if (argv[0] && !argv[0].startsWith('-') && argv[0] !== 'help') preloadConfigFile(configFileFor(argv.slice(1), process.env, process.cwd()));
incrementalMarking.alwaysOff(); // until `serve` says otherwise: the other commands stream blobs throughout
const { main } = await import('./commands/main.js');
main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`sparse-mirror: ${(e as Error).stack ?? String(e)}`);
    process.exitCode = 1;
  },
);
