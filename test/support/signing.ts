// Signatures, SBOMs and attestations laid out the way cosign, syft and in-toto tools push them,
// made here with node:crypto (an ECDSA P-256 key, as `cosign generate-key-pair` makes).
import { createHash, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

export const COSIGN = {
  simpleSigning: 'application/vnd.dev.cosign.simplesigning.v1+json',
  signatureAnnotation: 'dev.cosignproject.cosign/signature',
  sigstoreBundle: 'application/vnd.dev.sigstore.bundle.v0.3+json',
};
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const SPDX = 'application/spdx+json';
export const IN_TOTO = 'application/vnd.in-toto+json';
export const EMPTY_JSON = Buffer.from('{}');

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface Artifact {
  /** The manifest's bytes, its digest, and the blobs to push before it. */
  bytes: Buffer;
  digest: string;
  blobs: Buffer[];
  descriptor: Descriptor;
}

export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export function schemeTag(digest: string, suffix?: 'sig' | 'att' | 'sbom'): string {
  return `${digest.replace(':', '-')}${suffix ? `.${suffix}` : ''}`;
}

export function newSigningKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

function manifest(body: Record<string, unknown>, artifactType?: string): Artifact {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, ...body }));
  const digest = sha256(bytes);
  return {
    bytes,
    digest,
    blobs: [],
    descriptor: { mediaType: OCI_MANIFEST, digest, size: bytes.length, ...(artifactType ? { artifactType } : {}) },
  };
}

/**
 * A cosign signature of `digest` (tag scheme, `sha256-<hex>.sig`): the simplesigning payload
 * naming the digest as one layer, its ECDSA signature in the layer's annotation, and cosign's
 * config with empty os/architecture.
 */
export function cosignSignature(dockerReference: string, digest: string, key: KeyObject): Artifact {
  const payload = Buffer.from(
    JSON.stringify({
      critical: { identity: { 'docker-reference': dockerReference }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' },
      optional: null,
    }),
  );
  const signature = sign('sha256', payload, key).toString('base64');
  const config = Buffer.from(
    JSON.stringify({
      architecture: '',
      created: '0001-01-01T00:00:00Z',
      history: [{ created: '0001-01-01T00:00:00Z' }],
      os: '',
      rootfs: { type: 'layers', diff_ids: [sha256(payload)] },
      config: {},
    }),
  );
  const a = manifest({
    config: { mediaType: OCI_CONFIG, size: config.length, digest: sha256(config) },
    layers: [{ mediaType: COSIGN.simpleSigning, size: payload.length, digest: sha256(payload), annotations: { [COSIGN.signatureAnnotation]: signature } }],
  });
  return { ...a, blobs: [config, payload] };
}

/** An OCI 1.1 artifact (empty config, one layer) that names `subject`: an SBOM, an attestation, a bundle. */
export function referrerArtifact(subject: Descriptor, artifactType: string, content: Buffer, annotations?: Record<string, string>): Artifact {
  const a = manifest(
    {
      artifactType,
      config: { mediaType: OCI_EMPTY, size: EMPTY_JSON.length, digest: sha256(EMPTY_JSON) },
      layers: [{ mediaType: artifactType, size: content.length, digest: sha256(content) }],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
      ...(annotations ? { annotations } : {}),
    },
    artifactType,
  );
  return { ...a, blobs: [EMPTY_JSON, content], descriptor: { ...a.descriptor, ...(annotations ? { annotations } : {}) } };
}

/** The referrers tag schema's fallback index: what a client pushes under `sha256-<hex>` where a registry lacks the API. */
export function fallbackIndex(referrers: Descriptor[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: referrers }));
}

/**
 * What `cosign verify --key` checks of a tag-scheme signature: the signature annotation verifies
 * over the payload with the public key, and the payload names the digest that was pulled.
 */
export function verifyCosignSignature(sigManifest: Buffer, payload: Buffer, publicKey: KeyObject, expectedDigest: string): { ok: boolean; reason?: string } {
  const m = JSON.parse(sigManifest.toString()) as { layers: Array<{ digest: string; annotations?: Record<string, string> }> };
  const layer = m.layers[0];
  if (!layer) return { ok: false, reason: 'no layer' };
  if (layer.digest !== sha256(payload)) return { ok: false, reason: 'payload does not match its layer digest' };
  const signature = layer.annotations?.[COSIGN.signatureAnnotation];
  if (!signature) return { ok: false, reason: 'no signature annotation' };
  if (!verify('sha256', payload, publicKey, Buffer.from(signature, 'base64'))) return { ok: false, reason: 'signature does not verify' };
  const named = (JSON.parse(payload.toString()) as { critical: { image: { 'docker-manifest-digest': string } } }).critical.image['docker-manifest-digest'];
  if (named !== expectedDigest) return { ok: false, reason: `payload names ${named}, not ${expectedDigest}` };
  return { ok: true };
}
