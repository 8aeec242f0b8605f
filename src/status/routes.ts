import type { Context } from 'hono';
import { OciError, ociErrors } from '../oci/errors.js';
import type { AppEnv, StatusHandler } from '../http/app.js';
import type { StatusService } from './status.js';
import { ActivityPage } from './views/activity.js';
import { DemandPage } from './views/demand.js';
import { ImagesPage, RepositoryPage } from './views/images.js';
import { OverviewPage } from './views/overview.js';

const PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 200;
const MAX_FILTER = 200;

/** The page's own resources only: no script at all, no CDN, inline styles; never framed. */
const HTML_HEADERS = {
  'Content-Type': 'text/html; charset=utf-8',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
};

/**
 * The status page (`/`, `/ui/…`) and its JSON API (`/api/v1/…`), plugged into http/'s StatusHandler
 * seam; http/ has checked the admin role before a request gets here.
 */
export function createStatusPage(status: StatusService): StatusHandler {
  return {
    served: (r) => {
      if ((r.kind === 'manifest' || r.kind === 'blob') && r.cache && r.status < 400) status.lookup(r.kind, r.cache, r.bytes, r.at);
      // A pull is its manifest GET (HEADs only check; blobs follow the manifest).
      if (r.kind === 'manifest' && r.method === 'GET' && r.repository && r.reference && r.status < 500) {
        status.pulled({ at: r.at, repository: r.repository, reference: r.reference, result: r.cache ?? `HTTP ${r.status}`, user: r.user });
      }
    },
    handle: async (c) => {
      if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
        throw new OciError(405, 'UNSUPPORTED', `${c.req.method} is not supported on the status page (allowed: GET, HEAD)`, undefined, { Allow: 'GET, HEAD' });
      }
      const url = new URL(c.req.url);
      const path = url.pathname.replace(/\/+$/, '') || '/';
      const now = Date.now();
      if (path.startsWith('/api/v1/')) return json(c, api(status, path.slice('/api/v1/'.length), url.searchParams));
      if (path === '/') return html(c, OverviewPage({ o: status.overview(now), demand: status.demand(now) }));
      if (path === '/ui' || path === '/ui/images') {
        const { filter, page } = listing(url.searchParams);
        return html(c, ImagesPage({ page: status.coverage.images(filter, page, PAGE_SIZE), now }));
      }
      if (path.startsWith('/ui/images/')) {
        const repository = repositoryOf(path.slice('/ui/images/'.length));
        const images = status.coverage.repository(repository);
        if (!images) throw ociErrors.nameUnknown(`the mirror holds no image of ${clip(repository)}`);
        return html(c, RepositoryPage({ repository, images, now }));
      }
      if (path === '/ui/demand') return html(c, DemandPage({ demand: status.demand(now) }));
      if (path === '/ui/activity') return html(c, ActivityPage({ pulls: status.recent(200), now }));
      throw new OciError(404, 'NAME_UNKNOWN', `no status page at ${clip(url.pathname)}`);
    },
  };
}

function api(status: StatusService, route: string, query: URLSearchParams): unknown {
  if (route === 'status') return status.overview();
  if (route === 'demand') return status.demand();
  if (route === 'images') {
    const { filter, page } = listing(query);
    return status.coverage.images(filter, page, pageSize(query.get('n')));
  }
  if (route.startsWith('images/')) {
    const repository = repositoryOf(route.slice('images/'.length));
    const images = status.coverage.repository(repository);
    if (!images) throw ociErrors.nameUnknown(`the mirror holds no image of ${clip(repository)}`);
    return { repository, images };
  }
  throw new OciError(404, 'NAME_UNKNOWN', `no status API at /api/v1/${clip(route)} (there are status, images, images/{repository}, demand)`);
}

function listing(query: URLSearchParams): { filter: string; page: number } {
  const filter = query.get('q') ?? '';
  if (filter.length > MAX_FILTER) throw badQuery(`the filter is longer than ${MAX_FILTER} characters`);
  const raw = query.get('page') ?? '1';
  if (!/^[1-9]\d{0,6}$/.test(raw)) throw badQuery('page must be a whole number from 1');
  return { filter, page: Number(raw) };
}

function pageSize(raw: string | null): number {
  if (raw === null) return PAGE_SIZE;
  if (!/^\d{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_PAGE_SIZE) throw badQuery(`n must be a whole number from 1 to ${MAX_PAGE_SIZE}`);
  return Number(raw);
}

function repositoryOf(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw ociErrors.nameInvalid('the repository name in the path is not valid percent-encoding');
  }
}

function badQuery(message: string): OciError {
  return new OciError(400, 'UNSUPPORTED', message);
}

function html(c: Context<AppEnv>, page: unknown): Response {
  return respond(c, `<!DOCTYPE html>${String(page)}`, HTML_HEADERS);
}

function json(c: Context<AppEnv>, value: unknown): Response {
  return respond(c, JSON.stringify(value, null, 2), { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
}

function respond(c: Context<AppEnv>, body: string, headers: Record<string, string>): Response {
  const bytes = Buffer.from(body);
  return new Response(c.req.method === 'HEAD' ? null : bytes, { headers: { ...headers, 'Content-Length': String(bytes.length) } });
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 197)}...` : s;
}
