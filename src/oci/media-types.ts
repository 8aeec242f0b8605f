export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

const INDEX_TYPES = new Set<string>([MediaType.ociIndex, MediaType.dockerManifestList]);
const IMAGE_MANIFEST_TYPES = new Set<string>([MediaType.ociManifest, MediaType.dockerManifest]);
const IMAGE_CONFIG_TYPES = new Set<string>([MediaType.ociConfig, MediaType.dockerConfig]);

export function isIndexType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType);
}

export function isImageManifestType(mediaType: string): boolean {
  return IMAGE_MANIFEST_TYPES.has(mediaType);
}

export function isManifestType(mediaType: string): boolean {
  return isIndexType(mediaType) || isImageManifestType(mediaType);
}

export function isImageConfigType(mediaType: string): boolean {
  return IMAGE_CONFIG_TYPES.has(mediaType);
}

/** What the mirror asks upstream for, so it stores what a modern client would get (indexes, not one platform). */
export const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
].join(', ');

/** Strips parameters (`; charset=utf-8`) and case from a Content-Type header value. */
export function baseMediaType(contentType: string | null | undefined): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}
