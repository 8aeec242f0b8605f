// A catalogue and blob store for upkeep unit tests: images, indexes, referrers and tag-scheme
// tags recorded as pulls record them (rows only; files only where a test writes them).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { cosignTag, fallbackTag, type CosignSuffix } from '../../src/oci/referrers.js';
import { BlobStore } from '../../src/store/blob-store.js';
import { Catalogue } from '../../src/store/catalogue.js';

export const REPO = 'docker.io/library/app';
export const SIGNATURE_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
export const SBOM_TYPE = 'application/spdx+json';
export const ATTESTATION_TYPE = 'application/vnd.in-toto+json';
export const COSIGN_SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';

export const d = (seed: string) => digestOf(Buffer.from(seed));

export interface TestStore {
  catalogue: Catalogue;
  store: BlobStore;
  dir: string;
  close(): void;
}

export async function openTestStore(): Promise<TestStore> {
  const dir = mkdtempSync(join(tmpdir(), 'upkeep-'));
  const catalogue = new Catalogue(join(dir, 'mirror.db'));
  const store = new BlobStore(join(dir, 'store'));
  await store.init();
  return {
    catalogue,
    store,
    dir,
    close() {
      catalogue.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An image manifest with a config and one layer (blob rows stored), optionally a referrer of `subject`. */
export function addImage(
  cat: Catalogue,
  seed: string,
  opts: { repo?: string; subject?: string; artifactType?: string; configType?: string; platform?: string; tag?: string } = {},
): string {
  const repo = opts.repo ?? REPO;
  const digest = d(seed);
  const blobs = [
    { digest: d(`${seed}/config`), mediaType: opts.configType ?? MediaType.ociConfig, size: 100 },
    { digest: d(`${seed}/layer`), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: 1000 },
  ];
  cat.addManifest({
    repo,
    digest,
    mediaType: MediaType.ociManifest,
    size: 500,
    kind: 'image',
    platform: opts.platform,
    blobs,
    referrer: opts.subject ? { subject: opts.subject, artifactType: opts.artifactType } : undefined,
  });
  for (const b of blobs) cat.addBlob(b.digest, b.size);
  if (opts.tag) cat.setTag(repo, opts.tag, digest);
  return digest;
}

/** An index of the given children (stored or not), tagged if asked. */
export function addIndex(
  cat: Catalogue,
  seed: string,
  children: Array<{ digest: string; platform?: string | null; attestationFor?: string }>,
  opts: { repo?: string; tag?: string } = {},
): string {
  const repo = opts.repo ?? REPO;
  const digest = d(seed);
  cat.addManifest({
    repo,
    digest,
    mediaType: MediaType.ociIndex,
    size: 300,
    kind: 'index',
    children: children.map((c, position) => ({
      child_digest: c.digest,
      media_type: MediaType.ociManifest,
      size: 500,
      platform: c.platform ?? null,
      attestation_for: c.attestationFor ?? null,
      position,
    })),
  });
  if (opts.tag) cat.setTag(repo, opts.tag, digest);
  return digest;
}

/** The referrers fallback index `sha256-<hex>` of `subject`, listing `referrers`. */
export function addFallbackIndex(cat: Catalogue, subject: string, referrers: string[], repo = REPO): string {
  return addIndex(cat, `fallback of ${subject} ${referrers.join(',')}`, referrers.map((r) => ({ digest: r })), { repo, tag: fallbackTag(subject) });
}

/** A cosign tag-scheme manifest (no subject field) under `sha256-<hex>.<suffix>`. */
export function addCosignTagged(cat: Catalogue, subject: string, suffix: CosignSuffix, seed = `${suffix} of ${subject}`, repo = REPO): string {
  const digest = addImage(cat, seed, { repo, configType: COSIGN_SIMPLESIGNING });
  cat.setTag(repo, cosignTag(subject, suffix), digest);
  return digest;
}

export function setLastAccess(cat: Catalogue, digest: string, at: number, repo = REPO): void {
  cat.db.prepare('UPDATE manifests SET last_access = ? WHERE repo = ? AND digest = ?').run(at, repo, digest);
}
