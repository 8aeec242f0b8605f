// Sigstore bundles (cosign 3's default signature: an OCI referrer of artifactType
// `application/vnd.dev.sigstore.bundle.v0.3+json`), checked through @sigstore/verify: with a public
// key (the trust material then holds no CA, transparency log or timestamp authority, only the
// configured keys), or keylessly against the policy's trusted root file (keyless.ts). Offline by
// construction: nothing is ever fetched.
import type { KeyObject } from 'node:crypto';
import type { Bundle } from '@sigstore/bundle';
import type { toTrustMaterial } from '@sigstore/verify';
import { z } from 'zod';
import type { NamedKey } from './keys.js';
import { checkKeyless, type KeylessTrust } from './keyless.js';
import { sigstore } from './sigstore-libs.js';

export const SIGSTORE_BUNDLE_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.dev.sigstore.bundle.v0.3+json',
  'application/vnd.dev.sigstore.bundle+json;version=0.3',
]);
/** A key-signed bundle is a few kilobytes; one with a certificate chain and log entries, tens. */
export const MAX_BUNDLE_BYTES = 256 * 1024;

const IN_TOTO = 'application/vnd.in-toto+json';
/** What `cosign sign` states; an attestation (SBOM, provenance, scan) is not a signature of the image. */
const SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
const NO_AUTHORITIES = {
  mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
  tlogs: [],
  certificateAuthorities: [],
  ctlogs: [],
  timestampAuthorities: [],
} as unknown as Parameters<typeof toTrustMaterial>[0];

const statementSchema = z.object({
  subject: z.array(z.object({ digest: z.record(z.string(), z.string()) })).max(1000),
  predicateType: z.string(),
});

export type BundleCheck = { ok: true; signer: string } | { ok: false; reason: string };

/**
 * Whether a bundle is a signature of `subject` (an image digest) by one of `keys`, or a keyless
 * one that `keyless` trusts: a DSSE envelope whose in-toto statement names the digest with
 * cosign's sign predicate (what `cosign sign` writes; an attestation is not a signature), or a
 * message signature over the manifest's bytes (`subjectBytes`, asked for only then). With a key, transparency-log
 * entries and timestamps in the bundle are not checked: there is no trust root for them.
 */
export async function checkBundle(
  text: Buffer,
  subject: string,
  { keys, keyless }: { keys: NamedKey[]; keyless?: KeylessTrust | undefined },
  subjectBytes: () => Promise<Buffer>,
): Promise<BundleCheck> {
  if (text.length > MAX_BUNDLE_BYTES) return { ok: false, reason: `the bundle is ${text.length} bytes, too large for a signature` };
  let bundle: Bundle;
  try {
    bundle = sigstore().bundle.bundleFromJSON(JSON.parse(text.toString('utf8')));
  } catch (e) {
    return { ok: false, reason: `not a valid Sigstore bundle (${(e as Error).message})` };
  }
  const keyed = bundle.verificationMaterial.content.$case === 'publicKey';
  if (!keyed && !keyless) return { ok: false, reason: 'it is a keyless (certificate) bundle, and the policy names no trustedRoot to verify it with' };
  if (keyed && keys.length === 0) return { ok: false, reason: 'it is signed with a key, and the policy names none' };
  const [algorithm, hex] = subject.split(':') as [string, string];
  let artifact: Buffer | undefined;
  if (bundle.content.$case === 'dsseEnvelope') {
    const env = bundle.content.dsseEnvelope;
    if (env.payloadType !== IN_TOTO) return { ok: false, reason: `its DSSE payload is ${env.payloadType.slice(0, 80)}, not an in-toto statement` };
    const named = statementSubjects(env.payload, algorithm);
    if (!named.ok) return named;
    if (named.predicateType !== SIGN_PREDICATE) return { ok: false, reason: `it is an attestation (${named.predicateType.slice(0, 100)}), not a signature` };
    if (!named.digests.includes(hex)) {
      return { ok: false, reason: `it is over ${named.digests.map((d) => `${algorithm}:${d}`).join(', ') || 'no digest'}, not ${subject}` };
    }
  } else {
    const md = bundle.content.messageSignature.messageDigest;
    const signedHex = Buffer.from(md?.digest ?? []).toString('hex');
    if (signedHex !== hex) return { ok: false, reason: `it is over ${algorithm}:${signedHex || '(none)'}, not ${subject}` };
    artifact = await subjectBytes();
  }
  if (!keyed) return checkKeyless(bundle, artifact, keyless!);
  for (const k of keys) {
    if (verifiesWith(bundle, artifact, k.key)) return { ok: true, signer: k.name };
  }
  return { ok: false, reason: 'its signature does not verify' };
}

function statementSubjects(payload: Buffer, algorithm: string): { ok: true; digests: string[]; predicateType: string } | { ok: false; reason: string } {
  try {
    const parsed = statementSchema.safeParse(JSON.parse(payload.toString('utf8')));
    if (parsed.success) {
      return { ok: true, digests: parsed.data.subject.map((s) => s.digest[algorithm] ?? '').filter(Boolean), predicateType: parsed.data.predicateType };
    }
  } catch {
    // not JSON: said below
  }
  return { ok: false, reason: 'its DSSE payload is not an in-toto statement' };
}

function verifiesWith(bundle: Bundle, artifact: Buffer | undefined, key: KeyObject): boolean {
  const trust = sigstore().verify.toTrustMaterial(NO_AUTHORITIES, () => ({ publicKey: key, validFor: () => true }));
  const verifier = new (sigstore().verify.Verifier)(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  try {
    // The key alone decides: log entries and timestamps would need authorities this mirror has not.
    verifier.verify({ ...sigstore().verify.toSignedEntity(bundle, artifact), tlogEntries: [], timestamps: [] });
    return true;
  } catch {
    return false;
  }
}
