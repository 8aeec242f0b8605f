import type Database from 'better-sqlite3';

/**
 * The Referrers API's table, in the catalogue's database (`mirror.db`). Its own
 * `CREATE TABLE IF NOT EXISTS`, so it needs no change to the catalogue's schema or version: a
 * store opened by a build without push support simply never has rows here.
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

  /** Forgets `digest` as a referrer (its manifest was deleted). */
  removeReferrer(repo: string, digest: string): void {
    this.stmts.removeReferrer.run(repo, digest);
  }
}
