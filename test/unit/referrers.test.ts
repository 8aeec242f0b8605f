import { describe, expect, it } from 'vitest';
import { classifyArtifact, cosignTag, fallbackTag, parseReferrersList, referrersIndex, subjectOfTag } from '../../src/oci/referrers.js';

const D = `sha256:${'ab'.repeat(32)}`;
const E = `sha256:${'0c'.repeat(32)}`;

describe('tag schema', () => {
  it('names the fallback and cosign tags of a digest, and reads the subject back', () => {
    expect(fallbackTag(D)).toBe(`sha256-${'ab'.repeat(32)}`);
    expect(cosignTag(D, 'sig')).toBe(`sha256-${'ab'.repeat(32)}.sig`);
    expect(subjectOfTag(fallbackTag(D))).toEqual({ subject: D, suffix: undefined });
    expect(subjectOfTag(cosignTag(D, 'att'))).toEqual({ subject: D, suffix: 'att' });
  });

  it('is not fooled by tags that only look alike', () => {
    for (const tag of ['latest', `sha256-${'ab'.repeat(31)}`, `sha256-${'AB'.repeat(32)}`, `sha256-${'ab'.repeat(32)}.sigx`, `sha512-${'ab'.repeat(32)}`, `md5-${'ab'.repeat(16)}`]) {
      expect(subjectOfTag(tag), tag).toBeUndefined();
    }
  });
});

describe('referrers lists', () => {
  it('the same referrers give the same bytes, whatever order they come in', () => {
    const a = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: D, size: 10, artifactType: 'application/spdx+json' };
    const b = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: E, size: 20 };
    expect(referrersIndex([a, b]).equals(referrersIndex([b, a]))).toBe(true);
    expect(JSON.parse(referrersIndex([a, b]).toString()).manifests.map((m: { digest: string }) => m.digest)).toEqual([E, D]);
  });

  it('parses an upstream answer to clean descriptors, and refuses what is not an index', () => {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'm', digest: D, size: 1, annotations: {}, platform: { os: 'linux' } }] }));
    expect(parseReferrersList(body)).toEqual({ ok: true, descriptors: [{ mediaType: 'm', digest: D, size: 1 }] });
    expect(parseReferrersList(Buffer.from('not json')).ok).toBe(false);
    expect(parseReferrersList(Buffer.from(JSON.stringify({ manifests: [{ digest: 'nope' }] }))).ok).toBe(false);
  });
});

describe('classifyArtifact', () => {
  it('by cosign suffix, else by artifact type', () => {
    expect(classifyArtifact(undefined, 'sig')).toBe('signature');
    expect(classifyArtifact(undefined, 'sbom')).toBe('sbom');
    expect(classifyArtifact(undefined, 'att')).toBe('attestation');
    expect(classifyArtifact('application/vnd.dev.sigstore.bundle.v0.3+json')).toBe('signature');
    expect(classifyArtifact('application/vnd.cncf.notary.signature')).toBe('signature');
    expect(classifyArtifact('application/spdx+json')).toBe('sbom');
    expect(classifyArtifact('application/vnd.cyclonedx+json')).toBe('sbom');
    expect(classifyArtifact('application/vnd.in-toto+json')).toBe('attestation');
    expect(classifyArtifact('application/vnd.example.thing')).toBe('other');
    expect(classifyArtifact(undefined)).toBe('other');
  });
});
