import { newHasher, parseDigest } from '../oci/digest.js';
import type { Bucket } from '../store/bucket.js';
import { BucketSnapshot, type BucketProblem, type RecordManifest } from '../store/bucket-snapshot.js';

export interface BucketVerifyReport {
  /** Blobs, manifests and tag records read. */
  objectsChecked: number;
  bytesChecked: number;
  problems: BucketProblem[];
  /** With `repair`: the damaged objects deleted (replicas fetch them again; keys no replica writes are only reported). */
  deleted: string[];
}

/**
 * Reads every object of the bucket: each blob must hash to its key and have the size it was
 * listed with, each manifest must hash to its key and parse, each tag record must be one. With
 * `repair`, damaged blobs, manifests and tag records are deleted, so that no replica serves
 * them and the next pull fetches them again.
 */
export async function verifyBucket(bucket: Bucket, record: RecordManifest, opts: { repair?: boolean } = {}): Promise<BucketVerifyReport> {
  const snap = await BucketSnapshot.read(bucket, { record, blobs: true });
  try {
    const problems = [...snap.problems];
    let bytesChecked = 0;
    for (const [digest, key] of snap.blobKeys) {
      const listed = snap.objects.get(key)!.size;
      const d = parseDigest(digest);
      if (!d.ok) continue; // parseBucketKey let only valid digests through
      const object = await bucket.blob(d.digest);
      if (!object) continue; // deleted meanwhile
      const hasher = newHasher(d.digest.algorithm);
      let size = 0;
      for await (const chunk of object.body) {
        hasher.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
      bytesChecked += size;
      const actual = `${d.digest.algorithm}:${hasher.digest('hex')}`;
      if (actual !== digest) problems.push({ kind: 'corrupt', key, detail: `blob content hashes to ${actual}` });
      else if (size !== listed) problems.push({ kind: 'wrong-size', key, detail: `listed as ${listed} bytes, read ${size}` });
    }
    for (const [, key] of snap.manifestKeys) bytesChecked += snap.objects.get(key)?.size ?? 0;
    const deleted = opts.repair ? problems.filter((p) => p.kind !== 'bad-name').map((p) => p.key) : [];
    await bucket.delete(deleted);
    return { objectsChecked: snap.objects.size, bytesChecked, problems, deleted };
  } finally {
    snap.close();
  }
}
