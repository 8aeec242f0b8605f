// Running the mirror day to day: client authentication, Prometheus metrics, health checks,
// request logs, graceful shutdown of a spawned `sparse-mirror serve`, LRU eviction under
// storage.maxBytes, and background sync. Upstream is a real distribution 2.8 registry behind a
// counting proxy, except for the shutdown test, which needs a throttled fake upstream.
import bcrypt from 'bcryptjs';
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { inventory } from '../../src/store/inventory.js';
import { prefetchImage } from '../../src/upkeep/prefetch.js';
import { verifyStore } from '../../src/upkeep/verify.js';
import { buildCli, spawnServe, writeConfigFile, type CliBuild, type ServeProcess } from '../support/cli.js';
import { startCountingProxy, type CountingProxy } from '../support/counting-proxy.js';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { useFixture, type MirrorInput } from '../support/fixture.js';
import {
  MANIFEST_ACCEPT,
  MEDIA_TYPES,
  pushBlob,
  pushMultiPlatformImage,
  pushSinglePlatformImage,
  putManifest,
  sha256,
  tarWithOneFile,
  type PushedChild,
} from '../support/images.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { freePort } from '../support/registry.js';
import { skopeoCopyToDir } from '../support/skopeo.js';

const PLATFORMS = ['linux/amd64', 'linux/arm64'];
const ALICE = { username: 'alice', password: `alice-Pw-${randomBytes(6).toString('hex')}` };
const ADMIN_TOKEN = `adm-${randomBytes(20).toString('hex')}`;
const ENV_ADMIN_TOKEN = `env-adm-${randomBytes(20).toString('hex')}`;
const ENV_PULL_TOKEN = `env-pull-${randomBytes(20).toString('hex')}`;

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const bearer = (token: string) => `Bearer ${token}`;

interface Answer {
  status: number;
  headers: Headers;
  bytes: Buffer;
}

async function call(url: string, opts: { method?: string; authorization?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = { accept: MANIFEST_ACCEPT };
  if (opts.authorization) headers.authorization = opts.authorization;
  const res = await fetch(url, { method: opts.method ?? 'GET', headers });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

function errorCode(a: Answer): string | undefined {
  return (JSON.parse(a.bytes.toString()) as { errors?: Array<{ code: string }> }).errors?.[0]?.code;
}

/** Sum of the samples of `name` whose labels include `labels` (Prometheus text format). */
function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
  }
  return total;
}

interface LogLine {
  msg: string;
  method?: string;
  path?: string;
  status?: number;
  bytes?: number;
  ms?: number;
  cache?: string;
  upstream?: string;
  [k: string]: unknown;
}

const requestLines = (logs: string[]): LogLine[] =>
  logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === 'request');

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

function storePath(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Images for eviction: an index per repository (amd64, arm64, s390x), every child carrying one
// layer shared by all images plus a layer of its own.

interface EvictChild {
  platform: string;
  digest: string;
  bytes: Buffer;
  config: Buffer;
  own: Buffer;
}
interface EvictImage {
  repo: string;
  tag: string;
  digest: string;
  bytes: Buffer;
  children: EvictChild[];
}

function gzLayer(size: number): { gz: Buffer; diffId: string } {
  const tar = tarWithOneFile(`f-${randomBytes(4).toString('hex')}.bin`, randomBytes(size));
  return { gz: gzipSync(tar), diffId: sha256(tar) };
}

async function pushSharingIndex(registryUrl: string, repo: string, shared: { gz: Buffer; diffId: string }): Promise<EvictImage> {
  const t = MEDIA_TYPES.oci;
  // The shared layer goes up once, before the children: distribution 2.8 rewrites a repository's
  // blob link in place on every upload of that blob, so a child's manifest PUT that reads the
  // link while a sibling re-uploads it can see it empty and answer MANIFEST_BLOB_UNKNOWN.
  await pushBlob(registryUrl, repo, shared.gz);
  const children = await Promise.all(
    ['linux/amd64', 'linux/arm64', 'linux/s390x'].map(async (platform): Promise<EvictChild> => {
      const [os, architecture] = platform.split('/') as [string, string];
      const own = gzLayer(12_000);
      const config = Buffer.from(
        JSON.stringify({ os, architecture, config: { Labels: { repo } }, rootfs: { type: 'layers', diff_ids: [shared.diffId, own.diffId] } }),
      );
      await Promise.all([config, own.gz].map((b) => pushBlob(registryUrl, repo, b)));
      const bytes = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: t.manifest,
          config: { mediaType: t.config, digest: sha256(config), size: config.length },
          layers: [shared.gz, own.gz].map((l) => ({ mediaType: t.layer, digest: sha256(l), size: l.length })),
        }),
      );
      const digest = await putManifest(registryUrl, repo, sha256(bytes), bytes, t.manifest);
      return { platform, digest, bytes, config, own: own.gz };
    }),
  );
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.index,
      manifests: children.map((c) => {
        const [os, architecture] = c.platform.split('/') as [string, string];
        return { mediaType: t.manifest, digest: c.digest, size: c.bytes.length, platform: { os, architecture } };
      }),
    }),
  );
  const digest = await putManifest(registryUrl, repo, '1', bytes, t.index);
  return { repo, tag: '1', digest, bytes, children };
}

const allowedChildren = (img: EvictImage) => img.children.filter((c) => c.platform !== 'linux/s390x');
/** Bytes only this image holds in the store: index, allowed children, their configs and own layers. */
const ownBytes = (img: EvictImage) =>
  img.bytes.length + allowedChildren(img).reduce((a, c) => a + c.bytes.length + c.config.length + c.own.length, 0);

// ---------------------------------------------------------------------------------------------

describe('operating the mirror', () => {
  const fx = useFixture({
    registry: true,
    proxy: true,
    images: async ({ registry }) => {
      const shared = gzLayer(8_000);
      const [app, ...evict] = await Promise.all([
        pushMultiPlatformImage(registry.url, 'library/app', '1.0', { attestations: true, layerSize: 2048 }),
        pushSharingIndex(registry.url, 'evict/a', shared),
        pushSharingIndex(registry.url, 'evict/b', shared),
        pushSharingIndex(registry.url, 'evict/c', shared),
      ]);
      return { app, evict, shared };
    },
  });
  let build: CliBuild;
  let work: string;

  const amd64 = (): PushedChild => fx.images.app.children.find((c) => c.platform?.architecture === 'amd64' && !c.attestationFor)!;
  const s390x = (): PushedChild => fx.images.app.children.find((c) => c.platform?.architecture === 's390x' && !c.attestationFor)!;

  beforeAll(async () => {
    const building = buildCli();
    work = await fx.tempDir('sm-ops-');
    build = await building;
    fx.defer(() => build.cleanup());
    if (build.diagnostics) console.warn(`tsc reported errors (emitted anyway):\n${build.diagnostics.slice(0, 2000)}`);
  }, 180_000);

  function mirror(input: MirrorInput): Promise<TestMirror> {
    return fx.startMirror({ platforms: PLATFORMS, upstream: { attempts: 1 }, ...input });
  }

  describe('client authentication', () => {
    let m: TestMirror;
    beforeAll(async () => {
      m = await mirror({
        upstreams: [{ url: fx.proxy.url }],
        auth: {
          enabled: true,
          realm: 'ops-test',
          users: [{ username: ALICE.username, passwordHash: bcrypt.hashSync(ALICE.password, 4), role: 'pull' }],
          tokens: [{ token: ADMIN_TOKEN, role: 'admin' }],
        },
      });
    });

    it('answers /v2/ without credentials with 401, a Basic challenge and an UNAUTHORIZED body', async () => {
      const r = await call(`${m.url}/v2/`);
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Basic realm="ops-test"');
      expect(errorCode(r)).toBe('UNAUTHORIZED');
    });

    it('refuses a wrong password, an unknown user and an unknown token; accepts the user, the token and the token as a password', async () => {
      for (const authorization of [basic(ALICE.username, 'wrong'), basic('mallory', ALICE.password), bearer('not-a-token-not-a-token-not-a-token'), 'Digest x']) {
        const r = await call(`${m.url}/v2/`, { authorization });
        expect(r.status, authorization).toBe(401);
        expect(errorCode(r)).toBe('UNAUTHORIZED');
        expect(r.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
      }
      for (const authorization of [basic(ALICE.username, ALICE.password), bearer(ADMIN_TOKEN), basic('ci', ADMIN_TOKEN)]) {
        expect((await call(`${m.url}/v2/`, { authorization })).status, authorization).toBe(200);
      }
    });

    it('fetches nothing upstream for an unauthenticated or wrongly authenticated request', async () => {
      fx.proxy.reset();
      const refs = [`/v2/library/app/manifests/1.0`, `/v2/library/app/manifests/${amd64().digest}`, `/v2/library/app/blobs/${amd64().layers[0]!.digest}`];
      for (const path of refs) {
        for (const method of ['GET', 'HEAD']) {
          expect((await call(`${m.url}${path}`, { method })).status).toBe(401);
          expect((await call(`${m.url}${path}`, { method, authorization: basic(ALICE.username, 'nope') })).status).toBe(401);
        }
      }
      expect(fx.proxy.requests, fx.proxy.lines().join('\n')).toEqual([]);
    });

    it('skopeo pulls with --src-creds and is refused without', async () => {
      const anonymous = await skopeoCopyToDir(`docker://${m.host}/library/app:1.0`, await mkdtemp(join(work, 'pull-')), { os: 'linux', arch: 'amd64' });
      expect(anonymous.code).not.toBe(0);
      expect(anonymous.stderr).toMatch(/unauthorized|401|authentication required/i);
      const dest = await mkdtemp(join(work, 'pull-'));
      const r = await skopeoCopyToDir(`docker://${m.host}/library/app:1.0`, dest, { os: 'linux', arch: 'amd64', creds: `${ALICE.username}:${ALICE.password}` });
      expect(r.code, r.stderr).toBe(0);
    });

    it('serves /metrics to admins only', async () => {
      expect((await call(`${m.url}/metrics`)).status).toBe(401);
      const pullOnly = await call(`${m.url}/metrics`, { authorization: basic(ALICE.username, ALICE.password) });
      expect(pullOnly.status).toBe(403);
      expect(errorCode(pullOnly)).toBe('DENIED');
      const admin = await call(`${m.url}/metrics`, { authorization: bearer(ADMIN_TOKEN) });
      expect(admin.status).toBe(200);
      expect(admin.bytes.toString()).toContain('sparse_mirror_http_requests_total');
      // Probes stay open: a load balancer has no credentials.
      expect((await call(`${m.url}/healthz`)).status).toBe(200);
      expect((await call(`${m.url}/readyz`)).status).toBe(200);
    });

    it('logs one line per request, 401s included, and never a password, token or Authorization value', async () => {
      const lines = requestLines(m.logs);
      expect(lines.filter((l) => l.status === 401).length).toBeGreaterThanOrEqual(20);
      const text = m.logs.join('\n');
      for (const secret of [ALICE.password, ADMIN_TOKEN, basic(ALICE.username, ALICE.password).slice(6), Buffer.from(`ci:${ADMIN_TOKEN}`).toString('base64')]) {
        expect(text.includes(secret), `a log line holds ${secret.slice(0, 6)}…`).toBe(false);
      }
      expect(text).not.toMatch(/Basic [A-Za-z0-9+/=]{8,}|Bearer [A-Za-z0-9-]{8,}/);
    });
  });

  describe('metrics, health and request logs', () => {
    let m: TestMirror;
    let proxy2: CountingProxy;
    const scrape = async () => (await call(`${m.url}/metrics`)).bytes.toString();

    beforeAll(async () => {
      proxy2 = await startCountingProxy(fx.registry.url);
      fx.defer(() => proxy2.stop());
      // No read-ahead: it fetches the image's next blob on its own schedule, and this test counts
      // exactly what its requests fetched (test/integration/read-ahead.test.ts covers read-ahead).
      m = await mirror({ upstreams: [{ url: proxy2.url }], blobs: { readAhead: false } });
    });

    it('counts requests by route and status, cache hits and misses, bytes served and fetched, refused platforms, store size', async () => {
      const s0 = await scrape();
      const index = `${m.url}/v2/library/app/manifests/1.0`;
      const child = `${m.url}/v2/library/app/manifests/${amd64().digest}`;
      const layer = amd64().layers[0]!;
      const blob = `${m.url}/v2/library/app/blobs/${layer.digest}`;
      expect((await call(index)).status).toBe(200);
      expect((await call(index)).status).toBe(200);
      expect((await call(child)).status).toBe(200);
      const first = await call(blob);
      expect(first.status).toBe(200);
      expect(first.bytes.length).toBe(layer.size);
      expect((await call(blob)).status).toBe(200);
      const refused = await call(`${m.url}/v2/library/app/manifests/${s390x().digest}`);
      expect(refused.status).toBe(403);
      const s1 = await scrape();

      const d = (name: string, labels: Record<string, string> = {}) => metric(s1, name, labels) - metric(s0, name, labels);
      const req = 'sparse_mirror_http_requests_total';
      expect.soft(d(req, { route: 'manifest', method: 'GET', status: '200' })).toBe(3);
      expect.soft(d(req, { route: 'manifest', method: 'GET', status: '403' })).toBe(1);
      expect.soft(d(req, { route: 'blob', method: 'GET', status: '200' })).toBe(2);
      const cache = 'sparse_mirror_cache_requests_total';
      expect.soft(d(cache, { kind: 'manifest', result: 'miss' })).toBe(2);
      expect.soft(d(cache, { kind: 'manifest', result: 'hit' })).toBe(1);
      expect.soft(d(cache, { kind: 'blob', result: 'miss' })).toBe(1);
      expect.soft(d(cache, { kind: 'blob', result: 'hit' })).toBe(1);
      expect.soft(d('sparse_mirror_not_mirrored_requests_total', { platform: 'linux/s390x' })).toBe(1);
      const fetched = fx.images.app.bytes.length + amd64().size + layer.size;
      expect.soft(d('sparse_mirror_upstream_fetched_bytes_total')).toBe(fetched);
      // Served: the index twice, the child once, the layer twice.
      expect.soft(d('sparse_mirror_served_bytes_total'), 'bytes served counts blob bodies too').toBe(2 * fx.images.app.bytes.length + amd64().size + 2 * layer.size);
      expect.soft(metric(s1, 'sparse_mirror_store_bytes')).toBe(m.running.mirror.catalogue.storeBytes());
      expect.soft(metric(s1, 'sparse_mirror_store_bytes')).toBe(fetched);
      expect(s1).toMatch(/# TYPE sparse_mirror_store_bytes gauge/);
    });

    it('counts upstream errors when upstream is down', async () => {
      const s0 = await scrape();
      await proxy2.down();
      try {
        const arm64 = fx.images.app.children.find((c) => c.platform?.architecture === 'arm64' && !c.attestationFor)!;
        const r = await call(`${m.url}/v2/library/app/manifests/${arm64.digest}`);
        expect(r.status).toBeGreaterThanOrEqual(500);
      } finally {
        await proxy2.up();
      }
      const s1 = await scrape();
      expect(metric(s1, 'sparse_mirror_upstream_errors_total', { upstream: proxy2.host }) - metric(s0, 'sparse_mirror_upstream_errors_total', { upstream: proxy2.host })).toBeGreaterThanOrEqual(1);
    });

    it('writes one JSON line per request with method, path, status, bytes, duration, cache and upstream', () => {
      const lines = requestLines(m.logs);
      const layer = amd64().layers[0]!;
      const indexLines = lines.filter((l) => l.path === '/v2/library/app/manifests/1.0');
      expect(indexLines.map((l) => l.cache)).toEqual(['miss', 'hit']);
      for (const l of indexLines) {
        expect(l).toMatchObject({ method: 'GET', status: 200, bytes: fx.images.app.bytes.length });
        expect(typeof l.ms).toBe('number');
      }
      // `upstream` only where the request reached it: the miss, not the hit served from the store.
      expect(indexLines.map((l) => l.upstream)).toEqual([proxy2.host, undefined]);
      // A line is written when the server is done with its response. A client can hold all of the
      // cold blob's body, and have its next request (the hit) answered, before the server is done
      // with the first (CI saw it once): the lines are matched by content, not by order.
      const blobLines = lines.filter((l) => l.path === `/v2/library/app/blobs/${layer.digest}`);
      expect(blobLines.map((l) => [l.cache, l.upstream]).sort()).toEqual([
        ['hit', undefined],
        ['miss', proxy2.host],
      ]);
      for (const l of blobLines) {
        expect(l).toMatchObject({ method: 'GET', status: 200 });
        expect(typeof l.ms).toBe('number');
        expect.soft(l.bytes, 'blob request lines log the bytes sent').toBe(layer.size);
      }
      // Refused from the stored index: nothing was asked of the upstream.
      const refused = lines.filter((l) => l.path === `/v2/library/app/manifests/${s390x().digest}`);
      expect(refused).toHaveLength(1);
      expect(refused[0]).toMatchObject({ method: 'GET', status: 403 });
      expect(refused[0]!.upstream).toBeUndefined();
      expect(lines.filter((l) => l.path === '/metrics').length).toBeGreaterThanOrEqual(4);
    });

    it('logs a HEAD with bytes 0 (it sent no body), and counts no served bytes for it', async () => {
      const layer = amd64().layers[0]!;
      const s0 = await scrape();
      const heads = [`${m.url}/v2/library/app/manifests/1.0`, `${m.url}/v2/library/app/blobs/${layer.digest}`];
      for (const url of heads) expect((await call(url, { method: 'HEAD' })).status).toBe(200);
      const s1 = await scrape();
      expect(metric(s1, 'sparse_mirror_served_bytes_total') - metric(s0, 'sparse_mirror_served_bytes_total')).toBe(0);
      const lines = requestLines(m.logs).filter((l) => l.method === 'HEAD');
      expect(lines.map((l) => [l.path, l.status, l.bytes, l.upstream])).toEqual([
        ['/v2/library/app/manifests/1.0', 200, 0, undefined],
        [`/v2/library/app/blobs/${layer.digest}`, 200, 0, undefined],
      ]);
    });

    it('/healthz is 200; /readyz is 200, and 503 when the store or SQLite is unusable', async () => {
      expect((await call(`${m.url}/healthz`)).status).toBe(200);
      expect((await call(`${m.url}/readyz`)).status).toBe(200);
      // Running as root, permissions do not stop us: take the store's temp dir away instead.
      const tmp = m.running.mirror.store.tmpDir;
      await rm(tmp, { recursive: true, force: true });
      const gone = await call(`${m.url}/readyz`);
      expect(gone.status).toBe(503);
      expect(JSON.parse(gone.bytes.toString())).toMatchObject({ status: 'unavailable' });
      expect((await call(`${m.url}/healthz`)).status).toBe(200);
      await mkdir(tmp, { recursive: true });
      expect((await call(`${m.url}/readyz`)).status).toBe(200);
      // SQLite closed under the running mirror (its last act in this test file).
      m.running.mirror.catalogue.flushTouches();
      m.running.mirror.catalogue.db.close();
      expect((await call(`${m.url}/readyz`)).status).toBe(503);
      expect((await call(`${m.url}/healthz`)).status).toBe(200);
    });
  });

  describe('a spawned `sparse-mirror serve`', () => {
    let fake: FakeUpstream;
    beforeAll(async () => {
      fake = await startFakeUpstream();
      fx.defer(() => fake.stop());
    });

    it('takes tokens from MIRROR_AUTH_TOKENS, and on SIGTERM aborts a slow download cleanly and exits 0 within the grace period', async () => {
      const image = fake.addImage('library/app', '1.0');
      const big = randomBytes(3 * 1024 * 1024);
      const bigDigest = fake.addBlob('library/app', big);
      fake.throttle(bigDigest, 16 * 1024, 100); // ~160 KiB/s: ~19 s for the whole blob
      const dataDir = join(work, 'serve-data');
      const config = await writeConfigFile(join(work, 'serve.config.mjs'), {
        dataDir,
        upstreams: [{ url: fake.url }],
        platforms: PLATFORMS,
        blobs: { requireReference: false },
        log: { level: 'info' },
        auth: { enabled: true, users: [{ username: ALICE.username, passwordHash: bcrypt.hashSync(ALICE.password, 4), role: 'pull' }] },
      });
      const serve: ServeProcess = await spawnServe(build, {
        config,
        port: await freePort(),
        env: { MIRROR_AUTH_TOKENS: `admin=${ENV_ADMIN_TOKEN}, ${ENV_PULL_TOKEN}` },
      });
      fx.defer(async () => void serve.child.kill('SIGKILL'));

      // Tokens from the environment work, with their roles.
      expect((await call(`${serve.url}/v2/`)).status).toBe(401);
      expect((await call(`${serve.url}/v2/`, { authorization: bearer(ENV_ADMIN_TOKEN) })).status).toBe(200);
      expect((await call(`${serve.url}/v2/`, { authorization: bearer(ENV_PULL_TOKEN) })).status).toBe(200);
      expect((await call(`${serve.url}/metrics`, { authorization: bearer(ENV_ADMIN_TOKEN) })).status).toBe(200);
      expect((await call(`${serve.url}/metrics`, { authorization: bearer(ENV_PULL_TOKEN) })).status).toBe(403);
      expect((await call(`${serve.url}/v2/`, { authorization: basic(ALICE.username, ALICE.password) })).status).toBe(200);

      // Pull the small image (it must survive the shutdown).
      const auth = { authorization: bearer(ENV_PULL_TOKEN) };
      const amd = image.children.find((c) => c.platform?.architecture === 'amd64')!;
      expect((await call(`${serve.url}/v2/library/app/manifests/1.0`, auth)).bytes.equals(image.bytes)).toBe(true);
      expect((await call(`${serve.url}/v2/library/app/manifests/${amd.digest}`, auth)).bytes.equals(amd.bytes)).toBe(true);
      for (const d of [amd.configDigest, ...amd.layers.map((l) => l.digest)]) {
        expect((await call(`${serve.url}/v2/library/app/blobs/${d}`, auth)).status).toBe(200);
      }

      // A slow download in flight...
      const res = await fetch(`${serve.url}/v2/library/app/blobs/${bigDigest}`, { headers: auth });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      let received = 0;
      const reading = (async (): Promise<Error | undefined> => {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) return undefined;
            received += value.length;
          }
        } catch (e) {
          return e as Error;
        }
      })();
      const tmpDir = join(dataDir, 'tmp', String(serve.child.pid));
      // Temp files are named after the digest. The small image's blobs may sit there too: their
      // flush waits for the mirror to go quiet (blobs.flushQuietMs), and shutdown must run it.
      const bigTemps = async () => (await filesUnder(tmpDir)).filter((f) => basename(f).startsWith(bigDigest.slice('sha256:'.length, 'sha256:'.length + 16)));
      for (let i = 0; i < 200 && (received < 64 * 1024 || (await bigTemps()).length === 0); i++) await sleep(50);
      expect(received).toBeGreaterThanOrEqual(64 * 1024);
      expect((await bigTemps()).length, 'the download writes a temp file').toBe(1);

      // ...then SIGTERM: the listener closes at once, the download gets the grace period.
      const t0 = Date.now();
      serve.child.kill('SIGTERM');
      let refusedNew = false;
      for (let i = 0; i < 20 && !refusedNew; i++) {
        await sleep(250);
        refusedNew = await fetch(`${serve.url}/healthz`).then(
          async (r) => {
            await r.arrayBuffer();
            return false;
          },
          () => true,
        );
      }
      expect(refusedNew, 'new connections are refused while stopping').toBe(true);
      const exit = await Promise.race([serve.exited, sleep(30_000).then(() => undefined)]);
      const elapsed = Date.now() - t0;
      expect(exit, `serve did not exit after SIGTERM\n${serve.lines().slice(-5).join('\n')}\n${serve.stderr()}`).toBeDefined();
      expect(exit).toEqual({ code: 0, signal: null });
      expect(elapsed, `exited ${elapsed} ms after SIGTERM`).toBeLessThan(16_000);
      const clientError = await Promise.race([reading, sleep(5_000).then(() => new Error('client still reading'))]);
      expect(received).toBeLessThan(big.length);
      expect(clientError, 'the client must see the body cut short').toBeDefined();

      // Nothing half-done is left: no temp files, no row, no file for the unfinished blob.
      expect(await filesUnder(join(dataDir, 'tmp'))).toEqual([]);
      expect(existsSync(storePath(dataDir, bigDigest))).toBe(false);
      const db = new Database(join(dataDir, 'mirror.db'), { readonly: true });
      try {
        expect(db.prepare('SELECT * FROM blobs WHERE digest = ?').get(bigDigest)).toBeUndefined();
        expect(db.prepare('SELECT digest FROM manifests WHERE digest = ?').get(image.digest)).toBeDefined();
      } finally {
        db.close();
      }
      const output = serve.lines();
      expect(output.some((l) => l.includes('"shutting down"') && l.includes('SIGTERM'))).toBe(true);
      for (const l of output) expect(() => JSON.parse(l), l).not.toThrow();
      const all = output.join('\n') + serve.stderr();
      for (const secret of [ENV_ADMIN_TOKEN, ENV_PULL_TOKEN, ALICE.password]) expect(all.includes(secret), 'a secret in the serve output').toBe(false);

      // A restarted mirror serves everything that was complete.
      const again = await mirror({ dataDir, offline: true, upstreams: [{ url: fake.url }] });
      expect((await call(`${again.url}/v2/library/app/manifests/1.0`)).bytes.equals(image.bytes)).toBe(true);
      expect((await call(`${again.url}/v2/library/app/manifests/${amd.digest}`)).bytes.equals(amd.bytes)).toBe(true);
      for (const l of amd.layers) {
        const r = await call(`${again.url}/v2/library/app/blobs/${l.digest}`);
        expect(r.status).toBe(200);
        expect(sha256(r.bytes)).toBe(l.digest);
      }
      const report = await verifyStore(again.running.mirror.store, again.running.mirror.catalogue);
      expect(report.problems).toEqual([]);
      expect(report.unreferencedFiles).toEqual([]);
    }, 75_000);
  });

  describe('stopping an in-process mirror', () => {
    it('lets a download that finishes within the grace period complete: stored, recorded, and fully sent', async () => {
      const fake = await startFakeUpstream();
      fx.defer(() => fake.stop());
      const blob = randomBytes(640 * 1024);
      const digest = fake.addBlob('library/app', blob);
      fake.throttle(digest, 64 * 1024, 100); // ~1 s
      const m = await startTestMirror({ upstreams: [{ url: fake.url }], platforms: PLATFORMS, blobs: { requireReference: false } });
      fx.defer(() => rm(m.dataDir, { recursive: true, force: true }));
      const res = await fetch(`${m.url}/v2/library/app/blobs/${digest}`);
      expect(res.status).toBe(200);
      const body: Promise<Buffer | Error> = res.arrayBuffer().then(
        (b) => Buffer.from(b),
        (e: Error) => e,
      );
      await sleep(200);
      await m.stop();
      const got = await body;
      expect(Buffer.isBuffer(got) ? sha256(got) : (got as Error).message, 'the client gets the whole blob').toBe(digest);
      expect(existsSync(storePath(m.dataDir, digest))).toBe(true);
      const db = new Database(join(m.dataDir, 'mirror.db'), { readonly: true });
      expect(db.prepare('SELECT size FROM blobs WHERE digest = ?').get(digest)).toEqual({ size: blob.length });
      db.close();
      expect(await filesUnder(join(m.dataDir, 'tmp'))).toEqual([]);
    });
  });

  describe('eviction under storage.maxBytes', () => {
    it('evicts the least recently pulled image whole, keeps the recently pulled one and shared layers, and ends under the limit', async () => {
      const [a, b, c] = fx.images.evict as [EvictImage, EvictImage, EvictImage];
      const total = ownBytes(a) + ownBytes(b) + ownBytes(c) + fx.images.shared.gz.length;
      const maxBytes = Math.ceil((total - ownBytes(b)) / 0.9) + 1;
      expect(maxBytes).toBeLessThan(total);
      const m = await mirror({ upstreams: [{ url: fx.proxy.url }], storage: { maxBytes } });
      const { catalogue, store } = m.running.mirror;
      const key = (img: EvictImage) => `${fx.proxy.host}/${img.repo}`;
      for (const img of [a, b, c]) await prefetchImage(m.running.mirror, `${fx.proxy.host}/${img.repo}:1`);
      expect(catalogue.storeBytes()).toBe(total);

      // Everything stored hours ago; pulled a (3 h), b (2 h), c (1 h) ago; then a is pulled now.
      catalogue.flushTouches();
      const now = Date.now();
      const hours = (n: number) => now - n * 3_600_000;
      catalogue.db.prepare('UPDATE manifests SET stored_at = ?').run(hours(4));
      catalogue.db.prepare('UPDATE blobs SET stored_at = ?, last_access = ?').run(hours(4), hours(4));
      for (const [img, age] of [[a, 3], [b, 2], [c, 1]] as const) {
        catalogue.db.prepare('UPDATE manifests SET last_access = ? WHERE repo = ?').run(hours(age), key(img));
      }
      const aAmd = a.children[0]!;
      expect((await call(`${m.url}/v2/${a.repo}/manifests/1`)).bytes.equals(a.bytes)).toBe(true);
      expect((await call(`${m.url}/v2/${a.repo}/manifests/${aAmd.digest}`)).status).toBe(200);
      expect((await call(`${m.url}/v2/${a.repo}/blobs/${sha256(aAmd.own)}`)).status).toBe(200);

      const freed = await m.running.maintenance.evictIfNeeded();
      expect(freed).toBe(ownBytes(b));
      expect(catalogue.storeBytes()).toBe(total - ownBytes(b));
      expect(catalogue.storeBytes()).toBeLessThanOrEqual(maxBytes * 0.9);

      // b is gone, whole; a and c and the shared layer are intact.
      expect(catalogue.getTag(key(b), '1')).toBeUndefined();
      expect(catalogue.getManifest(key(b), b.digest)).toBeUndefined();
      for (const digest of [b.digest, ...allowedChildren(b).flatMap((ch) => [ch.digest, sha256(ch.config), sha256(ch.own)])]) {
        expect(existsSync(storePath(m.dataDir, digest)), digest).toBe(false);
      }
      expect(existsSync(storePath(m.dataDir, sha256(fx.images.shared.gz)))).toBe(true);
      expect(catalogue.getBlob(sha256(fx.images.shared.gz))).toBeDefined();
      for (const img of [a, c]) {
        expect(catalogue.getTag(key(img), '1')?.digest).toBe(img.digest);
        for (const ch of allowedChildren(img)) {
          for (const digest of [ch.digest, sha256(ch.config), sha256(ch.own)]) expect(existsSync(storePath(m.dataDir, digest)), digest).toBe(true);
        }
      }
      // No tagged index is left without its children, no image without its blobs.
      for (const t of catalogue.allTags()) {
        const top = catalogue.getManifest(t.repo, t.digest);
        expect(top, `${t.repo}:${t.tag}`).toBeDefined();
        for (const ch of catalogue.childrenOf(t.repo, t.digest)) {
          if (ch.platform === 'linux/s390x') continue;
          expect(catalogue.getManifest(t.repo, ch.child_digest), `${t.repo}:${t.tag} child ${ch.platform}`).toBeDefined();
          for (const bl of catalogue.blobsOf(t.repo, ch.child_digest)) expect(catalogue.getBlob(bl.blob_digest), bl.blob_digest).toBeDefined();
        }
      }
      expect((await verifyStore(store, catalogue)).problems).toEqual([]);
      expect(await m.running.maintenance.evictIfNeeded()).toBe(0);
      // An evicted image comes back on the next pull.
      expect((await call(`${m.url}/v2/${b.repo}/manifests/1`)).bytes.equals(b.bytes)).toBe(true);
    });
  });

  describe('background sync', () => {
    it('fetches the sync images and matching tags into the store soon after start', async () => {
      const [two, twoOne, three] = await Promise.all(
        ['2.0', '2.1', '3.0'].map((tag) => pushSinglePlatformImage(fx.registry.url, 'library/app', tag, { layerSize: 512 })),
      );
      const m = await mirror({
        upstreams: [{ url: fx.proxy.url }],
        sync: {
          images: [`${fx.proxy.host}/library/app:1.0`],
          tagPatterns: [{ repository: `${fx.proxy.host}/library/app`, pattern: '^2\\.' }],
          intervalSeconds: 3600,
        },
      });
      const { catalogue } = m.running.mirror;
      const repo = `${fx.proxy.host}/library/app`;
      const started = Date.now();
      while (Date.now() - started < 20_000 && m.logs.filter((l) => l.includes('sync: image fresh')).length < 3) {
        await sleep(200);
      }
      expect(m.logs.filter((l) => l.includes('sync: image fresh')), m.logs.join('\n')).toHaveLength(3);
      const entries = inventory(catalogue, repo);
      expect(entries.map((e) => e.tag).sort()).toEqual(['1.0', '2.0', '2.1']);
      const one = entries.find((e) => e.tag === '1.0')!;
      expect(one.digest).toBe(fx.images.app.digest);
      expect(one.platforms).toHaveLength(2);
      expect(one.notMirrored).toEqual(['linux/386', 'linux/arm/v6', 'linux/arm/v7', 'linux/ppc64le', 'linux/s390x']);
      for (const img of [two!, twoOne!]) expect(entries.find((e) => e.digest === img.digest)).toBeDefined();
      expect(entries.find((e) => e.digest === three!.digest)).toBeUndefined();
      // Whole images: every blob of the allowed platforms is on disk.
      for (const ch of fx.images.app.children) {
        const stored = catalogue.getManifest(repo, ch.digest);
        const allowed = ch.attestationFor
          ? ['amd64', 'arm64'].includes(fx.images.app.children.find((x) => x.digest === ch.attestationFor)!.platform!.architecture)
          : ['amd64', 'arm64'].includes(ch.platform!.architecture);
        expect(Boolean(stored), `${ch.platform?.architecture} ${ch.attestationFor ? 'attestation' : 'image'}`).toBe(allowed);
        if (!allowed) continue;
        for (const d of [ch.configDigest, ...ch.layers.map((l) => l.digest)]) expect(existsSync(storePath(m.dataDir, d)), d).toBe(true);
      }
      expect(Date.now() - started).toBeLessThan(20_000);
    });
  });
});
