import { OciError, ociErrors } from '../oci/errors.js';
import { UpstreamError } from '../upstream/errors.js';

type Resource = 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN';

/** What a client is told when upstream failed it. Never upstream's own headers or credentials. */
export function toClientError(e: unknown, resource: Resource): OciError {
  if (e instanceof OciError) return e;
  const storeFull = storeFullError(e);
  if (storeFull) return storeFull;
  if (!(e instanceof UpstreamError)) throw e;
  switch (e.failure) {
    case 'not_found':
    case 'too_large':
      return new OciError(404, resource, e.message);
    case 'denied':
      return ociErrors.denied(e.message);
    case 'rate_limited':
      return ociErrors.tooManyRequests(e.message, e.retryAfter);
    case 'unavailable':
      return ociErrors.upstream(`${e.message}; this mirror does not hold it`, resource, 502);
    case 'bad_response':
      return ociErrors.upstream(e.message, resource, 502);
  }
}

/** The store (disk or SQLite) is full: 507, and the mirror goes on serving what it has. */
export function storeFullError(e: unknown): OciError | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const full = code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
  return full ? new OciError(507, 'BLOB_UNKNOWN', 'the mirror\'s store is full; it cannot keep new content until space is freed') : undefined;
}

/**
 * Failures where serving what the store already holds beats failing (stale-if-error): every
 * upstream failure but a 404, which says the tag is really gone.
 */
export function canServeStale(e: unknown): e is UpstreamError {
  return e instanceof UpstreamError && e.failure !== 'not_found';
}
