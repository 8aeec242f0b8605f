// The Referrers API over plain HTTP: artifacts pushed with a `subject` (as cosign, notation and
// `oras attach` push them) are listed for their subject, filterable by artifactType.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { OCI, PULL_TOKEN, PUSH_AUTH, buildImage, call, pushBlob, pushImage, putManifest, sha256, type BuiltImage } from '../support/push-client.js';

const SBOM = 'application/vnd.example.sbom.v1+json';
const SIG_CONFIG = 'application/vnd.example.signature.config.v1+json';
const EMPTY = Buffer.from('{}');

let m: TestMirror;
let subject: BuiltImage;

function artifact(opts: { subject: BuiltImage; artifactType?: string; configType?: string; payload: Buffer; annotations?: Record<string, string> }): Buffer {
  const configType = opts.configType ?? OCI.empty;
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI.manifest,
      ...(opts.artifactType ? { artifactType: opts.artifactType } : {}),
      config: { mediaType: configType, digest: sha256(EMPTY), size: EMPTY.length },
      layers: [{ mediaType: 'application/octet-stream', digest: sha256(opts.payload), size: opts.payload.length }],
      subject: { mediaType: OCI.manifest, digest: opts.subject.digest, size: opts.subject.size },
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
    }),
  );
}

async function pushArtifact(repo: string, bytes: Buffer, payload: Buffer): Promise<{ digest: string; subjectHeader: string | null; status: number }> {
  await pushBlob(m.url, repo, EMPTY);
  await pushBlob(m.url, repo, payload);
  const r = await putManifest(m.url, repo, sha256(bytes), bytes, OCI.manifest);
  expect(r.status, r.body.toString()).toBe(201);
  return { digest: sha256(bytes), subjectHeader: r.headers.get('oci-subject'), status: r.status };
}

async function referrers(repo: string, digest: string, query = '', token?: string) {
  const r = await call(m.url, 'GET', `/v2/${repo}/referrers/${digest}${query}`, { token });
  return { ...r, index: r.status === 200 ? (JSON.parse(r.body.toString()) as { schemaVersion: number; mediaType: string; manifests: Array<Record<string, unknown>> }) : undefined };
}

beforeAll(async () => {
  m = await startTestMirror({ upstreams: [{ url: 'http://127.0.0.1:9' }], auth: PUSH_AUTH, push: { enabled: true, allowDelete: true } });
  subject = buildImage({ os: 'linux', architecture: 'amd64' }, [randomBytes(100)]);
  expect((await pushImage(m.url, 'local/signed', subject, 'v1')).status).toBe(201);
});
afterAll(async () => {
  expect(m.logs.filter((l) => l.includes('"level":"error"'))).toEqual([]);
  await m?.stop({ removeData: true });
});

describe('referrers API', () => {
  let sbom: { digest: string; bytes: Buffer };
  let sig: { digest: string; bytes: Buffer };

  it('a manifest PUT with a subject answers OCI-Subject', async () => {
    const sbomPayload = Buffer.from('{"spdxVersion":"SPDX-2.3"}');
    const sbomBytes = artifact({ subject, artifactType: SBOM, payload: sbomPayload, annotations: { 'org.example.kind': 'sbom' } });
    const pushed = await pushArtifact('local/signed', sbomBytes, sbomPayload);
    expect(pushed.subjectHeader).toBe(subject.digest);
    sbom = { digest: pushed.digest, bytes: sbomBytes };

    // No artifactType: the config's media type stands for it (the spec's rule).
    const sigPayload = randomBytes(64);
    const sigBytes = artifact({ subject, configType: SIG_CONFIG, payload: sigPayload });
    sig = { digest: (await pushArtifact('local/signed', sigBytes, sigPayload)).digest, bytes: sigBytes };
  });

  it('lists the referrers of a digest as an OCI index', async () => {
    const r = await referrers('local/signed', subject.digest);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe(OCI.index);
    expect(r.headers.get('oci-filters-applied')).toBeNull();
    expect(r.index?.schemaVersion).toBe(2);
    expect(r.index?.mediaType).toBe(OCI.index);
    expect(r.index?.manifests).toEqual(
      [
        { mediaType: OCI.manifest, digest: sbom.digest, size: sbom.bytes.length, artifactType: SBOM, annotations: { 'org.example.kind': 'sbom' } },
        { mediaType: OCI.manifest, digest: sig.digest, size: sig.bytes.length, artifactType: SIG_CONFIG },
      ].sort((a, b) => (a.digest < b.digest ? -1 : 1)),
    );
    // Pullers may read it; the listed manifests are there to fetch.
    expect((await referrers('local/signed', subject.digest, '', PULL_TOKEN)).status).toBe(200);
    expect((await call(m.url, 'GET', `/v2/local/signed/manifests/${sbom.digest}`)).body.equals(sbom.bytes)).toBe(true);
  });

  it('filters by artifactType and says so with OCI-Filters-Applied', async () => {
    const r = await referrers('local/signed', subject.digest, `?artifactType=${encodeURIComponent(SBOM)}`);
    expect(r.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(r.index?.manifests.map((d) => d.digest)).toEqual([sbom.digest]);
    const none = await referrers('local/signed', subject.digest, '?artifactType=application/vnd.none');
    expect(none.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(none.index?.manifests).toEqual([]);
  });

  it('never 404s for a valid digest: an empty index', async () => {
    const r = await referrers('local/signed', sha256(Buffer.from('no such manifest')));
    expect(r.status).toBe(200);
    expect(r.index?.manifests).toEqual([]);
    const other = await referrers('local/never-pushed', subject.digest);
    expect([other.status, other.index?.manifests]).toEqual([200, []]);
    const bad = await referrers('local/signed', 'sha256:short');
    expect([bad.status, bad.errors?.[0]?.code]).toEqual([400, 'DIGEST_INVALID']);
  });

  it('accepts a referrer before its subject exists, and an index with a subject', async () => {
    const later = buildImage({ os: 'linux', architecture: 'arm64' }, [randomBytes(10)]);
    const payload = randomBytes(20);
    const early = artifact({ subject: later, artifactType: SBOM, payload });
    await pushArtifact('local/signed', early, payload);
    const idx = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI.index,
        artifactType: 'application/vnd.example.bundle',
        manifests: [{ mediaType: OCI.manifest, digest: sbom.digest, size: sbom.bytes.length }],
        subject: { mediaType: OCI.manifest, digest: later.digest, size: later.size },
      }),
    );
    const put = await putManifest(m.url, 'local/signed', 'bundle', idx, OCI.index);
    expect(put.status).toBe(201);
    expect(put.headers.get('oci-subject')).toBe(later.digest);
    const r = await referrers('local/signed', later.digest);
    // Listed in digest order: the same referrers give the same bytes however they arrived.
    const want = [
      [sha256(early), SBOM],
      [sha256(idx), 'application/vnd.example.bundle'],
    ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
    expect(r.index?.manifests.map((d) => [d.digest, d.artifactType])).toEqual(want);
  });

  it('a deleted referrer is no longer listed', async () => {
    expect((await call(m.url, 'DELETE', `/v2/local/signed/manifests/${sig.digest}`)).status).toBe(202);
    const r = await referrers('local/signed', subject.digest);
    expect(r.index?.manifests.map((d) => d.digest)).toEqual([sbom.digest]);
  });

  it('of a pull-through repository whose upstream is down, with nothing stored: a 404, so clients fall back to the tag schema', async () => {
    const r = await call(m.url, 'GET', `/v2/library/alpine/referrers/${subject.digest}`);
    expect([r.status, r.errors?.[0]?.code]).toEqual([404, 'MANIFEST_UNKNOWN']);
    expect(r.errors?.[0]?.message).toContain(`try tag ${subject.digest.replace(':', '-')}`);
  });
});
