// A fetched blob's flush (then its rename and record) waits until no blob has been written or sent
// for blobs.flushQuietMs (the default); clients are served meanwhile and never wait for it. Real
// upstream (docker-registry), in-process mirror.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDigest } from '../../src/oci/digest.js';
import { MANIFEST_ACCEPT, pushSinglePlatformImage } from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';

let upstream: RegistryHandle;
const mirrors: TestMirror[] = [];

beforeAll(async () => {
  upstream = await startRegistry();
});
afterAll(async () => {
  for (const m of mirrors) await m.stop({ removeData: true });
  await upstream?.stop();
});

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function get(url: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url, { headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

async function inFlightGauge(m: TestMirror): Promise<number> {
  const text = await (await fetch(`${m.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('sparse_mirror_blob_downloads_in_flight '));
  if (!line) throw new Error('no sparse_mirror_blob_downloads_in_flight gauge in /metrics');
  return Number(line.split(' ')[1]);
}

async function pullOneLayer(m: TestMirror, repo: string) {
  const image = await pushSinglePlatformImage(upstream.url, repo, '1.0', { layersPerImage: 1, layerSize: 512 * 1024 });
  expect((await get(`${m.url}/v2/${repo}/manifests/1.0`)).status).toBe(200);
  const digest = image.layers[0]!.digest;
  const got = await get(`${m.url}/v2/${repo}/blobs/${digest}`);
  expect(got.status).toBe(200);
  expect(sha256(got.body)).toBe(digest);
  const parsed = parseDigest(digest);
  if (!parsed.ok) throw new Error(parsed.reason);
  const recorded = () => m.running.mirror.catalogue.getBlob(digest) !== undefined && existsSync(m.running.mirror.store.pathOf(parsed.digest));
  return { digest, recorded, servedAt: performance.now() };
}

async function until(cond: () => boolean, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return performance.now();
}

describe('deferred flush of fetched blobs', () => {
  it('serves the blob at once, and records it only once blobs have been quiet for flushQuietMs', async () => {
    const m = await startTestMirror({ upstreams: [{ url: upstream.url }], blobs: { flushQuietMs: 400, readAhead: false } });
    mirrors.push(m);
    const pull = await pullOneLayer(m, 'flush/deferred');
    expect(pull.recorded()).toBe(false); // verified and served, not yet flushed
    expect(await inFlightGauge(m)).toBe(1);
    // Asked again meanwhile: served from the verified temp file, upstream not asked again.
    const again = await get(`${m.url}/v2/flush/deferred/blobs/${pull.digest}`);
    expect(sha256(again.body)).toBe(pull.digest);
    const lastSend = performance.now();
    const recordedAt = await until(pull.recorded, 10_000);
    expect(recordedAt - lastSend).toBeGreaterThanOrEqual(350);
    expect(await inFlightGauge(m)).toBe(0);
    expect(m.running.mirror.store.flushGate.pending).toBe(0);
  });

  it('flushes at once with flushQuietMs 0', async () => {
    const m = await startTestMirror({ upstreams: [{ url: upstream.url }], blobs: { flushQuietMs: 0, readAhead: false } });
    mirrors.push(m);
    const pull = await pullOneLayer(m, 'flush/at-once');
    const recordedAt = await until(pull.recorded, 10_000);
    expect(recordedAt - pull.servedAt).toBeLessThan(300);
  });

  it('runs put-off flushes when the mirror stops: everything served is stored', async () => {
    const m = await startTestMirror({ upstreams: [{ url: upstream.url }], blobs: { flushQuietMs: 60_000, readAhead: false } });
    const pull = await pullOneLayer(m, 'flush/on-stop');
    expect(pull.recorded()).toBe(false);
    const t0 = performance.now();
    await m.stop();
    expect(performance.now() - t0).toBeLessThan(5_000); // not the 5 s cap, let alone a minute
    const again = await startTestMirror({ upstreams: [{ url: upstream.url }], dataDir: m.dataDir, offline: true });
    mirrors.push(again);
    const served = await get(`${again.url}/v2/flush/on-stop/blobs/${pull.digest}`);
    expect(served.status).toBe(200);
    expect(sha256(served.body)).toBe(pull.digest);
  });
});
