import { OciError, ociErrors } from '../oci/errors.js';
import { isValidTag } from '../oci/reference.js';
import type { Catalogue } from '../store/catalogue.js';
import type { Logger } from '../log.js';
import type { Route } from './routing.js';
import { canServeStale, toClientError } from './upstream-errors.js';

export interface TagPage {
  body: Buffer;
  /** RFC 5988 `Link` to the next page, when there is one. */
  link?: string;
}

export interface TagQuery {
  /** The repository name as the client asked for it (echoed in `name`). */
  name: string;
  n?: string;
  last?: string;
  /** The request path and `ns`, for the next-page link. */
  path: string;
  ns?: string;
}

const MAX_PAGE = 10_000;

/**
 * Tag lists, in lexical order with `n`/`last` pagination as the spec says, whether upstream
 * paginates (Docker Hub) or ignores `n` (distribution 2.8). From the store when offline or
 * when upstream fails.
 */
export class TagService {
  constructor(
    private readonly catalogue: Catalogue,
    private readonly offline: boolean,
    private readonly log: Logger,
  ) {}

  async list(route: Route, q: TagQuery): Promise<TagPage> {
    const count = q.n === undefined || q.n === '' ? undefined : Number(q.n);
    if (count !== undefined && (!Number.isInteger(count) || count < 0 || count > MAX_PAGE)) {
      throw new OciError(400, 'UNSUPPORTED', `n must be a whole number from 0 to ${MAX_PAGE}`);
    }
    const last = q.last || undefined;
    if (last !== undefined && !isValidTag(last)) throw new OciError(400, 'UNSUPPORTED', `last "${last.slice(0, 80)}" is not a tag`);

    const client = this.offline ? undefined : route.upstream.client;
    if (client) {
      const query = new URLSearchParams();
      if (count !== undefined) query.set('n', String(count));
      if (last) query.set('last', last);
      try {
        const page = await client.tags(route.repo, query.toString());
        return paginate(parseTags(page.body, route), q, count, last, page.link !== undefined);
      } catch (e) {
        if (!canServeStale(e)) throw toClientError(e, 'NAME_UNKNOWN');
        this.log.warn('upstream tag list failed; answering from the store', { repo: route.key, error: e.message });
      }
    }
    const stored = this.catalogue.listTags(route.key);
    if (stored.length === 0) throw ociErrors.nameUnknown(`repository ${route.key} is not in this mirror`);
    return paginate(stored, q, count, last, false);
  }
}

/** One page: sorted, after `last`, at most `n`, with a Link when more remain here or upstream. */
function paginate(tags: string[], q: TagQuery, count: number | undefined, last: string | undefined, upstreamHasMore: boolean): TagPage {
  const after = [...new Set(tags)].sort().filter((t) => last === undefined || t > last);
  const page = count === undefined ? after : after.slice(0, count);
  const more = count !== undefined && page.length > 0 && (after.length > count || upstreamHasMore);
  const body = Buffer.from(JSON.stringify({ name: q.name, tags: page }));
  if (!more) return { body };
  const next = new URLSearchParams({ n: String(count), last: page[page.length - 1]! });
  if (q.ns) next.set('ns', q.ns);
  return { body, link: `<${q.path}?${next.toString()}>; rel="next"` };
}

function parseTags(body: Buffer, route: Route): string[] {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { tags?: unknown };
    const tags = parsed.tags ?? [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw new Error('tags is not a list of strings');
    return tags as string[];
  } catch {
    throw ociErrors.upstream(`upstream sent an unreadable tag list for ${route.key}`, 'NAME_UNKNOWN');
  }
}
