import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ReferrersCatalogue } from './referrers-catalogue.js';
import { SCHEMA, SCHEMA_VERSION } from './schema.js';
import { SignatureVerdicts } from './signature-verdicts.js';

export interface ManifestRow {
  repo: string;
  digest: string;
  media_type: string;
  size: number;
  kind: 'index' | 'image';
  platform: string | null;
}

export interface TagRow {
  repo: string;
  tag: string;
  digest: string;
  updated_at: number;
  checked_at: number;
}

export interface IndexChildRow {
  repo: string;
  index_digest: string;
  child_digest: string;
  media_type: string;
  size: number;
  platform: string | null;
  attestation_for: string | null;
  position: number;
}

export interface NewManifest {
  repo: string;
  digest: string;
  mediaType: string;
  size: number;
  kind: 'index' | 'image';
  platform?: string;
  children?: Array<Omit<IndexChildRow, 'repo' | 'index_digest'>>;
  /** In the manifest's order (config first), which read-ahead follows. */
  blobs?: Array<{ digest: string; mediaType: string; size: number }>;
  /** The manifest names a subject (OCI 1.1): recorded for the referrers API. */
  referrer?: { subject: string; artifactType?: string; annotations?: Record<string, string> };
}

/** How often batched last-access times are written (they are advisory: LRU eviction order). */
const TOUCH_FLUSH_MS = 5000;

/**
 * What the mirror holds, in SQLite. Statements are prepared once; reads are synchronous and fast
 * (microseconds), so the hot paths read here directly and cache only bytes in memory.
 */
export class Catalogue {
  readonly db: Database.Database;
  /** Which stored manifests refer to which, and upstreams' referrers lists. */
  readonly referrers: ReferrersCatalogue;
  /** The signature policy's verdicts per image digest (verified, unsigned, failed). */
  readonly verdicts: SignatureVerdicts;
  private readonly stmts;
  private readonly touchedManifests = new Map<string, number>();
  private readonly touchedBlobs = new Map<string, number>();
  private readonly flushTimer: NodeJS.Timeout;

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    this.migrate();
    this.referrers = new ReferrersCatalogue(this.db);
    this.verdicts = new SignatureVerdicts(this.db);
    const db = this.db;
    this.stmts = {
      getManifest: db.prepare<[string, string], ManifestRow>(
        'SELECT repo, digest, media_type, size, kind, platform FROM manifests WHERE repo = ? AND digest = ?',
      ),
      insertManifest: db.prepare(
        `INSERT INTO manifests (repo, digest, media_type, size, kind, platform, stored_at, last_access)
         VALUES (@repo, @digest, @mediaType, @size, @kind, @platform, @now, @now)
         ON CONFLICT (repo, digest) DO UPDATE SET media_type = excluded.media_type, last_access = excluded.last_access`,
      ),
      insertChild: db.prepare(
        `INSERT OR REPLACE INTO index_children
           (repo, index_digest, child_digest, media_type, size, platform, attestation_for, position)
         VALUES (@repo, @index_digest, @child_digest, @media_type, @size, @platform, @attestation_for, @position)`,
      ),
      insertManifestBlob: db.prepare(
        `INSERT OR IGNORE INTO manifest_blobs (repo, manifest_digest, blob_digest, media_type, size, position)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      // The manifest that lists the blob (the most recently used, if several do), then its blobs
      // that are not stored: those after the blob first, in order, then those before it. No
      // `LIMIT ?`: with a bound limit SQLite prepares this query again at every run (~80 µs, on
      // every blob request); absentBlobsAfter() stops reading instead.
      absentAfter: db.prepare<[string, string, string], { digest: string; size: number }>(
        `WITH current AS (
           SELECT mb.manifest_digest, mb.position FROM manifest_blobs mb
           JOIN manifests m ON m.repo = mb.repo AND m.digest = mb.manifest_digest
           WHERE mb.repo = ? AND mb.blob_digest = ? AND mb.position IS NOT NULL
           ORDER BY m.last_access DESC LIMIT 1)
         SELECT nb.blob_digest AS digest, nb.size FROM current
         JOIN manifest_blobs nb ON nb.repo = ? AND nb.manifest_digest = current.manifest_digest
         LEFT JOIN blobs b ON b.digest = nb.blob_digest
         WHERE b.digest IS NULL AND nb.position IS NOT NULL AND nb.position != current.position
         ORDER BY nb.position < current.position, nb.position`,
      ),
      getTag: db.prepare<[string, string], TagRow>('SELECT * FROM tags WHERE repo = ? AND tag = ?'),
      upsertTag: db.prepare(
        `INSERT INTO tags (repo, tag, digest, updated_at, checked_at) VALUES (@repo, @tag, @digest, @now, @checked)
         ON CONFLICT (repo, tag) DO UPDATE SET
           updated_at = CASE WHEN tags.digest = excluded.digest THEN tags.updated_at ELSE excluded.updated_at END,
           digest = excluded.digest, checked_at = excluded.checked_at`,
      ),
      markTagChecked: db.prepare('UPDATE tags SET checked_at = ? WHERE repo = ? AND tag = ?'),
      listTags: db.prepare<[string], { tag: string }>('SELECT tag FROM tags WHERE repo = ? ORDER BY tag'),
      tagsForDigest: db.prepare<[string, string], { tag: string }>(
        'SELECT tag FROM tags WHERE repo = ? AND digest = ? ORDER BY checked_at DESC',
      ),
      childEntries: db.prepare<[string, string], IndexChildRow>(
        'SELECT * FROM index_children WHERE repo = ? AND child_digest = ?',
      ),
      childrenOf: db.prepare<[string, string], IndexChildRow>(
        'SELECT * FROM index_children WHERE repo = ? AND index_digest = ? ORDER BY position',
      ),
      blobReferenced: db.prepare<[string, string], { size: number; media_type: string }>(
        'SELECT size, media_type FROM manifest_blobs WHERE repo = ? AND blob_digest = ? LIMIT 1',
      ),
      blobsOf: db.prepare<[string, string], { blob_digest: string; media_type: string; size: number }>(
        'SELECT blob_digest, media_type, size FROM manifest_blobs WHERE repo = ? AND manifest_digest = ?',
      ),
      getBlob: db.prepare<[string], { digest: string; size: number; stored_at: number }>(
        'SELECT digest, size, stored_at FROM blobs WHERE digest = ?',
      ),
      insertBlob: db.prepare(
        `INSERT INTO blobs (digest, size, stored_at, last_access) VALUES (?, ?, ?, ?)
         ON CONFLICT (digest) DO UPDATE SET size = excluded.size, last_access = excluded.last_access`,
      ),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      touchManifest: db.prepare('UPDATE manifests SET last_access = ? WHERE repo = ? AND digest = ?'),
      touchBlob: db.prepare('UPDATE blobs SET last_access = ? WHERE digest = ?'),
      schemeTags: db.prepare<[string, string, string, string, string], TagRow>('SELECT * FROM tags WHERE repo = ? AND tag IN (?, ?, ?, ?) ORDER BY tag'),
    };
    this.flushTimer = setInterval(() => this.flushTouchesSafely(), TOUCH_FLUSH_MS);
    this.flushTimer.unref();
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > SCHEMA_VERSION) {
      throw new Error(`store catalogue has schema version ${current}; this build understands up to ${SCHEMA_VERSION}`);
    }
    this.db.exec(SCHEMA);
    // Added after version 1 shipped: nullable and additive, so older builds still open the store.
    const columns = this.db.pragma('table_info(manifest_blobs)') as Array<{ name: string }>;
    if (!columns.some((c) => c.name === 'position')) this.db.exec('ALTER TABLE manifest_blobs ADD COLUMN position INTEGER');
    this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }

  getManifest(repo: string, digest: string): ManifestRow | undefined {
    return this.stmts.getManifest.get(repo, digest);
  }

  /** Records a manifest and what it references, in one transaction (all or nothing). */
  readonly addManifest = (m: NewManifest): void => {
    const now = Date.now();
    this.db.transaction(() => {
      this.stmts.insertManifest.run({
        repo: m.repo,
        digest: m.digest,
        mediaType: m.mediaType,
        size: m.size,
        kind: m.kind,
        platform: m.platform ?? null,
        now,
      });
      for (const c of m.children ?? []) this.stmts.insertChild.run({ ...c, repo: m.repo, index_digest: m.digest });
      (m.blobs ?? []).forEach((b, position) =>
        this.stmts.insertManifestBlob.run(m.repo, m.digest, b.digest, b.mediaType, b.size, position),
      );
      if (m.referrer) {
        this.referrers.add({ repo: m.repo, digest: m.digest, mediaType: m.mediaType, size: m.size, subject: m.referrer.subject, artifactType: m.referrer.artifactType, annotations: m.referrer.annotations });
      }
    })();
  };

  getTag(repo: string, tag: string): TagRow | undefined {
    return this.stmts.getTag.get(repo, tag);
  }

  /** `checkedAt`: when upstream last confirmed it (another replica's check, from the shared bucket). */
  setTag(repo: string, tag: string, digest: string, checkedAt = Date.now()): void {
    this.stmts.upsertTag.run({ repo, tag, digest, now: Date.now(), checked: checkedAt });
  }

  markTagChecked(repo: string, tag: string): void {
    this.stmts.markTagChecked.run(Date.now(), repo, tag);
  }

  listTags(repo: string): string[] {
    return this.stmts.listTags.all(repo).map((r) => r.tag);
  }

  tagsForDigest(repo: string, digest: string): string[] {
    return this.stmts.tagsForDigest.all(repo, digest).map((r) => r.tag);
  }

  /** The index entries (in any stored index of this repository) that name this digest. */
  indexEntriesFor(repo: string, childDigest: string): IndexChildRow[] {
    return this.stmts.childEntries.all(repo, childDigest);
  }

  childrenOf(repo: string, indexDigest: string): IndexChildRow[] {
    return this.stmts.childrenOf.all(repo, indexDigest);
  }

  /** A stored manifest of this repository references the blob: the size and type it declares. */
  blobReference(repo: string, digest: string): { size: number; media_type: string } | undefined {
    return this.stmts.blobReferenced.get(repo, digest);
  }

  /** The stored manifests of this repository that reference the blob (what the signature policy judges a blob by). */
  manifestsUsingBlob(repo: string, digest: string): string[] {
    this.usingBlob ??= this.db.prepare<[string, string], { manifest_digest: string }>(
      'SELECT manifest_digest FROM manifest_blobs WHERE repo = ? AND blob_digest = ?',
    );
    return this.usingBlob.all(repo, digest).map((r) => r.manifest_digest);
  }

  private usingBlob?: Database.Statement<[string, string], { manifest_digest: string }>;

  /**
   * Blobs not stored of the image manifest that lists `digest` in this repository, in the order a
   * client pulling it one by one asks for them next: those after it, then those before it.
   */
  absentBlobsAfter(repo: string, digest: string, limit: number): Array<{ digest: string; size: number }> {
    const out: Array<{ digest: string; size: number }> = [];
    if (limit <= 0) return out;
    for (const row of this.stmts.absentAfter.iterate(repo, digest, repo)) {
      out.push(row);
      if (out.length === limit) break; // ends the statement (the iterator's return())
    }
    return out;
  }

  blobsOf(repo: string, manifestDigest: string): Array<{ blob_digest: string; media_type: string; size: number }> {
    return this.stmts.blobsOf.all(repo, manifestDigest);
  }

  getBlob(digest: string): { digest: string; size: number; stored_at: number } | undefined {
    return this.stmts.getBlob.get(digest);
  }

  addBlob(digest: string, size: number): void {
    const now = Date.now();
    this.stmts.insertBlob.run(digest, size, now, now);
  }

  removeBlob(digest: string): void {
    this.stmts.deleteBlob.run(digest);
  }

  touchManifest(repo: string, digest: string): void {
    this.touchedManifests.set(`${repo}@${digest}`, Date.now());
  }

  touchBlob(digest: string): void {
    this.touchedBlobs.set(digest, Date.now());
  }

  /** Last-access times are advisory: a full disk must not take the process down over them. */
  private flushTouchesSafely(): void {
    try {
      this.flushTouches();
    } catch (e) {
      this.onError?.(e as Error);
    }
  }

  /** Told of background failures (the periodic flush); the owner logs them. */
  onError?: (e: Error) => void;

  flushTouches(): void {
    if (this.touchedManifests.size === 0 && this.touchedBlobs.size === 0) return;
    const manifests = [...this.touchedManifests];
    const blobs = [...this.touchedBlobs];
    this.touchedManifests.clear();
    this.touchedBlobs.clear();
    this.db.transaction(() => {
      for (const [key, at] of manifests) {
        const i = key.lastIndexOf('@');
        this.stmts.touchManifest.run(at, key.slice(0, i), key.slice(i + 1));
      }
      for (const [digest, at] of blobs) this.stmts.touchBlob.run(at, digest);
    })();
  }

  /**
   * Tags of the tag schemes about `subject`: its referrers fallback tag `sha256-<hex>` and
   * cosign's `sha256-<hex>.sig`, `.att`, `.sbom`, those that are stored.
   */
  schemeTagsFor(repo: string, subject: string): TagRow[] {
    const base = subject.replace(':', '-');
    return this.stmts.schemeTags.all(repo, base, `${base}.sig`, `${base}.att`, `${base}.sbom`);
  }

  /** Every tag, optionally of one repository (or those under a prefix such as `docker.io`). */
  allTags(repoFilter?: string): TagRow[] {
    if (!repoFilter) return this.db.prepare('SELECT * FROM tags ORDER BY repo, tag').all() as TagRow[];
    return this.db
      .prepare("SELECT * FROM tags WHERE repo = ? OR substr(repo, 1, length(?) + 1) = ? || '/' ORDER BY repo, tag")
      .all(repoFilter, repoFilter, repoFilter) as TagRow[];
  }

  allManifests(): Array<ManifestRow & { stored_at: number; last_access: number }> {
    return this.db.prepare('SELECT * FROM manifests').all() as Array<ManifestRow & { stored_at: number; last_access: number }>;
  }

  allBlobs(): Array<{ digest: string; size: number; stored_at: number; last_access: number }> {
    return this.db.prepare('SELECT * FROM blobs').all() as Array<{ digest: string; size: number; stored_at: number; last_access: number }>;
  }

  allIndexChildren(): IndexChildRow[] {
    return this.db.prepare('SELECT * FROM index_children').all() as IndexChildRow[];
  }

  /** Digests of blobs some stored manifest references. */
  referencedBlobDigests(): Set<string> {
    const rows = this.db.prepare('SELECT DISTINCT blob_digest FROM manifest_blobs').all() as Array<{ blob_digest: string }>;
    return new Set(rows.map((r) => r.blob_digest));
  }

  /** Manifest digests stored under any repository. */
  hasManifestDigest(digest: string): boolean {
    return this.db.prepare('SELECT 1 FROM manifests WHERE digest = ? LIMIT 1').get(digest) !== undefined;
  }

  /**
   * Forgets manifests (with their index entries, blob references and tags) and blob rows, in one
   * transaction. Files are the caller's to delete afterwards.
   */
  forget(manifests: Array<{ repo: string; digest: string }>, blobs: string[], tags: Array<{ repo: string; tag: string }> = []): void {
    const delManifest = this.db.prepare('DELETE FROM manifests WHERE repo = ? AND digest = ?');
    const delChildren = this.db.prepare('DELETE FROM index_children WHERE repo = ? AND index_digest = ?');
    const delRefs = this.db.prepare('DELETE FROM manifest_blobs WHERE repo = ? AND manifest_digest = ?');
    const delTagsOf = this.db.prepare('DELETE FROM tags WHERE repo = ? AND digest = ?');
    const delTag = this.db.prepare('DELETE FROM tags WHERE repo = ? AND tag = ?');
    this.db.transaction(() => {
      for (const t of tags) delTag.run(t.repo, t.tag);
      for (const m of manifests) {
        delManifest.run(m.repo, m.digest);
        delChildren.run(m.repo, m.digest);
        delRefs.run(m.repo, m.digest);
        delTagsOf.run(m.repo, m.digest);
        this.referrers.removeReferrer(m.repo, m.digest);
      }
      for (const b of blobs) this.stmts.deleteBlob.run(b);
    })();
  }

  /** Bytes the store holds: blobs plus each distinct manifest once. */
  storeBytes(): number {
    // Grouped by digest (its index), not DISTINCT over (digest, size): half the time on a big store.
    const row = this.db
      .prepare(
        `SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs)
              + (SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM manifests GROUP BY digest)) AS total`,
      )
      .get() as { total: number };
    return row.total;
  }

  /** A trivial query: throws if the database is unusable. */
  ping(): void {
    this.db.prepare('SELECT 1').get();
  }

  close(): void {
    clearInterval(this.flushTimer);
    if (this.db.open) {
      this.flushTouchesSafely();
      this.db.close();
    }
  }
}
