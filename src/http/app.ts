import { Hono, type Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { OciError, ociErrors } from '../oci/errors.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Route } from '../mirror/routing.js';
import type { Logger } from '../log.js';
import { parseApiPath } from './paths.js';
import { API_VERSION_HEADER, blobResponse, errorResponse, manifestResponse } from './responses.js';

type Env = { Bindings: HttpBindings; Variables: { route?: Route } };

/** The registry API in front of the mirror. Parsing and response shapes only; the policy lives in mirror/. */
export function createApp(mirror: Mirror, log: Logger): Hono<Env> {
  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const started = performance.now();
    await next();
    const route = c.get('route');
    log.info('request', {
      method: c.req.method,
      path: new URL(c.req.url).pathname,
      status: c.res.status,
      bytes: Number(c.res.headers.get('content-length') ?? c.env?.outgoing?.getHeader?.('content-length') ?? 0),
      ms: Math.round((performance.now() - started) * 10) / 10,
      upstream: route?.upstream.name,
    });
  });

  app.on(['GET', 'HEAD'], ['/v2', '/v2/'], () => new Response('{}', { headers: { 'Content-Type': 'application/json', ...API_VERSION_HEADER } }));

  app.all('/v2/*', async (c) => {
    const url = new URL(c.req.url);
    const path = parseApiPath(url.pathname);
    const method = c.req.method;
    if (path.kind === 'unknown' || path.kind === 'base') {
      throw new OciError(404, 'NAME_UNKNOWN', `no registry API route at ${url.pathname.slice(0, 200)}`);
    }
    if (method !== 'GET' && method !== 'HEAD') {
      throw ociErrors.unsupported(`${method} is not supported: this mirror is read-only`);
    }
    const ns = url.searchParams.get('ns') ?? undefined;
    const route = mirror.router.route(path.name, ns);
    c.set('route', route);
    const extra = { 'OCI-Namespace': ns ?? route.upstream.name };
    const wantBody = method === 'GET';
    switch (path.kind) {
      case 'manifest': {
        const m = await mirror.manifests.get(route, path.reference, wantBody);
        return manifestResponse(m, extra, c.req.header('if-none-match'));
      }
      case 'blob': {
        const b = await mirror.blobs.get(route, path.digest, { wantBody, range: c.req.header('range') });
        return blobResponse(c.env?.outgoing, b, extra);
      }
      case 'tags': {
        const page = await mirror.tags.list(route, path.name, url.searchParams.get('n') ?? undefined, url.searchParams.get('last') ?? undefined, url.pathname);
        const headers: Record<string, string> = { 'Content-Type': 'application/json', ...API_VERSION_HEADER, ...extra };
        if (page.link) headers.Link = page.link;
        return new Response(wantBody ? new Uint8Array(page.body) : null, { headers: { ...headers, 'Content-Length': String(page.body.length) } });
      }
      default:
        throw ociErrors.unsupported(`${path.kind} is not supported: this mirror is read-only`);
    }
  });

  app.notFound((c) => errorResponse(new OciError(404, 'NAME_UNKNOWN', `no route at ${new URL(c.req.url).pathname.slice(0, 200)}`)));

  app.onError((err, c: Context<Env>) => {
    if (err instanceof OciError) return errorResponse(err);
    log.error('internal error', { method: c.req.method, path: new URL(c.req.url).pathname, error: (err as Error).message, stack: (err as Error).stack });
    return errorResponse(new OciError(500, 'UNSUPPORTED', 'internal error in the mirror; see its log'));
  });

  return app;
}
