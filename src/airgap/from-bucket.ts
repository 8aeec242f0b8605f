// Export on a replica whose local tier lacks an image the shared bucket holds (a fresh replica
// with an empty disk): the image is first copied from the bucket into the local tier, verified,
// as a pull through this replica would, and then exported from there as always.
import { parseDigest } from '../oci/digest.js';
import { parseManifest } from '../oci/manifest.js';
import { parsePlatform } from '../oci/platform.js';
import { DigestMismatchError, SizeMismatchError } from '../store/blob-store.js';
import type { Bucket, TagRecord } from '../store/bucket.js';
import { BucketSnapshot } from '../store/bucket-snapshot.js';
import { manifestRecord } from '../mirror/records.js';
import type { Mirror } from '../mirror/mirror.js';
import { LayoutError, resolveRef, Staging, type ResolvedRef } from './oci-layout.js';

export interface CopiedFromBucket {
  manifests: number;
  blobs: number;
  bytes: number;
}

/** Signatures of signatures (a signed SBOM) come along this deep, as export carries them. */
const MAX_ATTACHMENT_DEPTH = 3;

/**
 * Copies into the local tier what the bucket holds of `refs` and the local tier lacks: the
 * manifest a tag names (the bucket's tag record when it is fresher than the local tag), the
 * children of the platforms this mirror carries, their blobs, and (with `referrers`) the
 * signatures, SBOMs and attestations attached to them. Every byte is verified against its
 * digest. What the bucket lacks too is left for export to report. References that do not
 * resolve are skipped here: export reports them.
 */
export async function copyFromBucket(mirror: Mirror, bucket: Bucket, refs: string[], opts: { referrers: boolean }): Promise<CopiedFromBucket> {
  const byRepo = new Map<string, ResolvedRef[]>();
  for (const input of refs) {
    let ref: ResolvedRef;
    try {
      ref = resolveRef(mirror.router, input);
    } catch {
      continue;
    }
    byRepo.set(ref.route.key, [...(byRepo.get(ref.route.key) ?? []), ref]);
  }
  const copied: CopiedFromBucket = { manifests: 0, blobs: 0, bytes: 0 };
  const staging = await Staging.create(mirror.store);
  try {
    for (const [repo, repoRefs] of byRepo) {
      const snap = await BucketSnapshot.read(bucket, { record: manifestRecord, repos: repo, keepBytes: true });
      try {
        const copier = new Copier(mirror, bucket, snap, staging, repo, opts.referrers, copied);
        for (const ref of repoRefs) {
          const digest = ref.digest ?? copier.tag(ref.tag!);
          if (digest) await copier.manifest(digest, 0, 0);
          if (ref.tag && !ref.digest) copier.adoptTag(ref.tag);
        }
      } finally {
        snap.close();
      }
    }
  } finally {
    await staging.dispose();
  }
  return copied;
}

class Copier {
  private readonly seen = new Set<string>();

  constructor(
    private readonly mirror: Mirror,
    private readonly bucket: Bucket,
    private readonly snap: BucketSnapshot,
    private readonly staging: Staging,
    private readonly repo: string,
    private readonly referrers: boolean,
    private readonly copied: CopiedFromBucket,
  ) {}

  /** The digest a tag names: the bucket's record if it is fresher than the local tag (another replica checked it later). */
  tag(tag: string): string | undefined {
    return (this.fresherInBucket(tag) ?? this.mirror.catalogue.getTag(this.repo, tag))?.digest;
  }

  /** Takes the bucket's tag record into the local tier if it is fresher and its manifest is now here. */
  adoptTag(tag: string): void {
    const shared = this.fresherInBucket(tag);
    if (!shared || !this.mirror.catalogue.getManifest(this.repo, shared.digest)) return;
    // As fresh as upstream last confirmed it, not as this copy.
    this.mirror.catalogue.setTag(this.repo, tag, shared.digest, shared.checkedAt);
  }

  /** The bucket's record of a tag, when upstream confirmed it later than the local tier's. */
  private fresherInBucket(tag: string): TagRecord | undefined {
    const local = this.mirror.catalogue.getTag(this.repo, tag);
    const shared = this.snap.tags.get(`${this.repo}:${tag}`);
    return shared && (!local || shared.checkedAt > local.checked_at) ? shared : undefined;
  }

  async manifest(digest: string, depth: number, attachDepth: number): Promise<void> {
    const { catalogue, store, allowList } = this.mirror;
    const id = `${this.repo}@${digest}`;
    const d = parseDigest(digest);
    if (this.seen.has(id) || depth > 8 || !d.ok) return;
    this.seen.add(id);
    const local = catalogue.getManifest(this.repo, digest);
    if (!local || (await store.size(d.digest)) !== local.size) {
      const row = this.snap.catalogue.getManifest(this.repo, digest);
      const stored = this.snap.bytes.get(id);
      if (!row || !stored) return; // neither tier has it: export says so
      const parsed = parseManifest(stored.bytes, row.media_type);
      if (!parsed.ok) return; // the snapshot took only manifests that parse
      await store.put(d.digest, stored.bytes);
      catalogue.addManifest(
        manifestRecord({ repo: this.repo, digest, mediaType: row.media_type, size: row.size, manifest: parsed.manifest, platform: row.platform ?? undefined }),
      );
      this.copied.manifests++;
      this.copied.bytes += row.size;
    }
    const kind = catalogue.getManifest(this.repo, digest)!.kind;
    if (kind === 'index') {
      for (const child of catalogue.childrenOf(this.repo, digest)) {
        const platform = child.platform ? parsePlatform(child.platform) : undefined;
        if (!platform || allowList.allows(platform)) await this.manifest(child.child_digest, depth + 1, attachDepth);
      }
    } else {
      for (const b of catalogue.blobsOf(this.repo, digest)) await this.blob(b.blob_digest, b.size);
    }
    if (this.referrers && attachDepth < MAX_ATTACHMENT_DEPTH) await this.attachments(digest, attachDepth + 1);
  }

  /** What the bucket holds attached to `subject`: referrers naming it, and its cosign and fallback tags. */
  private async attachments(subject: string, attachDepth: number): Promise<void> {
    const bucketSide = this.snap.catalogue;
    for (const r of bucketSide.referrers.list(this.repo, subject)) await this.manifest(r.digest, 0, attachDepth);
    for (const t of bucketSide.schemeTagsFor(this.repo, subject)) {
      const digest = this.tag(t.tag);
      if (digest) await this.manifest(digest, 0, attachDepth);
      this.adoptTag(t.tag);
    }
  }

  private async blob(digest: string, size: number): Promise<void> {
    const { catalogue, store } = this.mirror;
    const d = parseDigest(digest);
    if (!d.ok) return;
    if ((await store.size(d.digest)) !== size) {
      const object = await this.bucket.blob(d.digest);
      if (!object) return; // export reports the image as incomplete
      try {
        await this.staging.commit(await this.staging.fromStream(d.digest, object.body, size, false));
      } catch (e) {
        if (!(e instanceof DigestMismatchError || e instanceof SizeMismatchError)) throw e;
        throw new LayoutError(`the bucket's copy of ${digest} is damaged (${e.message}); run 'sparse-mirror verify --repair'`);
      } finally {
        object.body.destroy();
      }
      this.copied.blobs++;
      this.copied.bytes += size;
    }
    if (!catalogue.getBlob(digest)) catalogue.addBlob(digest, size);
  }
}
