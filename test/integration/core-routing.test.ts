// Routing to several real upstreams the ways clients address a mirror: containerd's `?ns=`,
// the podman/CRI-O path prefix, and the default upstream (Docker's registry-mirrors, with the
// `library/` prefix). A registry that is not configured gets NAME_UNKNOWN and no connection at all.
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, pushMultiPlatformImage, putManifest, sha256, type PushedIndex } from '../support/images.js';
import { skopeoInspectRaw } from '../support/skopeo.js';
import type { TestMirror } from '../support/mirror.js';
import { startFakeUpstream } from '../support/fake-upstream.js';

interface Answer {
  status: number;
  headers: Headers;
  bytes: Buffer;
}

async function request(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Answer> {
  const res = await fetch(url, { method, headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

function errorOf(a: Answer): { code: string; message: string; detail?: unknown } {
  expect(a.headers.get('content-type')).toContain('application/json');
  const body = JSON.parse(a.bytes.toString('utf8')) as { errors: Array<{ code: string; message: string; detail?: unknown }> };
  return body.errors[0]!;
}

/** A TCP listener that only counts the connections it is offered: nothing should ever connect. */
async function startTrap(): Promise<{ port: number; connections: () => number; stop(): Promise<void> }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    stop: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('routing to upstreams', () => {
  const fx = useFixture({
    registries: { a: {}, b: {} },
    images: async ({ registries: { a, b } }) => {
      const two = { platforms: ['linux/amd64', 'linux/arm64'] };
      const [alpineA, alpineB, appA, appB] = await Promise.all([
        pushMultiPlatformImage(a.url, 'library/alpine', '3.20', two),
        pushMultiPlatformImage(b.url, 'library/alpine', '3.20', { ...two, format: 'docker' }),
        pushMultiPlatformImage(a.url, 'team/app', '1', two),
        pushMultiPlatformImage(b.url, 'team/app', '1', two),
      ]);
      // B also has a single-name repository `alpine`, distinct from its `library/alpine`.
      const alpineBare = await pushMultiPlatformImage(b.url, 'alpine', 'bare', two);
      await putManifest(b.url, 'alpine', '3.20', alpineBare.bytes, alpineBare.mediaType);
      return { alpineA, alpineB, appA, appB, alpineBare };
    },
    mirror: ({ registries: { a, b } }) => ({ upstreams: [{ url: a.url, libraryPrefix: true }, { url: b.url }] }),
  });
  let trap: Awaited<ReturnType<typeof startTrap>>;
  beforeAll(async () => {
    trap = await startTrap();
    fx.defer(() => trap.stop());
  });

  const manifest = (m: TestMirror, name: string, ref: string, ns?: string): string =>
    `${m.url}/v2/${name}/manifests/${ref}${ns === undefined ? '' : `?ns=${encodeURIComponent(ns)}`}`;

  async function expectServes(url: string, want: PushedIndex, namespace: string): Promise<void> {
    const r = await request(url);
    expect(r.status, `${url}: ${r.bytes.toString().slice(0, 300)}`).toBe(200);
    expect(r.bytes.equals(want.bytes), `${url} served the wrong content`).toBe(true);
    expect(r.headers.get('docker-content-digest')).toBe(want.digest);
    expect(r.headers.get('oci-namespace')).toBe(namespace);
  }

  it('routes ?ns=<host:port> (URL-encoded) to each upstream and echoes it in OCI-Namespace', async () => {
    await expectServes(manifest(fx.mirror, 'team/app', '1', fx.registries.a.host), fx.images.appA, fx.registries.a.host);
    await expectServes(manifest(fx.mirror, 'team/app', '1', fx.registries.b.host), fx.images.appB, fx.registries.b.host);
    await expectServes(manifest(fx.mirror, 'library/alpine', '3.20', fx.registries.b.host), fx.images.alpineB, fx.registries.b.host);
    // The same repository name at two upstreams stays two repositories in the store.
    await expectServes(manifest(fx.mirror, 'team/app', '1', fx.registries.a.host), fx.images.appA, fx.registries.a.host);
    // Blobs follow the same route.
    const layer = fx.images.appB.children[0]!.layers[0]!.digest;
    await request(`${fx.mirror.url}/v2/team/app/manifests/${fx.images.appB.children[0]!.digest}?ns=${encodeURIComponent(fx.registries.b.host)}`);
    const blob = await request(`${fx.mirror.url}/v2/team/app/blobs/${layer}?ns=${encodeURIComponent(fx.registries.b.host)}`);
    expect(blob.status, blob.bytes.toString()).toBe(200);
    expect(sha256(blob.bytes)).toBe(layer);
    expect(blob.headers.get('oci-namespace')).toBe(fx.registries.b.host);
  });

  it('routes a /v2/<host:port>/<repo>/ path prefix (podman, CRI-O) to that upstream', async () => {
    await expectServes(manifest(fx.mirror, `${fx.registries.b.host}/team/app`, '1'), fx.images.appB, fx.registries.b.host);
    await expectServes(manifest(fx.mirror, `${fx.registries.a.host}/team/app`, '1'), fx.images.appA, fx.registries.a.host);
    await expectServes(manifest(fx.mirror, `${fx.registries.b.host}/library/alpine`, '3.20'), fx.images.alpineB, fx.registries.b.host);
  });

  it('routes an alias as ?ns= and as a path prefix, as podman and skopeo write it', async () => {
    const m = await fx.startMirror({ upstreams: [{ url: fx.registries.a.url }, { url: fx.registries.b.url, aliases: ['registry-b.example'] }] });
    await expectServes(manifest(m, 'team/app', '1', 'registry-b.example'), fx.images.appB, 'registry-b.example');
    await expectServes(manifest(m, 'registry-b.example/team/app', '1'), fx.images.appB, 'registry-b.example');
    await expectServes(manifest(m, 'team/app', '1', fx.registries.b.host), fx.images.appB, fx.registries.b.host);
    await expectServes(manifest(m, 'team/app', '1'), fx.images.appA, fx.registries.a.host);
    // A reference cannot carry host:port inside its path, but an alias it can.
    const raw = await skopeoInspectRaw(`docker://${m.host}/registry-b.example/team/app:1`);
    expect(raw.equals(fx.images.appB.bytes)).toBe(true);
  });

  it('sends requests that name no registry to the default upstream', async () => {
    await expectServes(manifest(fx.mirror, 'team/app', '1'), fx.images.appA, fx.registries.a.host);
    const m = await fx.startMirror({ upstreams: [{ url: fx.registries.a.url }, { url: fx.registries.b.url }], defaultUpstream: fx.registries.b.host });
    await expectServes(manifest(m, 'team/app', '1'), fx.images.appB, fx.registries.b.host);
    await expectServes(manifest(m, 'library/alpine', '3.20'), fx.images.alpineB, fx.registries.b.host);
  });

  it('adds library/ to single-name repositories for an upstream with libraryPrefix', async () => {
    await expectServes(manifest(fx.mirror, 'alpine', '3.20'), fx.images.alpineA, fx.registries.a.host);
    await expectServes(manifest(fx.mirror, 'alpine', '3.20', fx.registries.a.host), fx.images.alpineA, fx.registries.a.host);
    await expectServes(manifest(fx.mirror, `${fx.registries.a.host}/alpine`, '3.20'), fx.images.alpineA, fx.registries.a.host);
    // B has no library prefix: `alpine` there is its own repository.
    await expectServes(manifest(fx.mirror, 'alpine', '3.20', fx.registries.b.host), fx.images.alpineBare, fx.registries.b.host);
    const raw = await skopeoInspectRaw(`docker://${fx.mirror.host}/alpine:3.20`);
    expect(raw.equals(fx.images.alpineA.bytes)).toBe(true);
  });

  it('answers an unconfigured registry with 404 NAME_UNKNOWN and a clear message', async () => {
    const cases = [
      manifest(fx.mirror, 'library/alpine', '3.20', 'evil.example.com:1234'),
      manifest(fx.mirror, 'evil.example.com/library/alpine', '3.20'),
      manifest(fx.mirror, 'evil.example.com:1234/library/alpine', '3.20'),
      `${fx.mirror.url}/v2/library/alpine/blobs/${fx.images.alpineA.children[0]!.layers[0]!.digest}?ns=evil.example.com%3A1234`,
      `${fx.mirror.url}/v2/library/alpine/tags/list?ns=evil.example.com%3A1234`,
    ];
    for (const url of cases) {
      for (const method of ['GET', 'HEAD'] as const) {
        const r = await request(url, method);
        expect(r.status, `${method} ${url}`).toBe(404);
        if (method === 'HEAD') continue;
        const e = errorOf(r);
        expect(e.code).toBe('NAME_UNKNOWN');
        expect(e.message).toMatch(/evil\.example\.com/);
        expect(e.message).toContain('not mirrored here');
        expect(e.message).toContain(fx.registries.a.host);
        expect(e.message).toContain(fx.registries.b.host);
      }
    }
  });

  it('never connects to a registry it is not configured for', async () => {
    const target = `127.0.0.1:${trap.port}`;
    const digest = fx.images.alpineA.children[0]!.layers[0]!.digest;
    const urls = [
      manifest(fx.mirror, 'library/alpine', '3.20', target),
      manifest(fx.mirror, 'library/alpine', fx.images.alpineA.digest, target),
      `${fx.mirror.url}/v2/library/alpine/blobs/${digest}?ns=${encodeURIComponent(target)}`,
      `${fx.mirror.url}/v2/library/alpine/tags/list?ns=${encodeURIComponent(target)}`,
      `${fx.mirror.url}/v2/library/alpine/manifests/3.20?ns=${target}`,
      `${fx.mirror.url}/v2/library/alpine/manifests/3.20?ns=localhost%3A${trap.port}`,
      manifest(fx.mirror, `${target}/library/alpine`, '3.20'),
      manifest(fx.mirror, `localhost:${trap.port}/library/alpine`, '3.20'),
      `${fx.mirror.url}/v2/${target}/library/alpine/blobs/${digest}`,
    ];
    for (const url of urls) {
      for (const method of ['GET', 'HEAD'] as const) {
        const r = await request(url, method);
        expect(r.status, `${method} ${url}: ${r.bytes.toString()}`).toBeGreaterThanOrEqual(400);
        expect(r.status, `${method} ${url}`).toBeLessThan(500);
        if (method === 'GET') expect(['NAME_UNKNOWN', 'NAME_INVALID']).toContain(errorOf(r).code);
      }
    }
    await sleep(200);
    expect(trap.connections()).toBe(0);
  });

  it('keeps the upstream (ns) in the next-page Link of a tag list', async () => {
    // A fake upstream that paginates properly (distribution 2.8 ignores `n`), not the default one.
    const fake = await startFakeUpstream();
    try {
      const img = fake.addImage('team/app', 't1');
      for (const t of ['t2', 't3', 't4']) fake.tag('team/app', t, img.digest);
      const m = await fx.startMirror({ upstreams: [{ url: fx.registries.a.url }, { url: fake.url }] });
      const ns = encodeURIComponent(fake.host);
      const first = await request(`${m.url}/v2/team/app/tags/list?n=2&ns=${ns}`);
      expect(first.status, first.bytes.toString()).toBe(200);
      expect(first.headers.get('oci-namespace')).toBe(fake.host);
      expect((JSON.parse(first.bytes.toString()) as { tags: string[] }).tags).toEqual(['t1', 't2']);
      const link = first.headers.get('link');
      expect(link).toMatch(/^<\/v2\/team\/app\/tags\/list\?[^>]*>; rel="next"$/);
      const next = new URL(/<([^>]+)>/.exec(link!)![1]!, m.url);
      expect(next.searchParams.get('ns')).toBe(fake.host);
      const second = await request(next.toString());
      expect(second.status, second.bytes.toString()).toBe(200);
      expect(second.headers.get('oci-namespace')).toBe(fake.host);
      expect((JSON.parse(second.bytes.toString()) as { tags: string[] }).tags).toEqual(['t3', 't4']);
    } finally {
      await fake.stop();
    }
  });
});
