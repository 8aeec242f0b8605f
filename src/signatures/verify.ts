// Whether one manifest digest carries a signature by one of a policy's keys: a cosign signature
// under its `sha256-<hex>.sig` tag, or a Sigstore bundle referrer. Where the signatures come from
// (through the mirror, or from an OCI layout being imported) is the source's business.
import { MAX_SIGNATURE_PAYLOAD_BYTES, signedDigest, simpleSigningLayers, verifiesOver } from '../oci/cosign-signature.js';
import { parseManifest, type ParsedManifest } from '../oci/manifest.js';
import { cosignTag, type ReferrerDescriptor } from '../oci/referrers.js';
import type { VerdictStatus } from '../store/signature-verdicts.js';
import type { NamedKey } from './keys.js';
import type { KeylessTrust } from './keyless.js';
import { checkBundle, MAX_BUNDLE_BYTES, SIGSTORE_BUNDLE_TYPES } from './sigstore-bundle.js';

/** Where a subject's signatures are read from. Every read verifies the bytes against their digest. */
export interface SignatureSource {
  /** The manifest under the subject's `sha256-<hex>.sig` tag, if there is one. */
  signatureTag(subject: string): Promise<Buffer | undefined>;
  /** The subject's referrers (their descriptors). */
  referrers(subject: string): Promise<ReferrerDescriptor[]>;
  manifest(digest: string): Promise<Buffer>;
  /** A small blob (a payload, a bundle); the caller has checked its declared size. */
  blob(digest: string, size: number): Promise<Buffer>;
}

export interface Verdict {
  status: VerdictStatus;
  /** For a person: which key verified it, or why nothing did. */
  reason: string;
  signer?: string;
  /** A signature could not be read (upstream down): not a verdict to keep. */
  transient?: boolean;
}

/** Signatures of one subject looked at, at most: a flood of referrers is not read to the end. */
const MAX_CANDIDATES = 16;
const MAX_REASON_CHARS = 1000;

export function isSignatureReferrer(d: ReferrerDescriptor): boolean {
  return d.artifactType !== undefined && SIGSTORE_BUNDLE_TYPES.has(d.artifactType);
}

/** Layers a runtime unpacks: a manifest with none of them (a signature, an SBOM) runs nothing. */
const FILESYSTEM_LAYER = /^application\/vnd\.(?:oci\.image\.layer\.|docker\.image\.rootfs\.)/;

/** A signature, SBOM, attestation or other artifact: an image manifest without a filesystem layer. */
export function isArtifact(manifest: ParsedManifest): boolean {
  return manifest.kind === 'image' && !manifest.layers.some((l) => FILESYSTEM_LAYER.test(l.mediaType));
}

/**
 * The verdict on an image: its own signature; else, for a platform manifest, one of the indexes
 * listing it (`parents`); else, for an index, one of its carried platform manifests (`children`),
 * each of which is judged on its own when pulled.
 */
export async function verifyImage(verdictOn: (digest: string) => Promise<Verdict>, digest: string, related: { parents: string[]; children: string[] }): Promise<Verdict> {
  const own = await verdictOn(digest);
  if (own.status === 'verified') return own;
  for (const parent of related.parents) {
    const v = await verdictOn(parent);
    if (v.status === 'verified') return { ...v, reason: `its index ${parent} is signed: ${v.reason}` };
  }
  for (const child of related.children) {
    const v = await verdictOn(child);
    if (v.status === 'verified') return { ...v, reason: `its platform manifest ${child} is signed: ${v.reason}` };
  }
  return own;
}

export async function verifySubject(source: SignatureSource, subject: string, keys: NamedKey[], keyless?: KeylessTrust): Promise<Verdict> {
  const problems: string[] = [];
  let found = 0;
  let transient = false;
  const attempt = async (what: string, fn: () => Promise<Verdict | string>): Promise<Verdict | undefined> => {
    found++;
    try {
      const r = await fn();
      if (typeof r !== 'string') return r;
      problems.push(`${what} ${r}`);
    } catch (e) {
      transient = true;
      problems.push(`${what} could not be read (${(e as Error).message.slice(0, 300)})`);
    }
    return undefined;
  };
  const tag = cosignTag(subject, 'sig');
  let sig: Buffer | undefined;
  try {
    sig = await source.signatureTag(subject);
  } catch (e) {
    transient = true;
    problems.push(`the ${tag} tag could not be read (${(e as Error).message.slice(0, 300)})`);
  }
  if (sig) {
    const ok = await attempt(`the signature under ${tag}`, () => cosignSignature(source, sig!, subject, keys));
    if (ok) return ok;
  }
  let referrers: ReferrerDescriptor[] = [];
  try {
    referrers = (await source.referrers(subject)).filter(isSignatureReferrer).slice(0, MAX_CANDIDATES);
  } catch (e) {
    transient = true;
    problems.push(`the referrers could not be read (${(e as Error).message.slice(0, 300)})`);
  }
  for (const d of referrers) {
    const ok = await attempt(`the Sigstore bundle ${d.digest}`, () => bundleSignature(source, d, subject, keys, keyless));
    if (ok) return ok;
  }
  if (found === 0 && !transient) return { status: 'unsigned', reason: `no ${tag} tag and no signature referrer` };
  // Signatures that do not verify, or that could not be looked at: not proven unsigned either way.
  return { status: 'failed', reason: clip(problems.join('; ')), ...(transient ? { transient } : {}) };
}

async function cosignSignature(source: SignatureSource, manifestBytes: Buffer, subject: string, keys: NamedKey[]): Promise<Verdict | string> {
  const parsed = parseManifest(manifestBytes);
  if (!parsed.ok) return `is not a valid manifest (${parsed.reason})`;
  const { layers, problems } = simpleSigningLayers(parsed.manifest);
  const reasons = [...problems];
  for (const layer of layers.slice(0, MAX_CANDIDATES)) {
    if (layer.size > MAX_SIGNATURE_PAYLOAD_BYTES) continue;
    const payload = await source.blob(layer.digest, layer.size);
    const named = signedDigest(payload);
    if (!named.ok) {
      reasons.push(named.reason);
      continue;
    }
    if (named.digest !== subject) {
      reasons.push(`is over ${named.digest.slice(0, 80)}, not ${subject}`);
      continue;
    }
    const key = keys.find((k) => verifiesOver(payload, layer.signature, k.key));
    if (key) return { status: 'verified', reason: `cosign signature (${cosignTag(subject, 'sig')}) by ${key.name}`, signer: key.name };
    reasons.push('does not verify');
  }
  return reasons.join(', ');
}

async function bundleSignature(source: SignatureSource, d: ReferrerDescriptor, subject: string, keys: NamedKey[], keyless?: KeylessTrust): Promise<Verdict | string> {
  const parsed = parseManifest(await source.manifest(d.digest));
  if (!parsed.ok || parsed.manifest.kind !== 'image') return 'is not an artifact manifest';
  const layer = parsed.manifest.layers.find((l) => SIGSTORE_BUNDLE_TYPES.has(l.mediaType)) ?? parsed.manifest.layers[0];
  if (!layer) return 'has no layer';
  if (layer.size > MAX_BUNDLE_BYTES) return `is ${layer.size} bytes, too large for a signature`;
  const checked = await checkBundle(await source.blob(layer.digest, layer.size), subject, { keys, keyless }, () => source.manifest(subject));
  if (!checked.ok) return checked.reason;
  return { status: 'verified', reason: `Sigstore bundle ${d.digest} by ${checked.signer}`, signer: checked.signer };
}

/** A reason stays readable (and a response small) whatever a hostile signature holds. */
function clip(reason: string): string {
  return reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS - 1)}…` : reason;
}
