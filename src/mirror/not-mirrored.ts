import { OciError } from '../oci/errors.js';
import { formatPlatform, type PlatformAllowList } from '../oci/platform.js';

export type NotMirroredResponse = 'denied' | 'not-found';

/**
 * The error for a platform this mirror does not carry. It names the platform, where the request
 * met it, and what the mirror carries. 403 DENIED by default: containerd and skopeo print the
 * message of a 403, while containerd drops the body of every 404.
 */
export function notMirroredError(opts: {
  platform: string;
  digest: string;
  /** e.g. `docker.io/library/alpine:3.20`, or undefined for an image manifest no stored index lists. */
  index?: string;
  image?: string;
  /** What was asked for refers to `digest` (a signature, SBOM or attestation of it). */
  referrer?: string;
  allowList: PlatformAllowList;
  response: NotMirroredResponse;
}): OciError {
  const carries = opts.allowList.describe();
  const where = opts.index
    ? `${opts.digest} is the ${opts.platform} entry of index ${opts.index}`
    : opts.image?.includes('@')
      ? `${opts.image} is a ${opts.platform} image manifest`
      : `${opts.image ?? opts.digest} is a single-platform ${opts.platform} image`;
  const about = opts.referrer ? `${opts.referrer} refers to ${where.replace(/ is (the|a) /, ', $1 ')}` : where;
  const message = `platform ${opts.platform} is not mirrored here (this mirror carries ${carries}); ${about}`;
  const detail = {
    platform: opts.platform,
    digest: opts.digest,
    ...(opts.referrer ? { referrer: opts.referrer } : {}),
    ...(opts.index ? { index: opts.index } : { image: opts.image ?? opts.digest }),
    mirroredPlatforms: opts.allowList.platforms.map(formatPlatform),
  };
  return opts.response === 'denied'
    ? new OciError(403, 'DENIED', message, detail)
    : new OciError(404, 'MANIFEST_UNKNOWN', message, detail);
}
