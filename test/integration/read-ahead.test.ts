// Read-ahead against a real upstream behind a counting proxy: once the blob a client asked for is
// stored, the mirror fetches the next blob of that image it lacks (one ahead, in manifest order,
// then round to the config; beside a small blob, after a larger one has arrived), never for a
// manifest alone or a HEAD, never anything of a platform it does not carry, and not at all with
// `blobs.readAhead: false`. skopeo pulls through it.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { MirrorConfigInput } from '../../src/config/schema.js';
import { startCountingProxy, type CountingProxy } from '../support/counting-proxy.js';
import { MANIFEST_ACCEPT, pushMultiPlatformImage, sha256, type PushedChild, type PushedIndex } from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeoCopyToDir } from '../support/skopeo.js';
import { settled, startTestMirror, type TestMirror } from '../support/mirror.js';

let registry: RegistryHandle;
let proxy: CountingProxy;
let image: PushedIndex;
let amd64: PushedChild;
let others: PushedChild[];
const mirrors: TestMirror[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  registry = await startRegistry();
  image = await pushMultiPlatformImage(registry.url, 'library/ahead', '1.0', {
    format: 'oci',
    platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'],
    layersPerImage: 3,
    layerSize: 256 * 1024,
    rawLayers: true,
  });
  amd64 = image.children.find((c) => c.platform?.architecture === 'amd64')!;
  others = image.children.filter((c) => c !== amd64);
  proxy = await startCountingProxy(registry.url);
});

afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.stop({ removeData: true })));
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function freshMirror(config: Partial<MirrorConfigInput> = {}): Promise<TestMirror> {
  const m = await startTestMirror({ upstreams: [{ url: proxy.url }], ...config });
  mirrors.push(m);
  return m;
}

/** The index and one child's manifest, as a client resolving the image fetches them. */
async function resolveChild(m: TestMirror, index: PushedIndex, child: PushedChild): Promise<void> {
  for (const ref of [index.tag, child.digest]) {
    const res = await fetch(`${m.url}/v2/${index.repo}/manifests/${ref}`, { headers: { accept: MANIFEST_ACCEPT } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
}

const resolveAmd64 = (m: TestMirror): Promise<void> => resolveChild(m, image, amd64);

async function getBlob(m: TestMirror, digest: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Response> {
  const res = await fetch(`${m.url}/v2/${image.repo}/blobs/${digest}`, { method });
  expect(res.status).toBe(200);
  if (method === 'GET') expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(digest);
  return res;
}

const stored = (m: TestMirror, digest: string): boolean => m.running.mirror.catalogue.getBlob(digest) !== undefined;
const upstreamGets = (digest: string): number => proxy.count('GET', `/blobs/${digest}`);
const blobCache = (m: TestMirror, digest: string): string[] =>
  m.logs
    .map((l) => JSON.parse(l) as { msg: string; path?: string; cache?: string })
    .filter((l) => l.msg === 'request' && l.path?.endsWith(digest))
    .map((l) => l.cache!);

describe('read-ahead', () => {
  it('fetches the next blob the image lacks once the asked one is stored: one ahead, layers in order, then the config', async () => {
    const m = await freshMirror();
    await resolveAmd64(m);
    proxy.reset();
    const [l0, l1, l2] = amd64.layers.map((l) => l.digest) as [string, string, string];
    const config = amd64.configDigest;

    await getBlob(m, l0);
    await settled(m);
    expect([stored(m, l1), stored(m, l2), stored(m, config)]).toEqual([true, false, false]);

    // The client's next request finds it stored, and moves the read-ahead on by one.
    await getBlob(m, l1);
    await vi.waitFor(() => expect(blobCache(m, l1)).toEqual(['hit'])); // logged once the response is over
    await settled(m);
    expect([stored(m, l2), stored(m, config)]).toEqual([true, false]);

    await getBlob(m, l2);
    await settled(m);
    expect(stored(m, config)).toBe(true); // after the last layer: round to the config

    await getBlob(m, config);
    await settled(m);
    for (const d of [l0, l1, l2, config]) expect(upstreamGets(d), d).toBe(1);
    expect(proxy.count('GET', '/blobs/')).toBe(4);
    expect(m.logs.filter((l) => l.includes('"reading ahead"'))).toHaveLength(3);
  });

  it('reads nothing ahead for a manifest alone, or for a HEAD of a blob', async () => {
    const m = await freshMirror();
    proxy.reset();
    await resolveAmd64(m);
    await getBlob(m, amd64.layers[0]!.digest, 'HEAD');
    await settled(m);
    expect(proxy.count('GET', '/blobs/')).toBe(0);
  });

  it('with blobs.readAhead: false fetches only what clients ask for', async () => {
    const m = await freshMirror({ blobs: { readAhead: false } });
    await resolveAmd64(m);
    proxy.reset();
    await getBlob(m, amd64.layers[0]!.digest);
    await settled(m);
    expect(proxy.lines().filter((l) => l.includes('/blobs/'))).toEqual([`GET /v2/${image.repo}/blobs/${amd64.layers[0]!.digest}`]);
  });

  it('skopeo pulls linux/amd64 through it: every blob fetched upstream once, bytes equal, nothing of other platforms', async () => {
    const m = await freshMirror();
    proxy.reset();
    const dest = await mkdtemp(join(tmpdir(), 'read-ahead-'));
    dirs.push(dest);
    await skopeoCopyToDir(`docker://${m.host}/${image.repo}:${image.tag}`, dest, { os: 'linux', arch: 'amd64' });
    await settled(m);
    for (const d of [amd64.configDigest, ...amd64.layers.map((l) => l.digest)]) {
      expect(sha256(await readFile(join(dest, d.slice('sha256:'.length)))), d).toBe(d);
      expect(upstreamGets(d), d).toBe(1);
    }
    for (const c of others) {
      for (const d of [c.digest, c.configDigest, ...c.layers.map((l) => l.digest)]) expect(proxy.count('*', d), d).toBe(0);
    }
    expect(m.logs.some((l) => l.includes('"reading ahead"'))).toBe(true);
  });

  it('reads the next blob ahead beside a small one (a config, a tiny layer), not after it; a larger one waits (above)', async () => {
    // 16 KiB layers at 16 KiB/s: each takes a second to arrive.
    const tiny = await pushMultiPlatformImage(registry.url, 'library/ahead-tiny', '1.0', {
      format: 'oci',
      platforms: ['linux/amd64'],
      layersPerImage: 2,
      layerSize: 16 * 1024,
      rawLayers: true,
    });
    const slow = await startCountingProxy(registry.url, { bytesPerSecond: 16 * 1024 });
    try {
      const m = await freshMirror({ upstreams: [{ url: slow.url }] });
      const child = tiny.children[0]!;
      await resolveChild(m, tiny, child);
      const [l0, l1] = child.layers.map((l) => l.digest) as [string, string];
      let arrived = false;
      const body = fetch(`${m.url}/v2/${tiny.repo}/blobs/${l0}`)
        .then((r) => r.arrayBuffer())
        .then((b) => ((arrived = true), Buffer.from(b)));
      await vi.waitFor(() => expect(slow.count('GET', `/blobs/${l1}`)).toBe(1), { interval: 5, timeout: 900 });
      expect(arrived).toBe(false); // l0 was still arriving when l1 was asked for
      expect(sha256(await body)).toBe(l0);
      await settled(m);
      expect([stored(m, l0), stored(m, l1)]).toEqual([true, true]);
      expect(slow.count('GET', '/blobs/')).toBe(2);
    } finally {
      await slow.stop();
    }
  });

  it('reads nothing ahead once shutdown has begun: the download under way is stored, nothing new is fetched', async () => {
    // 256 KiB at 512 KiB/s: the layer is still arriving when the mirror is told to stop.
    const slow = await startCountingProxy(registry.url, { bytesPerSecond: 512 * 1024 });
    try {
      const m = await freshMirror({ upstreams: [{ url: slow.url }] });
      await resolveAmd64(m);
      const [l0, l1] = amd64.layers.map((l) => l.digest) as [string, string];
      const body = fetch(`${m.url}/v2/${image.repo}/blobs/${l0}`).then((r) => r.arrayBuffer(), () => undefined);
      await vi.waitFor(() => expect(m.running.mirror.blobs.inFlight()).toHaveLength(1), { interval: 5 });
      await m.stop();
      await body.catch(() => undefined);
      const hex = l0.slice('sha256:'.length);
      expect(sha256(await readFile(join(m.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex)))).toBe(l0);
      // The read-ahead of l1 would start as l0 commits, after shutdown had listed what to wait for.
      expect(slow.count('GET', `/blobs/${l1}`)).toBe(0);
      expect(m.logs.filter((l) => l.includes('"reading ahead"'))).toEqual([]);
    } finally {
      await slow.stop();
    }
  });
});
