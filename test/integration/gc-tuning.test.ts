// The CLI turns V8's incremental marking off (src/gc-tuning.ts), because streaming blobs made it
// run full mark-compacts back to back. Checked where it matters: a spawned `serve` streaming
// 256 MiB of blobs three times (cold, then from its store) runs no incrementally marked
// mark-compact, while the same mirror started with `node --incremental-marking` (which the CLI
// leaves alone) runs some.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli, spawnServe, writeConfigFile, type CliBuild } from '../support/cli.js';
import { MEDIA_TYPES, pushBlob, putManifest } from '../support/images.js';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';

const MIB = 1024 * 1024;
const LAYERS = 8;
const LAYER_BYTES = 32 * MIB;

describe('garbage collection while streaming cold blobs (spawned serve)', () => {
  let build: CliBuild;
  let registry: RegistryHandle;
  let work: string;
  const layers: Array<{ digest: string; sha: string }> = [];
  let manifestDigest: string;

  beforeAll(async () => {
    const building = buildCli();
    registry = await startRegistry();
    const t = MEDIA_TYPES.oci;
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const descriptors = [];
    for (let i = 0; i < LAYERS; i++) {
      const bytes = randomBytes(LAYER_BYTES);
      const digest = await pushBlob(registry.url, 'gc/big', bytes);
      layers.push({ digest, sha: createHash('sha256').update(bytes).digest('hex') });
      descriptors.push({ mediaType: t.layer, digest, size: bytes.length });
    }
    const configDigest = await pushBlob(registry.url, 'gc/big', config);
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: t.manifest, config: { mediaType: t.config, digest: configDigest, size: config.length }, layers: descriptors }),
    );
    manifestDigest = await putManifest(registry.url, 'gc/big', 'v1', manifest, t.manifest);
    work = await mkdtemp(join(tmpdir(), 'sm-gc-'));
    build = await building;
  }, 180_000);

  afterAll(async () => {
    await build?.cleanup();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Mark-compacts that finished incremental marking while a fresh mirror streamed every layer three times (cold, then stored). */
  async function incrementalMarkCompacts(name: string, nodeArgs: string[]): Promise<number> {
    const config = await writeConfigFile(join(work, `${name}.config.mjs`), {
      dataDir: join(work, name),
      upstreams: [{ url: registry.url }],
      platforms: ['linux/amd64'],
    });
    const serve = await spawnServe(build, { config, port: await freePort(), nodeArgs: ['--trace-gc', ...nodeArgs] });
    try {
      const m = await fetch(`${serve.url}/v2/gc/big/manifests/${manifestDigest}`, { headers: { accept: MEDIA_TYPES.oci.manifest } });
      expect(m.status).toBe(200);
      await m.arrayBuffer();
      for (const l of [...layers, ...layers, ...layers]) {
        const res = await fetch(`${serve.url}/v2/gc/big/blobs/${l.digest}`);
        expect(res.status).toBe(200);
        const hash = createHash('sha256');
        for await (const chunk of res.body!) hash.update(chunk);
        expect(hash.digest('hex')).toBe(l.sha);
      }
      // --trace-gc writes to stdout, between the JSON log lines. Loading the modules may take one
      // before the CLI's first line runs: only what follows start-up counts.
      const lines = serve.lines();
      const listening = lines.findIndex((l) => l.includes('sparse-mirror listening'));
      expect(listening).toBeGreaterThanOrEqual(0);
      return lines.slice(listening).filter((l) => l.includes('Mark-Compact') && l.includes('incremental marking')).length;
    } finally {
      serve.child.kill('SIGTERM');
      await serve.exited;
    }
  }

  it('runs no incrementally marked full collection by default', async () => {
    expect(await incrementalMarkCompacts('default', [])).toBe(0);
  }, 120_000);

  it('keeps incremental marking when node is started with --incremental-marking (and then it does run)', async () => {
    expect(await incrementalMarkCompacts('incremental', ['--incremental-marking'])).toBeGreaterThan(0);
  }, 120_000);
});
