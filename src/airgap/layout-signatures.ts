// The signature policy at import: which images of an OCI layout are signed by the keys of the
// policy covering their repository, judged from the layout alone (its `sha256-<hex>.sig` entries
// and its referrer entries), before anything is copied. A refused image is left out with its
// signatures, SBOMs and attestations.
import { parseDigest, type Digest } from '../oci/digest.js';
import { indexChildren, parseManifest, type Descriptor, type ParsedManifest } from '../oci/manifest.js';
import { artifactTypeOf, asReferrerDescriptor, subjectOfTag, type ReferrerDescriptor } from '../oci/referrers.js';
import type { Mirror } from '../mirror/mirror.js';
import { refusalMessage, type Judgement, type SignatureGate } from '../signatures/gate.js';
import { isArtifact, verifyImage, verifySubject, type SignatureSource } from '../signatures/verify.js';
import { LayoutError, type ResolvedRef } from './oci-layout.js';

/** What the import needs of a layout: its small files, verified against their digests. */
export interface LayoutReader {
  readSmall(d: Digest, size: number): Promise<Buffer>;
}

export interface Screened {
  /** Entries (by position) left out, and why. */
  refused: Map<number, string>;
  /** The verdicts reached on the images that are imported (under `warn`, or verified). */
  judged: Map<number, Judgement>;
}

interface Entry {
  i: number;
  desc: Descriptor;
  target: ResolvedRef;
  manifest: ParsedManifest;
  /** The digest this entry is about, for a signature, SBOM or attestation. */
  subject?: string;
}

/**
 * Judges every image entry whose repository a policy covers (or every one, with
 * `requireSignatures`: then an image no policy covers is refused, and `warn` counts as `enforce`).
 */
export async function screenLayout(
  mirror: Mirror,
  gate: SignatureGate,
  reader: LayoutReader,
  entries: Descriptor[],
  targetOf: (entry: Descriptor) => ResolvedRef,
  requireSignatures: boolean,
): Promise<Screened> {
  const screened: Screened = { refused: new Map(), judged: new Map() };
  const parsed: Entry[] = [];
  const sizes = new Map<string, number>();
  for (const [i, desc] of entries.entries()) {
    let target: ResolvedRef;
    let manifest: ParsedManifest;
    try {
      target = targetOf(desc);
      const bytes = await reader.readSmall(digestOf(desc.digest), desc.size);
      const p = parseManifest(bytes, desc.mediaType);
      if (!p.ok) continue; // the import itself reports it
      manifest = p.manifest;
    } catch {
      continue; // the import itself reports it, as it does without a policy
    }
    sizes.set(desc.digest, desc.size);
    if (manifest.kind === 'index') for (const c of indexChildren(manifest)) sizes.set(c.descriptor.digest, c.descriptor.size);
    const scheme = target.tag ? subjectOfTag(target.tag) : undefined;
    parsed.push({ i, desc, target, manifest, subject: manifest.subject?.digest ?? scheme?.subject });
  }

  const source = new LayoutSignatureSource(reader, parsed, sizes);
  const refusedSubjects = new Map<string, Set<string>>(); // repo key → digests refused (and their children)
  for (const e of parsed) {
    if (e.subject !== undefined || isArtifact(e.manifest)) continue;
    const key = e.target.route.key;
    const policy = gate.policyFor(e.target.route);
    const reference = e.target.tag ?? e.desc.digest;
    const shown = e.target.tag ? `${key}:${e.target.tag} (${e.desc.digest})` : `${key}@${e.desc.digest}`;
    const children = e.manifest.kind === 'index' ? indexChildren(e.manifest).filter((c) => c.attestationFor === undefined && c.platform && mirror.allowList.allows(c.platform)).map((c) => c.descriptor.digest) : [];
    let refusal: string | undefined;
    if (!policy) {
      if (requireSignatures) refusal = `${shown}: no signature policy covers ${key}, and --require-signatures admits only images signed by a policy's keys`;
    } else {
      const verdict = await verifyImage((d) => verifySubject(source.for(key), d, policy.keys, policy.keyless), e.desc.digest, { parents: [], children });
      const judgement = { policy, verdict };
      if (verdict.status !== 'verified' && (policy.mode === 'enforce' || requireSignatures)) refusal = refusalMessage(e.target.route, reference, e.desc.digest, judgement);
      else screened.judged.set(e.i, judgement);
    }
    if (refusal) {
      screened.refused.set(e.i, refusal);
      const set = refusedSubjects.get(key) ?? new Set<string>();
      for (const d of [e.desc.digest, ...children]) set.add(d);
      refusedSubjects.set(key, set);
    }
  }
  // What refers to a refused image goes with it, and what refers to that in turn.
  for (let changed = true; changed; ) {
    changed = false;
    for (const e of parsed) {
      const set = refusedSubjects.get(e.target.route.key);
      if (e.subject === undefined || screened.refused.has(e.i) || !set?.has(e.subject)) continue;
      screened.refused.set(e.i, `left out with ${e.subject}, which it refers to and which was refused`);
      set.add(e.desc.digest);
      changed = true;
    }
  }
  return screened;
}

/** A layout's signatures of one repository: its `.sig` tag entries and referrer entries. */
class LayoutSignatureSource {
  constructor(
    private readonly reader: LayoutReader,
    private readonly entries: Entry[],
    private readonly sizes: Map<string, number>,
  ) {}

  for(key: string): SignatureSource {
    const mine = this.entries.filter((e) => e.target.route.key === key && e.subject !== undefined);
    return {
      signatureTag: async (subject) => {
        const e = mine.find((m) => m.target.tag !== undefined && subjectOfTag(m.target.tag)?.suffix === 'sig' && m.subject === subject);
        return e ? this.read(e.desc.digest, e.desc.size) : undefined;
      },
      referrers: async (subject): Promise<ReferrerDescriptor[]> =>
        mine
          .filter((m) => m.manifest.subject?.digest === subject)
          .map((m) => {
            const artifactType = artifactTypeOf(m.manifest);
            return { ...asReferrerDescriptor(m.desc), ...(artifactType ? { artifactType } : {}) };
          }),
      manifest: async (digest) => {
        const size = this.sizes.get(digest);
        if (size === undefined) throw new LayoutError(`${digest} is not in the layout`);
        return this.read(digest, size);
      },
      blob: (digest, size) => this.read(digest, size),
    };
  }

  private read(digest: string, size: number): Promise<Buffer> {
    return this.reader.readSmall(digestOf(digest), size);
  }
}

function digestOf(value: string): Digest {
  const d = parseDigest(value);
  if (!d.ok) throw new LayoutError(d.reason);
  return d.digest;
}
