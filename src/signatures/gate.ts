import { isDigestLike } from '../oci/digest.js';
import { ociErrors, type OciError } from '../oci/errors.js';
import { parseManifest } from '../oci/manifest.js';
import { parsePlatform } from '../oci/platform.js';
import { subjectOfTag } from '../oci/referrers.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Route } from '../mirror/routing.js';
import type { Logger } from '../log.js';
import { MirrorSignatureSource } from './mirror-source.js';
import { describeSigners, SignaturePolicies, type Policy } from './policy.js';
import { isArtifact, verifyImage, verifySubject, type Verdict } from './verify.js';

export interface Judgement {
  policy: Policy;
  verdict: Verdict;
}

export type Admission = { allowed: true; judgement?: Judgement } | { allowed: false; judgement: Judgement; error: OciError };

/**
 * The signature policy at work: which policy covers a repository, the verdict on an image
 * (reached through the mirror, kept per digest in the catalogue until the signatures or the keys
 * change), and whether a manifest may be served.
 */
export class SignatureGate {
  constructor(
    private readonly mirror: Mirror,
    private current: SignaturePolicies,
    private readonly log: Logger,
  ) {}

  get policies(): SignaturePolicies {
    return this.current;
  }

  /** Puts reloaded keys in force; each verdict is reached again (its state names the keys). */
  usePolicies(policies: SignaturePolicies): void {
    this.current = policies;
  }

  policyFor(route: Route): Policy | undefined {
    return this.policies.for(route.key);
  }

  /**
   * The verdict on a manifest of `route` under the policy that covers it (undefined: none does).
   * Its own signature counts; for a platform manifest, a signature of an index listing it; for an
   * index, a signature of one of its carried platform manifests.
   */
  async check(route: Route, digest: string): Promise<Judgement | undefined> {
    const policy = this.policyFor(route);
    if (!policy) return undefined;
    const source = new MirrorSignatureSource(this.mirror, route);
    const { catalogue } = this.mirror;
    const verdict = await verifyImage((d) => this.verdictOn(source, route, d, policy), digest, {
      parents: [...new Set(catalogue.indexEntriesFor(route.key, digest).map((e) => e.index_digest))],
      children: catalogue.getManifest(route.key, digest)?.kind === 'index' ? this.carriedChildren(route, digest) : [],
    });
    return { policy, verdict };
  }

  private carriedChildren(route: Route, index: string): string[] {
    return this.mirror.catalogue
      .childrenOf(route.key, index)
      .filter((c) => c.attestation_for === null && c.platform !== null)
      .filter((c) => {
        const p = parsePlatform(c.platform!);
        return p !== undefined && this.mirror.allowList.allows(p);
      })
      .map((c) => c.child_digest);
  }

  /**
   * Whether a manifest may be served: under `enforce` only a verified image (or a
   * signature, SBOM or other artifact that runs nothing); under `warn` anything, logged.
   */
  async admit(route: Route, reference: string, digest: string): Promise<Admission> {
    if (!this.policyFor(route) || (await this.isAttachment(route, reference, digest))) return { allowed: true };
    const judgement = (await this.check(route, digest))!;
    const { policy, verdict } = judgement;
    if (verdict.status === 'verified') return { allowed: true, judgement };
    const message = refusalMessage(route, reference, digest, judgement);
    if (policy.mode === 'warn') {
      this.log.warn('signature policy (warn): serving an image that does not verify', { repository: route.key, digest, status: verdict.status, reason: message });
      return { allowed: true, judgement };
    }
    this.log.info('signature policy: refused', { repository: route.key, digest, status: verdict.status, reason: message });
    return { allowed: false, judgement, error: ociErrors.denied(message, { repository: route.asked, digest, signature: verdict.status }) };
  }

  /**
   * Whether a blob may be served: under `enforce`, only one that a verified image or an artifact
   * of this repository references, so that an image refused as a whole is not had layer by layer.
   */
  async admitBlob(route: Route, digest: string): Promise<Admission> {
    const policy = this.policyFor(route);
    if (!policy || policy.mode === 'warn') return { allowed: true };
    const users = this.mirror.catalogue.manifestsUsingBlob(route.key, digest);
    let last: Judgement | undefined;
    for (const m of users) {
      if (await this.isAttachment(route, m, m)) return { allowed: true };
      last = (await this.check(route, m))!;
      if (last.verdict.status === 'verified') return { allowed: true, judgement: last };
    }
    const why = users.length === 0 ? 'no image stored here references it' : `the manifest that uses it, ${users[0]}, is not signed (${last?.verdict.reason})`;
    const judgement = last ?? { policy, verdict: { status: 'unsigned' as const, reason: why } };
    const message = `blob ${digest} of ${route.asked} belongs to no image signed by ${describeSigners(policy)}: ${why}`;
    return { allowed: false, judgement, error: ociErrors.denied(message, { repository: route.asked, digest, signature: judgement.verdict.status }) };
  }

  private async verdictOn(source: MirrorSignatureSource, route: Route, digest: string, policy: Policy): Promise<Verdict> {
    let state: string;
    try {
      state = `${policy.fingerprint}|${await source.state(digest)}`;
    } catch (e) {
      return { status: 'failed', reason: `its signatures could not be looked up (${(e as Error).message.slice(0, 300)})`, transient: true };
    }
    const known = this.mirror.catalogue.verdicts.get(route.key, digest);
    if (known && known.state === state) return { status: known.status, reason: known.reason, ...(known.signer ? { signer: known.signer } : {}) };
    const verdict = await verifySubject(source, digest, policy.keys, policy.keyless);
    if (!verdict.transient) {
      this.mirror.catalogue.verdicts.record({ repo: route.key, digest, status: verdict.status, reason: verdict.reason, signer: verdict.signer ?? null, state });
    }
    return verdict;
  }

  /** A signature, SBOM or attestation (no filesystem layer), or an index under a tag-scheme tag: not an image to judge. */
  private async isAttachment(route: Route, reference: string, digest: string): Promise<boolean> {
    const m = await this.mirror.manifests.get(route, digest, true);
    const parsed = parseManifest(m.bytes!, m.mediaType);
    if (!parsed.ok) return false;
    if (parsed.manifest.kind === 'image') return isArtifact(parsed.manifest);
    const tags = isDigestLike(reference) ? this.mirror.catalogue.tagsForDigest(route.key, digest) : [reference];
    return tags.some((t) => subjectOfTag(t) !== undefined);
  }
}

/** `ghcr.io/org/app:1.4 (sha256:…) has no signature by keys/org.pub: <why>`. */
export function refusalMessage(route: Route, reference: string, digest: string, { policy, verdict }: Judgement): string {
  const image = isDigestLike(reference) ? `${route.asked}@${digest}` : `${route.asked}:${reference} (${digest})`;
  return `${image} has no signature by ${describeSigners(policy)}: ${verdict.reason}`;
}

const gates = new WeakMap<Mirror, SignatureGate>();

/**
 * The mirror's signature gate, made once (serve makes it at start-up, so that a bad key file
 * stops it; prefetch, sync and import share it). Loading the keys throws, naming a bad file.
 */
export function signatureGate(mirror: Mirror, log: Logger, policies?: SignaturePolicies): SignatureGate {
  let gate = gates.get(mirror);
  if (!gate) {
    gate = new SignatureGate(mirror, policies ?? SignaturePolicies.load(mirror.config.signatures), log);
    gates.set(mirror, gate);
  }
  return gate;
}
