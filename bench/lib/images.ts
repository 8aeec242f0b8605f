// Test images for the benchmark, pushed over the registry API with the test suite's helpers.
// Layers are raw random bytes (incompressible, nothing on the path unpacks them).
import { randomBytes } from 'node:crypto';
import { MEDIA_TYPES, SEVEN_PLATFORMS, parsePlatform, pushBlob, putManifest, sha256 } from '../../test/support/images.js';

export { MEDIA_TYPES, SEVEN_PLATFORMS, pushMultiPlatformImage } from '../../test/support/images.js';

export interface Image {
  repo: string;
  digest: string;
  mediaType: string;
  size: number;
  platform: string;
  configDigest: string;
  layers: Array<{ digest: string; size: number }>;
}

export interface Index {
  repo: string;
  tag: string;
  digest: string;
  mediaType: string;
  bytes: Buffer;
  children: Image[];
}

/** Random bytes in 64 MiB pieces (randomBytes caps a single call at 2 GiB; this keeps peaks small). */
function randomBlob(size: number): Buffer {
  const piece = 64 * 1024 * 1024;
  if (size <= piece) return randomBytes(size);
  const parts: Buffer[] = [];
  for (let done = 0; done < size; done += piece) parts.push(randomBytes(Math.min(piece, size - done)));
  return Buffer.concat(parts, size);
}

/** An image manifest (by digest, optionally also tagged) with one layer of each size. */
export async function pushImage(registryUrl: string, repo: string, platform: string, layerSizes: number[], tag?: string): Promise<Image> {
  const p = parsePlatform(platform);
  const layers: Array<{ digest: string; size: number }> = [];
  for (const size of layerSizes) {
    const bytes = randomBlob(size);
    layers.push({ digest: await pushBlob(registryUrl, repo, bytes), size });
  }
  const config = Buffer.from(
    JSON.stringify({
      created: new Date().toISOString(),
      ...p,
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    }),
  );
  const configDigest = await pushBlob(registryUrl, repo, config);
  const t = MEDIA_TYPES.oci;
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.manifest,
      config: { mediaType: t.config, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: l.digest, size: l.size })),
    }),
  );
  const digest = await putManifest(registryUrl, repo, sha256(bytes), bytes, t.manifest);
  if (tag) await putManifest(registryUrl, repo, tag, bytes, t.manifest);
  return { repo, digest, mediaType: t.manifest, size: bytes.length, platform, configDigest, layers };
}

/**
 * A 7-platform index: `bigPlatform` gets `bigLayers`, every other platform one layer of
 * `smallLayer` bytes (only the pulled platform's layers are ever fetched by a client or a proxy).
 */
export async function pushSevenPlatformIndex(
  registryUrl: string,
  repo: string,
  tag: string,
  opts: { bigPlatform: string; bigLayers: number[]; smallLayer: number },
): Promise<Index> {
  const children: Image[] = [];
  for (const platform of SEVEN_PLATFORMS) {
    const sizes = normalizeArm64(platform) === normalizeArm64(opts.bigPlatform) ? opts.bigLayers : [opts.smallLayer];
    children.push(await pushImage(registryUrl, repo, platform, sizes));
  }
  const t = MEDIA_TYPES.oci;
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.index,
      manifests: children.map((c) => ({ mediaType: c.mediaType, digest: c.digest, size: c.size, platform: parsePlatform(c.platform) })),
    }),
  );
  const digest = await putManifest(registryUrl, repo, tag, bytes, t.index);
  return { repo, tag, digest, mediaType: t.index, bytes, children };
}

function normalizeArm64(p: string): string {
  return p === 'linux/arm64/v8' ? 'linux/arm64' : p;
}
