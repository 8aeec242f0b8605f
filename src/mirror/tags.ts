import { ociErrors } from '../oci/errors.js';
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

const MAX_PAGE = 10_000;

/** Tag lists: passed through to upstream (with `n`/`last`), or from the store when offline or upstream fails. */
export class TagService {
  constructor(
    private readonly catalogue: Catalogue,
    private readonly offline: boolean,
    private readonly log: Logger,
  ) {}

  async list(route: Route, name: string, n: string | undefined, last: string | undefined, requestPath: string): Promise<TagPage> {
    const count = n === undefined || n === '' ? undefined : Number(n);
    if (count !== undefined && (!Number.isInteger(count) || count < 0 || count > MAX_PAGE)) {
      throw ociErrors.unsupported(`n must be a whole number from 0 to ${MAX_PAGE}`);
    }
    if (last !== undefined && last !== '' && !isValidTag(last)) throw ociErrors.unsupported(`last "${last.slice(0, 80)}" is not a tag`);
    const client = this.offline ? undefined : route.upstream.client;
    if (client) {
      const query = new URLSearchParams();
      if (count !== undefined) query.set('n', String(count));
      if (last) query.set('last', last);
      try {
        const page = await client.tags(route.repo, query.toString());
        return { body: rewriteName(page.body, name, route), link: page.link ? rewriteLink(page.link, requestPath) : undefined };
      } catch (e) {
        if (!canServeStale(e)) throw toClientError(e, 'NAME_UNKNOWN');
        this.log.warn('upstream tag list failed; answering from the store', { repo: route.key, error: e.message });
      }
    }
    return this.fromStore(route, name, count, last || undefined, requestPath);
  }

  private fromStore(route: Route, name: string, count: number | undefined, last: string | undefined, requestPath: string): TagPage {
    const all = this.catalogue.listTags(route.key);
    if (all.length === 0) throw ociErrors.nameUnknown(`repository ${route.key} is not in this mirror`);
    const after = last === undefined ? all : all.filter((t) => t > last);
    const page = count === undefined ? after : after.slice(0, count);
    const more = count !== undefined && after.length > count && page.length > 0;
    const body = Buffer.from(JSON.stringify({ name, tags: page }));
    const link = more ? `<${requestPath}?n=${count}&last=${encodeURIComponent(page[page.length - 1]!)}>; rel="next"` : undefined;
    return { body, link };
  }
}

/** Upstream's `name` is its own repository name; clients expect the one they asked for. */
function rewriteName(body: Buffer, name: string, route: Route): Buffer {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { name?: unknown; tags?: unknown };
    if (!Array.isArray(parsed.tags) && parsed.tags !== null) throw new Error('no tags');
    return Buffer.from(JSON.stringify({ name, tags: parsed.tags ?? [] }));
  } catch {
    throw ociErrors.upstream(`upstream sent an unreadable tag list for ${route.key}`, 'NAME_UNKNOWN');
  }
}

/** Points the next-page link at this mirror's path, keeping only the `n` and `last` parameters. */
function rewriteLink(link: string, requestPath: string): string | undefined {
  const m = /<([^>]+)>/.exec(link);
  if (!m) return undefined;
  const next = new URL(m[1]!, 'http://upstream.invalid');
  const query = new URLSearchParams();
  for (const k of ['n', 'last']) {
    const v = next.searchParams.get(k);
    if (v !== null) query.set(k, v);
  }
  return `<${requestPath}?${query.toString()}>; rel="next"`;
}
