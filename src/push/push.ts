import { digestOf, isDigestLike, parseDigest, type Digest } from '../oci/digest.js';
import { OciError, ociErrors, type OciErrorBody } from '../oci/errors.js';
import {
  indexChildren,
  parseManifest,
  referencedBlobs,
  type Descriptor,
  type ImageManifest,
  type IndexManifest,
} from '../oci/manifest.js';
import { baseMediaType, isImageConfigType, isManifestType } from '../oci/media-types.js';
import { formatPlatform, parsePlatform, PlatformAllowList, type Platform } from '../oci/platform.js';
import { isValidTag } from '../oci/reference.js';
import type { BlobStore } from '../store/blob-store.js';
import type { Catalogue } from '../store/catalogue.js';
import type { PushCatalogue } from '../store/push-catalogue.js';
import type { Logger } from '../log.js';
import { manifestRecord } from '../mirror/records.js';
import type { Route } from '../mirror/routing.js';

/** Which children of a pushed image index must already be in the repository. */
export type IndexChildrenPolicy = 'all' | 'none' | readonly string[];

export interface PushPolicy {
  indexChildren: IndexChildrenPolicy;
  allowDelete: boolean;
  maxManifestBytes: number;
}

export interface PushedManifest {
  digest: string;
  mediaType: string;
  size: number;
  /** The digest named by the manifest's `subject` (the response's `OCI-Subject`). */
  subject?: string;
  tag?: string;
}

/** Several OCI errors in one response (the spec: one error per unknown blob). */
export class OciErrorList extends OciError {
  constructor(
    status: number,
    readonly entries: OciError[],
  ) {
    const first = entries[0]!;
    super(status, first.code, first.message, first.detail);
  }

  override body(): OciErrorBody {
    return { errors: this.entries.flatMap((e) => e.body().errors) };
  }
}

/** A required index child that the repository lacks. */
export interface MissingChild {
  digest: string;
  mediaType: string;
  /** Effective platform (an attestation takes its subject's), when the entry has one. */
  platform?: string;
}

/** Media types that are generic, not a statement about the manifest's format. */
const GENERIC_TYPES = new Set(['', 'application/json', 'application/octet-stream', 'text/plain']);

/**
 * The children `policy` requires of an index. `all`: every entry. `none`: nothing. A platform
 * list: the image manifests of those platforms (normalised as containerd does, so `linux/arm64`
 * covers `linux/arm64/v8`). Attestation manifests and entries without a platform are optional
 * under a list, as in distribution's platform list: a per-platform copy does not carry them.
 */
export function missingChildren(index: IndexManifest, policy: IndexChildrenPolicy, present: (digest: string) => boolean): MissingChild[] {
  if (policy === 'none') return [];
  const required = policy === 'all' ? undefined : PlatformAllowList.parse(policy);
  const missing: MissingChild[] = [];
  const seen = new Set<string>();
  for (const child of indexChildren(index)) {
    const d = child.descriptor.digest;
    if (seen.has(d)) continue;
    seen.add(d);
    if (required && (child.attestationFor !== undefined || !child.platform || !required.allows(child.platform))) continue;
    if (present(d)) continue;
    missing.push({ digest: d, mediaType: child.descriptor.mediaType, platform: child.platform ? formatPlatform(child.platform) : undefined });
  }
  return missing;
}

export function describePolicy(policy: IndexChildrenPolicy): string {
  return policy === 'all' || policy === 'none' ? policy : `[${policy.join(', ')}]`;
}

/**
 * The write side of a pushed (local) repository: manifests stored as the exact bytes sent,
 * checked against what they reference, recorded in the catalogue exactly as pull-through records
 * them (tags, index entries with platforms, blob references), so pulls and the not-mirrored
 * error work the same way.
 */
export class PushService {
  constructor(
    private readonly store: BlobStore,
    private readonly catalogue: Catalogue,
    private readonly deletes: PushCatalogue,
    private readonly policy: PushPolicy,
    private readonly log: Logger,
  ) {}

  get maxManifestBytes(): number {
    return this.policy.maxManifestBytes;
  }

  async putManifest(route: Route, reference: string, bytes: Buffer, contentType: string | undefined): Promise<PushedManifest> {
    const target = parseReference(reference);
    if (bytes.length > this.policy.maxManifestBytes) throw tooLarge(bytes.length, this.policy.maxManifestBytes);
    if (bytes.length === 0) throw ociErrors.manifestInvalid('the manifest body is empty');

    const algorithm = target.kind === 'digest' ? target.digest.algorithm : 'sha256';
    const digest = digestOf(bytes, algorithm);
    if (target.kind === 'digest' && digest !== target.digest.value) {
      throw ociErrors.digestInvalid(`the manifest's bytes have digest ${digest}, not ${target.digest.value} as the URL says; nothing was stored`, {
        expected: target.digest.value,
        actual: digest,
      });
    }

    const sentType = baseMediaType(contentType);
    const declaredType = declaredMediaType(bytes);
    if (declaredType !== undefined && !GENERIC_TYPES.has(sentType) && declaredType !== sentType) {
      throw ociErrors.manifestInvalid(`Content-Type ${sentType} does not match the manifest's mediaType ${declaredType}`, {
        contentType: sentType,
        mediaType: declaredType,
      });
    }
    const parsed = parseManifest(bytes, GENERIC_TYPES.has(sentType) ? undefined : sentType);
    if (!parsed.ok) {
      const hint = schemaVersionOf(bytes) === 1 ? ' (Docker schema 1 manifests are not accepted; push schema 2 or OCI)' : '';
      throw ociErrors.manifestInvalid(`${parsed.reason}${hint}`);
    }
    const manifest = parsed.manifest;
    const mediaType = declaredType ?? (GENERIC_TYPES.has(sentType) ? manifest.mediaType : sentType);
    if (!isManifestType(mediaType)) {
      throw ociErrors.manifestInvalid(`media type ${mediaType} is not an OCI or Docker schema 2 manifest or index type`, { mediaType });
    }

    let platform: Platform | undefined;
    if (manifest.kind === 'image') {
      await this.checkBlobs(route, manifest);
      platform = await this.platformOf(route, digest, manifest);
    } else {
      this.checkChildren(route, manifest);
    }

    const d = parseDigest(digest);
    if (!d.ok) throw new Error(d.reason);
    await this.store.putUnlessStored(d.digest, bytes);
    const record = manifestRecord({
      repo: route.key,
      digest,
      mediaType,
      size: bytes.length,
      manifest,
      platform: platform ? formatPlatform(platform) : undefined,
    });
    this.catalogue.db.transaction(() => {
      this.catalogue.addManifest(record);
      if (target.kind === 'tag') this.catalogue.setTag(route.key, target.tag, digest);
    })();
    this.log.info('manifest pushed', {
      repo: route.key,
      digest,
      tag: target.kind === 'tag' ? target.tag : undefined,
      kind: manifest.kind,
      platform: record.platform,
      children: manifest.kind === 'index' ? manifest.children.length : undefined,
    });
    return {
      digest,
      mediaType,
      size: bytes.length,
      subject: manifest.subject?.digest,
      tag: target.kind === 'tag' ? target.tag : undefined,
    };
  }

  /** DELETE of a tag (the tag only) or of a manifest by digest (with the tags pointing at it). */
  deleteManifest(route: Route, reference: string): void {
    if (!this.policy.allowDelete) {
      throw ociErrors.unsupported('deleting is disabled on this mirror (push.allowDelete is false)');
    }
    const target = parseReference(reference);
    if (target.kind === 'tag') {
      if (!this.deletes.deleteTag(route.key, target.tag)) {
        throw ociErrors.manifestUnknown(`${route.key}:${target.tag} is not in this mirror`, { tag: target.tag });
      }
      this.log.info('tag deleted', { repo: route.key, tag: target.tag });
      return;
    }
    const digest = target.digest.value;
    const tags = this.deletes.deleteManifest(route.key, digest, () => this.catalogue.referrers.removeReferrer(route.key, digest));
    if (!tags) throw ociErrors.manifestUnknown(`manifest ${digest} of ${route.key} is not in this mirror`, { digest });
    this.log.info('manifest deleted', { repo: route.key, digest, tags });
  }

  /** An image manifest needs its config and layers in the store (the spec's MANIFEST_BLOB_UNKNOWN, one error per blob). */
  private async checkBlobs(route: Route, manifest: ImageManifest): Promise<void> {
    const errors: OciError[] = [];
    const blobs = referencedBlobs(manifest);
    for (const [i, b] of blobs.entries()) {
      if (isNondistributable(b)) continue;
      const role = i === 0 ? 'config' : `layer ${i} of ${blobs.length - 1}`;
      const size = await this.storedBlobSize(b.digest);
      if (size === undefined) {
        errors.push(
          new OciError(400, 'MANIFEST_BLOB_UNKNOWN', `blob ${b.digest} (${role}, ${b.mediaType}) is not in this mirror; push it to ${route.repo} before the manifest`, {
            digest: b.digest,
          }),
        );
      } else if (size !== b.size) {
        errors.push(
          ociErrors.manifestInvalid(`the manifest gives blob ${b.digest} (${role}) a size of ${b.size} bytes, but it is ${size} bytes`, {
            digest: b.digest,
            declaredSize: b.size,
            size,
          }),
        );
      }
    }
    if (errors.length > 0) throw errors.length === 1 ? errors[0]! : new OciErrorList(400, errors);
  }

  /** An index is checked against `push.indexChildren`; a rejection names every missing child and its platform. */
  private checkChildren(route: Route, index: IndexManifest): void {
    const errors: OciError[] = [];
    for (const child of index.children) {
      const row = this.catalogue.getManifest(route.key, child.digest);
      if (row && row.size !== child.size) {
        errors.push(
          ociErrors.manifestInvalid(`the index gives manifest ${child.digest} a size of ${child.size} bytes, but it is ${row.size} bytes`, {
            digest: child.digest,
            declaredSize: child.size,
            size: row.size,
          }),
        );
      }
    }
    const policy = this.policy.indexChildren;
    const missing = missingChildren(index, policy, (digest) => this.catalogue.getManifest(route.key, digest) !== undefined);
    for (const m of missing) {
      const entry = m.platform ? `the ${m.platform} manifest` : 'manifest';
      errors.push(
        new OciError(
          400,
          'MANIFEST_BLOB_UNKNOWN',
          `${entry} ${m.digest} of this index is not in ${route.repo}: push.indexChildren (${describePolicy(policy)}) requires it; ` +
            `push that manifest first${policy === 'all' ? ', or have the operator relax push.indexChildren to accept sparse indexes' : ''}`,
          { digest: m.digest, ...(m.platform ? { platform: m.platform } : {}), mediaType: m.mediaType, indexChildren: policy },
        ),
      );
    }
    if (errors.length > 0) throw errors.length === 1 ? errors[0]! : new OciErrorList(400, errors);
  }

  private async storedBlobSize(digestText: string): Promise<number | undefined> {
    const row = this.catalogue.getBlob(digestText);
    if (!row) return undefined;
    const parsed = parseDigest(digestText);
    if (!parsed.ok) return undefined;
    const size = await this.store.size(parsed.digest);
    return size === row.size ? size : undefined;
  }

  /**
   * As pull-through records it: from an index entry that lists the manifest (an attestation takes
   * its subject's), else from its image config (in the store: just checked).
   */
  private async platformOf(route: Route, digest: string, manifest: ImageManifest): Promise<Platform | undefined> {
    const listed = this.catalogue.indexEntriesFor(route.key, digest).find((e) => e.platform !== null);
    if (listed) return parsePlatform(listed.platform!);
    if (!isImageConfigType(manifest.config.mediaType)) return undefined;
    const d = parseDigest(manifest.config.digest);
    if (!d.ok) return undefined;
    const bytes = await this.store.read(d.digest);
    return bytes ? platformOfConfig(bytes) : undefined;
  }
}

type Target = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

function parseReference(reference: string): Target {
  if (isDigestLike(reference)) {
    const parsed = parseDigest(reference);
    if (!parsed.ok) throw ociErrors.digestInvalid(parsed.reason, { digest: clip(reference) });
    return { kind: 'digest', digest: parsed.digest };
  }
  if (!isValidTag(reference)) {
    throw ociErrors.manifestInvalid(`"${clip(reference)}" is neither a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}) nor a digest`);
  }
  return { kind: 'tag', tag: reference };
}

export function tooLarge(size: number, max: number): OciError {
  return ociErrors.tooLarge(`the manifest${size > 0 ? ` (${size} bytes)` : ''} is larger than this mirror's limit of ${max} bytes (limits.maxManifestBytes)`);
}

/** Layers a registry never holds (foreign / non-distributable): their digests are not checked. */
function isNondistributable(d: Descriptor): boolean {
  return d.mediaType.includes('.foreign.') || d.mediaType.includes('.nondistributable.');
}

function declaredMediaType(bytes: Buffer): string | undefined {
  try {
    const json = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
    return typeof json === 'object' && json !== null && typeof json.mediaType === 'string' ? json.mediaType : undefined;
  } catch {
    return undefined;
  }
}

function schemaVersionOf(bytes: Buffer): unknown {
  try {
    return (JSON.parse(bytes.toString('utf8')) as { schemaVersion?: unknown })?.schemaVersion;
  } catch {
    return undefined;
  }
}

function platformOfConfig(bytes: Buffer): Platform | undefined {
  try {
    const c = JSON.parse(bytes.toString('utf8')) as { os?: unknown; architecture?: unknown; variant?: unknown };
    if (typeof c.os !== 'string' || typeof c.architecture !== 'string' || !c.os || !c.architecture) return undefined;
    if (c.os === 'unknown' && c.architecture === 'unknown') return undefined;
    return typeof c.variant === 'string' && c.variant ? { os: c.os, architecture: c.architecture, variant: c.variant } : { os: c.os, architecture: c.architecture };
  } catch {
    return undefined;
  }
}

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
