import type { Context, Hono } from 'hono';
import { PEER_HEADER, verifyPeerRequest } from '../cluster/peer-auth.js';
import { OciError } from '../oci/errors.js';
import type { Mirror } from '../mirror/mirror.js';
import { PEER_PREFIX } from '../mirror/peers.js';
import { toClientError } from '../mirror/upstream-errors.js';
import type { Logger } from '../log.js';
import type { AppEnv } from './app.js';
import { cacheResult } from './metrics.js';
import { parseApiPath } from './paths.js';
import { blobResponse, jsonResponse } from './responses.js';

/**
 * What one replica asks another: `GET /_peer/health` (the membership probe) and
 * `GET|HEAD /_peer/v2/<name>/blobs/<digest>?ns=<upstream>` (the owner of a digest fetches it once
 * and streams it to every replica that asks). Every request must carry a fresh HMAC of its method
 * and path under cluster.secret; nothing here is reachable without it, and these routes exist
 * only when the mirror is one of several replicas.
 */
export function mountPeerRoutes(app: Hono<AppEnv>, mirror: Mirror, log: Logger): void {
  const secret = mirror.config.cluster?.secret;
  if (!secret) return;
  app.all(`${PEER_PREFIX}/*`, async (c) => {
    c.set('kind', 'peer');
    const target = rawTarget(c);
    const check = verifyPeerRequest(secret, c.req.method, target, c.req.header(PEER_HEADER));
    if (!check.ok) {
      log.warn('peer request refused', { path: target.split('?')[0], remote: c.env?.incoming?.socket?.remoteAddress, reason: check.reason });
      throw new OciError(401, 'UNAUTHORIZED', `peer request refused: ${check.reason}`);
    }
    const url = new URL(c.req.url);
    if (url.pathname === `${PEER_PREFIX}/health`) return jsonResponse({ status: 'ok', replica: mirror.shared?.peers?.membership.selfUrl });
    const path = parseApiPath(url.pathname.slice(PEER_PREFIX.length));
    if (path.kind !== 'blob' || (c.req.method !== 'GET' && c.req.method !== 'HEAD')) {
      throw new OciError(404, 'NAME_UNKNOWN', 'replicas ask each other for blobs only (GET or HEAD)');
    }
    const route = mirror.router.route(path.name, url.searchParams.get('ns') ?? undefined);
    c.set('route', route);
    const wantBody = c.req.method === 'GET';
    const b = await mirror.blobs.get(route, path.digest, { wantBody, range: c.req.header('range'), fromPeer: true });
    c.set('cache', cacheResult(b.source));
    try {
      return await blobResponse(c.env?.outgoing, b, {}, mirror.config.blobs);
    } catch (e) {
      throw toClientError(e, 'BLOB_UNKNOWN');
    }
  });
}

/** The request target as the peer signed it: raw path and query. */
function rawTarget(c: Context<AppEnv>): string {
  const raw = c.env?.incoming?.url;
  if (raw?.startsWith('/')) return raw;
  const u = new URL(c.req.url);
  return `${u.pathname}${u.search}`;
}
