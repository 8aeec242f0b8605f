import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../../src/config/load.js';
import type { MirrorConfigInput } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { startMirror, type RunningMirror } from '../../src/serve.js';

export interface TestMirror {
  url: string;
  host: string;
  dataDir: string;
  running: RunningMirror;
  logs: string[];
  /** Stops the server; the store stays unless `removeData` is set. */
  stop(opts?: { removeData?: boolean }): Promise<void>;
}

/** An in-process mirror on a free loopback port with its own temporary store. */
export async function startTestMirror(input: Partial<MirrorConfigInput> & Pick<MirrorConfigInput, 'upstreams'>): Promise<TestMirror> {
  const dataDir = input.dataDir ?? (await mkdtemp(join(tmpdir(), 'sparse-mirror-data-')));
  // Flushes at once unless a test asks otherwise: most tests look at the store right after a pull
  // (test/integration/deferred-flush.test.ts covers the deferred flush, the default).
  const blobs = { flushQuietMs: 0, ...input.blobs };
  const config = validateConfig({ host: '127.0.0.1', port: 0, platforms: ['linux/amd64', 'linux/arm64'], ...input, blobs, dataDir });
  const logs: string[] = [];
  const running = await startMirror(config, createLogger('debug', (line) => logs.push(line)));
  const host = new URL(running.server.url).host;
  return {
    url: running.server.url,
    host,
    dataDir,
    running,
    logs,
    stop: async (opts = {}) => {
      await running.stop();
      if (opts.removeData) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Waits until the in-process mirror has no blob download in flight (committed or given up). */
export async function settled(m: TestMirror, timeoutMs = 15_000): Promise<void> {
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const inFlight = m.running.mirror.blobs.inFlight();
    if (inFlight.length === 0) break;
    await Promise.race([Promise.allSettled(inFlight.map((d) => d.finished)), pause(200)]);
  }
  await pause(20);
}
