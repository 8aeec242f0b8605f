import type { Context } from 'hono';
import type { MirrorConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import { OciError, ociErrors } from '../oci/errors.js';
import type { Mirror } from '../mirror/mirror.js';
import { PushService, tooLarge } from './push.js';
import type { Route } from '../mirror/routing.js';
import { rangeHeaders, UploadInterrupted, UploadManager, type BodySource, type ChunkInput, type UploadSession } from './uploads.js';
import { PushCatalogue } from '../store/push-catalogue.js';
import type { AppEnv, PushHandler } from '../http/app.js';
import { API_VERSION_HEADER } from '../http/responses.js';

export interface PushApi {
  /** The hook `createApp` calls for writes and uploads of local repositories. */
  handler: PushHandler;
  uploads: UploadManager;
  service: PushService;
  /** Cancels upload sessions (their temp files are removed). */
  close(): Promise<void>;
}

/**
 * The push side of the registry API, as a thin HTTP mapping over push/uploads and push/push.
 * Only called for repositories of the local namespace, after auth has checked the push role.
 * Their referrers API is the mirror's own (mirror/referrers), served by http/ for every repository.
 */
export function createPushApi(mirror: Mirror, config: MirrorConfig, log: Logger): PushApi {
  const uploads = new UploadManager(mirror.store, mirror.catalogue, { timeoutMs: config.push.uploadTimeoutSeconds * 1000 }, log);
  const service = new PushService(
    mirror.store,
    mirror.catalogue,
    new PushCatalogue(mirror.catalogue.db),
    { indexChildren: config.push.indexChildren, allowDelete: config.push.allowDelete, maxManifestBytes: config.limits.maxManifestBytes },
    log,
  );

  const handler: PushHandler = async (c, path, route) => {
    const method = c.req.method;
    switch (path.kind) {
      case 'upload':
        return uploadRoute(c, uploads, route, path.session);
      case 'manifest':
        if (method === 'PUT') {
          const bytes = await readManifestBody(c, service.maxManifestBytes);
          const pushed = await service.putManifest(route, path.reference, bytes, c.req.header('content-type'));
          const headers: Record<string, string> = {
            Location: `/v2/${route.repo}/manifests/${pushed.digest}`,
            'Docker-Content-Digest': pushed.digest,
            'Content-Length': '0',
            ...API_VERSION_HEADER,
          };
          if (pushed.subject) headers['OCI-Subject'] = pushed.subject;
          return new Response(null, { status: 201, headers });
        }
        if (method === 'DELETE') {
          service.deleteManifest(route, path.reference);
          return new Response(null, { status: 202, headers: { 'Content-Length': '0', ...API_VERSION_HEADER } });
        }
        throw notAllowed(method, 'a manifest', 'GET, HEAD, PUT, DELETE');
      case 'blob':
        if (method === 'DELETE') {
          throw ociErrors.unsupported(
            'blobs are not deleted one by one here: they are shared between repositories; delete the manifests and let gc reclaim unreferenced blobs',
          );
        }
        throw notAllowed(method, 'a blob', 'GET, HEAD');
      default:
        throw notAllowed(method, 'this endpoint', 'GET, HEAD');
    }
  };

  return { handler, uploads, service, close: () => uploads.close() };
}

async function uploadRoute(c: Context<AppEnv>, uploads: UploadManager, route: Route, sessionId: string | undefined): Promise<Response> {
  const method = c.req.method;
  const query = new URL(c.req.url).searchParams;
  const base = `/v2/${route.repo}/blobs`;
  const created = (digest: string) =>
    new Response(null, {
      status: 201,
      headers: { Location: `${base}/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0', ...API_VERSION_HEADER },
    });
  const progress = (session: UploadSession, status: 202 | 204) =>
    new Response(null, {
      status,
      headers: {
        Location: `${base}/uploads/${session.id}`,
        ...rangeHeaders(session),
        ...(status === 202 ? { 'Content-Length': '0' } : {}),
        ...API_VERSION_HEADER,
      },
    });

  if (sessionId === undefined) {
    if (method !== 'POST') {
      throw new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `${method} needs an upload session URL (POST ${base}/uploads/ starts one)`);
    }
    const mount = query.get('mount');
    if (mount !== null) {
      // Present anywhere in the store: mounted (201). Otherwise the spec's fallback: a new upload (202).
      const digest = await uploads.present(mount);
      if (digest) return created(digest.value);
    }
    const digests = query.getAll('digest');
    if (digests.length > 0) {
      const done = await uploads.monolithic(route.key, digests, chunkInput(c)).catch(interrupted);
      return created(done.digest);
    }
    return progress(await uploads.create(route.key), 202);
  }

  const session = uploads.get(route.key, sessionId);
  const location = `${base}/uploads/${session.id}`;
  try {
    switch (method) {
      case 'GET':
      case 'HEAD':
        return progress(await uploads.status(session), 204);
      case 'PATCH':
        return progress(await uploads.append(session, chunkInput(c)), 202);
      case 'PUT': {
        const done = await uploads.complete(session, query.getAll('digest'), chunkInput(c));
        return created(done.digest);
      }
      case 'DELETE':
        await uploads.cancel(session);
        return new Response(null, { status: 204, headers: { ...API_VERSION_HEADER } });
      default:
        throw notAllowed(method, 'an upload session', 'GET, HEAD, PATCH, PUT, DELETE');
    }
  } catch (e) {
    if (e instanceof OciError && e.status === 416) {
      throw new OciError(e.status, e.code, e.message, e.detail, { ...e.headers, Location: location });
    }
    return interrupted(e);
  }
}

/** A client that went away mid-body gets an answer it will never read; the data it sent is kept for resuming. */
function interrupted(e: unknown): never {
  if (e instanceof UploadInterrupted) {
    throw new OciError(400, 'BLOB_UPLOAD_INVALID', `${e.message}; ask for the upload's status and resume from its Range`, {
      size: e.session.size,
    });
  }
  throw e;
}

function chunkInput(c: Context<AppEnv>): ChunkInput {
  return {
    body: requestBody(c),
    contentRange: c.req.header('content-range'),
    contentLength: c.req.header('content-length'),
  };
}

/** The request body as it arrives: the Node request stream itself under the Node server. */
function requestBody(c: Context<AppEnv>): BodySource {
  const incoming = c.env?.incoming;
  if (incoming) return incoming as unknown as BodySource;
  const body = c.req.raw.body;
  return body ? (body as unknown as BodySource) : (async function* () {})();
}

/** Reads a manifest body, refusing (413) anything over the limit without reading it all. */
async function readManifestBody(c: Context<AppEnv>, max: number): Promise<Buffer> {
  const declared = Number(c.req.header('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > max) throw tooLarge(declared, max);
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of requestBody(c)) {
      total += chunk.length;
      if (total > max) throw tooLarge(total, max);
      chunks.push(Buffer.from(chunk));
    }
  } catch (e) {
    if (e instanceof OciError) throw e;
    throw ociErrors.manifestInvalid(`the manifest body was cut off: ${(e as Error).message}`);
  }
  return Buffer.concat(chunks);
}

function notAllowed(method: string, what: string, allowed: string): OciError {
  return new OciError(405, 'UNSUPPORTED', `${method} is not supported on ${what} (allowed: ${allowed})`, undefined, { Allow: allowed });
}
