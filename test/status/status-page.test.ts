// The status page in a real browser (Debian's chromium, driven by playwright-core) against a mirror
// of a real registry, pulled through with skopeo: what it holds, what it refused, the filter, the
// escaping of names from outside, the admin role, and demand that outlives a restart.
// UPDATE_SCREENSHOT=1 also writes the README's screenshot, docs/status.png.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import bcrypt from 'bcryptjs';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBytes } from '../../src/format-bytes.js';
import { useFixture } from '../support/fixture.js';
import { pushMultiPlatformImage, type PushedIndex } from '../support/images.js';
import type { TestMirror } from '../support/mirror.js';
import { skopeoCopyToDir } from '../support/skopeo.js';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];
const UPSTREAM_PASSWORD = 'upstream-secret-password-7f3a';
const ADMIN = { user: 'ops', password: 'admin-password-1' };
const PULLER = { user: 'ci', password: 'pull-password-1' };

const fx = useFixture({
  registry: true,
  fake: true,
  images: async ({ registry }) => ({
    app: await pushMultiPlatformImage(registry.url, 'library/app', '1.0', { platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'] }),
    tool: await pushMultiPlatformImage(registry.url, 'team/tool', '2.1', { platforms: ['linux/amd64'] }),
  }),
});

describe('status page', () => {
  let mirror: TestMirror;
  let browser: BrowserContext;
  let page: Page;
  let profile: string;
  /** Console errors and uncaught page errors, over every page the browser opened. */
  const browserErrors: string[] = [];
  let appKey: string;

  async function pull(m: TestMirror, image: PushedIndex, arch: string) {
    return skopeoCopyToDir(`docker://${m.host}/${image.repo}:${image.tag}`, await fx.tempDir('status-pull-'), { os: 'linux', arch });
  }

  beforeAll(async () => {
    mirror = await fx.startMirror({ upstreams: [{ url: fx.registry.url, username: 'mirror', password: UPSTREAM_PASSWORD }], storage: { maxBytes: 1024 ** 3 } });
    appKey = `${fx.registry.host}/library/app`;
    for (const arch of ['amd64', 'arm64']) {
      const r = await pull(mirror, fx.images.app, arch);
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await pull(mirror, fx.images.tool, 'amd64')).code).toBe(0);
    const refused = await pull(mirror, fx.images.app, 's390x');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('not mirrored');

    profile = await mkdtemp(join(tmpdir(), 'sm-chromium-'));
    browser = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
    browser.on('console', (m) => {
      if (m.type() === 'error') browserErrors.push(`${m.location().url}: ${m.text()}`);
    });
    browser.on('weberror', (e) => browserErrors.push(e.error().message));
    page = browser.pages()[0] ?? (await browser.newPage());
  });

  afterAll(async () => {
    await browser?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  it('the overview shows the image count, the store bytes against storage.maxBytes, the upstream and the last pulls', async () => {
    const res = await page.goto(`${mirror.url}/`);
    expect(res?.status()).toBe(200);
    expect(await page.locator('#images .value').textContent()).toBe('2');
    const bytes = mirror.running.mirror.catalogue.storeBytes();
    const pulledLayers = fx.images.app.children.filter((c) => c.platform?.architecture !== 's390x').flatMap((c) => c.layers);
    expect(bytes).toBeGreaterThan(pulledLayers.reduce((a, l) => a + l.size, 0));
    expect(await page.locator('#store .value').textContent()).toBe(formatBytes(bytes));
    expect(await page.locator('#store .sub').textContent()).toContain('of 1.0 GiB');
    expect(await page.locator('#store [role=meter]').getAttribute('aria-valuenow')).toBe(String(bytes));
    const upstream = page.locator('#upstreams tbody tr');
    await expect.poll(() => upstream.count()).toBe(1);
    expect(await upstream.locator('td').nth(1).textContent()).toMatch(/s ago$/);
    expect(await upstream.locator('td').nth(2).textContent()).toBe('none');
    const recent = await page.locator('table.activity tbody tr').allTextContents();
    expect(recent.some((r) => r.includes('library/app') && r.includes('linux/amd64'))).toBe(true);
    expect(await page.locator('body').textContent()).not.toContain(UPSTREAM_PASSWORD);

    if (process.env.UPDATE_SCREENSHOT) {
      await page.setViewportSize({ width: 1200, height: 900 });
      await page.screenshot({ path: resolve(import.meta.dirname, '../../docs/status.png'), fullPage: true });
    }
    expect(browserErrors).toEqual([]);
  });

  it('the coverage page lists the image with its present and not-mirrored platforms; its page shows each entry', async () => {
    await page.goto(`${mirror.url}/ui/images`);
    const row = page.locator('#images tbody tr', { hasText: 'library/app' });
    expect(await row.count()).toBe(1);
    expect(await row.locator('.tag.present').allTextContents()).toEqual(['linux/amd64', 'linux/arm64']);
    expect(await row.locator('.tag.not-mirrored').allTextContents()).toEqual(['linux/s390x']);

    await row.locator('a').click();
    expect(new URL(page.url()).pathname).toBe(`/ui/images/${appKey}`);
    expect(await page.locator('h1').textContent()).toBe(appKey);
    expect(await page.locator('section.image code').first().textContent()).toBe(fx.images.app.digest);
    const states = await page.locator('table.children tbody tr').evaluateAll((rows) =>
      rows.map((r) => [r.children[1]!.textContent, r.children[2]!.textContent, r.children[3]!.textContent]),
    );
    const blobs = (i: number) => `${1 + fx.images.app.children[i]!.layers.length} of ${1 + fx.images.app.children[i]!.layers.length}`;
    expect(states).toEqual([
      ['linux/amd64', 'present', blobs(0)],
      ['linux/arm64', 'present', blobs(1)],
      ['linux/s390x', 'not mirrored', '–'],
    ]);
    expect(browserErrors).toEqual([]);
  });

  it('the demand view shows the refused platform with a count of 1', async () => {
    await page.goto(`${mirror.url}/ui/demand`);
    const day = page.locator('#demand-24h');
    expect(await day.locator('.demand-platforms tbody tr td').allTextContents()).toEqual(['linux/s390x', '1', '']);
    expect(await day.locator('.demand-repositories tbody tr td').allTextContents()).toEqual([appKey, 'linux/s390x', '1']);
    expect(await page.locator('svg rect.col').count()).toBe(1);
    expect(browserErrors).toEqual([]);
  });

  it('the filter box narrows the list (a plain form: no script needed)', async () => {
    await page.goto(`${mirror.url}/ui/images`);
    expect(await page.locator('#images tbody tr').count()).toBe(2);
    await page.locator('form.filter input[name=q]').fill('TOOL');
    await page.locator('form.filter button').click();
    await page.waitForURL(/q=TOOL/);
    const rows = page.locator('#images tbody tr');
    expect(await rows.count()).toBe(1);
    expect(await rows.locator('td').nth(1).textContent()).toBe('2.1');
    expect(await page.locator('#image-count').textContent()).toBe('1 images match “TOOL”');
    expect(browserErrors).toEqual([]);
  });

  it('the API answers the same data as JSON', async () => {
    const status = (await (await fetch(`${mirror.url}/api/v1/status`)).json()) as { counts: { images: number }; store: { bytes: number; maxBytes: number }; upstreams: Array<{ lastSuccess?: number }> };
    expect(status.counts.images).toBe(2);
    expect(status.store).toEqual({ bytes: mirror.running.mirror.catalogue.storeBytes(), maxBytes: 1024 ** 3 });
    expect(status.upstreams[0]!.lastSuccess).toBeGreaterThan(0);
    const images = (await (await fetch(`${mirror.url}/api/v1/images?q=app`)).json()) as { total: number; images: Array<{ platforms: string[]; notMirrored: string[] }> };
    expect(images.total).toBe(1);
    expect(images.images[0]).toMatchObject({ platforms: ['linux/amd64', 'linux/arm64'], notMirrored: ['linux/s390x'] });
    const detail = await fetch(`${mirror.url}/api/v1/images/${appKey}`);
    expect(detail.status).toBe(200);
    const body = (await detail.json()) as { images: Array<{ children: Array<{ state: string }> }> };
    expect(body.images[0]!.children.map((c) => c.state)).toEqual(['present', 'present', 'not mirrored']);
    const unknown = await fetch(`${mirror.url}/api/v1/images/${fx.registry.host}/no/such`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('NAME_UNKNOWN');
    const badPage = await fetch(`${mirror.url}/api/v1/images?page=0`);
    expect(badPage.status).toBe(400);
    expect(await badPage.text()).toContain('page must be a whole number');
    const post = await fetch(`${mirror.url}/api/v1/status`, { method: 'POST' });
    expect(post.status).toBe(405);
  });

  it('renders a repository name, tag and platform crafted to inject HTML as text', async () => {
    const catalogue = mirror.running.mirror.catalogue;
    const repo = `${fx.registry.host}/evil/<img src=x id=injected>`;
    const tag = '<b id=bold>t</b>';
    const index = `sha256:${'e'.repeat(64)}`;
    catalogue.addManifest({
      repo,
      digest: index,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      size: 300,
      kind: 'index',
      children: [{ child_digest: `sha256:${'f'.repeat(64)}`, media_type: 'application/vnd.oci.image.manifest.v1+json', size: 500, platform: 'linux/<i id=italic>x</i>', attestation_for: null, position: 0 }],
    });
    catalogue.setTag(repo, tag, index);

    await page.goto(`${mirror.url}/ui/images?q=${encodeURIComponent('<img src=x id=injected>')}`);
    const row = page.locator('#images tbody tr');
    expect(await row.count()).toBe(1);
    expect(await row.locator('td').nth(0).textContent()).toBe(repo);
    expect(await row.locator('td').nth(1).textContent()).toBe(tag);
    expect(await row.locator('.tag.not-mirrored').textContent()).toBe('linux/<i id=italic>x</i>');
    expect(await page.locator('form.filter input').inputValue()).toBe('<img src=x id=injected>');
    expect(await page.locator('#injected, #bold, #italic').count()).toBe(0);

    await row.locator('a').click();
    expect(await page.locator('h1').textContent()).toBe(repo);
    expect(await page.locator('#injected, #bold, #italic').count()).toBe(0);
    expect(await page.locator('table.children tbody td').nth(1).textContent()).toBe('linux/<i id=italic>x</i>');
    expect(browserErrors).toEqual([]);
  });

  it("shows an upstream's last failure with its reason, and Docker Hub's ratelimit-remaining (fault injected: a 429)", async () => {
    const m = await fx.startMirror({ upstreams: [{ url: fx.fake.url }] });
    fx.fake.failWith('/v2/library/limited/manifests/', 429, { headers: { 'ratelimit-remaining': '0;w=21600' } });
    const refused = await fetch(`${m.url}/v2/library/limited/manifests/1.0`);
    expect(refused.status).toBe(429);
    await page.goto(`${m.url}/`);
    const cells = await page.locator('#upstreams tbody tr td').allTextContents();
    expect(cells[0]).toBe(fx.fake.host);
    expect(cells[2]).toMatch(/s ago: rate_limited, manifest library\/limited:1\.0 at http:\/\/127\.0\.0\.1:\d+: upstream rate limit reached$/);
    expect(cells[3]).toBe('0 per 6 h');
    expect(browserErrors).toEqual([]);
  });

  it('needs the admin role when auth is enabled: a Basic challenge, then 403 for a puller, and no credentials shown', async () => {
    const hash = (p: string) => bcrypt.hashSync(p, 4);
    const m = await fx.startMirror({
      upstreams: [{ url: fx.registry.url, username: 'mirror', password: UPSTREAM_PASSWORD }],
      auth: { enabled: true, users: [{ username: ADMIN.user, passwordHash: hash(ADMIN.password), role: 'admin' }, { username: PULLER.user, passwordHash: hash(PULLER.password), role: 'pull' }] },
    });
    const basic = (u: { user: string; password: string }) => ({ authorization: `Basic ${Buffer.from(`${u.user}:${u.password}`).toString('base64')}` });
    for (const path of ['/', '/ui/images', '/ui/demand', '/api/v1/status', '/api/v1/demand']) {
      const anonymous = await fetch(`${m.url}${path}`);
      expect(anonymous.status, path).toBe(401);
      expect(anonymous.headers.get('www-authenticate'), path).toMatch(/^Basic realm=/);
      expect((await fetch(`${m.url}${path}`, { headers: basic(PULLER) })).status, path).toBe(403);
      const admin = await fetch(`${m.url}${path}`, { headers: basic(ADMIN) });
      expect(admin.status, path).toBe(200);
      const text = await admin.text();
      expect(text).not.toContain(UPSTREAM_PASSWORD);
      expect(text).not.toContain(ADMIN.password);
    }
    // A pull by the puller shows its user in the activity, never its password.
    const pulled = await fetch(`${m.url}/v2/${fx.images.tool.repo}/manifests/${fx.images.tool.tag}`, { headers: { ...basic(PULLER), accept: fx.images.tool.mediaType } });
    expect(pulled.status).toBe(200);
    const activity = await (await fetch(`${m.url}/ui/activity`, { headers: basic(ADMIN) })).text();
    expect(activity).toContain(`<td>${PULLER.user}</td>`);
    expect(activity).not.toContain(PULLER.password);
  });

  it('keeps demand across a restart of the mirror', async () => {
    await mirror.stop();
    const again = await fx.startMirror({ upstreams: [{ url: fx.registry.url }], dataDir: mirror.dataDir });
    const demand = (await (await fetch(`${again.url}/api/v1/demand`)).json()) as { last24h: { byPlatform: unknown[] }; last7d: { total: number } };
    expect(demand.last24h.byPlatform).toEqual([{ platform: 'linux/s390x', count: 1 }]);
    expect(demand.last7d.total).toBe(1);
    await page.goto(`${again.url}/ui/demand`);
    expect(await page.locator('#demand-24h .demand-platforms tbody tr td').allTextContents()).toEqual(['linux/s390x', '1', '']);
    expect(browserErrors).toEqual([]);
  });
});
