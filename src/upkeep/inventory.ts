import type { Catalogue } from '../store/catalogue.js';

export interface InventoryEntry {
  repository: string;
  tag: string;
  digest: string;
  kind: 'index' | 'image';
  /** Platforms whose manifests the store holds. */
  platforms: string[];
  /** Platforms the index lists that are not in the store. */
  notMirrored: string[];
  /** Bytes on disk for this image: its manifests and the blobs they reference (shared blobs count in each image). */
  bytes: number;
}

/** What the mirror holds, tag by tag, for `sparse-mirror ls`. */
export function inventory(catalogue: Catalogue, repoFilter?: string): InventoryEntry[] {
  const out: InventoryEntry[] = [];
  for (const t of catalogue.allTags(repoFilter)) {
    const top = catalogue.getManifest(t.repo, t.digest);
    if (!top) continue;
    const platforms = new Set<string>();
    const missing = new Set<string>();
    const blobs = new Map<string, number>();
    let bytes = 0;
    const visit = (digest: string) => {
      const m = catalogue.getManifest(t.repo, digest);
      if (!m) return false;
      bytes += m.size;
      if (m.kind === 'image') {
        for (const b of catalogue.blobsOf(t.repo, digest)) if (catalogue.getBlob(b.blob_digest)) blobs.set(b.blob_digest, b.size);
        if (m.platform && digest === t.digest) platforms.add(m.platform);
        return true;
      }
      for (const c of catalogue.childrenOf(t.repo, digest)) {
        const present = visit(c.child_digest);
        if (c.attestation_for || !c.platform) continue;
        if (present) platforms.add(c.platform);
        else missing.add(c.platform);
      }
      return true;
    };
    visit(t.digest);
    for (const size of blobs.values()) bytes += size;
    for (const p of platforms) missing.delete(p);
    out.push({
      repository: t.repo,
      tag: t.tag,
      digest: t.digest,
      kind: top.kind,
      platforms: [...platforms].sort(),
      notMirrored: [...missing].sort(),
      bytes,
    });
  }
  return out;
}
