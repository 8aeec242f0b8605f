import { classifyArtifact, subjectOfTag, type ArtifactKind } from '../oci/referrers.js';
import type { Catalogue, TagRow } from './catalogue.js';
import type { ReferrerRow } from './referrers-catalogue.js';
import type { VerdictStatus } from './signature-verdicts.js';

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
  /**
   * Stored signatures, SBOMs and attestations about the image (its top manifest or a stored child):
   * manifests naming it as `subject`, those under its cosign tags (`sha256-<hex>.sig` …) and the
   * stored entries of its referrers fallback index, each counted once.
   */
  signatures: number;
  sboms: number;
  attestations: number;
  /** The signature policy's last verdict on the image (absent: no policy judged it when it was pulled, prefetched or imported). */
  signature?: VerdictStatus;
}

/**
 * What the mirror holds, tag by tag, for `sparse-mirror ls`. The tags of the tag schemes
 * (`sha256-<hex>`, `sha256-<hex>.sig`, `.att`, `.sbom`) about a stored manifest are not images of
 * their own: what they point at is counted with that manifest's image instead.
 */
export function inventory(catalogue: Catalogue, repoFilter?: string): InventoryEntry[] {
  const referrers = referrersBySubject(catalogue);
  return catalogue.allTags(repoFilter).flatMap((t) => entryOf(catalogue, referrers, t) ?? []);
}

/**
 * The entries of some tags only (a page of them): referrers are looked up per image instead of
 * all read up front, so the cost follows the page, not the store.
 */
export function inventoryOf(catalogue: Catalogue, tags: TagRow[]): InventoryEntry[] {
  const referrers: StoredReferrers = {
    bySubject: (repo, subject) => catalogue.referrers.list(repo, subject),
    typeOf: (repo, digest) => catalogue.referrers.artifactTypeOf(repo, digest),
  };
  return tags.flatMap((t) => entryOf(catalogue, referrers, t) ?? []);
}

function entryOf(catalogue: Catalogue, referrers: StoredReferrers, t: TagRow): InventoryEntry | undefined {
  const scheme = subjectOfTag(t.tag);
  if (scheme && catalogue.getManifest(t.repo, scheme.subject)) return undefined;
  const top = catalogue.getManifest(t.repo, t.digest);
  if (!top) return undefined;
  const platforms = new Set<string>();
  const missing = new Set<string>();
  const blobs = new Map<string, number>();
  const held: string[] = [];
  let bytes = 0;
  const visit = (digest: string) => {
    const m = catalogue.getManifest(t.repo, digest);
    if (!m) return false;
    held.push(digest);
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
  const counts = attachedCounts(catalogue, referrers, t.repo, held);
  return {
    repository: t.repo,
    tag: t.tag,
    digest: t.digest,
    kind: top.kind,
    platforms: [...platforms].sort(),
    notMirrored: [...missing].sort(),
    bytes,
    signatures: counts.signature,
    sboms: counts.sbom,
    attestations: counts.attestation,
    ...signatureOf(catalogue, t.repo, held),
  };
}

/**
 * The image's verdict as the policy judges it: verified when its index or one of its platform
 * manifests is (each platform manifest is judged again when pulled), else the index's own.
 */
function signatureOf(catalogue: Catalogue, repo: string, held: string[]): { signature?: VerdictStatus } {
  const verdicts = held.map((d) => catalogue.verdicts.get(repo, d)).filter((v) => v !== undefined);
  if (verdicts.length === 0) return {};
  return { signature: verdicts.some((v) => v.status === 'verified') ? 'verified' : verdicts[0]!.status };
}

interface StoredReferrers {
  /** The stored referrers naming `subject`. */
  bySubject(repo: string, subject: string): ReferrerRow[];
  /** A referrer's artifact type, for the entries of a fallback index. */
  typeOf(repo: string, digest: string): string | undefined;
}

/** Every stored referrer read at once, for a whole-store inventory. */
function referrersBySubject(catalogue: Catalogue): StoredReferrers {
  const bySubject = new Map<string, ReferrerRow[]>();
  const typeOf = new Map<string, string | undefined>();
  for (const r of catalogue.referrers.allStored()) {
    const key = `${r.repo}@${r.subject_digest}`;
    const rows = bySubject.get(key);
    if (rows) rows.push(r);
    else bySubject.set(key, [r]);
    typeOf.set(`${r.repo}@${r.digest}`, r.artifact_type ?? undefined);
  }
  return {
    bySubject: (repo, subject) => bySubject.get(`${repo}@${subject}`) ?? [],
    typeOf: (repo, digest) => typeOf.get(`${repo}@${digest}`),
  };
}

/** What is attached to any of `subjects`, by kind, each stored manifest once. */
function attachedCounts(catalogue: Catalogue, stored: StoredReferrers, repo: string, subjects: string[]): Record<ArtifactKind, number> {
  const kinds = new Map<string, ArtifactKind>();
  // A digest met twice keeps the first kind that says something (a cosign suffix is met first).
  const note = (digest: string, kind: ArtifactKind) => {
    if (subjects.includes(digest) || !catalogue.getManifest(repo, digest)) return;
    const before = kinds.get(digest);
    if (before === undefined || before === 'other') kinds.set(digest, kind);
  };
  for (const subject of subjects) {
    for (const tag of catalogue.schemeTagsFor(repo, subject)) {
      const scheme = subjectOfTag(tag.tag);
      if (!scheme) continue;
      if (scheme.suffix) {
        note(tag.digest, classifyArtifact(undefined, scheme.suffix));
        continue;
      }
      // The fallback index: its entries are the referrers (those the store holds count).
      if (catalogue.getManifest(repo, tag.digest)?.kind !== 'index') continue;
      for (const c of catalogue.childrenOf(repo, tag.digest)) note(c.child_digest, classifyArtifact(stored.typeOf(repo, c.child_digest)));
    }
    for (const r of stored.bySubject(repo, subject)) note(r.digest, classifyArtifact(r.artifact_type ?? undefined));
  }
  const counts: Record<ArtifactKind, number> = { signature: 0, sbom: 0, attestation: 0, other: 0 };
  for (const k of kinds.values()) counts[k]++;
  return counts;
}
