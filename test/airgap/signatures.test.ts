// Signatures, SBOMs and attestations travel with the image: through the mirror, then prefetch,
// export, import into an offline store, and there the signature still verifies the way
// `cosign verify --key` does and the SBOM is found by the referrers API and by its fallback tag.
// Upstream is docker-registry 2.8, which has no referrers API; a second part uses sparse-mirror
// in push mode as an upstream that has one (cosign 3 style: referrers only, no .sig tag).
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { exportImages } from '../../src/airgap/export.js';
import { importLayout } from '../../src/airgap/import.js';
import { prefetchImage } from '../../src/upkeep/prefetch.js';
import { pushMultiPlatformImage, putManifest, type PushedIndex } from '../support/images.js';
import { useFixture } from '../support/fixture.js';
import type { TestMirror } from '../support/mirror.js';
import { PULL_TOKEN, PUSH_AUTH, buildImage, pushImage, pushBlob as pushLocalBlob, putManifest as putLocalManifest } from '../support/push-client.js';
import { skopeoInspectRaw } from '../support/skopeo.js';
import {
  COSIGN,
  cosignSignature,
  fallbackIndex,
  IN_TOTO,
  newSigningKey,
  OCI_INDEX,
  OCI_MANIFEST,
  pushArtifact,
  referrerArtifact,
  schemeTag,
  sha256,
  SPDX,
  verifyCosignSignature,
  type Artifact,
} from '../support/signing.js';

const key = newSigningKey();
const REPO = 'team/signed';

interface Answer {
  status: number;
  headers: Headers;
  bytes: Buffer;
  json: <T = Record<string, unknown>>() => T;
}

async function get(m: TestMirror, path: string, auth?: string): Promise<Answer> {
  const res = await fetch(`${m.url}${path}`, {
    headers: { accept: `${OCI_INDEX}, ${OCI_MANIFEST}, application/vnd.docker.distribution.manifest.list.v2+json`, ...(auth ? { authorization: auth } : {}) },
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, bytes, json: <T,>() => JSON.parse(bytes.toString()) as T };
}

/** Everything a verifier needs, read through `m`: the .sig tag, its payload, and the check. */
async function verifyThrough(m: TestMirror, repo: string, indexDigest: string): Promise<void> {
  const sig = await get(m, `/v2/${repo}/manifests/${schemeTag(indexDigest, 'sig')}`);
  expect(sig.status, sig.bytes.toString()).toBe(200);
  const layer = sig.json<{ layers: Array<{ digest: string }> }>().layers[0]!;
  const payload = await get(m, `/v2/${repo}/blobs/${layer.digest}`);
  expect(payload.status).toBe(200);
  expect(verifyCosignSignature(sig.bytes, payload.bytes, key.publicKey, indexDigest)).toEqual({ ok: true });
}

interface Signed {
  index: PushedIndex;
  signature: Artifact;
  sbom: Artifact;
  /** The SBOM's own cosign signature: a signature of a signature-carrying artifact, one level down. */
  sbomSignature: Artifact;
  attestation: Artifact;
  s390x: string;
}

describe('signatures, SBOMs and attestations from an upstream without the referrers API', () => {
  const fx = useFixture({
    registry: true,
    images: async ({ registry }): Promise<Signed> => {
      const index = await pushMultiPlatformImage(registry.url, REPO, '1.0', { platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'] });
      const subject = { mediaType: index.mediaType, digest: index.digest, size: index.bytes.length };
      // cosign sign --key: the signature under sha256-<hex>.sig.
      const signature = cosignSignature(`${registry.host}/${REPO}`, index.digest, key.privateKey);
      await pushArtifact(registry.url, REPO, signature, schemeTag(index.digest, 'sig'));
      // An SBOM attached with a subject (oras attach): without the API, the client also writes the fallback index.
      const sbom = referrerArtifact(subject, SPDX, Buffer.from('{"spdxVersion":"SPDX-2.3","name":"signed"}'), { 'org.example.kind': 'sbom' });
      await pushArtifact(registry.url, REPO, sbom);
      await putManifest(registry.url, REPO, schemeTag(index.digest), fallbackIndex([sbom.descriptor]), OCI_INDEX);
      const sbomSignature = cosignSignature(`${registry.host}/${REPO}`, sbom.digest, key.privateKey);
      await pushArtifact(registry.url, REPO, sbomSignature, schemeTag(sbom.digest, 'sig'));
      // An attestation of the s390x child, a platform the mirror does not carry: .att tag and referrer.
      const child = index.children.find((c) => c.platform?.architecture === 's390x')!;
      const attestation = referrerArtifact({ mediaType: child.mediaType, digest: child.digest, size: child.size }, IN_TOTO, Buffer.from('{"_type":"https://in-toto.io/Statement/v1"}'));
      await pushArtifact(registry.url, REPO, attestation, schemeTag(child.digest, 'att'));
      await putManifest(registry.url, REPO, schemeTag(child.digest), fallbackIndex([attestation.descriptor]), OCI_INDEX);
      return { index, signature, sbom, sbomSignature, attestation, s390x: child.digest };
    },
    mirror: ({ registry }) => ({ upstreams: [{ url: registry.url }] }),
  });

  it('through the mirror: the .sig verifies against the index digest pulled through, and skopeo sees upstream\'s index', async () => {
    const { index } = fx.images;
    const pulled = await get(fx.mirror, `/v2/${REPO}/manifests/1.0`);
    expect(pulled.headers.get('docker-content-digest')).toBe(index.digest);
    expect(pulled.bytes.equals(index.bytes)).toBe(true);
    await verifyThrough(fx.mirror, REPO, index.digest);
    const raw = await skopeoInspectRaw(`docker://${fx.mirror.host}/${REPO}:1.0`);
    expect(sha256(raw)).toBe(index.digest);
  });

  it('the referrers API answers from the fallback tag (with artifactType filtering), and the SBOM pulls byte for byte', async () => {
    const { index, sbom } = fx.images;
    const r = await get(fx.mirror, `/v2/${REPO}/referrers/${index.digest}`);
    expect(r.status, r.bytes.toString()).toBe(200);
    expect(r.headers.get('content-type')).toBe(OCI_INDEX);
    expect(r.json<{ manifests: unknown[] }>().manifests).toEqual([sbom.descriptor]);
    const filtered = await get(fx.mirror, `/v2/${REPO}/referrers/${index.digest}?artifactType=${encodeURIComponent(SPDX)}`);
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(filtered.json<{ manifests: unknown[] }>().manifests).toHaveLength(1);
    const none = await get(fx.mirror, `/v2/${REPO}/referrers/${index.digest}?artifactType=application/x-none`);
    expect(none.json<{ manifests: unknown[] }>().manifests).toEqual([]);
    const fetched = await get(fx.mirror, `/v2/${REPO}/manifests/${sbom.digest}`);
    expect(fetched.bytes.equals(sbom.bytes)).toBe(true);
    const tag = await get(fx.mirror, `/v2/${REPO}/manifests/${schemeTag(index.digest)}`);
    expect(tag.json<{ manifests: Array<{ digest: string }> }>().manifests.map((d) => d.digest)).toEqual([sbom.digest]);
  });

  it('the attestation of a child of a platform not carried is refused with the not-mirrored error, and never stored', async () => {
    const { attestation, s390x } = fx.images;
    for (const path of [`/v2/${REPO}/manifests/${schemeTag(s390x, 'att')}`, `/v2/${REPO}/manifests/${attestation.digest}`, `/v2/${REPO}/referrers/${s390x}`]) {
      const r = await get(fx.mirror, path);
      expect(r.status, `${path}: ${r.bytes.toString()}`).toBe(403);
      const err = r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0]!;
      expect(err.code).toBe('DENIED');
      expect(err.message).toContain('platform linux/s390x is not mirrored here');
    }
    expect(fx.mirror.running.mirror.catalogue.getManifest(`${fx.registry.host}/${REPO}`, attestation.digest)).toBeUndefined();
  });

  it('prefetch, export, import into an offline mirror: the signature verifies there and the SBOM is found both ways, byte for byte', async () => {
    const { index, sbom } = fx.images;
    const ref = `${fx.registry.host}/${REPO}:1.0`;
    const connected = await fx.startMirror({ upstreams: [{ url: fx.registry.url }] });
    const result = await prefetchImage(connected.running.mirror, ref);
    expect(result.attached).toEqual({ signature: 2, sbom: 1, attestation: 0, other: 0 }); // the index's and the SBOM's
    expect(result.attachedSkipped).toBe(1); // the s390x child's attestation: .att tag and fallback index name the same one
    expect(result.attachmentProblems).toEqual([]);

    const online = {
      referrers: await get(connected, `/v2/${REPO}/referrers/${index.digest}`),
      sig: await get(connected, `/v2/${REPO}/manifests/${schemeTag(index.digest, 'sig')}`),
      fallback: await get(connected, `/v2/${REPO}/manifests/${schemeTag(index.digest)}`),
    };
    const dir = join(await fx.tempDir('signed-layout-'), 'layout');
    const exported = await exportImages(connected.running.mirror, [ref], dir);
    expect(exported.images[0]!.attached).toEqual({ signature: 2, sbom: 1, attestation: 0, other: 0 });

    // The offline side has no route to the registry at all: an address nothing listens on.
    const offline = await fx.startMirror({ offline: true, upstreams: [{ url: 'http://127.0.0.1:9', aliases: [fx.registry.host] }] });
    const imported = await importLayout(offline.running.mirror, dir);
    expect(imported.failures).toEqual([]);
    const name = `${fx.registry.host}/${REPO}`;
    // Addressed as containerd does (?ns=), so the imported content is found under the registry's name.
    const at = (path: string) => get(offline, `${path}${path.includes('?') ? '&' : '?'}ns=${fx.registry.host}`);

    const pulled = await at(`/v2/${REPO}/manifests/1.0`);
    expect(pulled.bytes.equals(index.bytes)).toBe(true);
    const sig = await at(`/v2/${REPO}/manifests/${schemeTag(index.digest, 'sig')}`);
    expect(sig.bytes.equals(online.sig.bytes)).toBe(true);
    const payloadDigest = sig.json<{ layers: Array<{ digest: string }> }>().layers[0]!.digest;
    const payload = await at(`/v2/${REPO}/blobs/${payloadDigest}`);
    expect(verifyCosignSignature(sig.bytes, payload.bytes, key.publicKey, pulled.headers.get('docker-content-digest')!)).toEqual({ ok: true });

    const referrers = await at(`/v2/${REPO}/referrers/${index.digest}`);
    expect(referrers.status).toBe(200);
    expect(referrers.bytes.equals(online.referrers.bytes), `${referrers.bytes} vs ${online.referrers.bytes}`).toBe(true);
    const fallback = await at(`/v2/${REPO}/manifests/${schemeTag(index.digest)}`);
    expect(fallback.bytes.equals(online.fallback.bytes)).toBe(true);
    const sbomOffline = await at(`/v2/${REPO}/manifests/${sbom.digest}`);
    expect(sbomOffline.bytes.equals(sbom.bytes)).toBe(true);
    const sbomLayer = sbomOffline.json<{ layers: Array<{ digest: string }> }>().layers[0]!.digest;
    expect((await at(`/v2/${REPO}/blobs/${sbomLayer}`)).status).toBe(200);
    expect(offline.running.mirror.catalogue.getTag(name, schemeTag(index.digest, 'sig'))).toBeDefined();
    // The SBOM's own signature came along, and verifies over the SBOM's digest.
    const sbomSig = await at(`/v2/${REPO}/manifests/${schemeTag(sbom.digest, 'sig')}`);
    expect(sbomSig.status).toBe(200);
    const sbomPayload = await at(`/v2/${REPO}/blobs/${sbomSig.json<{ layers: Array<{ digest: string }> }>().layers[0]!.digest}`);
    expect(verifyCosignSignature(sbomSig.bytes, sbomPayload.bytes, key.publicKey, sbom.digest)).toEqual({ ok: true });
  });

  it('prefetch with referrers off fetches the image alone', async () => {
    const { index } = fx.images;
    const m = await fx.startMirror({ upstreams: [{ url: fx.registry.url }], referrers: false });
    const result = await prefetchImage(m.running.mirror, `${fx.registry.host}/${REPO}:1.0`);
    expect(result.digest).toBe(index.digest);
    expect(result.attached).toEqual({ signature: 0, sbom: 0, attestation: 0, other: 0 });
    const key = `${fx.registry.host}/${REPO}`;
    expect(m.running.mirror.catalogue.getTag(key, schemeTag(index.digest, 'sig'))).toBeUndefined();
    expect(m.running.mirror.catalogue.getManifest(key, fx.images.sbom.digest)).toBeUndefined();
  });
});

describe('signatures from an upstream with the referrers API (cosign 3 style: referrers only)', () => {
  const fx = useFixture({
    mirror: () => ({ upstreams: [{ url: 'http://127.0.0.1:9' }], auth: PUSH_AUTH, push: { enabled: true } }),
  });

  it('are found through the mirror, prefetched, exported and served offline', async () => {
    const upstream = fx.mirror; // sparse-mirror with push: its local/ repositories serve the referrers API
    const image = buildImage({ os: 'linux', architecture: 'amd64' }, [Buffer.from('layer of the app')]);
    expect((await pushImage(upstream.url, 'local/app', image, 'v1')).status).toBe(201);
    const bundleBody = Buffer.from(JSON.stringify({ mediaType: COSIGN.sigstoreBundle, note: 'a sigstore bundle as cosign 3 attaches it' }));
    const bundle = referrerArtifact({ mediaType: OCI_MANIFEST, digest: image.digest, size: image.size }, COSIGN.sigstoreBundle, bundleBody);
    for (const b of bundle.blobs) await pushLocalBlob(upstream.url, 'local/app', b);
    expect((await putLocalManifest(upstream.url, 'local/app', bundle.digest, bundle.bytes, OCI_MANIFEST)).status).toBe(201);

    const creds = { username: 'ci', password: PULL_TOKEN };
    const mirror = await fx.startMirror({ upstreams: [{ url: upstream.url, ...creds }] });
    const r = await get(mirror, `/v2/local/app/referrers/${image.digest}`);
    expect(r.status, r.bytes.toString()).toBe(200);
    expect(r.json<{ manifests: Array<{ digest: string; artifactType: string }> }>().manifests).toEqual([bundle.descriptor]);

    const ref = `${new URL(upstream.url).host}/local/app:v1`;
    const connected = await fx.startMirror({ upstreams: [{ url: upstream.url, ...creds }] });
    const result = await prefetchImage(connected.running.mirror, ref);
    expect(result.attached.signature).toBe(1);
    const online = await get(connected, `/v2/local/app/referrers/${image.digest}`);
    const dir = join(await fx.tempDir('bundle-layout-'), 'layout');
    await exportImages(connected.running.mirror, [ref], dir);

    const offline = await fx.startMirror({ offline: true, upstreams: [{ url: upstream.url }] });
    expect((await importLayout(offline.running.mirror, dir)).failures).toEqual([]);
    const served = await get(offline, `/v2/local/app/referrers/${image.digest}`);
    expect(served.bytes.equals(online.bytes)).toBe(true);
    expect((await get(offline, `/v2/local/app/manifests/${bundle.digest}`)).bytes.equals(bundle.bytes)).toBe(true);
  });
});

describe('referrers faults', () => {
  const fx = useFixture({ fake: true });

  function signedOnFake(repo: string) {
    const index = fx.fake.addImage(repo, '1', { platforms: ['linux/amd64'] });
    const sbom = referrerArtifact({ mediaType: index.mediaType, digest: index.digest, size: index.bytes.length }, SPDX, Buffer.from(`{"sbom":"${repo}"}`));
    for (const b of sbom.blobs) fx.fake.addBlob(repo, b);
    fx.fake.addManifest(repo, sbom.digest, sbom.bytes, OCI_MANIFEST);
    fx.fake.addManifest(repo, schemeTag(index.digest), fallbackIndex([sbom.descriptor]), OCI_INDEX);
    return { index, sbom };
  }

  it('upstream\'s referrers API failing (5xx, timeout): the fallback tag answers, then the stored list', async () => {
    const { index, sbom } = signedOnFake('faults/five');
    fx.fake.failWith(/\/faults\/five\/referrers\//, 503);
    const m = await fx.startMirror({ upstreams: [{ url: fx.fake.url }], tags: { ttlSeconds: 0 }, upstream: { attempts: 1, headersTimeoutMs: 500 } });
    const first = await get(m, `/v2/faults/five/referrers/${index.digest}`);
    expect(first.status, first.bytes.toString()).toBe(200);
    expect(first.json<{ manifests: Array<{ digest: string }> }>().manifests.map((d) => d.digest)).toEqual([sbom.digest]);
    // The pull itself never breaks.
    expect((await get(m, '/v2/faults/five/manifests/1')).status).toBe(200);

    // Once a list is stored, a timing-out API is answered from it (stale-if-error).
    const { index: i2, sbom: s2 } = signedOnFake('faults/slow');
    expect((await get(m, `/v2/faults/slow/referrers/${i2.digest}`)).status).toBe(200);
    fx.fake.delay(/\/faults\/slow\//, Infinity);
    const stale = await get(m, `/v2/faults/slow/referrers/${i2.digest}`);
    expect(stale.status, stale.bytes.toString()).toBe(200);
    expect(stale.json<{ manifests: Array<{ digest: string }> }>().manifests.map((d) => d.digest)).toEqual([s2.digest]);
  });

  it('a referrer whose bytes do not match its digest is refused and not stored', async () => {
    const { sbom } = signedOnFake('faults/corrupt');
    fx.fake.corrupt(sbom.digest);
    const m = await fx.startMirror({ upstreams: [{ url: fx.fake.url }], upstream: { attempts: 1 } });
    const r = await get(m, `/v2/faults/corrupt/manifests/${sbom.digest}`);
    expect(r.status).toBe(502);
    expect(r.json<{ errors: Array<{ message: string }> }>().errors[0]!.message).toContain('refused');
    expect(m.running.mirror.catalogue.getManifest(`${fx.fake.host}/faults/corrupt`, sbom.digest)).toBeUndefined();
  });

  it('a referrers index over the manifest size limit: a clear 404 that names the limit', async () => {
    const index = fx.fake.addImage('faults/huge', '1', { platforms: ['linux/amd64'] });
    const big = fallbackIndex(Array.from({ length: 200 }, (_, i) => ({ mediaType: OCI_MANIFEST, digest: sha256(Buffer.from(String(i))), size: 10, artifactType: SPDX })));
    fx.fake.failWith(/\/faults\/huge\/referrers\//, 200, { body: big.toString(), headers: { 'Content-Type': OCI_INDEX } });
    const m = await fx.startMirror({ upstreams: [{ url: fx.fake.url }], limits: { maxManifestBytes: 8192 }, upstream: { attempts: 1 } });
    const r = await get(m, `/v2/faults/huge/referrers/${index.digest}`);
    expect(r.status, r.bytes.toString()).toBe(404);
    const err = r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0]!;
    expect(err.code).toBe('MANIFEST_UNKNOWN');
    expect(err.message).toMatch(/8192-byte manifest limit/);
    expect((await get(m, '/v2/faults/huge/manifests/1')).status).toBe(200);
  });
});
