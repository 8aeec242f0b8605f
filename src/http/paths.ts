/** A distribution API request, from the raw (still percent-encoded) URL path. */
export type ApiPath =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'tags'; name: string }
  | { kind: 'upload'; name: string; session?: string }
  | { kind: 'referrers'; name: string; digest: string }
  | { kind: 'unknown' };

/**
 * Splits `/v2/<name>/<kind>/<ref>`. The name may hold slashes, so the last recognised kind
 * wins; nothing is decoded, so `%2F` and `..` reach the name validator as they came.
 */
export function parseApiPath(rawPath: string): ApiPath {
  if (rawPath === '/v2' || rawPath === '/v2/') return { kind: 'base' };
  if (!rawPath.startsWith('/v2/')) return { kind: 'unknown' };
  if (rawPath === '/v2/_catalog') return { kind: 'catalog' };
  const rest = rawPath.slice(4);
  let m = /^(.+)\/manifests\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'manifest', name: m[1]!, reference: m[2]! };
  m = /^(.+)\/blobs\/uploads\/([^/]*)$/.exec(rest);
  if (m) return m[2] ? { kind: 'upload', name: m[1]!, session: m[2] } : { kind: 'upload', name: m[1]! };
  m = /^(.+)\/blobs\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'blob', name: m[1]!, digest: m[2]! };
  m = /^(.+)\/tags\/list$/.exec(rest);
  if (m) return { kind: 'tags', name: m[1]! };
  m = /^(.+)\/referrers\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'referrers', name: m[1]!, digest: m[2]! };
  return { kind: 'unknown' };
}
