// Import on a replica with a shared bucket: what was imported goes to the bucket too, so every
// replica serves it, not only the one whose disk took it.
import { parseDigest } from '../oci/digest.js';
import { BucketUnavailableError, type Bucket } from '../store/bucket.js';
import { UploadQueueTable, type PendingUpload } from '../store/upload-queue.js';
import type { Mirror } from '../mirror/mirror.js';
import type { ImportedImage } from './import.js';

export interface BucketWrite {
  /** Objects written now (or found there already). */
  written: number;
  /** Left in the upload queue because the bucket failed: `serve` sends them when it is back. */
  queued: number;
  /** Why the bucket failed, when it did. */
  error?: string;
}

/**
 * Writes the imported images to the bucket: blobs first (those it holds already are not sent
 * again), then manifests children first, then tags, so that no replica ever finds a tag record
 * or a manifest before what it names. If the bucket fails, the rest is queued in the store's
 * upload queue, which `serve` works off with retries: nothing imported is lost to the other
 * replicas.
 */
export async function writeImportedToBucket(mirror: Mirror, bucket: Bucket, images: ImportedImage[]): Promise<BucketWrite> {
  const items: PendingUpload[] = [];
  const sizes = new Map<string, number>();
  for (const image of images) {
    for (const b of image.content.blobs) {
      items.push({ kind: 'blob', digest: b.digest });
      sizes.set(b.digest, b.size);
    }
  }
  for (const image of images) {
    for (const digest of [...image.content.manifests].reverse()) items.push({ kind: 'manifest', repo: image.repo, digest });
  }
  for (const image of images) if (image.tag) items.push({ kind: 'tag', repo: image.repo, tag: image.tag });

  const done = new Set<string>();
  let written = 0;
  for (const [i, item] of items.entries()) {
    const key = UploadQueueTable.keyOf(item);
    if (done.has(key)) continue;
    done.add(key);
    try {
      await write(mirror, bucket, item, sizes);
      written++;
    } catch (e) {
      if (!(e instanceof BucketUnavailableError)) throw e;
      const queue = new UploadQueueTable(mirror.catalogue.db);
      const rest = items.slice(i);
      const now = Date.now();
      for (const item of rest) queue.add(item, now); // in this order: the queue sends oldest first
      return { written, queued: new Set(rest.map((r) => UploadQueueTable.keyOf(r))).size, error: e.message };
    }
  }
  return { written, queued: 0 };
}

async function write(mirror: Mirror, bucket: Bucket, item: PendingUpload, sizes: Map<string, number>): Promise<void> {
  const { catalogue, store } = mirror;
  if (item.kind === 'tag') {
    const tag = catalogue.getTag(item.repo, item.tag);
    if (tag) await bucket.putTag(item.repo, item.tag, { digest: tag.digest, checkedAt: tag.checked_at });
    return;
  }
  if (item.kind !== 'blob' && item.kind !== 'manifest') return;
  const d = parseDigest(item.digest);
  if (!d.ok) return;
  if (item.kind === 'blob') {
    const size = sizes.get(item.digest)!;
    if ((await bucket.blobSize(d.digest)) !== size) await bucket.putBlobFile(d.digest, store.pathOf(d.digest), size);
    return;
  }
  const row = catalogue.getManifest(item.repo, item.digest);
  const bytes = row && (await store.read(d.digest));
  if (row && bytes) await bucket.putManifest(item.repo, d.digest, { bytes, mediaType: row.media_type, platform: row.platform ?? undefined });
}
