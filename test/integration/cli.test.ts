// The `sparse-mirror` CLI as an admin runs it: spawned `node cli.js …` processes configured by a
// config file in MIRROR_CONFIG, a real store, and a real distribution 2.8 upstream behind a
// counting proxy (so the tests see exactly what was fetched). Covers prefetch (tag and
// --from-file), ls, gc (dry run, retention, shared layers) and verify (corrupt and missing files).
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, unlink, utimes, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatBytes } from '../../src/commands/command.js';
import type { InventoryEntry } from '../../src/store/inventory.js';
import { buildCli, runCli, writeConfigFile, type CliBuild } from '../support/cli.js';
import { useFixture } from '../support/fixture.js';
import {
  MEDIA_TYPES,
  fetchBlob,
  pushBlob,
  pushMultiPlatformImage,
  pushSinglePlatformImage,
  putManifest,
  sha256,
  tarWithOneFile,
  type PushedChild,
} from '../support/images.js';
import { startTestMirror } from '../support/mirror.js';
import { skopeoCopyToDir } from '../support/skopeo.js';

const PLATFORMS = ['linux/amd64', 'linux/arm64'];

interface SimpleImage {
  repo: string;
  tag: string;
  digest: string;
  bytes: Buffer;
  config: Buffer;
  layers: Buffer[];
}

/** A gzipped one-file tar layer of `size` random bytes, with its diff id. */
function layer(size: number): { gz: Buffer; diffId: string } {
  const tar = tarWithOneFile(`f-${randomBytes(4).toString('hex')}.bin`, randomBytes(size));
  return { gz: gzipSync(tar), diffId: sha256(tar) };
}

/** One linux/amd64 image manifest with the given layers (which may be shared with other images), tagged. */
async function pushSimpleImage(registryUrl: string, repo: string, tag: string, layers: Array<{ gz: Buffer; diffId: string }>): Promise<SimpleImage> {
  const t = MEDIA_TYPES.oci;
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Labels: { repo } }, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) } }),
  );
  await Promise.all([config, ...layers.map((l) => l.gz)].map((b) => pushBlob(registryUrl, repo, b)));
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.manifest,
      config: { mediaType: t.config, digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: t.layer, digest: sha256(l.gz), size: l.gz.length })),
    }),
  );
  const digest = await putManifest(registryUrl, repo, tag, bytes, t.manifest);
  return { repo, tag, digest, bytes, config, layers: layers.map((l) => l.gz) };
}

/** Config and layer descriptors of an image manifest. */
function blobsOf(manifest: Buffer): Array<{ digest: string; size: number }> {
  const m = JSON.parse(manifest.toString()) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
  return [m.config, ...m.layers].map(({ digest, size }) => ({ digest, size }));
}

function storePath(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

async function storedDigests(dataDir: string): Promise<Set<string>> {
  const out = new Set<string>();
  const root = join(dataDir, 'blobs', 'sha256');
  for (const prefix of await readdir(root).catch(() => [] as string[])) {
    for (const hex of await readdir(join(root, prefix))) out.add(`sha256:${hex}`);
  }
  return out;
}

/** The `label: value` lines of prefetch's summary. */
function summary(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([a-z ]+):\s+(.*)$/.exec(line);
    if (m) out[m[1]!.trim()] = m[2]!.trim();
  }
  return out;
}

/** A row of `ls --json`: the store's inventory entry. */
type LsEntry = InventoryEntry;

const isArm64 = (p: string) => /^linux\/arm64(\/v8)?$/.test(p);

describe('sparse-mirror CLI (spawned, real store, real upstream)', () => {
  const fx = useFixture({
    registry: true,
    proxy: true,
    images: async ({ registry }) => {
      const shared = layer(6000);
      // team/mainframe: a single-platform linux/s390x image, which prefetch must skip.
      const [app, alpha, beta] = await Promise.all([
        pushMultiPlatformImage(registry.url, 'library/app', '1.0', { attestations: true, layersPerImage: 2, layerSize: 3000 }),
        pushSimpleImage(registry.url, 'team/alpha', '1', [shared, layer(5000)]),
        pushSimpleImage(registry.url, 'team/beta', '1', [shared, layer(7000)]),
        pushSinglePlatformImage(registry.url, 'team/mainframe', '1', { platform: 'linux/s390x' }),
      ]);
      return { app, alpha, beta, sharedLayer: shared.gz };
    },
  });
  let build: CliBuild;
  let work: string;
  let dataDir: string;
  let config: string;
  let gcConfig: string;
  /** Everything prefetch must bring in for app:1.0, digest → size. */
  const appContent = new Map<string, number>();
  let appAllowedChildren: PushedChild[] = [];
  let appExcluded: string[] = [];
  const upstreamBytes = new Map<string, Buffer>();

  beforeAll(async () => {
    const building = buildCli();
    const { app } = fx.images;
    const allowedImages = app.children.filter((c) => !c.attestationFor && (c.platform?.architecture === 'amd64' || c.platform?.architecture === 'arm64'));
    const allowedDigests = new Set(allowedImages.map((c) => c.digest));
    appAllowedChildren = [...allowedImages, ...app.children.filter((c) => c.attestationFor && allowedDigests.has(c.attestationFor))];
    appContent.set(app.digest, app.bytes.length);
    for (const c of appAllowedChildren) {
      appContent.set(c.digest, c.size);
      upstreamBytes.set(c.digest, c.bytes);
      for (const b of blobsOf(c.bytes)) appContent.set(b.digest, b.size);
    }
    upstreamBytes.set(app.digest, app.bytes);
    for (const c of app.children.filter((c) => !appAllowedChildren.includes(c))) {
      appExcluded.push(c.digest, ...blobsOf(c.bytes).map((b) => b.digest));
    }
    appExcluded = appExcluded.filter((d) => !appContent.has(d));
    for (const [digest] of appContent) {
      if (!upstreamBytes.has(digest)) upstreamBytes.set(digest, await fetchBlob(fx.registry.url, 'library/app', digest));
    }

    work = await fx.tempDir('sm-cli-');
    dataDir = join(work, 'data');
    const base = { dataDir, upstreams: [{ url: fx.proxy.url }], platforms: PLATFORMS, upstream: { attempts: 1 } };
    config = await writeConfigFile(join(work, 'mirror.config.mjs'), base);
    gcConfig = await writeConfigFile(join(work, 'gc.config.mjs'), { ...base, storage: { tagRetentionDays: 1 } });
    build = await building;
    fx.defer(() => build.cleanup());
    if (build.diagnostics) console.warn(`tsc reported errors (emitted anyway):\n${build.diagnostics.slice(0, 2000)}`);
  }, 180_000);

  const cli = (args: string[], cfg = config) => runCli(build, args, { config: cfg });
  const appRef = () => `${fx.proxy.host}/library/app:1.0`;
  const appKey = () => `${fx.proxy.host}/library/app`;

  it('--help works on every command (exit 0); no command, an unknown command or a bad option exit 2', async () => {
    const top = await runCli(build, ['--help']);
    expect(top.code, top.stderr).toBe(0);
    const listed = [...top.stdout.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]!);
    for (const name of ['serve', 'prefetch', 'ls', 'gc', 'verify']) expect(listed).toContain(name);
    // export/import are being written elsewhere right now: only the five commands studied here.
    const names = ['serve', 'prefetch', 'ls', 'gc', 'verify'];
    const helps = await Promise.all(names.map((n) => runCli(build, [n, n === 'gc' ? '-h' : '--help'])));
    helps.forEach((r, i) => {
      const name = names[i]!;
      expect(r.code, `${name} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(`Usage: sparse-mirror ${name}`);
    });

    const bad: Array<[string[], RegExp]> = [
      [[], /Usage: sparse-mirror <command>/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['ls', '--bogus'], /--bogus/],
      [['gc', '--grace-minutes', 'soon'], /--grace-minutes/],
      [['prefetch'], /at least one image reference/],
    ];
    const results = await Promise.all(bad.map(([args]) => runCli(build, args, { config })));
    results.forEach((r, i) => {
      const [args, message] = bad[i]!;
      expect(r.code, `sparse-mirror ${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(message);
    });

    // A config that cannot be read is a failure (1), not bad usage.
    const missing = await runCli(build, ['ls'], { config: join(work, 'nope.mjs') });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('nope.mjs');
  }, 60_000);

  it('prefetch fetches the index byte-exact, the allowed platforms with their attestations and blobs, and nothing else', async () => {
    fx.proxy.reset();
    const r = await cli(['prefetch', appRef()]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const s = summary(r.stdout);
    expect(s.images).toBe('1 fetched');
    const fetched = s['platforms fetched']!.split(', ');
    expect(fetched).toHaveLength(2);
    expect(fetched).toContain('linux/amd64');
    expect(fetched.some(isArm64)).toBe(true);
    expect(s['platforms skipped']).toBe('linux/386, linux/arm/v6, linux/arm/v7, linux/ppc64le, linux/s390x (not allowed)');
    const total = [...appContent.values()].reduce((a, b) => a + b, 0);
    expect(s['bytes fetched']).toBe(formatBytes(total));
    expect(s['already present']).toBe('0 B');
    // Plain progress lines on a non-terminal, one per image.
    expect(r.stderr).toContain(appRef());
    expect(r.stderr).toContain(fx.images.app.digest);
    expect(r.stderr).not.toContain('\x1b[');

    // Upstream was asked once for each wanted piece, never for another platform's content (only,
    // to count them, for the list of what refers to it: /referrers/<digest>).
    const content = (method: string, digest: string) => fx.proxy.count(method, `/manifests/${digest}`) + fx.proxy.count(method, `/blobs/${digest}`);
    for (const digest of appContent.keys()) {
      if (digest === fx.images.app.digest) continue;
      expect(content('GET', digest), `GET ${digest}\n${fx.proxy.lines().join('\n')}`).toBe(1);
    }
    expect(fx.proxy.count('GET', '/manifests/1.0')).toBe(1);
    for (const digest of appExcluded) expect(content('*', digest), `excluded ${digest} requested`).toBe(0);

    // The store holds exactly those files, byte for byte as upstream has them.
    const stored = await storedDigests(dataDir);
    expect([...stored].sort()).toEqual([...appContent.keys()].sort());
    for (const [digest, bytes] of upstreamBytes) expect((await readFile(storePath(dataDir, digest))).equals(bytes), digest).toBe(true);
    for (const digest of appExcluded) expect(existsSync(storePath(dataDir, digest))).toBe(false);
  });

  it('prefetch --from-file reads a list (comments, blank lines) and counts a layer shared between images once', async () => {
    const list = join(work, 'images.txt');
    await writeFile(list, `# images to carry into the air gap\n\n${fx.proxy.host}/team/alpha:1   # base\r\n  ${fx.proxy.host}/team/beta:1\n`);
    fx.proxy.reset();
    const r = await cli(['prefetch', '--from-file', list]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const s = summary(r.stdout);
    expect(s.images).toBe('2 fetched');
    expect.soft(s['platforms fetched'], 'single-platform images: their platform counts as fetched').toBe('linux/amd64');
    expect.soft(s['platforms skipped']).toBe('- (not allowed)');
    const size = (img: SimpleImage) => img.bytes.length + img.config.length + img.layers.reduce((a, l) => a + l.length, 0);
    // The shared layer is fetched once (with alpha) and then found present (for beta).
    expect.soft(s['bytes fetched']).toBe(formatBytes(size(fx.images.alpha) + size(fx.images.beta) - fx.images.sharedLayer.length));
    expect.soft(s['already present']).toBe(formatBytes(fx.images.sharedLayer.length));
    expect(fx.proxy.count('GET', `/blobs/${sha256(fx.images.sharedLayer)}`)).toBe(1);
    for (const img of [fx.images.alpha, fx.images.beta]) {
      for (const b of [img.bytes, img.config, ...img.layers]) expect((await readFile(storePath(dataDir, sha256(b)))).equals(b)).toBe(true);
    }
  });

  it('re-running prefetch fetches nothing', async () => {
    const list = join(work, 'all.txt');
    await writeFile(list, `${appRef()}\n${fx.proxy.host}/library/app@${fx.images.app.digest}\n${fx.proxy.host}/team/alpha:1\n${fx.proxy.host}/team/beta:1\n`);
    fx.proxy.reset();
    const r = await cli(['prefetch', '-f', list]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const s = summary(r.stdout);
    expect(s.images).toBe('4 fetched');
    expect(s['bytes fetched']).toBe('0 B');
    expect(s['already present']).not.toBe('0 B');
    expect(fx.proxy.requests.filter((q) => q.method === 'GET'), fx.proxy.lines().join('\n')).toEqual([]);
  });

  it('prefetch: a missing tag or an offline mirror fail (exit 1); a single-platform image of another platform is skipped', async () => {
    const before = await storedDigests(dataDir);
    const [missingTag, offline, noList, s390x] = await Promise.all([
      cli(['prefetch', `${fx.proxy.host}/library/app:does-not-exist`]),
      runCli(build, ['prefetch', appRef()], { config, env: { MIRROR_OFFLINE: '1' } }),
      cli(['prefetch', '--from-file', join(work, 'no-such-list.txt')]),
      cli(['prefetch', `${fx.proxy.host}/team/mainframe:1`]),
    ]);
    expect(missingTag.code, missingTag.stdout + missingTag.stderr).toBe(1);
    expect(missingTag.stderr).toMatch(/does-not-exist\s+FAILED: /);
    expect(summary(missingTag.stdout).images).toBe('0 fetched, 1 failed');
    expect(offline.code).toBe(1);
    expect(offline.stderr).toMatch(/offline/);
    expect([1, 2]).toContain(noList.code);
    expect(noList.stderr).toContain('no-such-list.txt');
    expect.soft(noList.stderr, 'an unreadable list is reported, not a stack trace').not.toMatch(/^\s+at /m);
    expect(s390x.code, s390x.stdout + s390x.stderr).toBe(0);
    expect(summary(s390x.stdout)['platforms skipped']).toBe('linux/s390x (not allowed)');
    expect(summary(s390x.stdout)['platforms fetched']).toBe('-');
    expect(await storedDigests(dataDir)).toEqual(before);
  });

  it('a mirror started offline on the prefetched store serves skopeo pulls without upstream', async () => {
    await fx.proxy.down();
    fx.proxy.reset();
    const m = await startTestMirror({ dataDir, offline: true, upstreams: [{ url: fx.proxy.url }], platforms: PLATFORMS });
    try {
      for (const arch of ['amd64', 'arm64'] as const) {
        const dest = await mkdtemp(join(work, 'pull-'));
        const r = await skopeoCopyToDir(`docker://${m.host}/library/app:1.0`, dest, { os: 'linux', arch });
        expect(r.code, r.stderr).toBe(0);
        const child = fx.images.app.children.find((c) => c.platform?.architecture === arch && !c.attestationFor)!;
        expect((await readFile(join(dest, 'manifest.json'))).equals(child.bytes)).toBe(true);
        for (const l of child.layers) expect(sha256(await readFile(join(dest, l.digest.slice(7))))).toBe(l.digest);
      }
      const refused = await skopeoCopyToDir(`docker://${m.host}/library/app:1.0`, await mkdtemp(join(work, 'pull-')), { os: 'linux', arch: 's390x' });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain('linux/s390x');
    } finally {
      await m.stop();
      await fx.proxy.up();
    }
    expect(fx.proxy.requests).toEqual([]);
  });

  it('ls shows repository, tag, digest, platforms, not-mirrored platforms, signature/SBOM/attestation counts and size; --json for scripts', async () => {
    const [table, json, teamJson] = await Promise.all([cli(['ls']), cli(['ls', '--json']), cli(['ls', `${fx.proxy.host}/team`, '--json'])]);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^REPOSITORY\s+TAG\s+DIGEST\s+PLATFORMS\s+NOT MIRRORED\s+SIGNATURES\s+SBOMS\s+ATTESTATIONS\s+SIGNED\s+SIZE$/);
    expect(lines).toHaveLength(4);
    const appLine = lines.find((l) => l.startsWith(`${appKey()} `))!;
    expect(appLine).toBeDefined();
    const cells = appLine.split(/\s{2,}/);
    expect(cells[1]).toBe('1.0');
    expect(fx.images.app.digest.startsWith(cells[2]!)).toBe(true);
    expect(cells[3]!.split(',')).toHaveLength(2);
    expect(cells[4]).toBe('linux/386,linux/arm/v6,linux/arm/v7,linux/ppc64le,linux/s390x');
    const total = [...appContent.values()].reduce((a, b) => a + b, 0);
    // No signatures, SBOMs or attestations of it are mirrored.
    // No signature policy judged it either.
    expect(cells.slice(5, 9)).toEqual(['-', '-', '-', '-']);
    expect(cells[9]).toBe(formatBytes(total));

    expect(json.code, json.stderr).toBe(0);
    const entries = JSON.parse(json.stdout) as LsEntry[];
    expect(entries).toHaveLength(3);
    const e = entries.find((x) => x.repository === appKey())!;
    expect(e).toMatchObject({ tag: '1.0', digest: fx.images.app.digest, kind: 'index', bytes: total, signatures: 0, sboms: 0, attestations: 0 });
    expect(e.platforms).toHaveLength(2);
    expect(e.platforms).toContain('linux/amd64');
    expect(e.platforms.some(isArm64)).toBe(true);
    expect(e.notMirrored).toEqual(['linux/386', 'linux/arm/v6', 'linux/arm/v7', 'linux/ppc64le', 'linux/s390x']);

    const team = JSON.parse(teamJson.stdout) as LsEntry[];
    expect(team.map((x) => x.repository).sort()).toEqual([`${fx.proxy.host}/team/alpha`, `${fx.proxy.host}/team/beta`]);
    const a = team.find((x) => x.repository.endsWith('/alpha'))!;
    expect(a).toMatchObject({ tag: '1', digest: fx.images.alpha.digest, kind: 'image', platforms: ['linux/amd64'], notMirrored: [] });
    expect(a.bytes).toBe(fx.images.alpha.bytes.length + fx.images.alpha.config.length + fx.images.alpha.layers.reduce((x, l) => x + l.length, 0));
  });

  it('gc --dry-run reports and deletes nothing; gc then frees exactly that and keeps a layer shared with a still-tagged image', async () => {
    // Nothing is garbage in a freshly filled store.
    const clean = await cli(['gc', '--dry-run']);
    expect(clean.code, clean.stderr).toBe(0);
    expect(clean.stdout).toContain('dry run: 0 tags, 0 manifests, 0 blobs, 0 stray files; would free 0 B (0 bytes)');

    // A stray file nothing names (an hour old), and team/alpha not pulled for three days.
    const stray = randomBytes(1000);
    const strayDigest = sha256(stray);
    await mkdir(join(storePath(dataDir, strayDigest), '..'), { recursive: true });
    await writeFile(storePath(dataDir, strayDigest), stray);
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(storePath(dataDir, strayDigest), hourAgo, hourAgo);
    const alphaKey = `${fx.proxy.host}/team/alpha`;
    const db = new Database(join(dataDir, 'mirror.db'));
    db.prepare('UPDATE manifests SET last_access = ? WHERE repo = ?').run(Date.now() - 3 * 86_400_000, alphaKey);
    db.close();

    const before = await storedDigests(dataDir);
    const dry = await cli(['gc', '--dry-run', '--grace-minutes', '0'], gcConfig);
    expect(dry.code, dry.stderr).toBe(0);
    const alphaConfig = sha256(fx.images.alpha.config);
    const alphaOwn = sha256(fx.images.alpha.layers[1]!);
    const expectedBytes = fx.images.alpha.bytes.length + fx.images.alpha.config.length + fx.images.alpha.layers[1]!.length + stray.length;
    expect(dry.stdout).toContain(`would forget tag   ${alphaKey}:1`);
    expect(dry.stdout).toContain(`would delete manifest ${alphaKey}@${fx.images.alpha.digest}`);
    expect(dry.stdout).toContain(`would delete blob  ${alphaConfig}`);
    expect(dry.stdout).toContain(`would delete blob  ${alphaOwn}`);
    expect(dry.stdout).toContain(`would delete file  ${strayDigest} (1000 B)`);
    expect(dry.stdout).not.toContain(sha256(fx.images.sharedLayer));
    expect(dry.stdout).toContain(`dry run: 1 tags, 1 manifests, 2 blobs, 1 stray files; would free ${formatBytes(expectedBytes)} (${expectedBytes} bytes)`);
    expect(await storedDigests(dataDir)).toEqual(before);
    const ro = new Database(join(dataDir, 'mirror.db'), { readonly: true });
    expect((ro.prepare('SELECT COUNT(*) AS n FROM tags').get() as { n: number }).n).toBe(3);
    ro.close();

    const real = await cli(['gc', '--grace-minutes', '0'], gcConfig);
    expect(real.code, real.stderr).toBe(0);
    expect(real.stdout).toContain(`removed 1 tags, 1 manifests, 2 blobs, 1 stray files; freed ${formatBytes(expectedBytes)} (${expectedBytes} bytes)`);
    const after = await storedDigests(dataDir);
    for (const gone of [fx.images.alpha.digest, alphaConfig, alphaOwn, strayDigest]) expect(after.has(gone), gone).toBe(false);
    expect([...before].filter((d) => !after.has(d)).sort()).toEqual([fx.images.alpha.digest, alphaConfig, alphaOwn, strayDigest].sort());
    // beta keeps the layer it shares with alpha, and everything else.
    for (const b of [fx.images.beta.bytes, fx.images.beta.config, ...fx.images.beta.layers]) expect((await readFile(storePath(dataDir, sha256(b)))).equals(b)).toBe(true);
    const left = JSON.parse((await cli(['ls', '--json'])).stdout) as LsEntry[];
    expect(left.map((x) => x.repository).sort()).toEqual([appKey(), `${fx.proxy.host}/team/beta`]);

    // And beta still pulls, offline, with the shared layer.
    const m = await startTestMirror({ dataDir, offline: true, upstreams: [{ url: fx.proxy.url }], platforms: PLATFORMS });
    try {
      const dest = await mkdtemp(join(work, 'pull-'));
      const r = await skopeoCopyToDir(`docker://${m.host}/team/beta:1`, dest);
      expect(r.code, r.stderr).toBe(0);
      expect((await readFile(join(dest, sha256(fx.images.sharedLayer).slice(7)))).equals(fx.images.sharedLayer)).toBe(true);
    } finally {
      await m.stop();
    }
  });

  it('verify: a clean store exits 0; a flipped byte exits 1 naming the digest; --repair quarantines it and the next pull fetches it again', async () => {
    const ok = await cli(['verify']);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/0 problem\(s\)/);

    const amd64 = fx.images.app.children.find((c) => c.platform?.architecture === 'amd64' && !c.attestationFor)!;
    const victim = amd64.layers[0]!.digest;
    const original = upstreamBytes.get(victim)!;
    const damaged = Buffer.from(original);
    const mid = damaged.length >> 1;
    damaged.writeUInt8(damaged[mid]! ^ 0x01, mid);
    await writeFile(storePath(dataDir, victim), damaged);

    const bad = await cli(['verify']);
    expect(bad.code, bad.stdout + bad.stderr).toBe(1);
    expect(bad.stdout).toMatch(new RegExp(`^corrupt\\s+${victim}\\b`, 'm'));
    expect(bad.stdout).toMatch(/1 problem\(s\)/);

    const repair = await cli(['verify', '--repair']);
    expect(repair.code, repair.stdout + repair.stderr).toBe(0);
    expect(repair.stdout).toContain(victim);
    const quarantined = await readdir(join(dataDir, 'quarantine'));
    expect(quarantined).toHaveLength(1);
    expect(quarantined[0]).toContain(victim.slice(7));
    expect((await readFile(join(dataDir, 'quarantine', quarantined[0]!))).equals(damaged)).toBe(true);
    expect(existsSync(storePath(dataDir, victim))).toBe(false);

    // The next pull through the (online) mirror fetches that layer again, once, intact.
    fx.proxy.reset();
    const m = await startTestMirror({ dataDir, upstreams: [{ url: fx.proxy.url }], platforms: PLATFORMS });
    try {
      const dest = await mkdtemp(join(work, 'pull-'));
      const r = await skopeoCopyToDir(`docker://${m.host}/library/app:1.0`, dest, { os: 'linux', arch: 'amd64' });
      expect(r.code, r.stderr).toBe(0);
      expect((await readFile(join(dest, victim.slice(7)))).equals(original)).toBe(true);
    } finally {
      await m.stop();
    }
    expect(fx.proxy.count('GET', `/blobs/${victim}`)).toBe(1);
    expect((await readFile(storePath(dataDir, victim))).equals(original)).toBe(true);
    const clean = await cli(['verify']);
    expect(clean.code, clean.stdout).toBe(0);
  });

  it('verify reports a file deleted from blobs/ as missing-file and a stray non-digest name as bad-name; --repair fixes both', async () => {
    const arm64 = fx.images.app.children.find((c) => c.platform?.architecture === 'arm64' && !c.attestationFor)!;
    await unlink(storePath(dataDir, arm64.configDigest));
    // Debris a crashed tool or an admin left inside blobs/: not a digest, never valid content.
    const junk = join(dataDir, 'blobs', 'sha256', 'ab', 'partial.download');
    await mkdir(join(junk, '..'), { recursive: true });
    await writeFile(junk, 'junk');
    const r = await cli(['verify']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^missing-file\\s+${arm64.configDigest}\\b`, 'm'));
    expect(r.stdout).toMatch(/^bad-name\s+sha256:partial\.download\b/m);
    const repair = await cli(['verify', '--repair']);
    expect(repair.code, repair.stdout).toBe(0);
    const after = await cli(['verify']);
    expect(after.stdout).not.toContain('missing-file');
    expect.soft(after.stdout, 'after --repair reported "repaired", verify finds the same bad-name file again').not.toContain('bad-name');
    expect.soft(after.code, after.stdout).toBe(0);
  });
});
