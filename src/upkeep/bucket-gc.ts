import { subjectOfTag } from '../oci/referrers.js';
import type { Bucket } from '../store/bucket.js';
import type { BucketSnapshot } from '../store/bucket-snapshot.js';
import type { Catalogue } from '../store/catalogue.js';
import { UploadQueueTable } from '../store/upload-queue.js';
import { attachments, findRoots, reachFrom } from './gc.js';

export interface BucketGcOptions {
  now?: number;
  /** Nothing written this recently is deleted, and what a manifest written this recently names is kept. */
  graceMs: number;
  /** A top-level manifest no tag record names is kept until it was written this long ago (default: graceMs). */
  untaggedMs?: number;
  /** Repositories whose images are never collected (the push namespace: no upstream to fetch them back from). */
  keepsImages?: (repo: string) => boolean;
  /**
   * What this replica still has to upload (`repo@digest` manifests, blob digests): the bucket
   * will soon hold a manifest naming these, so they stay.
   */
  protect?: { manifests?: Iterable<string>; blobs?: Iterable<string> };
}

export interface BucketGcPlan {
  tags: Array<{ key: string; repo: string; tag: string }>;
  /** Upstream's referrers lists about subjects that are gone. */
  referrerLists: Array<{ key: string; repo: string; subject: string }>;
  manifests: Array<{ key: string; repo: string; digest: string; size: number }>;
  blobs: Array<{ key: string; digest: string; size: number }>;
  /** Bytes the plan frees in the bucket. */
  bytes: number;
}

/**
 * What gc would delete from the bucket. Its roots are the manifests tag records name (a tag of
 * a tag scheme, `sha256-<hex>.sig` and the like, goes with its subject instead), top-level
 * manifests no tag names that are younger than `untaggedMs` (an image pulled by digest), every
 * manifest of a repository that keeps its images, every manifest written within the grace
 * period, and what this replica is still uploading. Live is what they reach, as in the local
 * gc: index entries, attached signatures, SBOMs and attestations (by `subject` or by tag
 * scheme), and the config and layers of each. Everything else older than the grace period
 * goes: old untagged manifests (a tag that moved leaves its old image behind), blobs no live
 * manifest names, tag records whose manifest is gone, and upstream's referrers lists about a
 * subject that is not live. A manifest that cannot be read is left for `verify`.
 */
export function planBucketGc(snap: BucketSnapshot, opts: BucketGcOptions): BucketGcPlan {
  const now = opts.now ?? Date.now();
  const recent = (key: string) => now - (snap.modified(key) ?? 0) < opts.graceMs;
  const { catalogue } = snap;
  const manifests = catalogue.allManifests();
  const present = new Set(manifests.map((m) => `${m.repo}@${m.digest}`));
  const live = new Set<string>();
  const visit = reachFrom(catalogue, attachments(catalogue), present, live);

  for (const t of snap.tags.values()) {
    const scheme = subjectOfTag(t.tag);
    if (scheme && present.has(`${t.repo}@${scheme.subject}`) && !recent(t.key)) continue; // goes with its subject
    visit(t.repo, t.digest);
  }
  for (const m of manifests) {
    if (opts.keepsImages?.(m.repo) || recent(snap.manifestKeys.get(`${m.repo}@${m.digest}`)!)) visit(m.repo, m.digest);
  }
  const untaggedMs = opts.untaggedMs ?? opts.graceMs;
  for (const r of findRoots(catalogue)) {
    if (now - (snap.modified(snap.manifestKeys.get(`${r.repo}@${r.digest}`)!) ?? 0) < untaggedMs) visit(r.repo, r.digest);
  }
  for (const id of opts.protect?.manifests ?? []) {
    const at = id.lastIndexOf('@');
    visit(id.slice(0, at), id.slice(at + 1));
  }

  const liveBlobs = new Set(opts.protect?.blobs ?? []);
  for (const m of manifests) {
    if (!live.has(`${m.repo}@${m.digest}`)) continue;
    for (const b of catalogue.blobsOf(m.repo, m.digest)) liveBlobs.add(b.blob_digest);
  }

  const plan: BucketGcPlan = { tags: [], referrerLists: [], manifests: [], blobs: [], bytes: 0 };
  for (const m of manifests) {
    const id = `${m.repo}@${m.digest}`;
    const key = snap.manifestKeys.get(id)!;
    if (live.has(id) || recent(key)) continue;
    plan.manifests.push({ key, repo: m.repo, digest: m.digest, size: m.size });
    plan.bytes += m.size;
  }
  for (const t of snap.tags.values()) {
    const id = `${t.repo}@${t.digest}`;
    if (live.has(id) || snap.opaque.has(id) || recent(t.key)) continue;
    plan.tags.push({ key: t.key, repo: t.repo, tag: t.tag });
  }
  for (const [key, list] of snap.referrerLists) {
    const id = `${list.repo}@${list.subject}`;
    if (live.has(id) || snap.opaque.has(id) || recent(key)) continue;
    plan.referrerLists.push({ key, ...list });
  }
  for (const [digest, key] of snap.blobKeys) {
    if (liveBlobs.has(digest) || recent(key)) continue;
    const size = snap.objects.get(key)?.size ?? 0;
    plan.blobs.push({ key, digest, size });
    plan.bytes += size;
  }
  return plan;
}

/**
 * Plans, then reads what replicas wrote meanwhile and plans again, then deletes: tag records
 * and referrers lists first, then manifests, then blobs, so that an interrupted sweep never leaves a manifest
 * naming a blob it deleted while the manifest stays. Returns what was deleted.
 */
export async function sweepBucket(bucket: Bucket, snap: BucketSnapshot, opts: BucketGcOptions): Promise<BucketGcPlan> {
  await snap.refresh();
  const plan = planBucketGc(snap, opts);
  await bucket.delete([...plan.tags, ...plan.referrerLists].map((t) => t.key));
  await bucket.delete(plan.manifests.map((m) => m.key));
  await bucket.delete(plan.blobs.map((b) => b.key));
  return plan;
}

/**
 * What this replica's upload queue will still write to the bucket, as gc must keep it: each
 * queued manifest (and a queued tag's manifest) with what the local catalogue says it names,
 * its index entries and blobs, which the bucket may hold already from another replica.
 */
export function pendingUploads(catalogue: Catalogue): NonNullable<BucketGcOptions['protect']> {
  const manifests = new Set<string>();
  const blobs = new Set<string>();
  const add = (repo: string, digest: string, depth = 0) => {
    const id = `${repo}@${digest}`;
    if (manifests.has(id) || depth > 8) return;
    manifests.add(id);
    for (const c of catalogue.childrenOf(repo, digest)) add(repo, c.child_digest, depth + 1);
    for (const b of catalogue.blobsOf(repo, digest)) blobs.add(b.blob_digest);
  };
  for (const row of new UploadQueueTable(catalogue.db).next(Number.MAX_SAFE_INTEGER)) {
    const item = row.item;
    if (item.kind === 'manifest') add(item.repo, item.digest);
    else if (item.kind === 'tag') {
      const tag = catalogue.getTag(item.repo, item.tag);
      if (tag) add(item.repo, tag.digest);
    }
  }
  return { manifests, blobs };
}
