import type Database from 'better-sqlite3';

/**
 * Deletions for pushed repositories (DELETE of a tag or a manifest). Rows only: a manifest's bytes
 * may be shared with other repositories, so files are left for gc to reclaim.
 */
export class PushCatalogue {
  private readonly stmts;

  constructor(private readonly db: Database.Database) {
    this.stmts = {
      deleteTag: db.prepare('DELETE FROM tags WHERE repo = ? AND tag = ?'),
      tagsOf: db.prepare<[string, string], { tag: string }>('SELECT tag FROM tags WHERE repo = ? AND digest = ? ORDER BY tag'),
      deleteTagsOf: db.prepare('DELETE FROM tags WHERE repo = ? AND digest = ?'),
      deleteManifest: db.prepare('DELETE FROM manifests WHERE repo = ? AND digest = ?'),
      deleteChildren: db.prepare('DELETE FROM index_children WHERE repo = ? AND index_digest = ?'),
      deleteBlobRefs: db.prepare('DELETE FROM manifest_blobs WHERE repo = ? AND manifest_digest = ?'),
    };
  }

  /** Removes a tag; false if the repository has no such tag. */
  deleteTag(repo: string, tag: string): boolean {
    return this.stmts.deleteTag.run(repo, tag).changes > 0;
  }

  /**
   * Forgets a manifest of `repo` with its index entries, blob references and the tags pointing at
   * it, in one transaction (`also` runs inside it). Returns the removed tags, or undefined if the
   * repository holds no such manifest.
   */
  deleteManifest(repo: string, digest: string, also?: () => void): string[] | undefined {
    return this.db.transaction(() => {
      const tags = this.stmts.tagsOf.all(repo, digest).map((r) => r.tag);
      if (this.stmts.deleteManifest.run(repo, digest).changes === 0) return undefined;
      this.stmts.deleteChildren.run(repo, digest);
      this.stmts.deleteBlobRefs.run(repo, digest);
      this.stmts.deleteTagsOf.run(repo, digest);
      also?.();
      return tags;
    })();
  }
}
