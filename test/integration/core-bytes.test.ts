// Byte-exact serving: every index and manifest comes out of the mirror exactly as the real
// upstream (distribution 2.8) serves it, with the same digest and media type, including indexes a
// JSON re-serialiser would change (escaped slashes, odd key order and whitespace, no trailing
// newline), Docker manifest lists and an index nested in an index.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MANIFEST_ACCEPT,
  pushMultiPlatformImage,
  pushNestedIndex,
  sha256,
  type PushedChild,
  type PushedIndex,
} from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeoInspectRaw } from '../support/skopeo.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';

interface Fetched {
  status: number;
  headers: Headers;
  bytes: Buffer;
}

async function request(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Fetched> {
  const res = await fetch(url, { method, headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** What the mirror must match: the upstream's own answer for the same reference. */
interface UpstreamAnswer {
  bytes: Buffer;
  contentType: string;
  digest: string;
}

interface Case {
  index: PushedIndex;
  /** Inner indexes of a nested index (fetched by digest before their children). */
  inner: PushedIndex[];
  /** Leaf manifests of the platforms the mirror carries (attestations of those included). */
  allowed: PushedChild[];
}

const CASES = ['OCI index', 'Docker manifest list', 'odd-bytes Docker list', 'odd-bytes OCI index', 'nested index'] as const;
type CaseName = (typeof CASES)[number];

const ALLOWED_ARCHS = new Set(['amd64', 'arm64']);

/** Carried by a linux/amd64 + linux/arm64 mirror (attestations follow the image they describe). */
function isAllowed(child: PushedChild, siblings: PushedChild[]): boolean {
  const described = child.attestationFor ? siblings.find((s) => s.digest === child.attestationFor) : child;
  const p = described?.platform;
  return p !== undefined && p.os === 'linux' && ALLOWED_ARCHS.has(p.architecture) && (p.variant === undefined || p.variant === 'v8');
}

describe('byte-exact serving through the mirror', () => {
  let upstream: RegistryHandle;
  let mirror: TestMirror;
  const cases = new Map<CaseName, Case>();

  const mirrorUrl = (repo: string, ref: string): string => `${mirror.url}/v2/${repo}/manifests/${ref}`;

  async function upstreamAnswer(repo: string, ref: string): Promise<UpstreamAnswer> {
    const r = await request(`${upstream.url}/v2/${repo}/manifests/${ref}`);
    expect(r.status).toBe(200);
    return { bytes: r.bytes, contentType: r.headers.get('content-type') ?? '', digest: r.headers.get('docker-content-digest') ?? '' };
  }

  /** GET and HEAD of `ref` via the mirror match upstream's bytes and headers exactly. */
  async function expectExact(repo: string, ref: string, want: UpstreamAnswer): Promise<void> {
    const what = `${repo}@${ref}`;
    const got = await request(mirrorUrl(repo, ref));
    expect(got.status, `${what}: ${got.bytes.toString().slice(0, 300)}`).toBe(200);
    expect(got.bytes.equals(want.bytes), `${what}: bytes differ from upstream's`).toBe(true);
    expect(sha256(got.bytes)).toBe(want.digest);
    expect(got.headers.get('docker-content-digest')).toBe(want.digest);
    expect(got.headers.get('content-type')).toBe(want.contentType);
    expect(got.headers.get('content-length')).toBe(String(want.bytes.length));
    expect(got.headers.get('etag')).toBe(`"${want.digest}"`);

    const head = await request(mirrorUrl(repo, ref), 'HEAD');
    expect(head.status, what).toBe(200);
    expect(head.bytes.length).toBe(0);
    expect(head.headers.get('docker-content-digest')).toBe(want.digest);
    expect(head.headers.get('content-type')).toBe(want.contentType);
    expect(head.headers.get('content-length')).toBe(String(want.bytes.length));
    expect(head.headers.get('etag')).toBe(`"${want.digest}"`);
  }

  beforeAll(async () => {
    upstream = await startRegistry();
    const url = upstream.url;
    const [oci, docker, oddDocker, oddOci, innerA, innerB] = await Promise.all([
      pushMultiPlatformImage(url, 'bytes/oci', '1.0', { format: 'oci', attestations: true }),
      pushMultiPlatformImage(url, 'bytes/docker', '1.0', { format: 'docker', platforms: ['linux/amd64', 'linux/arm64/v8', 'linux/s390x'] }),
      pushMultiPlatformImage(url, 'bytes/odd', 'docker', { format: 'docker', oddBytes: true, platforms: ['linux/amd64', 'linux/arm64/v8', 'linux/arm/v7'] }),
      pushMultiPlatformImage(url, 'bytes/odd', 'oci', { format: 'oci', oddBytes: true, attestations: true, platforms: ['linux/arm64', 'linux/ppc64le', 'linux/amd64'] }),
      pushMultiPlatformImage(url, 'bytes/nested', 'inner-a', { format: 'oci', attestations: true, platforms: ['linux/amd64', 'linux/s390x'] }),
      pushMultiPlatformImage(url, 'bytes/nested', 'inner-b', { format: 'docker', platforms: ['linux/arm64/v8', 'linux/386'] }),
    ]);
    const nested = await pushNestedIndex(url, 'bytes/nested', '1.0', [innerA, innerB], { format: 'oci' });
    const allowedOf = (i: PushedIndex): PushedChild[] => i.children.filter((c) => isAllowed(c, i.children));
    cases.set('OCI index', { index: oci, inner: [], allowed: allowedOf(oci) });
    cases.set('Docker manifest list', { index: docker, inner: [], allowed: allowedOf(docker) });
    cases.set('odd-bytes Docker list', { index: oddDocker, inner: [], allowed: allowedOf(oddDocker) });
    cases.set('odd-bytes OCI index', { index: oddOci, inner: [], allowed: allowedOf(oddOci) });
    cases.set('nested index', { index: nested, inner: [innerA, innerB], allowed: [...allowedOf(innerA), ...allowedOf(innerB)] });
    mirror = await startTestMirror({ upstreams: [{ url }], platforms: ['linux/amd64', 'linux/arm64'] });
  });

  afterAll(async () => {
    await mirror?.stop({ removeData: true });
    await upstream?.stop();
  });

  it('has fixtures a re-serialiser would break', () => {
    const odd = cases.get('odd-bytes Docker list')!.index;
    const text = odd.bytes.toString('utf8');
    expect(text).toContain('application\\/vnd.docker.distribution.manifest.v2+json');
    expect(text.endsWith('\n')).toBe(false);
    expect(text.indexOf('"manifests"')).toBeLessThan(text.indexOf('"schemaVersion"'));
    expect(Buffer.from(JSON.stringify(JSON.parse(text))).equals(odd.bytes)).toBe(false);
    expect(cases.get('odd-bytes OCI index')!.index.bytes.toString()).toContain('application\\/vnd.oci.image.manifest.v1+json');
    expect(cases.get('Docker manifest list')!.index.mediaType).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
    const nested = cases.get('nested index')!;
    expect(nested.inner.map((i) => i.digest)).toEqual(
      (JSON.parse(nested.index.bytes.toString()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest),
    );
    for (const c of cases.values()) expect(c.allowed.length).toBeGreaterThan(0);
  });

  describe.each(CASES)('%s', (name) => {
    const get = (): Case => cases.get(name)!;

    it('GET and HEAD by tag: identical bytes, digest, Content-Type, Content-Length and ETag', async () => {
      const { index } = get();
      const want = await upstreamAnswer(index.repo, index.tag);
      expect(want.bytes.equals(index.bytes)).toBe(true);
      expect(want.digest).toBe(index.digest);
      await expectExact(index.repo, index.tag, want);
      // A second time, now from the mirror's store rather than on the way through.
      await expectExact(index.repo, index.tag, want);
    });

    it('GET and HEAD by digest are exact too', async () => {
      const { index } = get();
      await expectExact(index.repo, index.digest, await upstreamAnswer(index.repo, index.digest));
    });

    it('skopeo inspect --raw through the mirror equals upstream', async () => {
      const { index } = get();
      const [viaMirror, direct] = await Promise.all([
        skopeoInspectRaw(`docker://${mirror.host}/${index.repo}:${index.tag}`),
        skopeoInspectRaw(`docker://${upstream.host}/${index.repo}:${index.tag}`),
      ]);
      expect(viaMirror.equals(direct)).toBe(true);
      expect(viaMirror.equals(index.bytes)).toBe(true);
      const byDigest = await skopeoInspectRaw(`docker://${mirror.host}/${index.repo}@${index.digest}`);
      expect(byDigest.equals(index.bytes)).toBe(true);
    });

    it('child manifests of the carried platforms, fetched by digest, are exact', async () => {
      const { index, inner, allowed } = get();
      await expectExact(index.repo, index.tag, await upstreamAnswer(index.repo, index.tag));
      for (const i of inner) await expectExact(i.repo, i.digest, await upstreamAnswer(i.repo, i.digest));
      for (const child of allowed) {
        const want = await upstreamAnswer(index.repo, child.digest);
        expect(want.bytes.equals(child.bytes)).toBe(true);
        expect(want.contentType).toBe(child.mediaType);
        await expectExact(index.repo, child.digest, want);
      }
    });
  });

  it('serves the same bytes from its store after a restart (offline, nothing cached in memory)', async () => {
    const dataDir = mirror.dataDir;
    await mirror.stop();
    const upstreamUrl = upstream.url;
    mirror = await startTestMirror({ upstreams: [{ url: upstreamUrl }], dataDir, offline: true });
    for (const c of cases.values()) {
      const { index } = c;
      const want: UpstreamAnswer = { bytes: index.bytes, contentType: index.mediaType, digest: index.digest };
      await expectExact(index.repo, index.tag, want);
      await expectExact(index.repo, index.digest, want);
      for (const i of c.inner) await expectExact(i.repo, i.digest, { bytes: i.bytes, contentType: i.mediaType, digest: i.digest });
      for (const child of c.allowed) {
        await expectExact(index.repo, child.digest, { bytes: child.bytes, contentType: child.mediaType, digest: child.digest });
      }
    }
  });
});
