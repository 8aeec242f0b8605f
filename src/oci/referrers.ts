import { z } from 'zod';
import type { Descriptor, ParsedManifest } from './manifest.js';
import { MediaType } from './media-types.js';

/** One entry of a referrers list: a manifest naming the subject, as the spec's descriptors carry it. */
export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** cosign's tag scheme: `sha256-<hex>.sig` (signatures), `.att` (attestations), `.sbom` (SBOMs). */
export const COSIGN_SUFFIXES = ['sig', 'att', 'sbom'] as const;
export type CosignSuffix = (typeof COSIGN_SUFFIXES)[number];

const SCHEME_TAG = /^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})(?:\.(sig|att|sbom))?$/;

/** The referrers tag schema's fallback tag for `digest`: `sha256:abc…` → `sha256-abc…`. */
export function fallbackTag(digest: string): string {
  return digest.replace(':', '-');
}

export function cosignTag(digest: string, suffix: CosignSuffix): string {
  return `${fallbackTag(digest)}.${suffix}`;
}

/** The subject a tag-scheme tag (fallback index or cosign tag) is about, else undefined. */
export function subjectOfTag(tag: string): { subject: string; suffix?: CosignSuffix } | undefined {
  const m = SCHEME_TAG.exec(tag);
  if (!m) return undefined;
  const [, algorithm, hex, suffix] = m;
  if ((algorithm === 'sha256') !== (hex!.length === 64)) return undefined;
  return { subject: `${algorithm}:${hex}`, suffix: suffix as CosignSuffix | undefined };
}

/** The spec's rule: `artifactType`, else for an image manifest its config's media type. */
export function artifactTypeOf(manifest: ParsedManifest): string | undefined {
  if (manifest.artifactType) return manifest.artifactType;
  return manifest.kind === 'image' ? manifest.config.mediaType : undefined;
}

/**
 * The referrers list as an OCI index. Entries are ordered by digest so that the same set of
 * referrers gives the same bytes whichever order they arrived in (online, or after an import).
 */
export function referrersIndex(descriptors: ReferrerDescriptor[]): Buffer {
  const manifests = [...descriptors].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }));
}

const descriptorSchema = z.object({
  mediaType: z.string().min(1),
  digest: z.string().regex(/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/),
  size: z.number().int().nonnegative(),
  artifactType: z.string().optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
const listSchema = z.object({ manifests: z.array(descriptorSchema).default([]) });

/** Parses an upstream's referrers answer (or a fallback-tag index): its descriptors, or why not. */
export function parseReferrersList(bytes: Buffer): { ok: true; descriptors: ReferrerDescriptor[] } | { ok: false; reason: string } {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  const parsed = listSchema.safeParse(json);
  if (!parsed.success) return { ok: false, reason: parsed.error.issues[0]?.message ?? 'not an OCI index' };
  return { ok: true, descriptors: parsed.data.manifests.map(asReferrerDescriptor) };
}

/** What an index entry says about the manifest it names, in referrer-descriptor form (no platform, no empty fields). */
export function asReferrerDescriptor(d: ReferrerDescriptor | Descriptor): ReferrerDescriptor {
  return {
    mediaType: d.mediaType,
    digest: d.digest,
    size: d.size,
    ...(d.artifactType ? { artifactType: d.artifactType } : {}),
    ...(d.annotations && Object.keys(d.annotations).length > 0 ? { annotations: d.annotations } : {}),
  };
}

export type ArtifactKind = 'signature' | 'sbom' | 'attestation' | 'other';

const SIGNATURE_TYPES = [
  'application/vnd.dev.cosign.artifact.sig.v1+json',
  'application/vnd.dev.cosign.simplesigning.v1+json',
  'application/vnd.cncf.notary.signature',
  'application/vnd.dev.sigstore.bundle.v0.3+json',
  'application/vnd.dev.sigstore.bundle+json;version=0.3',
];

/** What a referrer is, for counts: by its cosign tag suffix, else by its artifact type. */
export function classifyArtifact(artifactType: string | undefined, suffix?: CosignSuffix): ArtifactKind {
  if (suffix === 'sig') return 'signature';
  if (suffix === 'sbom') return 'sbom';
  if (suffix === 'att') return 'attestation';
  const t = (artifactType ?? '').toLowerCase();
  if (SIGNATURE_TYPES.includes(t) || t.includes('signature')) return 'signature';
  if (t.includes('spdx') || t.includes('cyclonedx') || t.includes('sbom') || t.includes('syft')) return 'sbom';
  if (t.includes('in-toto') || t.includes('dsse') || t.includes('attestation') || t.includes('provenance')) return 'attestation';
  return 'other';
}
