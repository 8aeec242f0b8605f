import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { configFileFor, preloadConfigFile } from '../../src/config/config-file.js';
import { applyEnv, ConfigError, ENV, loadConfig, upstreamNames, validateConfig } from '../../src/config/load.js';
import type { MirrorConfigInput } from '../../src/config/schema.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEFINE_TS = join(REPO_ROOT, 'src/config/define.ts');

const HUB = 'https://registry-1.docker.io';
const minimal = (): MirrorConfigInput => ({ upstreams: [{ url: HUB, aliases: ['docker.io'] }] });

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw new Error(`expected a ConfigError, got ${String(e)}`);
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

async function asyncConfigError(p: Promise<unknown>): Promise<ConfigError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw new Error(`expected a ConfigError, got ${String(e)}`);
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('validateConfig', () => {
  it('fills in the documented defaults', () => {
    const c = validateConfig({ upstreams: [{ url: HUB }] });
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(5000);
    expect(c.dataDir).toBe('data');
    expect(c.offline).toBe(false);
    expect(c.platforms).toEqual(['linux/amd64', 'linux/arm64']);
    expect(c.defaultUpstream).toBeUndefined();
    expect(c.tags.ttlSeconds).toBe(300);
    expect(c.notMirroredResponse).toBe('denied');
    expect(c.blobs.requireReference).toBe(true);
    // Every client gets sendfile(2), on this host too, unless the config asks for copies there.
    expect([c.blobs.sendfile, c.blobs.copyToLocalClients]).toEqual([true, false]);
    // The distribution spec: registries should accept manifests of at least 4 MB.
    expect(c.limits.maxManifestBytes).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(c.upstream.attempts).toBeGreaterThanOrEqual(1);
    expect(c.upstream.connectTimeoutMs).toBeGreaterThan(0);
    expect(c.upstream.headersTimeoutMs).toBeGreaterThan(0);
    expect(c.upstream.bodyIdleTimeoutMs).toBeGreaterThan(0);
    expect(c.log.level).toBe('info');
    expect(c.upstreams[0]!.aliases).toEqual([]);
  });

  it('keeps given values', () => {
    const c = validateConfig({
      host: '0.0.0.0',
      port: 0,
      dataDir: '/var/lib/mirror',
      offline: true,
      platforms: ['linux/arm/v7'],
      upstreams: [{ url: HUB, aliases: ['docker.io'], username: 'u', password: 'p', libraryPrefix: true }, { url: 'http://127.0.0.1:5001' }],
      defaultUpstream: '127.0.0.1:5001',
      tags: { ttlSeconds: 0 },
      notMirroredResponse: 'not-found',
      blobs: { requireReference: false },
      limits: { maxManifestBytes: 1024 },
      upstream: { attempts: 1 },
      log: { level: 'silent' },
    });
    expect(c).toMatchObject({
      host: '0.0.0.0',
      port: 0,
      dataDir: '/var/lib/mirror',
      offline: true,
      platforms: ['linux/arm/v7'],
      defaultUpstream: '127.0.0.1:5001',
      tags: { ttlSeconds: 0 },
      notMirroredResponse: 'not-found',
      blobs: { requireReference: false },
      limits: { maxManifestBytes: 1024 },
      log: { level: 'silent' },
    });
    expect(c.upstream.attempts).toBe(1);
    expect(c.upstreams[0]).toMatchObject({ username: 'u', password: 'p', libraryPrefix: true });
  });

  it('a defaultUpstream may name an alias or a host', () => {
    expect(validateConfig({ ...minimal(), defaultUpstream: 'docker.io' }).defaultUpstream).toBe('docker.io');
    expect(validateConfig({ ...minimal(), defaultUpstream: 'registry-1.docker.io' }).defaultUpstream).toBe('registry-1.docker.io');
  });

  it.each<[string, unknown, string]>([
    ['port', { ...minimal(), port: 'x' }, 'port'],
    ['port', { ...minimal(), port: 70000 }, 'port'],
    ['port', { ...minimal(), port: -1 }, 'port'],
    ['port', { ...minimal(), port: 80.5 }, 'port'],
    ['platforms.1', { ...minimal(), platforms: ['linux/amd64', 'amd64'] }, 'platforms.1'],
    ['platforms', { ...minimal(), platforms: [] }, 'platforms'],
    ['upstreams', {}, 'upstreams'],
    ['upstreams', { upstreams: [] }, 'upstreams'],
    ['upstreams.0.url', { upstreams: [{ url: 'ftp://example.com' }] }, 'upstreams.0.url'],
    ['upstreams.0.url', { upstreams: [{ url: 'not a url' }] }, 'upstreams.0.url'],
    ['upstreams.1.url', { upstreams: [{ url: HUB }, { url: 'file:///etc' }] }, 'upstreams.1.url'],
    ['upstreams.0.aliases.0', { upstreams: [{ url: HUB, aliases: [''] }] }, 'upstreams.0.aliases.0'],
    ['upstreams.0', { upstreams: [{ url: HUB, username: 'only-user' }] }, 'upstreams.0'],
    ['defaultUpstream', { ...minimal(), defaultUpstream: 'quay.io' }, 'defaultUpstream'],
    ['offline', { ...minimal(), offline: 'yes' }, 'offline'],
    ['notMirroredResponse', { ...minimal(), notMirroredResponse: 'teapot' }, 'notMirroredResponse'],
    ['tags.ttlSeconds', { ...minimal(), tags: { ttlSeconds: -1 } }, 'tags.ttlSeconds'],
    ['limits.maxManifestBytes', { ...minimal(), limits: { maxManifestBytes: 0 } }, 'limits.maxManifestBytes'],
    ['upstream.attempts', { ...minimal(), upstream: { attempts: 0 } }, 'upstream.attempts'],
    ['log.level', { ...minimal(), log: { level: 'loud' } }, 'log.level'],
  ])('an error names the bad key: %s', (_label, input, key) => {
    const e = configError(() => validateConfig(input, 'test.config.ts'));
    expect(e.name).toBe('ConfigError');
    expect(e.message).toContain('test.config.ts');
    expect(e.message).toMatch(new RegExp(`^\\s*${key.replace(/\./g, '\\.')}: `, 'm'));
  });

  // Regression (fixed): zod still runs the schema's superRefine when an upstream url failed validation, and the
  // refinement calls upstreamNames() → new URL(u.url), which throws a TypeError.
  // A scheme-less url next to a defaultUpstream is an easy mistake to make.
  it('a url without scheme together with a defaultUpstream is a ConfigError naming upstreams.0.url', () => {
    const e = configError(() =>
      validateConfig({ upstreams: [{ url: 'registry-1.docker.io', aliases: ['docker.io'] }], defaultUpstream: 'docker.io' }),
    );
    expect(e.message).toContain('upstreams.0.url');
  });

  it('a bad url without a defaultUpstream is a ConfigError naming upstreams.0.url', () => {
    const e = configError(() => validateConfig({ upstreams: [{ url: 'registry-1.docker.io', aliases: ['docker.io'] }] }));
    expect(e.message).toContain('upstreams.0.url');
  });

  it('reports every bad key, one per line', () => {
    const e = configError(() => validateConfig({ port: 'x', platforms: ['bad'], upstreams: [{ url: 'ftp://x' }] }));
    expect(e.message).toMatch(/^\s*port: /m);
    expect(e.message).toMatch(/^\s*platforms\.0: /m);
    expect(e.message).toMatch(/^\s*upstreams\.0\.url: /m);
  });

  it('a non-object is refused', () => {
    expect(() => validateConfig(null)).toThrow(ConfigError);
    expect(() => validateConfig('config')).toThrow(ConfigError);
  });
});

describe('upstreamNames', () => {
  it('is host[:port] then the aliases', () => {
    expect(upstreamNames({ url: HUB, aliases: ['docker.io'] })).toEqual(['registry-1.docker.io', 'docker.io']);
    expect(upstreamNames({ url: 'http://127.0.0.1:5001/' })).toEqual(['127.0.0.1:5001']);
    expect(upstreamNames({ url: 'https://ghcr.io:443' })).toEqual(['ghcr.io']);
  });
});

describe('applyEnv', () => {
  it('names the variables as documented', () => {
    expect(ENV).toMatchObject({
      host: 'MIRROR_HOST',
      port: 'MIRROR_PORT',
      upstream: 'MIRROR_UPSTREAM',
      platforms: 'MIRROR_PLATFORMS',
      dataDir: 'MIRROR_DATA',
      offline: 'MIRROR_OFFLINE',
      config: 'MIRROR_CONFIG',
    });
  });

  it('changes nothing with an empty environment, and never mutates its input', () => {
    const input = minimal();
    const snapshot = structuredClone(input);
    expect(applyEnv(input, {})).toEqual(snapshot);
    applyEnv(input, { MIRROR_HOST: '0.0.0.0', MIRROR_UPSTREAM: 'http://127.0.0.1:5001', MIRROR_PLATFORMS: 'linux/s390x' });
    expect(input).toEqual(snapshot);
  });

  it('MIRROR_HOST', () => {
    expect(applyEnv({ ...minimal(), host: '127.0.0.1' }, { MIRROR_HOST: '0.0.0.0' }).host).toBe('0.0.0.0');
    expect(applyEnv({ ...minimal(), host: '127.0.0.1' }, { MIRROR_HOST: '' }).host).toBe('127.0.0.1');
  });

  it('MIRROR_PORT', () => {
    expect(applyEnv(minimal(), { MIRROR_PORT: '5555' }).port).toBe(5555);
    expect(applyEnv(minimal(), { MIRROR_PORT: '0' }).port).toBe(0);
    expect(applyEnv(minimal(), { MIRROR_PORT: '65535' }).port).toBe(65535);
    expect(applyEnv({ ...minimal(), port: 1234 }, { MIRROR_PORT: '' }).port).toBe(1234);
  });

  it.each(['abc', '-1', '65536', '99999', '123456', '1e3', '5000 ', ' 5000', '50.0', '0x10'])('MIRROR_PORT=%j is a ConfigError naming MIRROR_PORT', (port) => {
    const e = configError(() => applyEnv(minimal(), { MIRROR_PORT: port }));
    expect(e.message).toContain('MIRROR_PORT');
  });

  it('MIRROR_DATA', () => {
    expect(applyEnv(minimal(), { MIRROR_DATA: '/srv/mirror' }).dataDir).toBe('/srv/mirror');
  });

  it('MIRROR_PLATFORMS: comma-separated, trimmed, empty entries dropped', () => {
    expect(applyEnv(minimal(), { MIRROR_PLATFORMS: 'linux/amd64, linux/arm/v7 ,,' }).platforms).toEqual(['linux/amd64', 'linux/arm/v7']);
  });

  it('MIRROR_PLATFORMS with a bad entry fails validation at platforms.<i>', () => {
    const e = configError(() => validateConfig(applyEnv(minimal(), { MIRROR_PLATFORMS: 'linux/amd64,arm64' })));
    expect(e.message).toMatch(/^\s*platforms\.1: /m);
  });

  it.each([
    ['1', true],
    ['true', true],
    ['TRUE', true],
    ['True', true],
    ['0', false],
    ['false', false],
    ['FALSE', false],
  ])('MIRROR_OFFLINE=%s → %s', (value, expected) => {
    expect(applyEnv({ ...minimal(), offline: !expected }, { MIRROR_OFFLINE: value }).offline).toBe(expected);
  });

  it.each(['yes', 'no', 'on', '2', 'truee'])('MIRROR_OFFLINE=%s is a ConfigError naming MIRROR_OFFLINE', (value) => {
    expect(configError(() => applyEnv(minimal(), { MIRROR_OFFLINE: value })).message).toContain('MIRROR_OFFLINE');
  });

  it('MIRROR_UPSTREAM naming a configured upstream makes it the default, without a duplicate', () => {
    const input: MirrorConfigInput = { upstreams: [{ url: HUB, aliases: ['docker.io'] }, { url: 'http://127.0.0.1:5001' }] };
    const out = applyEnv(input, { MIRROR_UPSTREAM: 'http://127.0.0.1:5001' });
    expect(out.upstreams).toHaveLength(2);
    expect(out.defaultUpstream).toBe('127.0.0.1:5001');
    expect(validateConfig(out).defaultUpstream).toBe('127.0.0.1:5001');
  });

  it('MIRROR_UPSTREAM naming a new registry adds it first, without credentials, as the default', () => {
    const input: MirrorConfigInput = { upstreams: [{ url: HUB, aliases: ['docker.io'], username: 'u', password: 'p' }], defaultUpstream: 'docker.io' };
    const out = applyEnv(input, { MIRROR_UPSTREAM: 'http://127.0.0.1:5002/some/path' });
    expect(out.upstreams).toHaveLength(2);
    expect(out.upstreams![0]).toEqual({ url: 'http://127.0.0.1:5002' });
    expect(out.upstreams![1]).toEqual(input.upstreams[0]);
    expect(out.defaultUpstream).toBe('127.0.0.1:5002');
    const c = validateConfig(out);
    expect(c.upstreams[0]!.username).toBeUndefined();
    expect(c.defaultUpstream).toBe('127.0.0.1:5002');
  });

  it('MIRROR_UPSTREAM works on a config without upstreams', () => {
    const c = validateConfig(applyEnv({} as MirrorConfigInput, { MIRROR_UPSTREAM: 'https://ghcr.io' }));
    expect(c.upstreams.map((u) => u.url)).toEqual(['https://ghcr.io']);
    expect(c.defaultUpstream).toBe('ghcr.io');
  });

  it.each(['not a url', 'registry-1.docker.io', '//x'])('MIRROR_UPSTREAM=%j is a ConfigError naming MIRROR_UPSTREAM', (value) => {
    expect(configError(() => applyEnv(minimal(), { MIRROR_UPSTREAM: value })).message).toContain('MIRROR_UPSTREAM');
  });

  it('MIRROR_UPSTREAM with a non-http scheme fails validation at upstreams.0.url', () => {
    const e = configError(() => validateConfig(applyEnv(minimal(), { MIRROR_UPSTREAM: 'ftp://mirror.example' })));
    expect(e.message).toMatch(/^\s*upstreams\.0\.url: /m);
  });

  // Regression (fixed): with MIRROR_UPSTREAM set, applyEnv spreads `out.upstreams` before validation, so a config
  // whose `upstreams` is not an array crashes with a TypeError instead of a ConfigError.
  it('MIRROR_UPSTREAM with a malformed upstreams key still gives a ConfigError naming upstreams', () => {
    const e = configError(() =>
      validateConfig(applyEnv({ upstreams: 5 } as unknown as MirrorConfigInput, { MIRROR_UPSTREAM: 'https://ghcr.io' })),
    );
    expect(e.message).toContain('upstreams');
  });
});

describe('loadConfig', () => {
  const dirs: string[] = [];
  function tempDir(): string {
    const d = mkdtempSync(join(tmpdir(), 'sparse-mirror-config-'));
    dirs.push(d);
    return d;
  }
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const tsConfig = (body: string) =>
    `import { defineConfig } from ${JSON.stringify(DEFINE_TS)};\n` +
    `const port: number = 5123; // a type annotation: only loads if TypeScript is transpiled\n` +
    `export default defineConfig(${body});\n`;

  it('loads mirror.config.ts from the working directory by default, with defineConfig', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'mirror.config.ts'), tsConfig(`{ port, upstreams: [{ url: 'https://ghcr.io' }], platforms: ['linux/arm64'] }`));
    const c = await loadConfig({ cwd: dir, env: {} });
    expect(c.port).toBe(5123);
    expect(c.platforms).toEqual(['linux/arm64']);
    expect(c.upstreams[0]!.url).toBe('https://ghcr.io');
  });

  it('loads a .ts file given by path, relative to cwd, importing defineConfig relatively', async () => {
    const dir = tempDir();
    const rel = JSON.stringify(join(REPO_ROOT, 'src/config/define.js').replace(/\\/g, '/'));
    writeFileSync(
      join(dir, 'other.config.ts'),
      `import { defineConfig } from ${rel};\nexport default defineConfig({ host: '0.0.0.0', upstreams: [{ url: 'http://127.0.0.1:5001' }] });\n`,
    );
    const c = await loadConfig({ cwd: dir, path: 'other.config.ts', env: {} });
    expect(c.host).toBe('0.0.0.0');
    expect(c.upstreams[0]!.url).toBe('http://127.0.0.1:5001');
  });

  it('loads a .mjs file', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'mirror.config.mjs'), `export default { port: 6000, upstreams: [{ url: 'https://quay.io' }] };\n`);
    const c = await loadConfig({ cwd: dir, path: 'mirror.config.mjs', env: {} });
    expect(c.port).toBe(6000);
    expect(c.upstreams[0]!.url).toBe('https://quay.io');
  });

  it('loads a .json file', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'mirror.json'), JSON.stringify({ dataDir: 'store', upstreams: [{ url: 'https://quay.io' }] }));
    expect((await loadConfig({ cwd: dir, path: 'mirror.json', env: {} })).dataDir).toBe('store');
  });

  it('MIRROR_CONFIG names the file when no path is given', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'from-env.mjs'), `export default { port: 6001, upstreams: [{ url: 'https://quay.io' }] };\n`);
    const c = await loadConfig({ cwd: dir, env: { MIRROR_CONFIG: join(dir, 'from-env.mjs') } });
    expect(c.port).toBe(6001);
  });

  it('applies the environment on top of the file, then validates', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'mirror.config.mjs'), `export default { port: 6000, upstreams: [{ url: 'https://quay.io' }] };\n`);
    const c = await loadConfig({
      cwd: dir,
      path: 'mirror.config.mjs',
      env: {
        MIRROR_HOST: '0.0.0.0',
        MIRROR_PORT: '7000',
        MIRROR_DATA: '/tmp/store',
        MIRROR_OFFLINE: '1',
        MIRROR_PLATFORMS: 'linux/amd64,linux/arm/v7',
        MIRROR_UPSTREAM: 'http://127.0.0.1:5001',
      },
    });
    expect(c).toMatchObject({ host: '0.0.0.0', port: 7000, dataDir: '/tmp/store', offline: true, platforms: ['linux/amd64', 'linux/arm/v7'], defaultUpstream: '127.0.0.1:5001' });
    expect(c.upstreams.map((u) => u.url)).toEqual(['http://127.0.0.1:5001', 'https://quay.io']);
  });

  it('a bad environment value is a ConfigError', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'mirror.config.mjs'), `export default { upstreams: [{ url: 'https://quay.io' }] };\n`);
    const e = await asyncConfigError(loadConfig({ cwd: dir, path: 'mirror.config.mjs', env: { MIRROR_PORT: 'http' } }));
    expect(e.message).toContain('MIRROR_PORT');
  });

  it('a missing file is a ConfigError naming it', async () => {
    const dir = tempDir();
    const e = await asyncConfigError(loadConfig({ cwd: dir, env: {} }));
    expect(e.message).toContain(join(dir, 'mirror.config.ts'));
    const e2 = await asyncConfigError(loadConfig({ cwd: dir, path: 'nope.mjs', env: {} }));
    expect(e2.message).toContain('nope.mjs');
    const e3 = await asyncConfigError(loadConfig({ cwd: dir, env: { MIRROR_CONFIG: 'gone.ts' } }));
    expect(e3.message).toContain('gone.ts');
  });

  it('a file that fails to load is a ConfigError naming it', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'broken.mjs'), `throw new Error('boom from config');\n`);
    const e = await asyncConfigError(loadConfig({ cwd: dir, path: 'broken.mjs', env: {} }));
    expect(e.message).toContain('broken.mjs');
    expect(e.message).toContain('boom from config');
    writeFileSync(join(dir, 'syntax.ts'), `export default { port: , };\n`);
    const e2 = await asyncConfigError(loadConfig({ cwd: dir, path: 'syntax.ts', env: {} }));
    expect(e2.message).toContain('syntax.ts');
  });

  it('loads a .ts config that is not plain data (a function in it), and reports what a .ts file throws', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'fn.config.ts'), tsConfig(`{ port, upstreams: [{ url: 'https://ghcr.io' }], note: () => 'not data' } as never`));
    expect((await loadConfig({ cwd: dir, path: 'fn.config.ts', env: {} })).port).toBe(5123);
    writeFileSync(join(dir, 'throws.config.ts'), `const why: string = 'boom from a ts config';\nthrow new Error(why);\n`);
    const e = await asyncConfigError(loadConfig({ cwd: dir, path: 'throws.config.ts', env: {} }));
    expect(e.message).toContain('throws.config.ts');
    expect(e.message).toContain('boom from a ts config');
  });

  it('a file whose default export is not an object is a ConfigError', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'num.mjs'), `export default 42;\n`);
    await asyncConfigError(loadConfig({ cwd: dir, path: 'num.mjs', env: {} }));
  });

  it('an invalid config file is a ConfigError naming the file and key', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'mirror.config.ts'), tsConfig(`{ port: 99999, upstreams: [{ url: 'https://ghcr.io' }] }`));
    const e = await asyncConfigError(loadConfig({ cwd: dir, env: {} }));
    expect(e.message).toContain(join(dir, 'mirror.config.ts'));
    expect(e.message).toMatch(/^\s*port: /m);
  });

  // The CLI starts loading the file before the mirror's modules (src/cli.ts): the file it guesses
  // from the command line is the one loadConfig() then loads.
  it('configFileFor() names the file loadConfig() would load: --config or -c, else MIRROR_CONFIG, else the default', () => {
    const dir = tempDir();
    expect(configFileFor(['--config', 'a.ts'], { MIRROR_CONFIG: 'b.ts' }, dir)).toBe(join(dir, 'a.ts'));
    expect(configFileFor(['--config=a.ts', '--platform', 'linux/amd64'], {}, dir)).toBe(join(dir, 'a.ts'));
    expect(configFileFor(['-c', '/abs/c.ts', 'positional'], {}, dir)).toBe('/abs/c.ts');
    expect(configFileFor(['--unknown', 'x'], { MIRROR_CONFIG: 'b.ts' }, dir)).toBe(join(dir, 'b.ts'));
    expect(configFileFor([], {}, dir)).toBe(join(dir, 'mirror.config.ts'));
  });

  it('a preloaded .ts file is loaded once from the preload, then afresh; a preloaded error is reported as without it', async () => {
    const dir = tempDir();
    const file = join(dir, 'mirror.config.ts');
    writeFileSync(file, tsConfig(`{ port, upstreams: [{ url: 'https://ghcr.io' }] }`));
    preloadConfigFile(file);
    expect((await loadConfig({ cwd: dir, env: {} })).port).toBe(5123);
    writeFileSync(file, tsConfig(`{ port: port + 1, upstreams: [{ url: 'https://ghcr.io' }] }`));
    expect((await loadConfig({ cwd: dir, env: {} })).port).toBe(5124); // read again, not the preload
    writeFileSync(join(dir, 'throws.config.ts'), `const why: string = 'boom while preloaded';\nthrow new Error(why);\n`);
    preloadConfigFile(join(dir, 'throws.config.ts'));
    const e = await asyncConfigError(loadConfig({ cwd: dir, path: 'throws.config.ts', env: {} }));
    expect(e.message).toContain('throws.config.ts');
    expect(e.message).toContain('boom while preloaded');
    preloadConfigFile(join(dir, 'absent.config.ts')); // nothing to preload: loadConfig says so as always
    expect((await asyncConfigError(loadConfig({ cwd: dir, path: 'absent.config.ts', env: {} }))).message).toContain('does not exist');
  });

  it("loads and validates the repository's own mirror.config.ts", async () => {
    const c = await loadConfig({ cwd: REPO_ROOT, env: {} });
    expect(c.upstreams.length).toBeGreaterThanOrEqual(1);
    expect(c.platforms.length).toBeGreaterThanOrEqual(1);
    // Its defaultUpstream names a configured upstream (the schema checks this; assert it held).
    if (c.defaultUpstream) expect(c.upstreams.some((u) => upstreamNames(u).includes(c.defaultUpstream!))).toBe(true);
    // Docker Hub, as its official-image clients expect, is reachable as docker.io.
    expect(c.upstreams.some((u) => upstreamNames(u).includes('docker.io'))).toBe(true);
  });
});

describe('storage.s3 and cluster', () => {
  const s3 = { endpoint: 'http://127.0.0.1:7480', bucket: 'mirror-cache', forcePathStyle: true };
  const cluster = { advertise: 'http://10.0.0.1:5000', peers: ['http://10.0.0.2:5000'], secret: 'sixteen-chars-or-more' };

  it('is a single node without them, and takes the documented defaults with them', () => {
    const one = validateConfig(minimal());
    expect(one.storage.s3).toBeUndefined();
    expect(one.cluster).toBeUndefined();
    const c = validateConfig({ ...minimal(), storage: { s3 }, cluster });
    expect(c.storage.s3).toMatchObject({ region: 'us-east-1', prefix: '', bucket: 'mirror-cache' });
    expect(c.cluster).toMatchObject({ probeIntervalMs: 2000, peers: ['http://10.0.0.2:5000'] });
  });

  it('names what is wrong: a cluster without a bucket, without members, a short secret, a bad bucket or prefix', () => {
    expect(configError(() => validateConfig({ ...minimal(), cluster })).message).toMatch(/cluster: .*storage\.s3/);
    expect(configError(() => validateConfig({ ...minimal(), storage: { s3 }, cluster: { ...cluster, peers: [] } })).message).toMatch(/cluster\.peers or cluster\.dns/);
    expect(configError(() => validateConfig({ ...minimal(), storage: { s3 }, cluster: { ...cluster, secret: 'short' } })).message).toMatch(/cluster\.secret: .*16/);
    expect(configError(() => validateConfig({ ...minimal(), storage: { s3: { ...s3, bucket: 'No_Such' } } })).message).toMatch(/storage\.s3\.bucket/);
    expect(configError(() => validateConfig({ ...minimal(), storage: { s3: { ...s3, prefix: 'no-slash' } } })).message).toMatch(/storage\.s3\.prefix/);
  });

  it('takes cluster.secret from MIRROR_CLUSTER_SECRET', () => {
    const input = applyEnv({ ...minimal(), storage: { s3 }, cluster: { ...cluster, secret: undefined as unknown as string } }, { [ENV.clusterSecret]: 'from-the-environment-1234' });
    expect(validateConfig(input).cluster!.secret).toBe('from-the-environment-1234');
  });
});
