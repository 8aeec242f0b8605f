import { indexChildren, referencedBlobs, type ParsedManifest } from '../oci/manifest.js';
import { formatPlatform } from '../oci/platform.js';
import { artifactTypeOf } from '../oci/referrers.js';
import type { NewManifest } from '../store/catalogue.js';

/**
 * What the catalogue records for a manifest: every index entry with the platform that decides
 * it, or the blobs an image manifest references. Used for pulls, pushes and imports alike.
 */
export function manifestRecord(opts: {
  repo: string;
  digest: string;
  mediaType: string;
  size: number;
  manifest: ParsedManifest;
  platform?: string;
}): NewManifest {
  const { manifest } = opts;
  return {
    repo: opts.repo,
    digest: opts.digest,
    mediaType: opts.mediaType,
    size: opts.size,
    kind: manifest.kind,
    platform: opts.platform,
    children:
      manifest.kind === 'index'
        ? indexChildren(manifest).map((c, position) => ({
            child_digest: c.descriptor.digest,
            media_type: c.descriptor.mediaType,
            size: c.descriptor.size,
            platform: c.platform ? formatPlatform(c.platform) : null,
            attestation_for: c.attestationFor ?? null,
            position,
          }))
        : undefined,
    blobs:
      manifest.kind === 'image'
        ? referencedBlobs(manifest).map((b) => ({ digest: b.digest, mediaType: b.mediaType, size: b.size }))
        : undefined,
    referrer: manifest.subject
      ? { subject: manifest.subject.digest, artifactType: artifactTypeOf(manifest), annotations: manifest.annotations }
      : undefined,
  };
}
