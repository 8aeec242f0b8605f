import { parseDigest } from '../oci/digest.js';
import { ociErrors } from '../oci/errors.js';
import type { ParsedManifest } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import type { ReferrersCatalogue } from '../store/referrers-catalogue.js';
import type { Route } from './routing.js';

export interface ReferrersPage {
  /** An OCI image index listing the referrers (possibly none). */
  body: Buffer;
  /** Set when the list was filtered by `artifactType` (the spec's `OCI-Filters-Applied`). */
  filtersApplied?: string;
}

/** The OCI 1.1 Referrers API for pushed repositories: which stored manifests name a digest as their `subject`. */
export class ReferrersService {
  constructor(private readonly catalogue: ReferrersCatalogue) {}

  /** Records `manifest` (stored as `digest`) as a referrer of its subject, if it has one. */
  record(route: Route, digest: string, mediaType: string, size: number, manifest: ParsedManifest): void {
    if (!manifest.subject) return;
    this.catalogue.add({
      repo: route.key,
      subject: manifest.subject.digest,
      digest,
      mediaType,
      size,
      artifactType: artifactTypeOf(manifest),
      annotations: manifest.annotations,
    });
  }

  forget(route: Route, digest: string): void {
    this.catalogue.removeReferrer(route.key, digest);
  }

  /** Never a 404 for a valid digest: no referrers is an empty index. */
  list(route: Route, digestText: string, artifactType?: string): ReferrersPage {
    const parsed = parseDigest(digestText);
    if (!parsed.ok) throw ociErrors.digestInvalid(parsed.reason, { digest: digestText.slice(0, 80) });
    const filter = artifactType === undefined || artifactType === '' ? undefined : artifactType;
    const rows = this.catalogue.list(route.key, parsed.digest.value, filter);
    const manifests = rows.map((r) => ({
      mediaType: r.media_type,
      digest: r.digest,
      size: r.size,
      ...(r.artifact_type ? { artifactType: r.artifact_type } : {}),
      ...(r.annotations ? { annotations: JSON.parse(r.annotations) as Record<string, string> } : {}),
    }));
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }));
    return { body, filtersApplied: filter === undefined ? undefined : 'artifactType' };
  }
}

/** The spec's rule: `artifactType`, else for an image manifest its config's media type. */
export function artifactTypeOf(manifest: ParsedManifest): string | undefined {
  if (manifest.artifactType) return manifest.artifactType;
  return manifest.kind === 'image' ? manifest.config.mediaType : undefined;
}
