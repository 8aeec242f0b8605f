// The air-gap round trip as an admin runs it: fill a mirror by pulling through it (amd64 and
// arm64 only), `sparse-mirror export` to an OCI image layout (directory and .tar) that skopeo
// reads, `sparse-mirror import` into a fresh store, and pull from a mirror with offline: true.
// The CLI runs as spawned `node …/cli.js` processes configured by a MIRROR_CONFIG file.
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli, runCli, writeConfigFile, type CliBuild } from '../support/cli.js';
import { MANIFEST_ACCEPT, pushMultiPlatformImage, pushSinglePlatformImage, sha256, type PushedChild, type PushedIndex } from '../support/images.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeo, skopeoCopyToDir, skopeoInspectRaw } from '../support/skopeo.js';

const REPO = 'test/app';
const TAG = 'v1';

const tempDirs: string[] = [];
async function tempDir(prefix = 'export-import-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

function platformOf(c: PushedChild): string {
  const p = c.platform!;
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** A child and everything it brings along: its manifest, config and layers. */
function digestsOf(c: PushedChild): string[] {
  return [c.digest, c.configDigest, ...c.layers.map((l) => l.digest)];
}

async function layoutDigests(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'blobs', 'sha256'))).map((hex) => `sha256:${hex}`).sort();
}

function flipByte(b: Buffer, at: number): void {
  b.writeUInt8(b.readUInt8(at) ^ 0xff, at);
}

/** Every file under a store's blobs/ directory. */
async function storeFiles(dataDir: string): Promise<string[]> {
  const root = join(dataDir, 'blobs');
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const alg of await readdir(root)) {
    for (const prefix of await readdir(join(root, alg))) {
      for (const hex of await readdir(join(root, alg, prefix))) out.push(`${alg}:${hex}`);
    }
  }
  return out;
}

describe('export and import (OCI image layout, air gap)', () => {
  let build: CliBuild;
  let registry: RegistryHandle;
  let image: PushedIndex;
  let single: PushedChild;
  let amd64: PushedChild;
  let arm64: PushedChild;
  let online: TestMirror;
  let onlineConfig: string;
  let layoutDir: string;
  let layoutTar: string;
  const mirrors: TestMirror[] = [];

  /** A config file for the CLI: this store, the same upstream, amd64 + arm64. */
  async function configFor(dataDir: string, extra: Record<string, unknown> = {}): Promise<string> {
    const dir = await tempDir('export-import-config-');
    return writeConfigFile(join(dir, 'mirror.config.mjs'), {
      dataDir,
      upstreams: [{ url: registry.url }],
      platforms: ['linux/amd64', 'linux/arm64'],
      log: { level: 'warn' },
      ...extra,
    });
  }

  async function offlineMirror(dataDir: string): Promise<TestMirror> {
    const m = await startTestMirror({ upstreams: [{ url: registry.url }], dataDir, offline: true });
    mirrors.push(m);
    return m;
  }

  beforeAll(async () => {
    [build, registry] = await Promise.all([buildCli(), startRegistry()]);
    image = await pushMultiPlatformImage(registry.url, REPO, TAG, { attestations: true });
    single = await pushSinglePlatformImage(registry.url, 'test/single', 'amd64');
    const images = image.children.filter((c) => c.attestationFor === undefined);
    amd64 = images.find((c) => platformOf(c) === 'linux/amd64')!;
    arm64 = images.find((c) => platformOf(c) === 'linux/arm64/v8')!;
    online = await startTestMirror({ upstreams: [{ url: registry.url }] });
    onlineConfig = await configFor(online.dataDir);
    // Fill the mirror the way users do: pull each carried platform through it.
    for (const arch of ['amd64', 'arm64']) {
      const r = await skopeoCopyToDir(`docker://${online.host}/${REPO}:${TAG}`, await tempDir(), { os: 'linux', arch });
      expect(r.code, r.stderr).toBe(0);
    }
    const r = await skopeoCopyToDir(`docker://${online.host}/test/single:amd64`, await tempDir(), { os: 'linux', arch: 'amd64' });
    expect(r.code, r.stderr).toBe(0);
    layoutDir = join(await tempDir(), 'layout');
    layoutTar = join(await tempDir(), 'app.tar');
  }, 150_000);

  afterAll(async () => {
    await Promise.all(mirrors.map((m) => m.stop({ removeData: true })));
    await online?.stop({ removeData: true });
    await registry?.stop();
    await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it('exports to a directory while serve runs; skopeo reads the index byte for byte and both platforms', async () => {
    const r = await runCli(build, ['export', layoutDir, `${registry.host}/${REPO}:${TAG}`], { config: onlineConfig });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`exported ${registry.host}/${REPO}:${TAG}  ${image.digest}  (linux/amd64, linux/arm64/v8; not in the layout:`);
    expect(r.stdout).toMatch(/Exported 1 image to .*\(OCI image layout, directory\): 3 manifests, \d+ blobs/);

    expect(JSON.parse(await readFile(join(layoutDir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as { manifests: unknown[] };
    expect(index.manifests).toEqual([
      {
        mediaType: image.mediaType,
        digest: image.digest,
        size: image.bytes.length,
        annotations: {
          'io.containerd.image.name': `${registry.host}/${REPO}:${TAG}`,
          'org.opencontainers.image.ref.name': TAG,
        },
      },
    ]);

    // Exactly what the mirror holds: the index, the two carried images (not their attestations,
    // never pulled), their configs and layers. Nothing of the five other platforms.
    expect(await layoutDigests(layoutDir)).toEqual([...new Set([image.digest, ...digestsOf(amd64), ...digestsOf(arm64)])].sort());
    for (const d of await layoutDigests(layoutDir)) {
      expect(sha256(await readFile(join(layoutDir, 'blobs', 'sha256', d.slice(7))))).toBe(d);
    }

    const raw = await skopeo(['inspect', '--raw', `oci:${layoutDir}:${TAG}`]);
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdoutBytes.equals(image.bytes)).toBe(true);

    const inspect = await skopeo(['--override-os', 'linux', '--override-arch', 'amd64', 'inspect', `oci:${layoutDir}:${TAG}`]);
    expect(inspect.code, inspect.stderr).toBe(0);
    const info = JSON.parse(inspect.stdout) as { Architecture: string; Os: string; Layers: string[] };
    expect(info).toMatchObject({ Architecture: 'amd64', Os: 'linux', Layers: amd64.layers.map((l) => l.digest) });

    const dest = await tempDir();
    const copy = await skopeo(['--override-os', 'linux', '--override-arch', 'arm64', 'copy', `oci:${layoutDir}:${TAG}`, `dir:${dest}`]);
    expect(copy.code, copy.stderr).toBe(0);
    expect((await readFile(join(dest, 'manifest.json'))).equals(arm64.bytes)).toBe(true);
    for (const l of arm64.layers) expect(sha256(await readFile(join(dest, l.digest.slice(7))))).toBe(l.digest);
  });

  it('exports to a .tar with the mirror stopped, by a reference without registry (default upstream)', async () => {
    await online.stop();
    const r = await runCli(build, ['export', layoutTar, `${REPO}:${TAG}`], { config: onlineConfig });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\(OCI image layout, tar\): 3 manifests/);
    const raw = await skopeo(['inspect', '--raw', `oci-archive:${layoutTar}:${TAG}`]);
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdoutBytes.equals(image.bytes)).toBe(true);
    const dest = await tempDir();
    const copy = await skopeo(['--override-os', 'linux', '--override-arch', 'arm64', 'copy', `oci-archive:${layoutTar}:${TAG}`, `dir:${dest}`]);
    expect(copy.code, copy.stderr).toBe(0);
    expect((await readFile(join(dest, 'manifest.json'))).equals(arm64.bytes)).toBe(true);
  });

  it('puts several images in one layout (a single-platform image; an index by digest) and imports them all', async () => {
    const dir = join(await tempDir(), 'multi');
    const r = await runCli(build, ['export', dir, `${registry.host}/test/single:amd64`, `${REPO}@${image.digest}`], { config: onlineConfig });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Exported 2 images to .*: 4 manifests/);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
    expect(index.manifests).toEqual([
      {
        mediaType: single.mediaType,
        digest: single.digest,
        size: single.bytes.length,
        platform: { os: 'linux', architecture: 'amd64' },
        annotations: { 'io.containerd.image.name': `${registry.host}/test/single:amd64`, 'org.opencontainers.image.ref.name': 'amd64' },
      },
      {
        mediaType: image.mediaType,
        digest: image.digest,
        size: image.bytes.length,
        annotations: { 'io.containerd.image.name': `${registry.host}/${REPO}@${image.digest}` },
      },
    ]);

    const dataDir = await tempDir('export-import-data-');
    const imported = await runCli(build, ['import', dir], { config: await configFor(dataDir, { offline: true }) });
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toMatch(/Imported 2 images from .*: 4 manifests/);
    const offline = await offlineMirror(dataDir);
    const get = (repo: string, ref: string) => fetch(`${offline.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: MANIFEST_ACCEPT } });
    const s = await get('test/single', 'amd64');
    expect(s.status).toBe(200);
    expect(Buffer.from(await s.arrayBuffer()).equals(single.bytes)).toBe(true);
    const byDigest = await get(REPO, image.digest);
    expect(byDigest.status).toBe(200);
    expect(Buffer.from(await byDigest.arrayBuffer()).equals(image.bytes)).toBe(true);
    // Exported by digest: no tag came along.
    expect((await get(REPO, TAG)).status).toBe(404);
  });

  it('refuses a reference the mirror does not hold (exit 1, nothing written) and bad usage (exit 2)', async () => {
    const dest = join(await tempDir(), 'never');
    const missing = await runCli(build, ['export', dest, `${registry.host}/${REPO}:${TAG}`, `${registry.host}/${REPO}:nope`], { config: onlineConfig });
    expect(missing.code, missing.stdout).toBe(1);
    expect(missing.stderr).toContain(`${registry.host}/${REPO}:nope is not in this mirror`);
    expect(existsSync(dest)).toBe(false);

    const taken = await runCli(build, ['export', layoutDir, `${REPO}:${TAG}`], { config: onlineConfig });
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain('is not an empty directory');

    const bad = [
      ['export', dest],
      ['export', dest, 'Not/A:Ref!'],
      ['export', '--bogus', dest, 'a:b'],
      ['import'],
      ['import', '--repo', `${REPO}:${TAG}`, layoutDir],
    ];
    const runs = await Promise.all(bad.map((args) => runCli(build, args, { config: onlineConfig })));
    runs.forEach((r, i) => {
      expect(r.code, `${bad[i]!.join(' ')}\n${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(`Usage: sparse-mirror ${bad[i]![0]}`);
    });
    const helps = await Promise.all(['export', 'import'].map((command) => runCli(build, [command, '--help'])));
    helps.forEach((help, i) => {
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: sparse-mirror ${['export', 'import'][i]}`);
    });
  });

  it('imports into a fresh store while an offline mirror serves it; the offline mirror serves the images', async () => {
    const dataDir = await tempDir('export-import-data-');
    const offline = await offlineMirror(dataDir);
    const r = await runCli(build, ['import', layoutDir], { config: await configFor(dataDir, { offline: true }) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`imported ${registry.host}/${REPO}:${TAG}  ${image.digest}`);
    expect(r.stdout).toMatch(/Imported 1 image from .*: 3 manifests, \d+ blobs, .* copied, 0 B already present/);

    // The index, byte for byte: same digest as upstream's.
    const raw = await skopeoInspectRaw(`docker://${offline.host}/${REPO}:${TAG}`);
    expect(sha256(raw)).toBe(image.digest);
    const res = await fetch(`${offline.url}/v2/${REPO}/manifests/${TAG}`, { headers: { accept: MANIFEST_ACCEPT } });
    expect(res.headers.get('docker-content-digest')).toBe(image.digest);

    const dest = await tempDir();
    const copy = await skopeoCopyToDir(`docker://${offline.host}/${REPO}:${TAG}`, dest, { os: 'linux', arch: 'arm64' });
    expect(copy.code, copy.stderr).toBe(0);
    expect((await readFile(join(dest, 'manifest.json'))).equals(arm64.bytes)).toBe(true);
    for (const l of arm64.layers) expect(sha256(await readFile(join(dest, l.digest.slice(7))))).toBe(l.digest);

    const s390x = await skopeoCopyToDir(`docker://${offline.host}/${REPO}:${TAG}`, await tempDir(), { os: 'linux', arch: 's390x' });
    expect(s390x.code).not.toBe(0);
    expect(s390x.stderr).toContain('platform linux/s390x is not mirrored here');
  });

  it('imports the .tar with no upstream reachable; importing again copies nothing', async () => {
    await registry.stop({ keepStorage: false });
    const dataDir = await tempDir('export-import-data-');
    const config = await configFor(dataDir, { offline: true });
    const first = await runCli(build, ['import', layoutTar], { config });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/Imported 1 image from .*: 3 manifests, \d+ blobs, [\d.]+ KiB copied, 0 B already present/);
    const again = await runCli(build, ['import', layoutTar], { config });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/0 B copied, [\d.]+ KiB already present/);

    // Nothing left behind in the store's temp dir.
    expect(await readdir(join(dataDir, 'tmp'))).toEqual([]);

    const offline = await offlineMirror(dataDir);
    const dest = await tempDir();
    const copy = await skopeoCopyToDir(`docker://${offline.host}/${REPO}:${TAG}`, dest, { os: 'linux', arch: 'amd64' });
    expect(copy.code, copy.stderr).toBe(0);
    expect((await readFile(join(dest, 'manifest.json'))).equals(amd64.bytes)).toBe(true);
  });

  it('refuses a tampered layer (directory and tar): a clear error, nothing of the image stored or pullable', async () => {
    const layer = arm64.layers[0]!;
    // Directory: flip one byte of an arm64 layer.
    const tampered = join(await tempDir(), 'layout');
    await cp(layoutDir, tampered, { recursive: true });
    const file = join(tampered, 'blobs', 'sha256', layer.digest.slice(7));
    const bytes = await readFile(file);
    flipByte(bytes, bytes.length >> 1);
    await writeFile(file, bytes);
    // Tar: flip the same byte inside the archive.
    const tar = await readFile(layoutTar);
    const original = await readFile(join(layoutDir, 'blobs', 'sha256', layer.digest.slice(7)));
    const at = tar.indexOf(original);
    expect(at).toBeGreaterThan(0);
    flipByte(tar, at + (original.length >> 1));
    const tamperedTar = join(await tempDir(), 'tampered.tar');
    await writeFile(tamperedTar, tar);

    for (const source of [tampered, tamperedTar]) {
      const dataDir = await tempDir('export-import-data-');
      const r = await runCli(build, ['import', source], { config: await configFor(dataDir, { offline: true }) });
      expect(r.code, r.stdout).toBe(1);
      expect(r.stderr).toContain(`failed   ${registry.host}/${REPO}:${TAG}: corrupt layout`);
      expect(r.stderr).toContain(`content does not match its digest: expected ${layer.digest}`);
      expect(r.stdout).toContain('Imported 0 images, 1 failed');
      expect(await storeFiles(dataDir)).toEqual([]);

      const offline = await offlineMirror(dataDir);
      const res = await fetch(`${offline.url}/v2/${REPO}/manifests/${TAG}`, { headers: { accept: MANIFEST_ACCEPT } });
      expect(res.status).toBe(404);
      expect(await res.text()).toContain('is not in this mirror');
    }
  });

  it('a layout without image names needs --repo (skopeo-written layouts); with it, the tag is ref.name', async () => {
    const plain = join(await tempDir(), 'layout');
    await mkdir(plain);
    await cp(join(layoutDir, 'blobs'), join(plain, 'blobs'), { recursive: true });
    await writeFile(join(plain, 'oci-layout'), await readFile(join(layoutDir, 'oci-layout')));
    const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as { manifests: Array<{ annotations: Record<string, string> }> };
    index.manifests[0]!.annotations = { 'org.opencontainers.image.ref.name': 'carried' };
    await writeFile(join(plain, 'index.json'), JSON.stringify(index));
    expect((await stat(join(plain, 'index.json'))).size).toBeGreaterThan(0);

    const dataDir = await tempDir('export-import-data-');
    const config = await configFor(dataDir, { offline: true });
    const without = await runCli(build, ['import', plain], { config });
    expect(without.code).toBe(1);
    expect(without.stderr).toContain('pass --repo REGISTRY/REPOSITORY');

    const withRepo = await runCli(build, ['import', '--repo', `${registry.host}/other/app`, plain], { config });
    expect(withRepo.code, withRepo.stderr).toBe(0);
    expect(withRepo.stdout).toContain(`imported ${registry.host}/other/app:carried  ${image.digest}`);
    const offline = await offlineMirror(dataDir);
    const raw = await skopeoInspectRaw(`docker://${offline.host}/other/app:carried`);
    expect(raw.equals(image.bytes)).toBe(true);
  });

  it('refuses to export a file the store holds damaged: exit 1, no layout and no partial file left', async () => {
    const layer = amd64.layers[0]!.digest.slice(7);
    const file = join(online.dataDir, 'blobs', 'sha256', layer.slice(0, 2), layer);
    const bytes = await readFile(file);
    flipByte(bytes, 0);
    await writeFile(file, bytes);
    const dir = await tempDir();
    for (const dest of [join(dir, 'damaged.tar'), join(dir, 'damaged')]) {
      const r = await runCli(build, ['export', dest, `${REPO}:${TAG}`], { config: onlineConfig });
      expect(r.code, r.stdout).toBe(1);
      expect(r.stderr).toContain(`the store's copy of sha256:${layer} is damaged`);
    }
    expect(await readdir(dir)).toEqual([]);
  });
});
