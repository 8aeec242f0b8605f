import { z } from 'zod';
import { parseDigest } from './digest.js';
import { baseMediaType, isImageManifestType, isIndexType, MediaType } from './media-types.js';
import type { Platform } from './platform.js';

const digestString = z.string().refine((d) => parseDigest(d).ok, { message: 'invalid digest' });

const platformSchema = z.object({
  os: z.string(),
  architecture: z.string(),
  variant: z.string().optional(),
});

const descriptorSchema = z.object({
  mediaType: z.string(),
  digest: digestString,
  size: z.number().int().nonnegative(),
  platform: platformSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  artifactType: z.string().optional(),
});

const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  manifests: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

const imageSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

export type Descriptor = z.infer<typeof descriptorSchema>;

export interface IndexManifest {
  kind: 'index';
  mediaType: string;
  artifactType?: string;
  children: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  kind: 'image';
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export type ParsedManifest = IndexManifest | ImageManifest;

export type ManifestParse = { ok: true; manifest: ParsedManifest } | { ok: false; reason: string };

/**
 * Reads the structure of a manifest without ever changing its bytes: the caller keeps the
 * original buffer and serves that. The media type comes from the body's `mediaType` field when
 * present, else from the Content-Type it arrived with, else from its shape.
 */
export function parseManifest(bytes: Uint8Array, contentType?: string | null): ManifestParse {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return { ok: false, reason: 'manifest is not valid JSON' };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return { ok: false, reason: 'manifest is not a JSON object' };
  }
  const body = json as Record<string, unknown>;
  const declared = typeof body.mediaType === 'string' ? body.mediaType : baseMediaType(contentType);
  const looksLikeIndex = isIndexType(declared) || (!isImageManifestType(declared) && Array.isArray(body.manifests));

  if (looksLikeIndex) {
    const r = indexSchema.safeParse(body);
    if (!r.success) return { ok: false, reason: `invalid image index: ${describeIssue(r.error)}` };
    const m = r.data;
    return {
      ok: true,
      manifest: {
        kind: 'index',
        mediaType: isIndexType(declared) ? declared : MediaType.ociIndex,
        artifactType: m.artifactType,
        children: m.manifests,
        subject: m.subject,
        annotations: m.annotations,
      },
    };
  }
  const r = imageSchema.safeParse(body);
  if (!r.success) return { ok: false, reason: `invalid image manifest: ${describeIssue(r.error)}` };
  const m = r.data;
  return {
    ok: true,
    manifest: {
      kind: 'image',
      mediaType: declared || MediaType.ociManifest,
      artifactType: m.artifactType,
      config: m.config,
      layers: m.layers,
      subject: m.subject,
      annotations: m.annotations,
    },
  };
}

function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'does not match the schema';
  const path = issue.path.length ? issue.path.join('.') : '(root)';
  return `${path}: ${issue.message}`;
}

/** Every blob an image manifest needs: its config and layers (foreign layers included: the digest still names them). */
export function referencedBlobs(m: ImageManifest): Descriptor[] {
  return [m.config, ...m.layers];
}

export const ATTESTATION_TYPE_KEY = 'vnd.docker.reference.type';
export const ATTESTATION_DIGEST_KEY = 'vnd.docker.reference.digest';

export interface IndexChild {
  descriptor: Descriptor;
  /** The platform that decides whether the child is mirrored; undefined = not platform-specific. */
  platform?: Platform;
  /** For a buildx attestation manifest: the digest of the manifest it describes. */
  attestationFor?: string;
}

/**
 * Resolves the platform each child of an index stands for. A buildx attestation manifest is
 * listed as `unknown/unknown`; it belongs to the platform of the manifest it describes.
 */
export function indexChildren(index: IndexManifest): IndexChild[] {
  const byDigest = new Map(index.children.map((d) => [d.digest, d]));
  return index.children.map((descriptor) => {
    const annotations = descriptor.annotations ?? {};
    if (annotations[ATTESTATION_TYPE_KEY] === 'attestation-manifest') {
      const target = annotations[ATTESTATION_DIGEST_KEY];
      const described = target ? byDigest.get(target) : undefined;
      return { descriptor, platform: described?.platform ?? descriptor.platform, attestationFor: target };
    }
    return { descriptor, platform: descriptor.platform };
  });
}
