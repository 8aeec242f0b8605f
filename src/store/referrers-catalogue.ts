import type Database from 'better-sqlite3';

/**
 * The Referrers API's tables, in the catalogue's database (`mirror.db`). Their own
 * `CREATE TABLE IF NOT EXISTS`, so they need no change to the catalogue's schema version: an
 * older build opening the store simply never reads them.
 *
 * `referrers` holds every stored manifest that names a subject (pushed, pulled through or
 * imported). `referrer_lists` keeps what an upstream last answered for a subject (its referrers
 * API, else its fallback tag), with when it was asked: revalidated after the tag TTL, served
 * stale when upstream fails and as is offline.
 */
const REFERRERS_SCHEMA = `
CREATE TABLE IF NOT EXISTS referrers (
  repo           TEXT NOT NULL,
  subject_digest TEXT NOT NULL,  -- the manifest the referrer points at with its 'subject'
  digest         TEXT NOT NULL,  -- the referring manifest
  media_type     TEXT NOT NULL,
  size           INTEGER NOT NULL,
  artifact_type  TEXT,           -- artifactType, else (image manifests) the config's mediaType
  annotations    TEXT,           -- JSON object, as in the referring manifest
  created_at     INTEGER NOT NULL,
  PRIMARY KEY (repo, subject_digest, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS referrers_by_digest ON referrers (repo, digest);
CREATE TABLE IF NOT EXISTS referrer_lists (
  repo        TEXT NOT NULL,
  subject     TEXT NOT NULL,
  descriptors TEXT NOT NULL,     -- JSON array of descriptors, as upstream listed them
  tags        TEXT NOT NULL,     -- JSON array of {tag, digest}: which of sha256-<hex>, .sig, .att, .sbom upstream has
  checked_at  INTEGER NOT NULL,
  PRIMARY KEY (repo, subject)
) WITHOUT ROWID;
`;

export interface ReferrerRow {
  repo: string;
  subject_digest: string;
  digest: string;
  media_type: string;
  size: number;
  artifact_type: string | null;
  annotations: string | null;
  created_at: number;
}

export interface NewReferrer {
  repo: string;
  subject: string;
  digest: string;
  mediaType: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** Which manifests refer to which (OCI 1.1 `subject`), per repository. */
export class ReferrersCatalogue {
  private readonly stmts;

  constructor(db: Database.Database) {
    db.exec(REFERRERS_SCHEMA);
    this.stmts = {
      insert: db.prepare(
        `INSERT INTO referrers (repo, subject_digest, digest, media_type, size, artifact_type, annotations, created_at)
         VALUES (@repo, @subject, @digest, @mediaType, @size, @artifactType, @annotations, @now)
         ON CONFLICT (repo, subject_digest, digest) DO UPDATE SET
           media_type = excluded.media_type, size = excluded.size,
           artifact_type = excluded.artifact_type, annotations = excluded.annotations`,
      ),
      // Only referrers whose manifest is still stored: gc or a delete may have removed it.
      list: db.prepare<[string, string], ReferrerRow>(
        `SELECT r.* FROM referrers r
           JOIN manifests m ON m.repo = r.repo AND m.digest = r.digest
          WHERE r.repo = ? AND r.subject_digest = ?
          ORDER BY r.created_at, r.digest`,
      ),
      removeReferrer: db.prepare('DELETE FROM referrers WHERE repo = ? AND digest = ?'),
      subjectsOf: db.prepare<[string, string], { subject_digest: string }>(
        'SELECT subject_digest FROM referrers WHERE repo = ? AND digest = ?',
      ),
      getList: db.prepare<[string, string], { descriptors: string; tags: string; checked_at: number }>(
        'SELECT descriptors, tags, checked_at FROM referrer_lists WHERE repo = ? AND subject = ?',
      ),
      putList: db.prepare(
        `INSERT INTO referrer_lists (repo, subject, descriptors, tags, checked_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (repo, subject) DO UPDATE SET
           descriptors = excluded.descriptors, tags = excluded.tags, checked_at = excluded.checked_at`,
      ),
      artifactTypeOf: db.prepare<[string, string], { artifact_type: string | null }>(
        'SELECT artifact_type FROM referrers WHERE repo = ? AND digest = ? LIMIT 1',
      ),
      allStored: db.prepare<[], ReferrerRow>(
        `SELECT r.* FROM referrers r JOIN manifests m ON m.repo = r.repo AND m.digest = r.digest`,
      ),
    };
  }

  add(r: NewReferrer): void {
    this.stmts.insert.run({
      repo: r.repo,
      subject: r.subject,
      digest: r.digest,
      mediaType: r.mediaType,
      size: r.size,
      artifactType: r.artifactType ?? null,
      annotations: r.annotations && Object.keys(r.annotations).length > 0 ? JSON.stringify(r.annotations) : null,
      now: Date.now(),
    });
  }

  /** The manifests of `repo` whose subject is `subject`, optionally only those of one artifactType. */
  list(repo: string, subject: string, artifactType?: string): ReferrerRow[] {
    const rows = this.stmts.list.all(repo, subject);
    return artifactType === undefined ? rows : rows.filter((r) => r.artifact_type === artifactType);
  }

  /** The subjects a stored manifest refers to (usually one). */
  subjectsOf(repo: string, digest: string): string[] {
    return this.stmts.subjectsOf.all(repo, digest).map((r) => r.subject_digest);
  }

  /** The artifact type recorded for a referrer, if `digest` is one. */
  artifactTypeOf(repo: string, digest: string): string | undefined {
    return this.stmts.artifactTypeOf.get(repo, digest)?.artifact_type ?? undefined;
  }

  /** Every referrer whose manifest is stored, for gc and inventories. */
  allStored(): ReferrerRow[] {
    return this.stmts.allStored.all();
  }

  /** What upstream last listed for `subject`, and when it was asked. */
  upstreamList(repo: string, subject: string): { descriptors: unknown[]; tags: unknown[]; checkedAt: number } | undefined {
    const row = this.stmts.getList.get(repo, subject);
    if (!row) return undefined;
    try {
      return { descriptors: JSON.parse(row.descriptors) as unknown[], tags: JSON.parse(row.tags) as unknown[], checkedAt: row.checked_at };
    } catch {
      return undefined;
    }
  }

  /** `checkedAt`: when upstream was asked (by this replica, or by another, from the shared bucket). */
  saveUpstreamList(repo: string, subject: string, descriptors: unknown[], tags: unknown[], checkedAt = Date.now()): void {
    this.stmts.putList.run(repo, subject, JSON.stringify(descriptors), JSON.stringify(tags), checkedAt);
  }

  /** Forgets `digest` as a referrer (its manifest was deleted). */
  removeReferrer(repo: string, digest: string): void {
    this.stmts.removeReferrer.run(repo, digest);
  }
}
