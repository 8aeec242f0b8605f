import { OciError } from '../oci/errors.js';
import type { Catalogue } from '../store/catalogue.js';
import type { NotMirroredResponse } from './not-mirrored.js';
import type { Route } from './routing.js';

/**
 * For a pushed (local) repository: the not-mirrored error for a manifest that a stored index lists
 * but that was never pushed (a sparse index), in the same words as pull-through's, so a person
 * sees which platform is missing, from which index, and what this mirror does hold of it.
 * Undefined when no stored index of the repository lists the digest (a plain unknown manifest).
 */
export function absentFromPushedIndex(
  catalogue: Catalogue,
  route: Route,
  digest: string,
  response: NotMirroredResponse,
): OciError | undefined {
  const entries = catalogue.indexEntriesFor(route.key, digest);
  if (entries.length === 0) return undefined;
  const entry = entries.find((e) => e.platform !== null) ?? entries[0]!;
  const tag = catalogue.tagsForDigest(route.key, entry.index_digest)[0];
  const index = tag ? `${route.key}:${tag}` : `${route.key}@${entry.index_digest}`;
  const present = new Set<string>();
  for (const sibling of catalogue.childrenOf(route.key, entry.index_digest)) {
    if (sibling.platform && !sibling.attestation_for && catalogue.getManifest(route.key, sibling.child_digest)) present.add(sibling.platform);
  }
  const carries = present.size > 0 ? [...present].join(', ') : 'none of its platforms';
  const platform = entry.platform;
  const what = entry.attestation_for ? `the ${platform ?? 'unplatformed'} attestation manifest` : `the ${platform ?? 'unplatformed'} entry`;
  const message = platform
    ? `platform ${platform} is not mirrored here (this mirror carries ${carries} of ${index}); ` +
      `${digest} is ${what} of index ${index}, which was pushed without it`
    : `manifest ${digest} is listed by index ${index}, which was pushed without it (this mirror carries ${carries} of it)`;
  const detail = {
    ...(platform ? { platform } : {}),
    digest,
    index,
    mirroredPlatforms: [...present],
  };
  return response === 'denied' ? new OciError(403, 'DENIED', message, detail) : new OciError(404, 'MANIFEST_UNKNOWN', message, detail);
}
