import { digestOf } from '../oci/digest.js';
import { parseManifest, type ParsedManifest } from '../oci/manifest.js';
import type { Bucket, StoredManifest, TagRecord } from './bucket.js';
import { isReferrersRecord, parseBucketKey, parseTagRecord, repoMatches } from './bucket-keys.js';
import { Catalogue, type NewManifest } from './catalogue.js';

/** Something wrong with an object of the bucket, found while reading it. */
export interface BucketProblem {
  kind: 'corrupt' | 'unparseable' | 'bad-name' | 'bad-tag' | 'bad-referrers' | 'wrong-size';
  key: string;
  detail: string;
}

export interface ObjectInfo {
  size: number;
  /** S3 LastModified, ms since the epoch. */
  modified: number;
}

/** How a manifest becomes catalogue rows (mirror/records.ts's manifestRecord, passed in: store/ sits below mirror/). */
export type RecordManifest = (m: { repo: string; digest: string; mediaType: string; size: number; manifest: ParsedManifest; platform?: string }) => NewManifest;

export interface ReadBucketOptions {
  record: RecordManifest;
  /** Only these repositories (a repository or a prefix of whole path segments, as `ls` filters). */
  repos?: string;
  /** Also list blobs/ (gc, verify, ls); export does not need it. */
  blobs?: boolean;
  /** Keep each manifest's bytes (export copies them out). */
  keepBytes?: boolean;
}

/** Manifest reads at once: small objects, latency-bound. */
const PARALLEL_READS = 8;

/**
 * What the bucket holds, read into an in-memory catalogue of its own, so that the upkeep the
 * local tier has (the live walk of gc, `ls`'s inventory) runs over the shared tier unchanged:
 * every manifest with its index entries, blob references and subject; every tag record; with
 * `blobs`, every blob's size. Beside it, each object's key, size and LastModified.
 */
export class BucketSnapshot {
  readonly catalogue = new Catalogue(':memory:');
  /** Every object read or listed, by key relative to the prefix. */
  readonly objects = new Map<string, ObjectInfo>();
  /** `repo@digest` → key of each manifest present, parsed or not. */
  readonly manifestKeys = new Map<string, string>();
  /** `repo@digest` of manifests present but damaged or unparseable: gc keeps them, verify reports them. */
  readonly opaque = new Set<string>();
  /** `repo:tag` → the tag record and its key. */
  readonly tags = new Map<string, TagRecord & { key: string; repo: string; tag: string }>();
  /** Upstream's referrers lists, by key: the subject (`repo@digest`) each is about. */
  readonly referrerLists = new Map<string, { repo: string; subject: string }>();
  /** Blob digest → key (with `blobs`). */
  readonly blobKeys = new Map<string, string>();
  readonly bytes = new Map<string, StoredManifest>();
  readonly problems: BucketProblem[] = [];

  private constructor(
    private readonly bucket: Bucket,
    private readonly opts: ReadBucketOptions,
  ) {}

  static async read(bucket: Bucket, opts: ReadBucketOptions): Promise<BucketSnapshot> {
    const snap = new BucketSnapshot(bucket, opts);
    try {
      await snap.refresh();
      if (opts.blobs) {
        for await (const o of bucket.list('blobs/')) {
          const parsed = parseBucketKey(o.key);
          if (parsed?.kind !== 'blob') {
            snap.problems.push({ kind: 'bad-name', key: o.key, detail: 'not blobs/<algorithm>/<hex>' });
            continue;
          }
          snap.objects.set(o.key, { size: o.size, modified: o.modified.getTime() });
          snap.blobKeys.set(parsed.digest.value, o.key);
          snap.catalogue.addBlob(parsed.digest.value, o.size);
        }
      }
    } catch (e) {
      snap.close();
      throw e;
    }
    return snap;
  }

  /**
   * Lists manifests/, tags/ and referrers/ and reads every object that is new or changed since
   * the last read. gc calls it again just before deleting: whatever a replica wrote meanwhile is then
   * known, and what it names is kept.
   */
  async refresh(): Promise<void> {
    const filter = this.opts.repos;
    const changed: Array<{ key: string; info: ObjectInfo }> = [];
    for (const area of ['manifests/', 'tags/', 'referrers/']) {
      for await (const o of this.bucket.list(`${area}${filter ?? ''}`)) {
        const info = { size: o.size, modified: o.modified.getTime() };
        const before = this.objects.get(o.key);
        if (before && before.modified === info.modified && before.size === info.size) continue;
        const parsed = parseBucketKey(o.key);
        if (parsed && parsed.kind !== 'blob' && !repoMatches(parsed.repo, filter)) continue;
        changed.push({ key: o.key, info });
      }
    }
    await inParallel(changed, PARALLEL_READS, ({ key, info }) => this.readObject(key, info));
  }

  private async readObject(key: string, info: ObjectInfo): Promise<void> {
    const parsed = parseBucketKey(key);
    if (!parsed || parsed.kind === 'blob') {
      this.problems.push({ kind: 'bad-name', key, detail: 'not manifests/ or referrers/<repository>/<algorithm>/<hex> nor tags/<repository>/<tag>' });
      return;
    }
    if (parsed.kind === 'referrers') {
      const bytes = await this.bucket.read(key);
      if (!bytes) return;
      this.objects.set(key, info);
      if (isReferrersRecord(bytes)) this.referrerLists.set(key, { repo: parsed.repo, subject: parsed.subject.value });
      else this.problems.push({ kind: 'bad-referrers', key, detail: 'not a referrers list record ({"descriptors", "tags", "checkedAt"})' });
      return;
    }
    if (parsed.kind === 'tag') {
      const bytes = await this.bucket.read(key);
      if (!bytes) return; // deleted meanwhile
      this.objects.set(key, info);
      const record = parseTagRecord(bytes);
      if (!record) {
        this.problems.push({ kind: 'bad-tag', key, detail: 'not a tag record ({"digest", "checkedAt"})' });
        return;
      }
      this.tags.set(`${parsed.repo}:${parsed.tag}`, { ...record, key, repo: parsed.repo, tag: parsed.tag });
      this.catalogue.setTag(parsed.repo, parsed.tag, record.digest);
      return;
    }
    const { repo, digest } = parsed;
    const stored = await this.bucket.manifest(repo, digest);
    if (!stored) return;
    this.objects.set(key, info);
    const id = `${repo}@${digest.value}`;
    this.manifestKeys.set(id, key);
    const actual = digestOf(stored.bytes, digest.algorithm);
    if (actual !== digest.value) {
      this.opaque.add(id);
      this.problems.push({ kind: 'corrupt', key, detail: `manifest content hashes to ${actual}` });
      return;
    }
    const manifest = parseManifest(stored.bytes, stored.mediaType);
    if (!manifest.ok) {
      this.opaque.add(id);
      this.problems.push({ kind: 'unparseable', key, detail: manifest.reason });
      return;
    }
    this.opaque.delete(id);
    if (this.opts.keepBytes) this.bytes.set(id, stored);
    this.catalogue.addManifest(
      this.opts.record({
        repo,
        digest: digest.value,
        mediaType: stored.mediaType || manifest.manifest.mediaType,
        size: stored.bytes.length,
        manifest: manifest.manifest,
        platform: stored.platform,
      }),
    );
  }

  /** LastModified of the object under `key`, if it was seen. */
  modified(key: string): number | undefined {
    return this.objects.get(key)?.modified;
  }

  close(): void {
    this.catalogue.close();
  }
}

/** Runs `fn` over `items`, at most `limit` at a time; the first failure rejects. */
async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
