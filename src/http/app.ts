import { Hono, type Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { access, constants } from 'node:fs/promises';
import type { Role } from '../config/schema.js';
import { OciError, ociErrors } from '../oci/errors.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Route } from '../mirror/routing.js';
import { toClientError } from '../mirror/upstream-errors.js';
import type { Logger } from '../log.js';
import type { Admission, SignatureGate } from '../signatures/gate.js';
import { errorReachedUpstream, trackUpstreamContact } from '../upstream/contact.js';
import { hasRole, type Authenticator, type Identity } from './auth.js';
import { catalogPage } from './catalog.js';
import { cacheResult, type Metrics } from './metrics.js';
import { mountPeerRoutes } from './peer-routes.js';
import { parseApiPath, type ApiPath } from './paths.js';
import { API_VERSION_HEADER, blobResponse, errorResponse, jsonResponse, manifestResponse, referrersResponse } from './responses.js';

export type AppEnv = {
  Bindings: HttpBindings;
  Variables: { route?: Route; cache?: string; identity?: Identity; kind?: string; reachedUpstream?: boolean; reference?: string };
};

/** Handles the write side of the API (uploads, manifest PUT, DELETE, referrers) when push is enabled. */
export type PushHandler = (c: Context<AppEnv>, path: ApiPath, route: Route) => Promise<Response>;

/** What one registry API request did, told when its response is decided. */
export interface ServedRequest {
  at: number;
  /** The route kind: manifest, blob, tags, … */
  kind: string;
  method: string;
  status: number;
  /** Body bytes sent (0 for a HEAD). */
  bytes: number;
  /** hit, miss or stale, for manifests and blobs. */
  cache?: string;
  /** The mirror-side repository key, once routed. */
  repository?: string;
  /** The tag or digest asked for (manifests), or the blob's digest. */
  reference?: string;
  user?: string;
}

/** Serves the status page and its API (`/`, `/ui/…`, `/api/v1/…`); the admin check is done before. */
export interface StatusHandler {
  handle(c: Context<AppEnv>): Promise<Response>;
  /** Told of every registry API request, for the page's history. */
  served(request: ServedRequest): void;
}

export interface AppDeps {
  mirror: Mirror;
  log: Logger;
  metrics: Metrics;
  auth?: Authenticator;
  push?: PushHandler;
  status?: StatusHandler;
  /** The signature policy: manifests of repositories under `enforce` are served only when signed. */
  signatures?: SignatureGate;
}

const READ_METHODS = new Set(['GET', 'HEAD']);

/** The registry API in front of the mirror. Parsing and response shapes only; the policy lives in mirror/. */
export function createApp({ mirror, log, metrics, auth, push, status, signatures }: AppDeps) {
  const app = new Hono<AppEnv>();

  const statusPage = status;
  app.use('*', async (c, next) => {
    const started = performance.now();
    await next();
    const route = c.get('route');
    const kind = c.get('kind') ?? 'other';
    const out = c.env?.outgoing;
    const status = c.res.status === 200 && out?.headersSent ? out.statusCode : c.res.status;
    // A HEAD sends no body, whatever its Content-Length says.
    const bytes = c.req.method === 'HEAD' ? 0 : Number(c.res.headers.get('content-length') ?? out?.getHeader?.('content-length') ?? 0);
    // Counted now, when the response is decided: a client may hold every byte of a body before
    // the socket's 'close' reaches us, and a scrape right after must already see its request.
    metrics.requests.inc({ route: kind, method: c.req.method, status: String(status) });
    if (c.req.method === 'GET' && status < 300) metrics.servedBytes.inc({}, bytes);
    if (route && statusPage) {
      statusPage.served({
        at: Date.now(),
        kind,
        method: c.req.method,
        status,
        bytes,
        cache: c.get('cache'),
        repository: route.key,
        reference: c.get('reference'),
        user: c.get('identity')?.user,
      });
    }
    const upstream = c.get('reachedUpstream') ? route?.upstream.name : undefined;
    const record = (): void => {
      log.info('request', {
        method: c.req.method,
        path: new URL(c.req.url).pathname,
        status,
        bytes,
        ms: Math.round((performance.now() - started) * 10) / 10,
        cache: c.get('cache'),
        upstream,
        user: c.get('identity')?.user,
      });
    };
    // The body (a blob's above all) may still be going out: log once the response is over, so
    // that `ms` covers the whole body, not only the time to the headers.
    if (out && !out.closed) out.once('close', record);
    else record();
  });

  mountPeerRoutes(app, mirror, log);

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    try {
      mirror.catalogue.ping();
      await access(mirror.store.blobsDir, constants.W_OK);
      await access(mirror.store.tmpDir, constants.W_OK);
      return c.json({ status: 'ready' });
    } catch (e) {
      return c.json({ status: 'unavailable', error: (e as Error).message }, 503);
    }
  });

  app.get('/metrics', async (c) => {
    if (auth) await requireRole(c, auth, 'admin');
    const gauges = [
      { name: 'sparse_mirror_store_bytes', help: 'Bytes held in the store (blobs and manifests).', value: mirror.catalogue.storeBytes() },
      { name: 'sparse_mirror_blob_downloads_in_flight', help: 'Blob downloads not yet flushed, renamed into place and recorded.', value: mirror.blobs.inFlight().length },
    ];
    if (mirror.shared) {
      gauges.push({ name: 'sparse_mirror_bucket_uploads_pending', help: 'Objects fetched here that the shared bucket does not hold yet.', value: mirror.shared.uploads.pending() });
    }
    const body = metrics.render(gauges);
    return c.body(body, 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
  });

  if (statusPage) {
    const page = async (c: Context<AppEnv>) => {
      c.set('kind', 'status');
      if (auth) await requireRole(c, auth, 'admin');
      return statusPage.handle(c);
    };
    app.all('/', page);
    app.all('/ui', page);
    app.all('/ui/*', page);
    app.all('/api/v1/*', page);
  }

  app.all('/v2/*', async (c) => {
    const url = new URL(c.req.url);
    // The URL parser already resolved `..` segments away; judge the path as the client sent it.
    const rawPath = rawPathOf(c) ?? url.pathname;
    rejectDotSegments(rawPath);
    const path = parseApiPath(rawPath);
    const method = c.req.method;
    c.set('kind', path.kind);
    if (auth) await requireRole(c, auth, READ_METHODS.has(method) && path.kind !== 'upload' ? 'pull' : 'push');
    if (path.kind === 'base') return jsonResponse({});
    if (path.kind === 'catalog') {
      if (!READ_METHODS.has(method)) {
        throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on the catalog (allowed: GET, HEAD)`, undefined, { Allow: 'GET, HEAD' });
      }
      const page = catalogPage(mirror.catalogue.db, url.searchParams.get('n') ?? undefined, url.searchParams.get('last') ?? undefined);
      const body = Buffer.from(JSON.stringify({ repositories: page.repositories }));
      const headers: Record<string, string> = { 'Content-Type': 'application/json', 'Content-Length': String(body.length), ...API_VERSION_HEADER };
      if (page.link) headers.Link = page.link;
      return new Response(method === 'GET' ? new Uint8Array(body) : null, { headers });
    }
    if (path.kind === 'unknown') {
      throw new OciError(404, 'NAME_UNKNOWN', `no registry API route at ${url.pathname.slice(0, 200)}`);
    }
    const ns = url.searchParams.get('ns') ?? undefined;
    const route = mirror.router.route(path.name, ns, c.req.header('host'));
    c.set('route', route);
    if (path.kind === 'referrers') {
      if (!READ_METHODS.has(method)) {
        throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on the referrers API (allowed: GET, HEAD)`, undefined, { Allow: 'GET, HEAD' });
      }
      const page = await tracked(c, () => mirror.referrers.list(route, path.digest, url.searchParams.get('artifactType') ?? undefined));
      return referrersResponse(page, method === 'GET', route.local ? {} : { 'OCI-Namespace': ns ?? route.upstream.name });
    }
    if (!READ_METHODS.has(method) || path.kind === 'upload') {
      if (push && route.local) return push(c, path, route);
      if (push) throw ociErrors.denied(`${route.key} is mirrored from ${route.upstream.name}; push to ${mirror.router.localNamespace}/… instead`);
      throw ociErrors.unsupported(`${method} is not supported: this mirror is read-only (push is disabled)`);
    }
    const extra = { 'OCI-Namespace': ns ?? route.upstream.name };
    const wantBody = method === 'GET';
    c.set('reference', path.kind === 'manifest' ? path.reference : path.kind === 'blob' ? path.digest : undefined);
    switch (path.kind) {
      case 'manifest': {
        const m = await tracked(c, () => mirror.manifests.get(route, path.reference, wantBody));
        c.set('cache', cacheResult(m.source));
        metrics.cache.inc({ kind: 'manifest', result: c.get('cache')! });
        // The signature policy judges the GETs that deliver content. A HEAD (digest and size)
        // answers: containerd resolves a tag with HEAD and shows no message for a refused HEAD,
        // while it does show the GET's.
        if (signatures && wantBody) await admitted(c, route, () => signatures.admit(route, path.reference, m.digest));
        return manifestResponse(m, extra, c.req.header('if-none-match'));
      }
      case 'blob': {
        if (signatures && wantBody) await admitted(c, route, () => signatures.admitBlob(route, path.digest));
        // Tracked only for a failure's sake: a hit may start a read-ahead download of the next blob.
        const { value: b } = await trackUpstreamContact(() => mirror.blobs.get(route, path.digest, { wantBody, range: c.req.header('range'), readAhead: true }));
        c.set('cache', cacheResult(b.source));
        if (b.source === 'upstream') c.set('reachedUpstream', true);
        metrics.cache.inc({ kind: 'blob', result: c.get('cache')! });
        try {
          return await blobResponse(c.env?.outgoing, b, extra, mirror.config.blobs);
        } catch (e) {
          throw toClientError(e, 'BLOB_UNKNOWN');
        }
      }
      case 'tags': {
        const page = await tracked(c, () => mirror.tags.list(route, {
          name: path.name,
          n: url.searchParams.get('n') ?? undefined,
          last: url.searchParams.get('last') ?? undefined,
          path: rawPath,
          ns,
        }));
        const headers: Record<string, string> = {
          'Content-Type': 'application/json',
          'Content-Length': String(page.body.length),
          ...API_VERSION_HEADER,
          ...extra,
        };
        if (page.link) headers.Link = page.link;
        return new Response(wantBody ? new Uint8Array(page.body) : null, { headers });
      }
    }
  });

  /** Throws the signature policy's refusal, counted by repository. */
  async function admitted(c: Context<AppEnv>, route: Route, admit: () => Promise<Admission>): Promise<void> {
    const admission = await tracked(c, admit);
    if (admission.allowed) return;
    metrics.signatureRefusals.inc({ repository: route.key });
    throw admission.error;
  }

  app.notFound((c) => errorResponse(new OciError(404, 'NAME_UNKNOWN', `no route at ${new URL(c.req.url).pathname.slice(0, 200)}`)));

  app.onError((err, c) => {
    if (errorReachedUpstream(err)) c.set('reachedUpstream', true);
    if (err instanceof OciError) {
      const platform = (err.detail as { platform?: unknown } | undefined)?.platform;
      if ((err.code === 'DENIED' || err.code === 'MANIFEST_UNKNOWN') && typeof platform === 'string') {
        metrics.notMirrored.inc({ platform });
      }
      return errorResponse(err);
    }
    log.error('internal error', {
      method: c.req.method,
      path: new URL(c.req.url).pathname,
      error: (err as Error).message,
      stack: (err as Error).stack,
    });
    return errorResponse(new OciError(500, 'UNSUPPORTED', 'internal error in the mirror; see its log'));
  });

  return app;
}

/** Runs a mirror call, noting on the request whether it reached the upstream. */
async function tracked<T>(c: Context<AppEnv>, fn: () => Promise<T>): Promise<T> {
  const { value, contacted } = await trackUpstreamContact(fn);
  if (contacted) c.set('reachedUpstream', true);
  return value;
}

function rawPathOf(c: Context<AppEnv>): string | undefined {
  const raw = c.env?.incoming?.url;
  return raw?.startsWith('/') ? raw.split('?')[0] : undefined;
}

/** `.` and `..` segments are never part of a name or digest: refused before anything resolves them. */
function rejectDotSegments(path: string): void {
  const segments = path.split('/');
  const dot = segments.findIndex((s) => /^(?:\.|%2e){1,2}$/i.test(s));
  if (dot < 0) return;
  const kind = segments.slice(0, dot).findLast((s) => s === 'manifests' || s === 'blobs');
  if (kind) throw ociErrors.digestInvalid(`the ${kind === 'blobs' ? 'blob' : 'manifest'} reference is not a digest: it contains a "." or ".." path segment`);
  throw ociErrors.nameInvalid('invalid repository name: the request path contains a "." or ".." segment');
}

/** 401 with a challenge when unauthenticated; 403 when the identity lacks the role. */
async function requireRole(c: Context<AppEnv>, auth: Authenticator, role: Role): Promise<void> {
  const identity = await auth.authenticate(c.req.header('authorization'));
  if (!identity) throw ociErrors.unauthorized('authentication required', auth.challenge());
  c.set('identity', identity);
  if (!hasRole(identity, role)) throw ociErrors.denied(`user ${identity.user} may not ${role === 'pull' ? 'pull' : role === 'push' ? 'push' : 'administer this mirror'}`);
}
