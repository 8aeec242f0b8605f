import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { Catalogue, type NewManifest } from '../../src/store/catalogue.js';

const d = (seed: string) => digestOf(Buffer.from(seed));
const REPO = 'docker.io/library/alpine';
const OTHER = 'ghcr.io/org/app';
const T0 = new Date('2025-03-01T12:00:00Z').getTime();

function indexManifest(repo: string, seed: string, childSeeds: string[]): NewManifest {
  return {
    repo,
    digest: d(seed),
    mediaType: MediaType.ociIndex,
    size: 1000,
    kind: 'index',
    children: childSeeds.map((c, i) => ({
      child_digest: d(c),
      media_type: MediaType.ociManifest,
      size: 500 + i,
      platform: i % 2 === 0 ? 'linux/amd64' : 'linux/arm64',
      attestation_for: null,
      position: i,
    })),
  };
}

function imageManifest(repo: string, seed: string, blobSeeds: string[], platform = 'linux/amd64'): NewManifest {
  return {
    repo,
    digest: d(seed),
    mediaType: MediaType.ociManifest,
    size: 700,
    kind: 'image',
    platform,
    blobs: blobSeeds.map((b, i) => ({
      digest: d(b),
      mediaType: i === 0 ? MediaType.ociConfig : 'application/vnd.oci.image.layer.v1.tar+gzip',
      size: 100 * (i + 1),
    })),
  };
}

function manifestTimes(cat: Catalogue, repo: string, digest: string) {
  return cat.db.prepare('SELECT stored_at, last_access FROM manifests WHERE repo = ? AND digest = ?').get(repo, digest) as
    | { stored_at: number; last_access: number }
    | undefined;
}

function blobTimes(cat: Catalogue, digest: string) {
  return cat.db.prepare('SELECT stored_at, last_access FROM blobs WHERE digest = ?').get(digest) as
    | { stored_at: number; last_access: number }
    | undefined;
}

function count(cat: Catalogue, table: string): number {
  return (cat.db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
}

let cat: Catalogue;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'], now: T0 });
  cat = new Catalogue(':memory:');
});

afterEach(() => {
  cat.close();
  vi.useRealTimers();
});

describe('Catalogue manifests', () => {
  it('records a manifest and reads it back', () => {
    const m = imageManifest(REPO, 'img', ['cfg', 'l1']);
    cat.addManifest(m);
    expect(cat.getManifest(REPO, m.digest)).toEqual({
      repo: REPO,
      digest: m.digest,
      media_type: MediaType.ociManifest,
      size: 700,
      kind: 'image',
      platform: 'linux/amd64',
    });
    expect(cat.getManifest(OTHER, m.digest)).toBeUndefined();
    expect(cat.getManifest(REPO, d('nope'))).toBeUndefined();
    expect(manifestTimes(cat, REPO, m.digest)).toEqual({ stored_at: T0, last_access: T0 });
  });

  it('an index without platform stores NULL', () => {
    const m = indexManifest(REPO, 'idx', ['a']);
    cat.addManifest(m);
    expect(cat.getManifest(REPO, m.digest)?.platform).toBeNull();
  });

  it('records index children in order and finds the index entries naming a child', () => {
    const idx = indexManifest(REPO, 'idx', ['a', 'b', 'c']);
    cat.addManifest(idx);
    const kids = cat.childrenOf(REPO, idx.digest);
    expect(kids.map((k) => k.child_digest)).toEqual([d('a'), d('b'), d('c')]);
    expect(kids.map((k) => k.position)).toEqual([0, 1, 2]);
    expect(kids[1]).toEqual({
      repo: REPO,
      index_digest: idx.digest,
      child_digest: d('b'),
      media_type: MediaType.ociManifest,
      size: 501,
      platform: 'linux/arm64',
      attestation_for: null,
      position: 1,
    });

    const entries = cat.indexEntriesFor(REPO, d('b'));
    expect(entries).toHaveLength(1);
    expect(entries[0]!.index_digest).toBe(idx.digest);
    expect(entries[0]!.platform).toBe('linux/arm64');
  });

  it('indexEntriesFor finds a child shared by several indexes, only in the repository asked', () => {
    cat.addManifest(indexManifest(REPO, 'idx-3.20', ['shared', 'x']));
    cat.addManifest(indexManifest(REPO, 'idx-latest', ['y', 'shared']));
    cat.addManifest(indexManifest(OTHER, 'idx-other', ['shared']));
    const entries = cat.indexEntriesFor(REPO, d('shared'));
    expect(entries.map((e) => e.index_digest).sort()).toEqual([d('idx-3.20'), d('idx-latest')].sort());
    expect(cat.indexEntriesFor(OTHER, d('shared')).map((e) => e.index_digest)).toEqual([d('idx-other')]);
    expect(cat.indexEntriesFor(REPO, d('absent'))).toEqual([]);
  });

  it('records the attestation subject of an entry', () => {
    cat.addManifest({
      ...indexManifest(REPO, 'idx', []),
      children: [
        { child_digest: d('img'), media_type: MediaType.ociManifest, size: 1, platform: 'linux/amd64', attestation_for: null, position: 0 },
        { child_digest: d('att'), media_type: MediaType.ociManifest, size: 2, platform: 'linux/amd64', attestation_for: d('img'), position: 1 },
      ],
    });
    expect(cat.indexEntriesFor(REPO, d('att'))[0]!.attestation_for).toBe(d('img'));
  });

  it('records the blobs an image references: blobReference and blobsOf', () => {
    const m = imageManifest(REPO, 'img', ['cfg', 'layer']);
    cat.addManifest(m);
    expect(cat.blobReference(REPO, d('cfg'))).toEqual({ size: 100, media_type: MediaType.ociConfig });
    expect(cat.blobReference(REPO, d('layer'))).toEqual({ size: 200, media_type: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    // Another repository's manifest does not make the blob fetchable here.
    expect(cat.blobReference(OTHER, d('cfg'))).toBeUndefined();
    expect(cat.blobReference(REPO, d('unreferenced'))).toBeUndefined();
    expect(cat.blobsOf(REPO, m.digest).map((b) => b.blob_digest).sort()).toEqual([d('cfg'), d('layer')].sort());
    expect(cat.blobsOf(OTHER, m.digest)).toEqual([]);
  });

  it('absentBlobsAfter: the blobs not stored after the given one in its manifest, then those before it', () => {
    cat.addManifest(imageManifest(REPO, 'img', ['cfg', 'l0', 'l1', 'l2']));
    const after = (seed: string) => cat.absentBlobsAfter(REPO, d(seed), 10).map((b) => b.digest);
    expect(after('l0')).toEqual([d('l1'), d('l2'), d('cfg')]);
    expect(after('l2')).toEqual([d('cfg'), d('l0'), d('l1')]);
    cat.addBlob(d('l1'), 300);
    expect(after('l0')).toEqual([d('l2'), d('cfg')]);
    expect(cat.absentBlobsAfter(REPO, d('l0'), 1)).toEqual([{ digest: d('l2'), size: 400 }]);
    // Only in the repository asked, and only for a blob a manifest there lists.
    expect(cat.absentBlobsAfter(OTHER, d('l0'), 10)).toEqual([]);
    expect(cat.absentBlobsAfter(REPO, d('unlisted'), 10)).toEqual([]);
  });

  it('absentBlobsAfter follows the manifest used last when several list the blob', () => {
    cat.addManifest(imageManifest(REPO, 'old', ['cfg-old', 'shared', 'only-old']));
    vi.setSystemTime(T0 + 1000);
    cat.addManifest(imageManifest(REPO, 'new', ['cfg-new', 'shared', 'only-new']));
    expect(cat.absentBlobsAfter(REPO, d('shared'), 1).map((b) => b.digest)).toEqual([d('only-new')]);
  });

  it('is atomic: a bad child leaves no manifest, no children, no blob references', () => {
    const bad: NewManifest = {
      ...indexManifest(REPO, 'idx', ['a', 'b']),
      blobs: [{ digest: d('blob'), mediaType: 'x', size: 1 }],
    };
    bad.children![1] = { ...bad.children![1]!, media_type: null as unknown as string }; // violates NOT NULL
    expect(() => cat.addManifest(bad)).toThrow();
    expect(cat.getManifest(REPO, bad.digest)).toBeUndefined();
    expect(cat.childrenOf(REPO, bad.digest)).toEqual([]);
    expect(cat.blobReference(REPO, d('blob'))).toBeUndefined();
    expect(count(cat, 'manifests')).toBe(0);
    expect(count(cat, 'index_children')).toBe(0);
    expect(count(cat, 'manifest_blobs')).toBe(0);
  });

  it('is atomic: a bad blob reference leaves no manifest', () => {
    const bad = imageManifest(REPO, 'img', ['cfg', 'layer']);
    // A value SQLite cannot bind fails the statement after the manifest row was written.
    bad.blobs![1] = { ...bad.blobs![1]!, size: {} as unknown as number };
    expect(() => cat.addManifest(bad)).toThrow();
    expect(cat.getManifest(REPO, bad.digest)).toBeUndefined();
    expect(count(cat, 'manifest_blobs')).toBe(0);
  });

  it('a failed add does not undo an earlier one', () => {
    const good = imageManifest(REPO, 'good', ['cfg']);
    cat.addManifest(good);
    const bad = imageManifest(REPO, 'bad', ['cfg2']);
    bad.blobs![0] = { ...bad.blobs![0]!, mediaType: {} as unknown as string };
    expect(() => cat.addManifest(bad)).toThrow();
    expect(cat.getManifest(REPO, good.digest)).toBeDefined();
    expect(cat.blobReference(REPO, d('cfg'))).toBeDefined();
  });

  it('adding a manifest again keeps stored_at, updates media type and last_access, and adds no duplicates', () => {
    const m = indexManifest(REPO, 'idx', ['a', 'b']);
    cat.addManifest(m);
    vi.setSystemTime(T0 + 60_000);
    cat.addManifest({ ...m, mediaType: MediaType.dockerManifestList });
    expect(cat.getManifest(REPO, m.digest)?.media_type).toBe(MediaType.dockerManifestList);
    expect(manifestTimes(cat, REPO, m.digest)).toEqual({ stored_at: T0, last_access: T0 + 60_000 });
    expect(cat.childrenOf(REPO, m.digest)).toHaveLength(2);
    expect(count(cat, 'manifests')).toBe(1);
  });

  it('the same digest in two repositories is two rows', () => {
    const m = imageManifest(REPO, 'img', ['cfg']);
    cat.addManifest(m);
    cat.addManifest({ ...m, repo: OTHER });
    expect(cat.getManifest(REPO, m.digest)).toBeDefined();
    expect(cat.getManifest(OTHER, m.digest)).toBeDefined();
  });
});

describe('Catalogue tags', () => {
  it('setTag records the digest, first seen = last checked = now', () => {
    cat.setTag(REPO, '3.20', d('idx1'));
    expect(cat.getTag(REPO, '3.20')).toEqual({ repo: REPO, tag: '3.20', digest: d('idx1'), updated_at: T0, checked_at: T0 });
    expect(cat.getTag(REPO, 'latest')).toBeUndefined();
    expect(cat.getTag(OTHER, '3.20')).toBeUndefined();
  });

  it('upsert with the same digest keeps updated_at and advances checked_at', () => {
    cat.setTag(REPO, '3.20', d('idx1'));
    vi.setSystemTime(T0 + 300_000);
    cat.setTag(REPO, '3.20', d('idx1'));
    expect(cat.getTag(REPO, '3.20')).toMatchObject({ digest: d('idx1'), updated_at: T0, checked_at: T0 + 300_000 });
  });

  it('upsert with a new digest moves the tag: updated_at and checked_at advance', () => {
    cat.setTag(REPO, '3.20', d('idx1'));
    vi.setSystemTime(T0 + 1000);
    cat.setTag(REPO, '3.20', d('idx2'));
    expect(cat.getTag(REPO, '3.20')).toMatchObject({ digest: d('idx2'), updated_at: T0 + 1000, checked_at: T0 + 1000 });
    // Moving back is a move too.
    vi.setSystemTime(T0 + 2000);
    cat.setTag(REPO, '3.20', d('idx1'));
    expect(cat.getTag(REPO, '3.20')).toMatchObject({ digest: d('idx1'), updated_at: T0 + 2000 });
  });

  it('markTagChecked only advances checked_at', () => {
    cat.setTag(REPO, 'latest', d('idx1'));
    vi.setSystemTime(T0 + 5000);
    cat.markTagChecked(REPO, 'latest');
    expect(cat.getTag(REPO, 'latest')).toMatchObject({ digest: d('idx1'), updated_at: T0, checked_at: T0 + 5000 });
    cat.markTagChecked(REPO, 'no-such-tag');
    expect(cat.getTag(REPO, 'no-such-tag')).toBeUndefined();
  });

  it('listTags is sorted and per repository; tagsForDigest lists the tags naming a digest', () => {
    cat.setTag(REPO, 'latest', d('idx1'));
    cat.setTag(REPO, '3.20', d('idx1'));
    cat.setTag(REPO, '3.19', d('idx0'));
    cat.setTag(OTHER, 'v1', d('idx1'));
    expect(cat.listTags(REPO)).toEqual(['3.19', '3.20', 'latest']);
    expect(cat.listTags(OTHER)).toEqual(['v1']);
    expect(cat.listTags('nowhere/x')).toEqual([]);
    expect(cat.tagsForDigest(REPO, d('idx1')).sort()).toEqual(['3.20', 'latest']);
    expect(cat.tagsForDigest(REPO, d('idx0'))).toEqual(['3.19']);
  });

  it('tagsForDigest lists the most recently confirmed tag first', () => {
    cat.setTag(REPO, 'a', d('idx'));
    vi.setSystemTime(T0 + 10);
    cat.setTag(REPO, 'b', d('idx'));
    expect(cat.tagsForDigest(REPO, d('idx'))).toEqual(['b', 'a']);
    vi.setSystemTime(T0 + 20);
    cat.markTagChecked(REPO, 'a');
    expect(cat.tagsForDigest(REPO, d('idx'))).toEqual(['a', 'b']);
  });
});

describe('Catalogue blobs and last-access tracking', () => {
  it('addBlob / getBlob / removeBlob', () => {
    cat.addBlob(d('layer'), 1234);
    expect(cat.getBlob(d('layer'))).toEqual({ digest: d('layer'), size: 1234, stored_at: T0 });
    expect(blobTimes(cat, d('layer'))).toEqual({ stored_at: T0, last_access: T0 });
    vi.setSystemTime(T0 + 1);
    cat.addBlob(d('layer'), 1234);
    expect(blobTimes(cat, d('layer'))).toEqual({ stored_at: T0, last_access: T0 + 1 });
    cat.removeBlob(d('layer'));
    expect(cat.getBlob(d('layer'))).toBeUndefined();
  });

  it('touches are batched: last_access changes only when flushed', () => {
    const m = imageManifest(REPO, 'img', ['cfg']);
    cat.addManifest(m);
    cat.addBlob(d('cfg'), 100);
    vi.setSystemTime(T0 + 10_000);
    cat.touchManifest(REPO, m.digest);
    cat.touchBlob(d('cfg'));
    expect(manifestTimes(cat, REPO, m.digest)!.last_access).toBe(T0);
    expect(blobTimes(cat, d('cfg'))!.last_access).toBe(T0);
    cat.flushTouches();
    expect(manifestTimes(cat, REPO, m.digest)).toEqual({ stored_at: T0, last_access: T0 + 10_000 });
    expect(blobTimes(cat, d('cfg'))).toEqual({ stored_at: T0, last_access: T0 + 10_000 });
  });

  it('the latest touch wins and only the touched row changes', () => {
    const a = imageManifest(REPO, 'a', []);
    const b = imageManifest(REPO, 'b', []);
    const other = { ...a, repo: OTHER };
    cat.addManifest(a);
    cat.addManifest(b);
    cat.addManifest(other);
    vi.setSystemTime(T0 + 1000);
    cat.touchManifest(REPO, a.digest);
    vi.setSystemTime(T0 + 2000);
    cat.touchManifest(REPO, a.digest);
    cat.flushTouches();
    expect(manifestTimes(cat, REPO, a.digest)!.last_access).toBe(T0 + 2000);
    expect(manifestTimes(cat, REPO, b.digest)!.last_access).toBe(T0);
    expect(manifestTimes(cat, OTHER, a.digest)!.last_access).toBe(T0);
  });

  it('touching something not stored is harmless, and flushing twice is a no-op', () => {
    cat.touchManifest(REPO, d('ghost'));
    cat.touchBlob(d('ghost'));
    cat.flushTouches();
    cat.flushTouches();
    expect(count(cat, 'manifests')).toBe(0);
    expect(count(cat, 'blobs')).toBe(0);
  });
});

describe('Catalogue on disk', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sparse-mirror-cat-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates its directory, persists, and flushes touches on close', () => {
    const path = join(dir, 'nested', 'mirror.db');
    const first = new Catalogue(path);
    const m = indexManifest(REPO, 'idx', ['a']);
    first.addManifest(m);
    first.setTag(REPO, 'latest', m.digest);
    vi.setSystemTime(T0 + 42);
    first.touchManifest(REPO, m.digest);
    first.close();
    first.close(); // closing twice is harmless

    const second = new Catalogue(path);
    try {
      expect(second.getManifest(REPO, m.digest)?.kind).toBe('index');
      expect(second.getTag(REPO, 'latest')?.digest).toBe(m.digest);
      expect(second.childrenOf(REPO, m.digest)).toHaveLength(1);
      expect(manifestTimes(second, REPO, m.digest)!.last_access).toBe(T0 + 42);
    } finally {
      second.close();
    }
  });

  it('adds the position column to a store made before it existed; its old rows are never read ahead', () => {
    const path = join(dir, 'mirror.db');
    const raw = new Database(path);
    raw.exec(`CREATE TABLE manifest_blobs (
      repo TEXT NOT NULL, manifest_digest TEXT NOT NULL, blob_digest TEXT NOT NULL, media_type TEXT NOT NULL,
      size INTEGER NOT NULL, PRIMARY KEY (repo, manifest_digest, blob_digest)) WITHOUT ROWID`);
    raw.pragma('user_version = 1');
    raw.close();
    const upgraded = new Catalogue(path);
    try {
      const old = imageManifest(REPO, 'old', ['cfg', 'l0', 'l1']);
      upgraded.addManifest({ ...old, blobs: [] });
      for (const b of old.blobs!) {
        upgraded.db.prepare('INSERT INTO manifest_blobs (repo, manifest_digest, blob_digest, media_type, size) VALUES (?, ?, ?, ?, ?)').run(REPO, old.digest, b.digest, b.mediaType, b.size);
      }
      expect(upgraded.blobReference(REPO, d('l0'))?.size).toBe(200);
      expect(upgraded.absentBlobsAfter(REPO, d('l0'), 10)).toEqual([]);
      upgraded.addManifest(imageManifest(REPO, 'new', ['cfg2', 'm0', 'm1']));
      expect(upgraded.absentBlobsAfter(REPO, d('m0'), 10).map((b) => b.digest)).toEqual([d('m1'), d('cfg2')]);
    } finally {
      upgraded.close();
    }
  });

  it('refuses a catalogue written by a newer schema', () => {
    const path = join(dir, 'mirror.db');
    new Catalogue(path).close();
    const raw = new Database(path);
    raw.pragma('user_version = 999');
    raw.close();
    expect(() => new Catalogue(path)).toThrow(/schema version 999/);
  });
});
