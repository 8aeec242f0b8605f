import { stat } from 'node:fs/promises';
import { parseDigest } from '../oci/digest.js';
import { subjectOfTag } from '../oci/referrers.js';
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

/**
 * What is attached to each stored manifest (`repo@digest` → digests of the same repository):
 * the stored manifests that name it as their `subject`, and those its tag-scheme tags point at
 * (the referrers fallback index `sha256-<hex>`, cosign's `sha256-<hex>.sig`, `.att`, `.sbom`).
 * A referrer belongs to its subject: kept while the subject is, forgotten with it.
 */
export function attachments(catalogue: Catalogue): Map<string, Set<string>> {
  const present = new Set(catalogue.allManifests().map((m) => `${m.repo}@${m.digest}`));
  const out = new Map<string, Set<string>>();
  const attach = (repo: string, subject: string, digest: string) => {
    const key = `${repo}@${subject}`;
    if (subject === digest || !present.has(key) || !present.has(`${repo}@${digest}`)) return;
    let set = out.get(key);
    if (!set) out.set(key, (set = new Set()));
    set.add(digest);
  };
  for (const r of catalogue.referrers.allStored()) attach(r.repo, r.subject_digest, r.digest);
  for (const t of catalogue.allTags()) {
    const s = subjectOfTag(t.tag);
    if (s) attach(t.repo, s.subject, t.digest);
  }
  return out;
}

/**
 * Top-level manifests: those no stored index of their repository lists and that are not
 * attached to a stored subject (a signature, SBOM or attestation goes with its image, never
 * before it). Tags point at these. A referrer whose subject is not stored is a root of its own.
 */
export function findRoots(catalogue: Catalogue): Root[] {
  return rootsOf(catalogue, attachments(catalogue));
}

function rootsOf(catalogue: Catalogue, attached: Map<string, Set<string>>): Root[] {
  const manifests = catalogue.allManifests();
  const present = new Set(manifests.map((m) => `${m.repo}@${m.digest}`));
  const listed = new Set<string>();
  for (const c of catalogue.allIndexChildren()) {
    if (present.has(`${c.repo}@${c.index_digest}`)) listed.add(`${c.repo}@${c.child_digest}`);
  }
  const owned = new Set<string>();
  for (const [key, digests] of attached) {
    const repo = key.slice(0, key.lastIndexOf('@'));
    for (const d of digests) owned.add(`${repo}@${d}`);
  }
  const isRoot = (key: string) => !listed.has(key) && !owned.has(key);
  const roots = manifests.filter((m) => isRoot(`${m.repo}@${m.digest}`));

  // Tags can make attachments go round (`sha256-A.sig` → B and `sha256-B.sig` → A): then no
  // root reaches them. Such a ring gets a root of its own rather than being collected at once.
  const reached = new Set<string>();
  const reach = reachFrom(catalogue, attached, present, reached);
  for (const r of roots) reach(r.repo, r.digest);
  const unreached = manifests
    .filter((m) => !reached.has(`${m.repo}@${m.digest}`) && !listed.has(`${m.repo}@${m.digest}`))
    .sort((a, b) => (a.repo === b.repo ? (a.digest < b.digest ? -1 : 1) : a.repo < b.repo ? -1 : 1));
  for (const m of unreached) {
    if (reached.has(`${m.repo}@${m.digest}`)) continue;
    roots.push(m);
    reach(m.repo, m.digest);
  }
  return roots.map((m) => ({ repo: m.repo, digest: m.digest, lastAccess: m.last_access, storedAt: m.stored_at }));
}

/**
 * A walk that adds to `into` every stored manifest a start reaches through index entries and
 * attachments (signatures, SBOMs, attestations, and what is attached to those).
 */
export function reachFrom(catalogue: Catalogue, attached: Map<string, Set<string>>, present: Set<string>, into: Set<string>) {
  const walk = (repo: string, digest: string): void => {
    const key = `${repo}@${digest}`;
    if (into.has(key) || !present.has(key)) return;
    into.add(key);
    for (const c of catalogue.childrenOf(repo, digest)) walk(repo, c.child_digest);
    for (const a of attached.get(key) ?? []) walk(repo, a);
  };
  return walk;
}

/**
 * What garbage collection would remove. Live content is whatever a kept root reaches: its
 * child manifests, what is attached to any of them (signatures, SBOMs, attestations, the
 * fallback index; and what is attached to those), and their blobs. A blob shared with any live image stays, whichever image
 * brought it in (the flaw of distribution's proxy TTL, which deletes shared layers).
 */
export async function planGc(catalogue: Catalogue, store: BlobStore, opts: GcOptions = {}): Promise<GcPlan> {
  const now = opts.now ?? Date.now();
  const grace = opts.graceMs ?? DEFAULT_GRACE_MS;
  const recent = (t: number) => now - t < grace;
  const inFlight = opts.inFlight ?? new Set<string>();

  const attached = attachments(catalogue);
  const roots = rootsOf(catalogue, attached);
  const expired = new Set<string>();
  for (const r of roots) {
    const key = `${r.repo}@${r.digest}`;
    if (opts.keepsImages?.(r.repo)) continue;
    const tooOld = opts.retentionMs !== undefined && now - r.lastAccess > opts.retentionMs;
    if ((tooOld || opts.evict?.has(key)) && !recent(r.storedAt)) expired.add(key);
  }

  // Walk from every kept root through the index entries that are present and what is attached.
  const manifests = catalogue.allManifests();
  const live = new Set<string>();
  const visit = reachFrom(catalogue, attached, new Set(manifests.map((m) => `${m.repo}@${m.digest}`)), live);
  for (const r of roots) if (!expired.has(`${r.repo}@${r.digest}`)) visit(r.repo, r.digest);
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
