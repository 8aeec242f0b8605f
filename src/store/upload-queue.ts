import type Database from 'better-sqlite3';

/** What the shared bucket still lacks from this replica: a blob, a manifest of a repository, or a tag. */
export type PendingUpload =
  | { kind: 'blob'; digest: string }
  | { kind: 'manifest'; repo: string; digest: string }
  | { kind: 'tag'; repo: string; tag: string }
  | { kind: 'referrers'; repo: string; subject: string };

export interface PendingRow {
  key: string;
  item: PendingUpload;
  attempts: number;
  lastError: string | null;
  addedAt: number;
}

const UPLOADS_SCHEMA = `
CREATE TABLE IF NOT EXISTS bucket_uploads (
  key        TEXT PRIMARY KEY,   -- kind and what it names; one row per object however often enqueued
  item       TEXT NOT NULL,      -- the PendingUpload as JSON
  added_at   INTEGER NOT NULL,
  attempts   INTEGER NOT NULL DEFAULT 0,
  last_error TEXT
);
`;

/**
 * The uploads to the bucket that have not succeeded yet, kept in SQLite so that a bucket that is
 * down for hours, or a restart, loses none of them: they are retried until the bucket has them.
 */
export class UploadQueueTable {
  private readonly stmts;

  constructor(private readonly db: Database.Database) {
    db.exec(UPLOADS_SCHEMA);
    this.stmts = {
      add: db.prepare('INSERT INTO bucket_uploads (key, item, added_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING'),
      remove: db.prepare('DELETE FROM bucket_uploads WHERE key = ?'),
      failed: db.prepare('UPDATE bucket_uploads SET attempts = attempts + 1, last_error = ? WHERE key = ?'),
      // Oldest first: a manifest is enqueued after its blobs and a tag after its manifest.
      next: db.prepare<[number], { key: string; item: string; attempts: number; last_error: string | null; added_at: number }>(
        'SELECT * FROM bucket_uploads ORDER BY added_at, rowid LIMIT ?',
      ),
      count: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM bucket_uploads'),
      has: db.prepare<[string], { key: string }>('SELECT key FROM bucket_uploads WHERE key = ?'),
    };
  }

  static keyOf(item: PendingUpload): string {
    switch (item.kind) {
      case 'blob':
        return `blob ${item.digest}`;
      case 'manifest':
        return `manifest ${item.repo}@${item.digest}`;
      case 'tag':
        return `tag ${item.repo}:${item.tag}`;
      case 'referrers':
        return `referrers ${item.repo}@${item.subject}`;
    }
  }

  add(item: PendingUpload, now = Date.now()): void {
    this.stmts.add.run(UploadQueueTable.keyOf(item), JSON.stringify(item), now);
  }

  remove(key: string): void {
    this.stmts.remove.run(key);
  }

  noteFailure(key: string, error: string): void {
    this.stmts.failed.run(error.slice(0, 500), key);
  }

  next(limit: number): PendingRow[] {
    return this.stmts.next.all(limit).map((r) => ({ key: r.key, item: JSON.parse(r.item) as PendingUpload, attempts: r.attempts, lastError: r.last_error, addedAt: r.added_at }));
  }

  count(): number {
    return this.stmts.count.get()!.n;
  }

  /** Every blob still waiting to reach the bucket: local gc and eviction keep them. */
  pendingBlobs(): Set<string> {
    const rows = this.db.prepare<[], { key: string }>("SELECT key FROM bucket_uploads WHERE key LIKE 'blob %'").all();
    return new Set(rows.map((r) => r.key.slice('blob '.length)));
  }

  /** A blob still waiting to reach the bucket: local eviction must keep it. */
  holdsBlob(digest: string): boolean {
    return this.stmts.has.get(`blob ${digest}`) !== undefined;
  }
}
