// Tags against a real upstream behind a counting proxy: TTL and HEAD revalidation, a long TTL that
// never asks upstream, stale-if-error when upstream is down, offline mode on the same store, and
// the tag list with n/last pagination (passed through, and from the store when upstream is down).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream } from '../support/fake-upstream.js';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, pushMultiPlatformImage, putManifest, sha256, type PushedChild, type PushedIndex } from '../support/images.js';
import { skopeoCopyToDir } from '../support/skopeo.js';
import type { TestMirror } from '../support/mirror.js';
import type { MirrorConfigInput } from '../../src/config/schema.js';

interface Answer {
  status: number;
  headers: Headers;
  bytes: Buffer;
}

async function request(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Answer> {
  const res = await fetch(url, { method, headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

function errorOf(a: Answer): { code: string; message: string } {
  const body = JSON.parse(a.bytes.toString('utf8')) as { errors: Array<{ code: string; message: string }> };
  return body.errors[0]!;
}

interface TagPage {
  name: string;
  tags: string[];
}

const TWO = ['linux/amd64', 'linux/arm64'];
const amd64Of = (i: PushedIndex): PushedChild => i.children.find((c) => c.platform?.architecture === 'amd64')!;

describe('tags', () => {
  const fx = useFixture({ registry: true, proxy: true });
  const tempDir = () => fx.tempDir('core-tags-');

  async function mirrorWith(config: Partial<MirrorConfigInput>): Promise<TestMirror> {
    return fx.startMirror({ upstreams: [{ url: fx.proxy.url }], upstream: { attempts: 1 }, ...config });
  }
  const manifestUrl = (m: TestMirror, repo: string, ref: string): string => `${m.url}/v2/${repo}/manifests/${ref}`;
  /** The proxy's log for one repository, as `METHOD /path` lines. */
  const upstreamSaw = (repo: string): string[] => fx.proxy.lines().filter((l) => l.includes(`/v2/${repo}/`));

  async function expectServes(m: TestMirror, repo: string, ref: string, want: { bytes: Buffer; digest: string }, method: 'GET' | 'HEAD' = 'GET'): Promise<void> {
    const r = await request(manifestUrl(m, repo, ref), method);
    expect(r.status, `${method} ${repo}:${ref} ${r.bytes.toString()}`).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(want.digest);
    if (method === 'GET') expect(r.bytes.equals(want.bytes)).toBe(true);
    else expect(r.bytes.length).toBe(0);
  }

  it('with ttlSeconds 0 revalidates with a HEAD only, and follows a moved tag', async () => {
    const v1 = await pushMultiPlatformImage(fx.registry.url, 'tags/ttl', 'latest', { platforms: TWO });
    const m = await mirrorWith({ tags: { ttlSeconds: 0 } });
    await expectServes(m, 'tags/ttl', 'latest', v1);

    fx.proxy.reset();
    await expectServes(m, 'tags/ttl', 'latest', v1);
    expect(upstreamSaw('tags/ttl')).toEqual(['HEAD /v2/tags/ttl/manifests/latest']);
    fx.proxy.reset();
    await expectServes(m, 'tags/ttl', 'latest', v1, 'HEAD');
    expect(upstreamSaw('tags/ttl')).toEqual(['HEAD /v2/tags/ttl/manifests/latest']);

    const v2 = await pushMultiPlatformImage(fx.registry.url, 'tags/ttl', 'latest', { platforms: TWO });
    expect(v2.digest).not.toBe(v1.digest);
    fx.proxy.reset();
    await expectServes(m, 'tags/ttl', 'latest', v2);
    expect(upstreamSaw('tags/ttl')).toEqual(['HEAD /v2/tags/ttl/manifests/latest', 'GET /v2/tags/ttl/manifests/latest']);

    // The old index stays addressable by digest, from the store.
    fx.proxy.reset();
    await expectServes(m, 'tags/ttl', v1.digest, v1);
    expect(upstreamSaw('tags/ttl')).toEqual([]);
  });

  it('with a long TTL serves the cached digest without contacting upstream', async () => {
    const v1 = await pushMultiPlatformImage(fx.registry.url, 'tags/long', 'latest', { platforms: TWO });
    const m = await mirrorWith({ tags: { ttlSeconds: 3600 } });
    await expectServes(m, 'tags/long', 'latest', v1);
    await pushMultiPlatformImage(fx.registry.url, 'tags/long', 'latest', { platforms: TWO });
    fx.proxy.reset();
    await expectServes(m, 'tags/long', 'latest', v1);
    await expectServes(m, 'tags/long', 'latest', v1, 'HEAD');
    expect(upstreamSaw('tags/long')).toEqual([]);
  });

  describe('upstream down, then offline', () => {
    let stale: TestMirror;
    let image: PushedIndex;

    it('serves the cached tag, digest and blobs when upstream is down (stale-if-error) and logs a warning', async () => {
      image = await pushMultiPlatformImage(fx.registry.url, 'tags/stale', 'latest', { platforms: TWO, layersPerImage: 2 });
      stale = await mirrorWith({ tags: { ttlSeconds: 0 } });
      const first = await skopeoCopyToDir(`docker://${stale.host}/tags/stale:latest`, await tempDir(), { os: 'linux', arch: 'amd64' });
      expect(first.code, first.stderr).toBe(0);

      await fx.proxy.down();
      try {
        const warningsBefore = stale.logs.filter((l) => l.includes('"level":"warn"')).length;
        await expectServes(stale, 'tags/stale', 'latest', image);
        await expectServes(stale, 'tags/stale', 'latest', image, 'HEAD');
        const child = amd64Of(image);
        await expectServes(stale, 'tags/stale', child.digest, child);
        const layer = child.layers[0]!.digest;
        const blob = await request(`${stale.url}/v2/tags/stale/blobs/${layer}`);
        expect(blob.status).toBe(200);
        expect(sha256(blob.bytes)).toBe(layer);

        const dest = await tempDir();
        const again = await skopeoCopyToDir(`docker://${stale.host}/tags/stale:latest`, dest, { os: 'linux', arch: 'amd64' });
        expect(again.code, again.stderr).toBe(0);
        expect((await readFile(join(dest, 'manifest.json'))).equals(child.bytes)).toBe(true);

        const warnings = stale.logs.filter((l) => l.includes('"level":"warn"'));
        expect(warnings.length).toBeGreaterThan(warningsBefore);
        expect(warnings.some((l) => l.includes('stale-if-error') && l.includes('tags/stale'))).toBe(true);
      } finally {
        await fx.proxy.up();
      }
    });

    it('an offline mirror on the same store serves what is stored and never contacts upstream', async () => {
      const dataDir = stale.dataDir;
      await stale.stop();
      const m = await mirrorWith({ dataDir, offline: true, tags: { ttlSeconds: 0 } });
      fx.proxy.reset();

      await expectServes(m, 'tags/stale', 'latest', image);
      await expectServes(m, 'tags/stale', image.digest, image, 'HEAD');
      const child = amd64Of(image);
      await expectServes(m, 'tags/stale', child.digest, child);
      const dest = await tempDir();
      const copy = await skopeoCopyToDir(`docker://${m.host}/tags/stale:latest`, dest, { os: 'linux', arch: 'amd64' });
      expect(copy.code, copy.stderr).toBe(0);
      expect((await readFile(join(dest, 'manifest.json'))).equals(child.bytes)).toBe(true);

      const noTag = await request(manifestUrl(m, 'tags/stale', 'not-stored'));
      expect(noTag.status).toBe(404);
      expect(errorOf(noTag).code).toBe('MANIFEST_UNKNOWN');
      expect(errorOf(noTag).message).toMatch(/offline/);

      const arm64 = image.children.find((c) => c.platform?.architecture === 'arm64')!;
      const noDigest = await request(manifestUrl(m, 'tags/stale', arm64.digest));
      expect(noDigest.status).toBe(404);
      expect(errorOf(noDigest).code).toBe('MANIFEST_UNKNOWN');
      expect(errorOf(noDigest).message).toMatch(/offline/);

      const tags = await request(`${m.url}/v2/tags/stale/tags/list`);
      expect(tags.status).toBe(200);
      expect((JSON.parse(tags.bytes.toString()) as TagPage).tags).toEqual(['latest']);

      expect(fx.proxy.lines()).toEqual([]);
    });
  });

  describe('tag list', () => {
    const ALL = ['a1', 'b2', 'c3', 'd4', 'e5'];
    let m: TestMirror;
    let image: PushedIndex;

    beforeAll(async () => {
      image = await pushMultiPlatformImage(fx.registry.url, 'tags/list', 'c3', { platforms: TWO });
      for (const t of ['e5', 'a1', 'd4', 'b2']) await putManifest(fx.registry.url, 'tags/list', t, image.bytes, image.mediaType);
      m = await mirrorWith({});
    });

    async function page(url: string): Promise<{ body: TagPage; link: string | null; headers: Headers }> {
      const r = await request(url);
      expect(r.status, `${url}: ${r.bytes.toString()}`).toBe(200);
      expect(r.headers.get('content-type')).toContain('application/json');
      return { body: JSON.parse(r.bytes.toString()) as TagPage, link: r.headers.get('link'), headers: r.headers };
    }
    const next = (link: string | null): string => {
      expect(link).toMatch(/^<\/v2\/tags\/list\/tags\/list\?[^>]+>; rel="next"$/);
      return new URL(/<([^>]+)>/.exec(link!)![1]!, m.url).toString();
    };

    it('lists every tag, in lexical order', async () => {
      const all = await page(`${m.url}/v2/tags/list/tags/list`);
      expect(all.body).toEqual({ name: 'tags/list', tags: ALL });
      expect(all.link).toBeNull();
    });

    it('pages with n and last, the Link pointing at the mirror', async () => {
      const p1 = await page(`${m.url}/v2/tags/list/tags/list?n=2`);
      expect(p1.body.tags).toEqual(['a1', 'b2']);
      const p2 = await page(next(p1.link));
      expect(p2.body.tags).toEqual(['c3', 'd4']);
      const p3 = await page(next(p2.link));
      expect(p3.body.tags).toEqual(['e5']);
      expect(p3.link).toBeNull();
      expect((await page(`${m.url}/v2/tags/list/tags/list?last=c3`)).body.tags).toEqual(['d4', 'e5']);
      const none = await page(`${m.url}/v2/tags/list/tags/list?n=0`);
      expect(none.body.tags).toEqual([]);
      expect(none.link).toBeNull();
    });

    it('passes n and last through to an upstream that paginates, rewriting its Link to the mirror', async () => {
      const fake = await startFakeUpstream();
      try {
        const img = fake.addImage('team/app', 't1');
        for (const t of ['t2', 't3', 't4', 't5']) fake.tag('team/app', t, img.digest);
        const f = await fx.startMirror({ upstreams: [{ url: fake.url }] });
        const r = await request(`${f.url}/v2/team/app/tags/list?n=2&last=t1`);
        expect(r.status).toBe(200);
        expect((JSON.parse(r.bytes.toString()) as TagPage).tags).toEqual(['t2', 't3']);
        expect(fake.requests.some((q) => q.url.includes('n=2') && q.url.includes('last=t1'))).toBe(true);
        expect(r.headers.get('link')).toBe('</v2/team/app/tags/list?n=2&last=t3>; rel="next"');
      } finally {
        await fake.stop();
      }
    });

    it('falls back to the stored tags when upstream is down', async () => {
      for (const t of ['a1', 'b2', 'd4']) expect((await request(manifestUrl(m, 'tags/list', t))).status).toBe(200);
      await fx.proxy.down();
      try {
        const all = await page(`${m.url}/v2/tags/list/tags/list`);
        expect(all.body).toEqual({ name: 'tags/list', tags: ['a1', 'b2', 'd4'] });
        const p1 = await page(`${m.url}/v2/tags/list/tags/list?n=2`);
        expect(p1.body.tags).toEqual(['a1', 'b2']);
        const p2 = await page(next(p1.link));
        expect(p2.body.tags).toEqual(['d4']);
        expect(p2.link).toBeNull();
        expect(m.logs.some((l) => l.includes('"level":"warn"') && l.includes('tags/list'))).toBe(true);
      } finally {
        await fx.proxy.up();
      }
    });
  });
});
