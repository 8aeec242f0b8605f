import { manifestRecord } from '../mirror/records.js';
import type { Bucket } from '../store/bucket.js';
import { BucketSnapshot } from '../store/bucket-snapshot.js';
import { inventory, type InventoryEntry } from '../store/inventory.js';

export type Tier = 'local' | 'bucket';

export interface TieredEntry extends InventoryEntry {
  /** Which tiers hold the image: this replica's disk, the shared bucket, or both. */
  tiers: Tier[];
}

/** `ls` over the bucket: its tag records and manifests, inventoried as the local store is. */
export async function bucketInventory(bucket: Bucket, repoFilter?: string): Promise<InventoryEntry[]> {
  const snap = await BucketSnapshot.read(bucket, { record: manifestRecord, repos: repoFilter, blobs: true });
  try {
    return inventory(snap.catalogue, repoFilter);
  } finally {
    snap.close();
  }
}

/**
 * One list of both tiers, an image (repository, tag and digest) once, marked with the tiers
 * that hold it. Where both do, the platforms are those either holds, and the size and counts
 * the larger of the two (the bucket usually holds at least what one replica does).
 */
export function mergeTiers(local: InventoryEntry[], shared: InventoryEntry[]): TieredEntry[] {
  const out = new Map<string, TieredEntry>();
  const keyOf = (e: InventoryEntry) => `${e.repository}:${e.tag}@${e.digest}`;
  for (const e of local) out.set(keyOf(e), { ...e, tiers: ['local'] });
  for (const e of shared) {
    const mine = out.get(keyOf(e));
    if (!mine) {
      out.set(keyOf(e), { ...e, tiers: ['bucket'] });
      continue;
    }
    const platforms = [...new Set([...mine.platforms, ...e.platforms])].sort();
    out.set(keyOf(e), {
      ...mine,
      platforms,
      notMirrored: [...new Set([...mine.notMirrored, ...e.notMirrored])].filter((p) => !platforms.includes(p)).sort(),
      bytes: Math.max(mine.bytes, e.bytes),
      signatures: Math.max(mine.signatures, e.signatures),
      sboms: Math.max(mine.sboms, e.sboms),
      attestations: Math.max(mine.attestations, e.attestations),
      tiers: ['local', 'bucket'],
    });
  }
  return [...out.values()].sort((a, b) => (a.repository === b.repository ? (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0) : a.repository < b.repository ? -1 : 1));
}
