// `ls`'s inventory: per image, the signatures, SBOMs and attestations the mirror holds about it,
// and the tag-scheme tags (fallback index, cosign .sig/.att/.sbom) not listed as images of their own.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cosignTag } from '../../src/oci/referrers.js';
import { inventory } from '../../src/store/inventory.js';
import {
  ATTESTATION_TYPE,
  REPO,
  SBOM_TYPE,
  SIGNATURE_TYPE,
  addCosignTagged,
  addFallbackIndex,
  addImage,
  addIndex,
  d,
  openTestStore,
  type TestStore,
} from './store.js';

let t: TestStore;
beforeEach(async () => {
  t = await openTestStore();
});
afterEach(() => t.close());

const counts = (e: { signatures: number; sboms: number; attestations: number } | undefined) =>
  e && { signatures: e.signatures, sboms: e.sboms, attestations: e.attestations };

describe('inventory: signatures, SBOMs and attestations per image', () => {
  it('an image with nothing attached counts zero of each', () => {
    addImage(t.catalogue, 'image', { tag: '1' });
    expect(counts(inventory(t.catalogue)[0])).toEqual({ signatures: 0, sboms: 0, attestations: 0 });
  });

  it('counts referrers by artifact type, cosign tags by suffix, and lists neither tag as an image', () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    addImage(t.catalogue, 'sig', { subject: image, artifactType: SIGNATURE_TYPE });
    addImage(t.catalogue, 'notation', { subject: image, artifactType: 'application/vnd.cncf.notary.signature' });
    addImage(t.catalogue, 'sbom', { subject: image, artifactType: SBOM_TYPE });
    addImage(t.catalogue, 'att', { subject: image, artifactType: ATTESTATION_TYPE });
    addImage(t.catalogue, 'something else', { subject: image, artifactType: 'application/vnd.example.thing' });
    addCosignTagged(t.catalogue, image, 'sig');
    addCosignTagged(t.catalogue, image, 'att');
    addCosignTagged(t.catalogue, image, 'sbom');
    const entries = inventory(t.catalogue);
    expect(entries.map((e) => e.tag)).toEqual(['1']);
    expect(counts(entries[0])).toEqual({ signatures: 3, sboms: 2, attestations: 2 });
  });

  it('the fallback index: its stored entries count (once, with the referrers naming the image); the tag is hidden', () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    const sig = addImage(t.catalogue, 'sig', { subject: image, artifactType: SIGNATURE_TYPE });
    const sbom = addImage(t.catalogue, 'sbom', { subject: image, artifactType: SBOM_TYPE });
    // A listed entry the store does not hold is not counted.
    addFallbackIndex(t.catalogue, image, [sig, sbom, d('an attestation not pulled')]);
    const entries = inventory(t.catalogue);
    expect(entries.map((e) => e.tag)).toEqual(['1']);
    expect(counts(entries[0])).toEqual({ signatures: 1, sboms: 1, attestations: 0 });
  });

  it('a manifest under a cosign tag that also names the image is counted once', () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    const sig = addImage(t.catalogue, 'sig', { subject: image, artifactType: SIGNATURE_TYPE });
    t.catalogue.setTag(REPO, cosignTag(image, 'sig'), sig);
    expect(counts(inventory(t.catalogue)[0])).toEqual({ signatures: 1, sboms: 0, attestations: 0 });
  });

  it('an index counts what is attached to it and to its stored platform manifests', () => {
    const amd64 = addImage(t.catalogue, 'amd64', { platform: 'linux/amd64' });
    const arm64 = addImage(t.catalogue, 'arm64', { platform: 'linux/arm64' });
    const index = addIndex(
      t.catalogue,
      'index',
      [
        { digest: amd64, platform: 'linux/amd64' },
        { digest: arm64, platform: 'linux/arm64' },
        { digest: d('s390x'), platform: 'linux/s390x' },
      ],
      { tag: '1' },
    );
    addImage(t.catalogue, 'sig of index', { subject: index, artifactType: SIGNATURE_TYPE });
    addCosignTagged(t.catalogue, index, 'sig');
    addImage(t.catalogue, 'sbom amd64', { subject: amd64, artifactType: SBOM_TYPE });
    addImage(t.catalogue, 'sbom arm64', { subject: arm64, artifactType: SBOM_TYPE });
    addCosignTagged(t.catalogue, amd64, 'att');
    // Referrers of a platform the index lists but the mirror does not hold are not the image's.
    addImage(t.catalogue, 'sbom s390x', { subject: d('s390x'), artifactType: SBOM_TYPE });
    const entries = inventory(t.catalogue);
    const e = entries.find((x) => x.tag === '1');
    expect(e).toMatchObject({ kind: 'index', platforms: ['linux/amd64', 'linux/arm64'], notMirrored: ['linux/s390x'] });
    expect(counts(e)).toEqual({ signatures: 2, sboms: 2, attestations: 1 });
    // Only the image's own tag is an image: the cosign tags about it and its children are not.
    expect(entries.map((x) => x.tag)).toEqual(['1']);
  });

  it('a scheme tag about a digest the mirror does not hold is listed as it is', () => {
    const subject = d('not here');
    addCosignTagged(t.catalogue, subject, 'sig');
    const entries = inventory(t.catalogue);
    expect(entries.map((e) => e.tag)).toEqual([cosignTag(subject, 'sig')]);
  });

  it('counts belong to their repository', () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    addImage(t.catalogue, 'image', { tag: '1', repo: 'ghcr.io/org/other' });
    addImage(t.catalogue, 'sig', { subject: image, artifactType: SIGNATURE_TYPE });
    const byRepo = Object.fromEntries(inventory(t.catalogue).map((e) => [e.repository, counts(e)]));
    expect(byRepo).toEqual({
      [REPO]: { signatures: 1, sboms: 0, attestations: 0 },
      'ghcr.io/org/other': { signatures: 0, sboms: 0, attestations: 0 },
    });
  });
});
