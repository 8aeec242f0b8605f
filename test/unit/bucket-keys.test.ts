// The bucket's key layout read back (what upkeep lists), tag records, and `ls`'s merge of tiers.
import { describe, expect, it } from 'vitest';
import { isReferrersRecord, parseBucketKey, parseTagRecord, repoMatches } from '../../src/store/bucket-keys.js';
import { mergeTiers } from '../../src/upkeep/bucket-inventory.js';
import type { InventoryEntry } from '../../src/store/inventory.js';

const HEX = 'a'.repeat(64);

describe('parseBucketKey', () => {
  it('reads blob, manifest and tag keys as Bucket writes them', () => {
    expect(parseBucketKey(`blobs/sha256/${HEX}`)).toEqual({ kind: 'blob', digest: { algorithm: 'sha256', hex: HEX, value: `sha256:${HEX}` } });
    expect(parseBucketKey(`manifests/127.0.0.1:5000/team/app/sha256/${HEX}`)).toMatchObject({ kind: 'manifest', repo: '127.0.0.1:5000/team/app', digest: { value: `sha256:${HEX}` } });
    expect(parseBucketKey('tags/docker.io/library/alpine/3.20')).toEqual({ kind: 'tag', repo: 'docker.io/library/alpine', tag: '3.20' });
    expect(parseBucketKey(`tags/docker.io/library/alpine/sha256-${HEX}.sig`)).toMatchObject({ kind: 'tag', tag: `sha256-${HEX}.sig` });
    expect(parseBucketKey(`referrers/ghcr.io/org/app/sha256/${HEX}`)).toMatchObject({ kind: 'referrers', repo: 'ghcr.io/org/app', subject: { value: `sha256:${HEX}` } });
  });

  it('refuses keys no replica writes', () => {
    for (const key of [
      'blobs/sha256/not-hex',
      `blobs/sha256/${HEX}/extra`,
      `blobs/md5/${HEX}`,
      `blobs/sha512/${HEX}`, // a sha256-length hex under sha512
      `manifests/sha256/${HEX}`, // no repository
      `manifests/team/../app/sha256/${HEX}`,
      `manifests/team//app/sha256/${HEX}`,
      'tags/app', // no tag
      'tags/app/bad:tag',
      'other/thing',
      '',
    ]) {
      expect(parseBucketKey(key), key).toBeUndefined();
    }
  });
});

describe('parseTagRecord', () => {
  it('takes {"digest", "checkedAt"} and nothing else', () => {
    expect(parseTagRecord(Buffer.from(JSON.stringify({ digest: `sha256:${HEX}`, checkedAt: 5 })))).toEqual({ digest: `sha256:${HEX}`, checkedAt: 5 });
    for (const bad of ['not json', 'null', '[]', JSON.stringify({ digest: 'sha256:xyz', checkedAt: 1 }), JSON.stringify({ digest: `sha256:${HEX}` })]) {
      expect(parseTagRecord(Buffer.from(bad)), bad).toBeUndefined();
    }
  });
});

describe('isReferrersRecord', () => {
  it('takes {"descriptors", "tags", "checkedAt"}', () => {
    expect(isReferrersRecord(Buffer.from(JSON.stringify({ descriptors: [], tags: [], checkedAt: 1 })))).toBe(true);
    for (const bad of ['not json', 'null', JSON.stringify({ descriptors: 'x', tags: [], checkedAt: 1 }), JSON.stringify({ descriptors: [], checkedAt: 1 })]) {
      expect(isReferrersRecord(Buffer.from(bad)), bad).toBe(false);
    }
  });
});

describe('repoMatches', () => {
  it('matches a repository or whole path segments under it', () => {
    expect(repoMatches('docker.io/library/alpine', undefined)).toBe(true);
    expect(repoMatches('docker.io/library/alpine', 'docker.io')).toBe(true);
    expect(repoMatches('docker.io/library/alpine', 'docker.io/library/alpine')).toBe(true);
    expect(repoMatches('docker.io/library/alpine2', 'docker.io/library/alpine')).toBe(false);
  });
});

describe('mergeTiers', () => {
  const entry = (over: Partial<InventoryEntry>): InventoryEntry => ({
    repository: 'r/app',
    tag: 'v1',
    digest: `sha256:${HEX}`,
    kind: 'index',
    platforms: [],
    notMirrored: [],
    bytes: 0,
    signatures: 0,
    sboms: 0,
    attestations: 0,
    ...over,
  });

  it('lists an image both tiers hold once, with what either holds', () => {
    const local = entry({ platforms: ['linux/amd64'], notMirrored: ['linux/arm64'], bytes: 10 });
    const shared = entry({ platforms: ['linux/amd64', 'linux/arm64'], notMirrored: ['linux/s390x'], bytes: 30, signatures: 1 });
    expect(mergeTiers([local], [shared])).toEqual([
      entry({ platforms: ['linux/amd64', 'linux/arm64'], notMirrored: ['linux/s390x'], bytes: 30, signatures: 1, tiers: ['local', 'bucket'] } as Partial<InventoryEntry>),
    ]);
  });

  it('keeps a tag that points elsewhere in each tier as two rows, sorted by repository and tag', () => {
    const merged = mergeTiers([entry({ tag: 'v2' }), entry({ digest: `sha256:${'b'.repeat(64)}` })], [entry({}), entry({ repository: 'a/first' })]);
    expect(merged.map((e) => [e.repository, e.tag, e.digest.slice(7, 8), e.tiers.join('+')])).toEqual([
      ['a/first', 'v1', 'a', 'bucket'],
      ['r/app', 'v1', 'b', 'local'],
      ['r/app', 'v1', 'a', 'bucket'],
      ['r/app', 'v2', 'a', 'local'],
    ]);
  });
});
