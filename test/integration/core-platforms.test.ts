// The platform allow-list against a real upstream behind a counting proxy: pulling the carried
// platforms never touches the others upstream, attestations follow their image, the clear
// not-mirrored error (403 DENIED or 404 MANIFEST_UNKNOWN), variant matching, and blob strictness.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCountingProxy, type CountingProxy } from '../support/counting-proxy.js';
import {
  MANIFEST_ACCEPT,
  fetchBlob,
  pushMultiPlatformImage,
  pushSinglePlatformImage,
  sha256,
  type Platform,
  type PushedChild,
  type PushedIndex,
} from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeoCopyToDir } from '../support/skopeo.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import type { MirrorConfigInput } from '../../src/config/schema.js';

interface Answer {
  status: number;
  headers: Headers;
  bytes: Buffer;
}

interface OciErrorBody {
  errors: Array<{ code: string; message: string; detail?: Record<string, unknown> }>;
}

async function request(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Answer> {
  const res = await fetch(url, { method, headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

function errorOf(a: Answer): OciErrorBody['errors'][number] {
  expect(a.headers.get('content-type')).toContain('application/json');
  const body = JSON.parse(a.bytes.toString('utf8')) as OciErrorBody;
  expect(body.errors).toHaveLength(1);
  return body.errors[0]!;
}

function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** Every digest a child brings along: itself, its config and its layers. */
function digestsOf(child: PushedChild): string[] {
  return [child.digest, child.configDigest, ...child.layers.map((l) => l.digest)];
}

const tempDirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'core-platforms-'));
  tempDirs.push(dir);
  return dir;
}

describe('platform allow-list', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: TestMirror;
  let app: PushedIndex;
  /** Image manifests (not attestations) by platform string as in the index. */
  const images = new Map<string, PushedChild>();
  /** Attestation manifests by the platform of the image they describe. */
  const attestations = new Map<string, PushedChild>();
  const extraMirrors: TestMirror[] = [];

  const CARRIED = ['linux/amd64', 'linux/arm64/v8'];
  const NOT_CARRIED = ['linux/arm/v7', 'linux/arm/v6', 'linux/386', 'linux/ppc64le', 'linux/s390x'];

  async function extraMirror(config: Partial<MirrorConfigInput>): Promise<TestMirror> {
    const m = await startTestMirror({ upstreams: [{ url: proxy.url }], ...config });
    extraMirrors.push(m);
    return m;
  }
  const manifestUrl = (m: TestMirror, repo: string, ref: string): string => `${m.url}/v2/${repo}/manifests/${ref}`;
  const blobUrl = (m: TestMirror, repo: string, digest: string): string => `${m.url}/v2/${repo}/blobs/${digest}`;
  // In the client's words: the repository as it was asked for (here through the mirror's own
  // address, the default upstream), the index by digest.
  const indexName = (m: TestMirror = mirror): string => `${m.host}/library/app@${app.digest}`;
  const notMirroredMessage = (platform: string, digest: string, carries = 'linux/amd64, linux/arm64', m: TestMirror = mirror): string =>
    `platform ${platform} is not mirrored here (this mirror carries ${carries}); ${digest} is the ${platform} entry of index ${indexName(m)}`;

  beforeAll(async () => {
    registry = await startRegistry();
    app = await pushMultiPlatformImage(registry.url, 'library/app', '1.0', { format: 'oci', attestations: true, layersPerImage: 2 });
    await Promise.all([
      pushSinglePlatformImage(registry.url, 'library/single', 's390x', { platform: 'linux/s390x' }),
      pushSinglePlatformImage(registry.url, 'library/single', 'amd64', { platform: 'linux/amd64', format: 'docker' }),
    ]);
    for (const c of app.children) {
      if (c.attestationFor) {
        const subject = app.children.find((s) => s.digest === c.attestationFor)!;
        attestations.set(formatPlatform(subject.platform!), c);
      } else {
        images.set(formatPlatform(c.platform!), c);
      }
    }
    expect([...images.keys()].sort()).toEqual([...CARRIED, ...NOT_CARRIED].sort());
    proxy = await startCountingProxy(registry.url);
    mirror = await startTestMirror({ upstreams: [{ url: proxy.url }], platforms: ['linux/amd64', 'linux/arm64'] });
  });

  afterAll(async () => {
    await Promise.all(extraMirrors.map((m) => m.stop({ removeData: true })));
    await mirror?.stop({ removeData: true });
    await proxy?.stop();
    await registry?.stop();
    await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it('skopeo pulls amd64 and arm64; upstream is never asked for anything of the other platforms', async () => {
    proxy.reset();
    for (const arch of ['amd64', 'arm64']) {
      const dest = await tempDir();
      const r = await skopeoCopyToDir(`docker://${mirror.host}/library/app:1.0`, dest, { os: 'linux', arch });
      expect(r.code, r.stderr).toBe(0);
      const child = images.get(arch === 'amd64' ? 'linux/amd64' : 'linux/arm64/v8')!;
      expect((await readFile(join(dest, 'manifest.json'))).equals(child.bytes)).toBe(true);
      for (const layer of child.layers) {
        expect(sha256(await readFile(join(dest, layer.digest.slice('sha256:'.length))))).toBe(layer.digest);
      }
    }
    const seen = proxy.lines().join('\n');
    // What the carried platforms need came through, each blob once.
    for (const platform of CARRIED) {
      const child = images.get(platform)!;
      expect(proxy.count('GET', `/manifests/${child.digest}`), seen).toBe(1);
      for (const l of child.layers) expect(proxy.count('GET', `/blobs/${l.digest}`), seen).toBe(1);
    }
    // Nothing of any other platform: no child manifest, no config, no layer, not even a HEAD.
    for (const platform of NOT_CARRIED) {
      const other = [images.get(platform)!, attestations.get(platform)!];
      for (const d of other.flatMap(digestsOf)) expect(proxy.count('*', d), `${platform} ${d}\n${seen}`).toBe(0);
    }
  });

  it('serves the attestation manifests of carried platforms and refuses those of others', async () => {
    await request(manifestUrl(mirror, 'library/app', '1.0'));
    for (const platform of CARRIED) {
      const att = attestations.get(platform)!;
      const r = await request(manifestUrl(mirror, 'library/app', att.digest));
      expect(r.status, r.bytes.toString()).toBe(200);
      expect(r.bytes.equals(att.bytes)).toBe(true);
      expect(r.headers.get('docker-content-digest')).toBe(att.digest);
      for (const d of [att.configDigest, ...att.layers.map((l) => l.digest)]) {
        const b = await request(blobUrl(mirror, 'library/app', d));
        expect(b.status, b.bytes.toString()).toBe(200);
        expect(sha256(b.bytes)).toBe(d);
      }
    }
    proxy.reset();
    const s390x = attestations.get('linux/s390x')!;
    const r = await request(manifestUrl(mirror, 'library/app', s390x.digest));
    expect(r.status).toBe(403);
    const e = errorOf(r);
    expect(e.code).toBe('DENIED');
    expect(e.message).toContain('platform linux/s390x is not mirrored here (this mirror carries linux/amd64, linux/arm64)');
    expect(e.message).toContain(indexName());
    expect(proxy.count('*', s390x.digest)).toBe(0);
  });

  it('answers a non-carried child by digest with 403 DENIED and the clear message, without asking upstream', async () => {
    await request(manifestUrl(mirror, 'library/app', '1.0'));
    proxy.reset();
    for (const platform of NOT_CARRIED) {
      const child = images.get(platform)!;
      const r = await request(manifestUrl(mirror, 'library/app', child.digest));
      expect(r.status, platform).toBe(403);
      const e = errorOf(r);
      expect(e.code).toBe('DENIED');
      expect(e.message).toBe(notMirroredMessage(platform, child.digest));
      expect(e.detail).toMatchObject({
        platform,
        digest: child.digest,
        index: indexName(),
        mirroredPlatforms: ['linux/amd64', 'linux/arm64'],
      });
      const head = await request(manifestUrl(mirror, 'library/app', child.digest), 'HEAD');
      expect(head.status).toBe(403);
      expect(head.bytes.length).toBe(0);
    }
    expect(proxy.lines()).toEqual([]);
  });

  it("with notMirroredResponse: 'not-found' answers 404 MANIFEST_UNKNOWN with the same message", async () => {
    const m = await extraMirror({ notMirroredResponse: 'not-found' });
    expect((await request(manifestUrl(m, 'library/app', '1.0'))).status).toBe(200);
    const child = images.get('linux/s390x')!;
    const r = await request(manifestUrl(m, 'library/app', child.digest));
    expect(r.status).toBe(404);
    const e = errorOf(r);
    expect(e.code).toBe('MANIFEST_UNKNOWN');
    expect(e.message).toBe(notMirroredMessage('linux/s390x', child.digest, undefined, m));
    expect(e.detail).toMatchObject({ platform: 'linux/s390x', index: indexName(m), mirroredPlatforms: ['linux/amd64', 'linux/arm64'] });
  });

  it("platforms: ['linux/arm/v7'] carries the arm/v7 child only", async () => {
    const m = await extraMirror({ platforms: ['linux/arm/v7'] });
    expect((await request(manifestUrl(m, 'library/app', '1.0'))).status).toBe(200);
    const v7 = images.get('linux/arm/v7')!;
    const ok = await request(manifestUrl(m, 'library/app', v7.digest));
    expect(ok.status, ok.bytes.toString()).toBe(200);
    expect(ok.bytes.equals(v7.bytes)).toBe(true);
    for (const platform of ['linux/arm/v6', 'linux/amd64', 'linux/arm64/v8']) {
      const child = images.get(platform)!;
      const r = await request(manifestUrl(m, 'library/app', child.digest));
      expect(r.status, platform).toBe(403);
      expect(errorOf(r).message).toBe(notMirroredMessage(platform, child.digest, 'linux/arm/v7', m));
    }
  });

  it("platforms: ['linux/arm64'] matches the linux/arm64/v8 entry", async () => {
    const m = await extraMirror({ platforms: ['linux/arm64'] });
    expect((await request(manifestUrl(m, 'library/app', '1.0'))).status).toBe(200);
    const arm64 = images.get('linux/arm64/v8')!;
    const ok = await request(manifestUrl(m, 'library/app', arm64.digest));
    expect(ok.status, ok.bytes.toString()).toBe(200);
    expect(ok.bytes.equals(arm64.bytes)).toBe(true);
    const amd64 = images.get('linux/amd64')!;
    const r = await request(manifestUrl(m, 'library/app', amd64.digest));
    expect(r.status).toBe(403);
    expect(errorOf(r).message).toBe(notMirroredMessage('linux/amd64', amd64.digest, 'linux/arm64', m));
  });

  it('refuses a non-carried child asked for by digest before its index was seen, and stores nothing', async () => {
    const m = await extraMirror({});
    const child = images.get('linux/s390x')!;
    for (let i = 0; i < 2; i++) {
      const r = await request(manifestUrl(m, 'library/app', child.digest));
      expect(r.status, r.bytes.toString()).toBe(403);
      const e = errorOf(r);
      expect(e.code).toBe('DENIED');
      expect(e.message).toMatch(/^platform linux\/s390x is not mirrored here \(this mirror carries linux\/amd64, linux\/arm64\); /);
    }
    for (const l of child.layers) expect((await request(blobUrl(m, 'library/app', l.digest))).status).toBe(404);
  });

  it('answers a plain unknown digest with 404 MANIFEST_UNKNOWN / BLOB_UNKNOWN', async () => {
    const unknown = `sha256:${randomBytes(32).toString('hex')}`;
    const m = await request(manifestUrl(mirror, 'library/app', unknown));
    expect(m.status).toBe(404);
    expect(errorOf(m).code).toBe('MANIFEST_UNKNOWN');
    const b = await request(blobUrl(mirror, 'library/app', unknown));
    expect(b.status).toBe(404);
    expect(errorOf(b).code).toBe('BLOB_UNKNOWN');
    expect((await request(manifestUrl(mirror, 'library/app', unknown), 'HEAD')).status).toBe(404);
    expect((await request(blobUrl(mirror, 'library/app', unknown), 'HEAD')).status).toBe(404);
  });

  it('refuses blobs of non-carried platforms with 404 BLOB_UNKNOWN without asking upstream', async () => {
    await request(manifestUrl(mirror, 'library/app', '1.0'));
    proxy.reset();
    for (const platform of NOT_CARRIED) {
      const child = images.get(platform)!;
      for (const d of [child.configDigest, ...child.layers.map((l) => l.digest)]) {
        for (const method of ['GET', 'HEAD'] as const) {
          const r = await request(blobUrl(mirror, 'library/app', d), method);
          expect(r.status, `${method} ${platform} ${d}`).toBe(404);
          if (method === 'GET') expect(errorOf(r).code).toBe('BLOB_UNKNOWN');
        }
      }
    }
    // A blob this mirror holds for library/app is still not served under another repository name.
    const amd64Layer = images.get('linux/amd64')!.layers[0]!.digest;
    expect((await request(blobUrl(mirror, 'library/app', amd64Layer))).status).toBe(200);
    const other = await request(blobUrl(mirror, 'library/other', amd64Layer));
    expect(other.status).toBe(404);
    expect(errorOf(other).code).toBe('BLOB_UNKNOWN');
    expect(proxy.lines()).toEqual([]);
  });

  it('with blobs.requireReference: false fetches such a blob', async () => {
    const m = await extraMirror({ blobs: { requireReference: false } });
    const layer = images.get('linux/s390x')!.layers[0]!;
    proxy.reset();
    const r = await request(blobUrl(m, 'library/app', layer.digest));
    expect(r.status, r.bytes.toString()).toBe(200);
    expect(r.bytes.equals(await fetchBlob(registry.url, 'library/app', layer.digest))).toBe(true);
    expect(proxy.count('GET', `/blobs/${layer.digest}`)).toBe(1);
  });

  it('refuses a single-platform s390x image pulled by tag, naming it a single-platform image', async () => {
    const image = `${mirror.host}/library/single:s390x`; // as asked: through the mirror's address
    const message = `platform linux/s390x is not mirrored here (this mirror carries linux/amd64, linux/arm64); ${image} is a single-platform linux/s390x image`;
    for (let i = 0; i < 2; i++) {
      const r = await request(manifestUrl(mirror, 'library/single', 's390x'));
      expect(r.status, r.bytes.toString()).toBe(403);
      const e = errorOf(r);
      expect(e.code).toBe('DENIED');
      expect(e.message).toBe(message);
      expect(e.detail).toMatchObject({ platform: 'linux/s390x', image, mirroredPlatforms: ['linux/amd64', 'linux/arm64'] });
    }
    const dest = await tempDir();
    const copy = await skopeoCopyToDir(`docker://${mirror.host}/library/single:s390x`, dest, { os: 'linux', arch: 's390x' });
    expect(copy.code).not.toBe(0);
    expect(copy.stderr).toContain(message);

    // A single-platform image of a carried platform comes through.
    const ok = await skopeoCopyToDir(`docker://${mirror.host}/library/single:amd64`, await tempDir(), { os: 'linux', arch: 'amd64' });
    expect(ok.code, ok.stderr).toBe(0);
  });
});
