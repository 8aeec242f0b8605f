import type Database from 'better-sqlite3';
import { OciError } from '../oci/errors.js';

/** Page size when the client gives no `n` (distribution's `catalog.maxentries` default). */
export const CATALOG_DEFAULT_PAGE = 1000;
const MAX_PAGE = 10_000;

export interface CatalogPage {
  repositories: string[];
  /** RFC 5988 `Link` to the next page, when more repositories remain. */
  link?: string;
}

/**
 * `GET /v2/_catalog`: the repositories the mirror holds a manifest of, by the names a client
 * pulls them with (`docker.io/library/alpine`, `local/team/app`), in lexical order, `n`/`last`
 * paginated like distribution. Read only; the store's tables are the catalogue's.
 */
export function catalogPage(db: Database.Database, n: string | undefined, last: string | undefined): CatalogPage {
  const count = n === undefined || n === '' ? CATALOG_DEFAULT_PAGE : Number(n);
  if (!Number.isInteger(count) || count < 0 || count > MAX_PAGE) {
    throw new OciError(400, 'UNSUPPORTED', `n must be a whole number from 0 to ${MAX_PAGE}`);
  }
  if (last !== undefined && last.length > 4096) throw new OciError(400, 'NAME_INVALID', 'last is longer than any repository name');
  if (count === 0) return { repositories: [] };
  const rows = db
    .prepare<[string, number], { repo: string }>('SELECT DISTINCT repo FROM manifests WHERE repo > ? ORDER BY repo LIMIT ?')
    .all(last ?? '', count + 1);
  const repositories = rows.slice(0, count).map((r) => r.repo);
  if (rows.length <= count) return { repositories };
  const next = new URLSearchParams({ n: String(count), last: repositories[repositories.length - 1]! });
  return { repositories, link: `</v2/_catalog?${next.toString()}>; rel="next"` };
}
