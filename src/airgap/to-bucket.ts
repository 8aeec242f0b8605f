// Import on a replica with a shared bucket: what was imported goes to the bucket too, so every
// replica serves it, not only the one whose disk took it.
import { parseDigest } from '../oci/digest.js';
import { BucketUnavailableError, type Bucket } from '../store/bucket.js';
import { UploadQueueTable, type PendingUpload } from '../store/upload-queue.js';
import type { BucketUploads } from '../mirror/bucket-uploads.js';
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
export async function writeImportedToBucket(mirror: Mirror, images: ImportedImage[]): Promise<BucketWrite> {
  const { bucket, uploads } = mirror.shared!;
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
      await write(uploads, bucket, item, sizes);
      written++;
    } catch (e) {
      if (!(e instanceof BucketUnavailableError)) throw e;
      const rest = items.slice(i);
      const now = Date.now();
      for (const item of rest) uploads.table.add(item, now); // in this order: the queue sends oldest first
      return { written, queued: new Set(rest.map((r) => UploadQueueTable.keyOf(r))).size, error: e.message };
    }
  }
  return { written, queued: 0 };
}

/** A blob the bucket holds already is not sent again; everything else goes as the upload queue sends it. */
async function write(uploads: BucketUploads, bucket: Bucket, item: PendingUpload, sizes: Map<string, number>): Promise<void> {
  if (item.kind === 'blob') {
    const d = parseDigest(item.digest);
    if (d.ok && (await bucket.blobSize(d.digest)) === sizes.get(item.digest)) return bucket.touch(bucket.blobKey(d.digest));
  }
  await uploads.send(item);
}
