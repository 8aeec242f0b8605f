import { parsePlatform, type PlatformAllowList } from '../oci/platform.js';
import type { Catalogue, TagRow } from '../store/catalogue.js';
import { inventoryOf, type InventoryEntry } from '../store/inventory.js';

export interface ImageRow extends InventoryEntry {
  /** When a manifest of the image was last served or stored (ms). */
  lastPulled?: number;
}

export interface ImagePage {
  /** Images matching the filter, over all pages. */
  total: number;
  page: number;
  pageSize: number;
  pages: number;
  filter: string;
  images: ImageRow[];
}

export type ChildState = 'present' | 'not mirrored' | 'not yet fetched';

export interface ChildRow {
  digest: string;
  mediaType: string;
  size: number;
  platform?: string;
  /** For an attestation manifest: the image manifest it is about. */
  attestationFor?: string;
  state: ChildState;
  /** Of a stored image manifest: how many of its blobs (config and layers) the store holds. */
  blobs?: { stored: number; total: number };
}

export interface ImageDetail extends ImageRow {
  children: ChildRow[];
}

/**
 * Tags that name an image of their own: their manifest is stored, and they are not a tag-scheme
 * tag (`sha256-<hex>`, `.sig`, `.att`, `.sbom`) about a stored manifest (those count with it).
 * The same rule as the inventory's, in SQL, so that a page is found without reading every tag.
 */
const IMAGE_TAG = `EXISTS (SELECT 1 FROM manifests m WHERE m.repo = t.repo AND m.digest = t.digest)
  AND NOT (t.tag GLOB 'sha256-*' AND EXISTS (SELECT 1 FROM manifests s WHERE s.repo = t.repo AND s.digest = 'sha256:' || substr(t.tag, 8, 64)))
  AND NOT (t.tag GLOB 'sha512-*' AND EXISTS (SELECT 1 FROM manifests s WHERE s.repo = t.repo AND s.digest = 'sha512:' || substr(t.tag, 8, 128)))`;
/** Case-insensitive substring of `repository:tag`; an empty filter matches all. */
const MATCHES = `(@filter = '' OR instr(lower(t.repo || ':' || t.tag), @filter) > 0)`;

/** Reads what the status page shows of the store: counts, a page of images, one repository in full. */
export class Coverage {
  private readonly stmts;

  constructor(
    private readonly catalogue: Catalogue,
    private readonly allowList: PlatformAllowList,
  ) {
    const db = catalogue.db;
    this.stmts = {
      count: db.prepare<[{ filter: string }], { n: number }>(`SELECT COUNT(*) AS n FROM tags t WHERE ${IMAGE_TAG} AND ${MATCHES}`),
      page: db.prepare<[{ filter: string; limit: number; offset: number }], TagRow>(
        `SELECT t.* FROM tags t WHERE ${IMAGE_TAG} AND ${MATCHES} ORDER BY t.repo, t.tag LIMIT @limit OFFSET @offset`,
      ),
      repositories: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM (SELECT repo FROM tags GROUP BY repo)'),
      manifests: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM manifests'),
      blobs: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM blobs'),
      lastPulled: db.prepare<[string, string, string, string], { at: number | null }>(
        `SELECT MAX(last_access) AS at FROM manifests WHERE repo = ?
           AND (digest = ? OR digest IN (SELECT child_digest FROM index_children WHERE repo = ? AND index_digest = ?))`,
      ),
    };
  }

  /** Repositories with a tag, images (as listed), manifests and blobs stored. */
  counts(): { repositories: number; images: number; manifests: number; blobs: number } {
    return {
      repositories: this.stmts.repositories.get()!.n,
      images: this.stmts.count.get({ filter: '' })!.n,
      manifests: this.stmts.manifests.get()!.n,
      blobs: this.stmts.blobs.get()!.n,
    };
  }

  /** Page `page` (from 1) of the images whose `repository:tag` contains `filter`, sorted by name. */
  images(filter: string, page: number, pageSize: number): ImagePage {
    this.catalogue.flushTouches();
    const needle = filter.trim().toLowerCase();
    const total = this.stmts.count.get({ filter: needle })!.n;
    const rows = this.stmts.page.all({ filter: needle, limit: pageSize, offset: (page - 1) * pageSize });
    return {
      total,
      page,
      pageSize,
      pages: Math.max(1, Math.ceil(total / pageSize)),
      filter,
      images: inventoryOf(this.catalogue, rows).map((e) => this.withLastPulled(e)),
    };
  }

  /** Every image of one repository, with each index's entries and their state; undefined if none. */
  repository(repo: string): ImageDetail[] | undefined {
    this.catalogue.flushTouches();
    const tags = this.catalogue.listTags(repo).flatMap((tag) => this.catalogue.getTag(repo, tag) ?? []);
    const images = inventoryOf(this.catalogue, tags);
    if (images.length === 0) return undefined;
    return images.map((e) => ({ ...this.withLastPulled(e), children: this.children(repo, e) }));
  }

  private withLastPulled(e: InventoryEntry): ImageRow {
    const at = this.stmts.lastPulled.get(e.repository, e.digest, e.repository, e.digest)?.at;
    return at ? { ...e, lastPulled: at } : e;
  }

  private children(repo: string, image: InventoryEntry): ChildRow[] {
    if (image.kind !== 'index') return [];
    return this.catalogue.childrenOf(repo, image.digest).map((c) => {
      const stored = this.catalogue.getManifest(repo, c.child_digest);
      const row: ChildRow = {
        digest: c.child_digest,
        mediaType: c.media_type,
        size: c.size,
        ...(c.platform ? { platform: c.platform } : {}),
        ...(c.attestation_for ? { attestationFor: c.attestation_for } : {}),
        state: stored ? 'present' : this.carried(c.platform) ? 'not yet fetched' : 'not mirrored',
      };
      if (stored?.kind === 'image') {
        const blobs = this.catalogue.blobsOf(repo, c.child_digest);
        row.blobs = { stored: blobs.filter((b) => this.catalogue.getBlob(b.blob_digest)).length, total: blobs.length };
      }
      return row;
    });
  }

  private carried(platform: string | null): boolean {
    if (platform === null) return true;
    const p = parsePlatform(platform);
    return p !== undefined && this.allowList.allows(p);
  }
}
