import type { MirrorConfigInput } from './schema.js';

/** Types a mirror.config.ts; the config is validated when the mirror starts. */
export function defineConfig(config: MirrorConfigInput): MirrorConfigInput {
  return config;
}

export type { MirrorConfigInput };
