import { parseDigest, type Digest } from '../oci/digest.js';
import { isValidTag } from '../oci/reference.js';
import type { TagRecord } from './bucket.js';

/** What an object of the bucket is, read back from its key (relative to the prefix). */
export type BucketObject =
  | { kind: 'blob'; digest: Digest }
  | { kind: 'manifest'; repo: string; digest: Digest }
  | { kind: 'tag'; repo: string; tag: string }
  /** Upstream's referrers list for a subject, as a replica last read it. */
  | { kind: 'referrers'; repo: string; subject: Digest };

/** A repository segment as the mirror names them (`127.0.0.1:5000`, `library`, `my.app-x_1`). */
const SEGMENT = /^[A-Za-z0-9_:-][A-Za-z0-9._:-]*$/;

/**
 * The inverse of Bucket's key functions: `blobs/<alg>/<hex>`, `manifests/<repo>/<alg>/<hex>`,
 * `tags/<repo>/<tag>`, `referrers/<repo>/<alg>/<hex>`. Undefined for a key that fits none (not
 * written by a replica): upkeep reports such keys and leaves them alone.
 */
export function parseBucketKey(key: string): BucketObject | undefined {
  const parts = key.split('/');
  const [area] = parts;
  const digestAt = (i: number) => {
    const d = parseDigest(`${parts[i]}:${parts[i + 1]}`);
    return d.ok && d.digest.algorithm === parts[i] ? d.digest : undefined;
  };
  const repoOf = (from: number, to: number) => {
    const segments = parts.slice(from, to);
    return segments.length > 0 && segments.every((s) => SEGMENT.test(s)) ? segments.join('/') : undefined;
  };
  if (area === 'blobs' && parts.length === 3) {
    const digest = digestAt(1);
    return digest && { kind: 'blob', digest };
  }
  if ((area === 'manifests' || area === 'referrers') && parts.length >= 4) {
    const digest = digestAt(parts.length - 2);
    const repo = repoOf(1, parts.length - 2);
    if (!digest || !repo) return undefined;
    return area === 'manifests' ? { kind: 'manifest', repo, digest } : { kind: 'referrers', repo, subject: digest };
  }
  if (area === 'tags' && parts.length >= 3) {
    const tag = parts[parts.length - 1]!;
    const repo = repoOf(1, parts.length - 1);
    return repo && isValidTag(tag) ? { kind: 'tag', repo, tag } : undefined;
  }
  return undefined;
}

/** A tag record's bytes, or undefined when they are not one (`{"digest": <valid digest>, "checkedAt": <number>}`). */
export function parseTagRecord(bytes: Uint8Array): TagRecord | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
  const r = parsed as Partial<TagRecord> | null;
  if (typeof r?.digest !== 'string' || !parseDigest(r.digest).ok || typeof r.checkedAt !== 'number') return undefined;
  return { digest: r.digest, checkedAt: r.checkedAt };
}

/** `repo` is `filter` or lies under it (`docker.io` holds `docker.io/library/alpine`), as `ls` filters. */
export function repoMatches(repo: string, filter: string | undefined): boolean {
  return !filter || repo === filter || repo.startsWith(`${filter}/`);
}

/** A referrers list record is `{"descriptors": [...], "tags": [...], "checkedAt": <number>}`. */
export function isReferrersRecord(bytes: Uint8Array): boolean {
  try {
    const r = JSON.parse(Buffer.from(bytes).toString('utf8')) as { descriptors?: unknown; tags?: unknown; checkedAt?: unknown } | null;
    return Array.isArray(r?.descriptors) && Array.isArray(r.tags) && typeof r.checkedAt === 'number';
  } catch {
    return false;
  }
}
