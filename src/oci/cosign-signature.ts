// cosign's tag-scheme signatures (`sha256-<hex>.sig`): a manifest whose layers are simplesigning
// payloads, each signed in its `dev.cosignproject.cosign/signature` annotation. Pure: parsing and
// checking a signature over bytes the caller has already fetched.
import { verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import type { ParsedManifest } from './manifest.js';

export const SIMPLE_SIGNING_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
/** A payload is a few hundred bytes; anything past this is refused unread. */
export const MAX_SIGNATURE_PAYLOAD_BYTES = 64 * 1024;
/** A base64 signature of the largest key cosign makes (RSA-4096) is under 700 characters. */
const MAX_SIGNATURE_CHARS = 4096;
const MAX_SIGNATURE_LAYERS = 16;

export interface SimpleSigningLayer {
  /** The payload blob. */
  digest: string;
  size: number;
  signature: Buffer;
}

/**
 * The signed layers of a cosign signature manifest, and why others were passed over (an
 * annotation that is missing or not base64, a payload too large to be one).
 */
export function simpleSigningLayers(manifest: ParsedManifest): { layers: SimpleSigningLayer[]; problems: string[] } {
  const layers: SimpleSigningLayer[] = [];
  const problems: string[] = [];
  if (manifest.kind !== 'image') return { layers, problems: ['it is an index, not a signature manifest'] };
  // cosign writes one layer per signature: a manifest with hundreds is not read to the end.
  for (const l of manifest.layers.slice(0, MAX_SIGNATURE_LAYERS)) {
    if (l.mediaType !== SIMPLE_SIGNING_TYPE) continue;
    const text = l.annotations?.[COSIGN_SIGNATURE_ANNOTATION];
    if (text === undefined) {
      problems.push(`layer ${l.digest} has no ${COSIGN_SIGNATURE_ANNOTATION} annotation`);
      continue;
    }
    if (text.length === 0 || text.length > MAX_SIGNATURE_CHARS || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
      problems.push(`layer ${l.digest}: its signature annotation is not a base64 signature`);
      continue;
    }
    if (l.size > MAX_SIGNATURE_PAYLOAD_BYTES) {
      problems.push(`layer ${l.digest}: a ${l.size}-byte payload is too large for a signature (limit ${MAX_SIGNATURE_PAYLOAD_BYTES})`);
      continue;
    }
    layers.push({ digest: l.digest, size: l.size, signature: Buffer.from(text, 'base64') });
  }
  if (layers.length === 0 && problems.length === 0) problems.push('it has no simplesigning layer');
  return { layers, problems };
}

const payloadSchema = z.object({
  critical: z.object({
    image: z.object({ 'docker-manifest-digest': z.string().max(200) }),
    type: z.string().max(200).optional(),
  }),
});

/** The digest a simplesigning payload vouches for (`critical.image.docker-manifest-digest`), or why it names none. */
export function signedDigest(payload: Buffer): { ok: true; digest: string } | { ok: false; reason: string } {
  if (payload.length > MAX_SIGNATURE_PAYLOAD_BYTES) return { ok: false, reason: `the payload is ${payload.length} bytes, too large for a signature` };
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    return { ok: false, reason: 'the payload is not JSON' };
  }
  const parsed = payloadSchema.safeParse(json);
  if (!parsed.success) return { ok: false, reason: 'the payload is not a simplesigning payload (no critical.image.docker-manifest-digest)' };
  return { ok: true, digest: parsed.data.critical.image['docker-manifest-digest'] };
}

/**
 * Whether `signature` is `key`'s over `payload`, as cosign signs: SHA-256 with ECDSA (ASN.1) or
 * RSA PKCS#1 v1.5, plain Ed25519. A malformed signature is simply not a valid one.
 */
export function verifiesOver(payload: Buffer, signature: Buffer, key: KeyObject): boolean {
  const algorithm = key.asymmetricKeyType === 'ed25519' ? null : 'sha256';
  try {
    return verify(algorithm, payload, key, signature);
  } catch {
    return false;
  }
}
