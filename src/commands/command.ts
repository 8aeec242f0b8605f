import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadConfig } from '../config/load.js';
import type { MirrorConfig } from '../config/schema.js';
import { createLogger, type Logger } from '../log.js';
import { Mirror } from '../mirror/mirror.js';
import type { Bucket } from '../store/bucket.js';

/** A CLI command. `run` returns the exit code: 0 ok, 1 failed, 2 bad usage (see UsageError). */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(args: string[]): Promise<number>;
}

/** Bad command-line usage: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A command that reads the store was pointed at a directory that holds none. */
export class StoreMissingError extends Error {
  override name = 'StoreMissingError';
}

/** The options every store command takes. */
export const COMMON_OPTIONS = {
  config: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
} as const;

export interface CommandContext {
  config: MirrorConfig;
  mirror: Mirror;
  log: Logger;
  /** The shared tier, when storage.s3 is set. */
  bucket?: Bucket;
  close(): Promise<void>;
}

/** Loads the config (file + MIRROR_* overrides) and opens the store the way `serve` does. */
export async function openStore(
  configPath: string | undefined,
  opts: { offline?: boolean; mustExist?: boolean } = {},
): Promise<CommandContext> {
  const config = await loadConfig({ path: configPath });
  if (opts.offline) config.offline = true;
  // A mistyped MIRROR_DATA must not look like an empty mirror. With a bucket, an empty disk is a
  // replica that has not served anything yet: the bucket holds the content.
  if (opts.mustExist && !config.storage.s3 && !existsSync(join(resolve(config.dataDir), 'mirror.db'))) {
    throw new StoreMissingError(`no store at ${resolve(config.dataDir)} (no mirror.db there); check dataDir / MIRROR_DATA`);
  }
  // Commands print their own output; the log (stderr) carries only warnings and errors.
  const log = createLogger(config.log.level === 'debug' ? 'debug' : 'warn', (line) => process.stderr.write(line));
  const mirror = await Mirror.open(config, log);
  return { config, mirror, log, bucket: mirror.shared?.bucket, close: () => mirror.close() };
}

export { formatBytes } from '../format-bytes.js';
