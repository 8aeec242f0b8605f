// Signatures, SBOMs and attestations laid out the way cosign, syft and in-toto tools push them,
// made here with node:crypto (an ECDSA P-256 key, as `cosign generate-key-pair` makes).
import { createHash, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushBlob, putManifest } from './images.js';

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

export type KeyKind = 'p256' | 'ed25519' | 'rsa';

export function newSigningKey(kind: KeyKind = 'p256'): { privateKey: KeyObject; publicKey: KeyObject } {
  if (kind === 'ed25519') return generateKeyPairSync('ed25519');
  if (kind === 'rsa') return generateKeyPairSync('rsa', { modulusLength: 2048 });
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

/** Signs as cosign does: SHA-256 with ECDSA or RSA, plain Ed25519. */
export function signBytes(data: Buffer, key: KeyObject): Buffer {
  return sign(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', data, key);
}

/** Writes the public key as PEM (what `cosign generate-key-pair` leaves in cosign.pub); returns its path. */
export async function writePublicKey(dir: string, name: string, key: KeyObject): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, key.export({ type: 'spki', format: 'pem' }));
  return path;
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
export function cosignSignature(dockerReference: string, digest: string, key: KeyObject, opts: { signature?: string; payload?: Buffer } = {}): Artifact {
  const payload = opts.payload ?? Buffer.from(
    JSON.stringify({
      critical: { identity: { 'docker-reference': dockerReference }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' },
      optional: null,
    }),
  );
  const signature = opts.signature ?? signBytes(payload, key).toString('base64');
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

export const SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
const IN_TOTO_STATEMENT = 'application/vnd.in-toto+json';

/** DSSE's pre-authentication encoding: what a DSSE signature is over. */
function pae(payloadType: string, payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`DSSEv1 ${Buffer.byteLength(payloadType)} ${payloadType} ${payload.length} `), payload]);
}

/**
 * A Sigstore bundle (v0.3, JSON) as `cosign sign --key` writes it in cosign 3: a DSSE envelope of
 * an in-toto statement naming the image digest, predicate type cosign/sign/v1, the key as hint.
 * No transparency-log entry (as with --tlog-upload=false).
 */
export function sigstoreDsseBundle(digest: string, key: KeyObject, predicateType = SIGN_PREDICATE): Buffer {
  return Buffer.from(
    JSON.stringify({
      mediaType: COSIGN.sigstoreBundle,
      verificationMaterial: { publicKey: { hint: 'test-key' }, tlogEntries: [] },
      dsseEnvelope: signStatement(digest, key, predicateType),
    }),
  );
}

/** A DSSE envelope of the in-toto statement `cosign sign` makes of `digest`, signed with `key`. */
export function signStatement(digest: string, key: KeyObject, predicateType = SIGN_PREDICATE): { payload: string; payloadType: string; signatures: Array<{ sig: string; keyid: string }> } {
  const [algorithm, hex] = digest.split(':') as [string, string];
  const statement = Buffer.from(
    JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject: [{ name: '', digest: { [algorithm]: hex } }], predicateType, predicate: {} }),
  );
  return { payload: statement.toString('base64'), payloadType: IN_TOTO_STATEMENT, signatures: [{ sig: signBytes(pae(IN_TOTO_STATEMENT, statement), key).toString('base64'), keyid: '' }] };
}

/** A Sigstore bundle with a message signature over `artifact` (what `cosign sign-blob --bundle` makes of the manifest's bytes). */
export function sigstoreMessageBundle(artifact: Buffer, key: KeyObject): Buffer {
  return Buffer.from(
    JSON.stringify({
      mediaType: COSIGN.sigstoreBundle,
      verificationMaterial: { publicKey: { hint: 'test-key' }, tlogEntries: [] },
      messageSignature: {
        messageDigest: { algorithm: 'SHA2_256', digest: createHash('sha256').update(artifact).digest('base64') },
        signature: signBytes(artifact, key).toString('base64'),
      },
    }),
  );
}

/** The OCI referrer cosign 3 attaches a bundle as: artifactType the bundle's, the bundle its one layer. */
export function bundleReferrer(subject: Descriptor, bundle: Buffer): Artifact {
  return referrerArtifact(subject, COSIGN.sigstoreBundle, bundle, { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': SIGN_PREDICATE });
}

/** Pushes an artifact's blobs, then its manifest under `tag` (default: by digest). */
export async function pushArtifact(url: string, repo: string, a: Artifact, tag?: string): Promise<void> {
  for (const b of a.blobs) await pushBlob(url, repo, b);
  await putManifest(url, repo, tag ?? a.digest, a.bytes, OCI_MANIFEST);
}
