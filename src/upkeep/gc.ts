import { stat } from 'node:fs/promises';
import { parseDigest } from '../oci/digest.js';
import type { BlobStore } from '../store/blob-store.js';
import type { Catalogue } from '../store/catalogue.js';

export interface GcOptions {
  now?: number;
  /** Roots (top-level manifests) not pulled for this long are forgotten with their tags. */
  retentionMs?: number;
  /** Also forget these roots (`repo@digest`): eviction picks them. */
  evict?: Set<string>;
  /** Anything stored more recently than this is kept: a pull may be between its manifest and its blobs. */
  graceMs?: number;
  /** Blob digests being downloaded right now: never touched. */
  inFlight?: Set<string>;
  /**
   * Repositories whose images never expire nor get evicted: pushed content has no upstream to
   * fetch it back from. Only what nothing references is collected there.
   */
  keepsImages?: (repo: string) => boolean;
}

export interface GcPlan {
  tags: Array<{ repo: string; tag: string }>;
  manifests: Array<{ repo: string; digest: string; size: number }>;
  blobs: Array<{ digest: string; size: number }>;
  /** Files in the store that no catalogue row names. */
  strayFiles: Array<{ digest: string; size: number }>;
  /** Bytes on disk the plan frees (each file once). */
  bytes: number;
}

export interface Root {
  repo: string;
  digest: string;
  lastAccess: number;
  storedAt: number;
}

const DEFAULT_GRACE_MS = 10 * 60_000;

/** Repositories of the push namespace (`local/…`): their images are never expired or evicted. */
export function pushedRepositories(namespace: string): (repo: string) => boolean {
  return (repo) => repo.startsWith(`${namespace}/`);
}

/** Top-level manifests: those no stored index of their repository lists. Tags point at these. */
export function findRoots(catalogue: Catalogue): Root[] {
  const present = new Set(catalogue.allManifests().map((m) => `${m.repo}@${m.digest}`));
  const listed = new Set<string>();
  for (const c of catalogue.allIndexChildren()) {
    if (present.has(`${c.repo}@${c.index_digest}`)) listed.add(`${c.repo}@${c.child_digest}`);
  }
  return catalogue
    .allManifests()
    .filter((m) => !listed.has(`${m.repo}@${m.digest}`))
    .map((m) => ({ repo: m.repo, digest: m.digest, lastAccess: m.last_access, storedAt: m.stored_at }));
}

/**
 * What garbage collection would remove. Live content is whatever a kept root reaches: its
 * child manifests and their blobs. A blob shared with any live image stays, whichever image
 * brought it in (the flaw of distribution's proxy TTL, which deletes shared layers).
 */
export async function planGc(catalogue: Catalogue, store: BlobStore, opts: GcOptions = {}): Promise<GcPlan> {
  const now = opts.now ?? Date.now();
  const grace = opts.graceMs ?? DEFAULT_GRACE_MS;
  const recent = (t: number) => now - t < grace;
  const inFlight = opts.inFlight ?? new Set<string>();

  const expired = new Set<string>();
  for (const r of findRoots(catalogue)) {
    const key = `${r.repo}@${r.digest}`;
    if (opts.keepsImages?.(r.repo)) continue;
    const tooOld = opts.retentionMs !== undefined && now - r.lastAccess > opts.retentionMs;
    if ((tooOld || opts.evict?.has(key)) && !recent(r.storedAt)) expired.add(key);
  }

  // Walk from every kept root through the index entries that are present.
  const manifests = catalogue.allManifests();
  const byKey = new Map(manifests.map((m) => [`${m.repo}@${m.digest}`, m]));
  const live = new Set<string>();
  const visit = (repo: string, digest: string) => {
    const key = `${repo}@${digest}`;
    if (live.has(key) || !byKey.has(key)) return;
    live.add(key);
    for (const c of catalogue.childrenOf(repo, digest)) visit(repo, c.child_digest);
  };
  for (const r of findRoots(catalogue)) if (!expired.has(`${r.repo}@${r.digest}`)) visit(r.repo, r.digest);
  for (const m of manifests) if (recent(m.stored_at) && !expired.has(`${m.repo}@${m.digest}`)) visit(m.repo, m.digest);

  const deadManifests = manifests.filter((m) => !live.has(`${m.repo}@${m.digest}`));
  const liveBlobs = new Set<string>();
  for (const m of manifests) {
    if (!live.has(`${m.repo}@${m.digest}`)) continue;
    for (const b of catalogue.blobsOf(m.repo, m.digest)) liveBlobs.add(b.blob_digest);
  }
  const blobRows = catalogue.allBlobs();
  const deadBlobs = blobRows.filter((b) => !liveBlobs.has(b.digest) && !recent(b.stored_at) && !inFlight.has(b.digest));

  const deadTags = catalogue.allTags().filter((t) => !live.has(`${t.repo}@${t.digest}`));

  // Files: a manifest file goes when no live row of any repository still names its digest.
  const liveManifestDigests = new Set(manifests.filter((m) => live.has(`${m.repo}@${m.digest}`)).map((m) => m.digest));
  const keptBlobDigests = new Set(blobRows.map((b) => b.digest));
  for (const b of deadBlobs) keptBlobDigests.delete(b.digest);
  const fileGoes = (digest: string) => !liveManifestDigests.has(digest) && !keptBlobDigests.has(digest) && !inFlight.has(digest);

  let bytes = 0;
  const counted = new Set<string>();
  const count = (digest: string, size: number) => {
    if (counted.has(digest) || !fileGoes(digest)) return;
    counted.add(digest);
    bytes += size;
  };
  for (const m of deadManifests) count(m.digest, m.size);
  for (const b of deadBlobs) count(b.digest, b.size);

  const named = new Set([...manifests.map((m) => m.digest), ...blobRows.map((b) => b.digest)]);
  const strayFiles: GcPlan['strayFiles'] = [];
  for await (const digest of store.list()) {
    if (named.has(digest) || inFlight.has(digest)) continue;
    const parsed = parseDigest(digest);
    if (!parsed.ok) continue;
    const info = await stat(store.pathOf(parsed.digest)).catch(() => undefined);
    if (!info || recent(info.mtimeMs)) continue;
    strayFiles.push({ digest, size: info.size });
    count(digest, info.size);
  }

  return {
    tags: deadTags.map((t) => ({ repo: t.repo, tag: t.tag })),
    manifests: deadManifests.map((m) => ({ repo: m.repo, digest: m.digest, size: m.size })),
    blobs: deadBlobs.map((b) => ({ digest: b.digest, size: b.size })),
    strayFiles,
    bytes,
  };
}

/** Carries out a plan: catalogue rows first (one transaction), then the files nothing names any more. */
export async function applyGc(plan: GcPlan, catalogue: Catalogue, store: BlobStore): Promise<number> {
  catalogue.forget(plan.manifests, plan.blobs.map((b) => b.digest), plan.tags);
  let freed = 0;
  const candidates = new Map<string, number>();
  for (const m of plan.manifests) candidates.set(m.digest, m.size);
  for (const b of plan.blobs) candidates.set(b.digest, b.size);
  for (const f of plan.strayFiles) candidates.set(f.digest, f.size);
  for (const [digest, size] of candidates) {
    // Re-checked now: another process may have stored the same content meanwhile.
    if (catalogue.hasManifestDigest(digest) || catalogue.getBlob(digest)) continue;
    const parsed = parseDigest(digest);
    if (parsed.ok && (await store.delete(parsed.digest))) freed += size;
  }
  return freed;
}
