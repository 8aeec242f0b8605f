// The Dockerfile's image, built and run by the test's own dockerd (legacy builder, as Debian's
// docker.io 20.10 does without BuildKit). The Node base image cannot be pulled here, so the test
// builds a stand-in base: a debootstrap minbase bookworm root (with python3, make and g++, so the
// build stage skips apt-get), this machine's node, npm and Node headers, its CA bundle and npm
// config, and a `node` user; `docker import`ed once per run. `npm ci` inside the build reaches the
// npm registry the way the host does (`--network host`, the host's npm_config_registry and
// proxies as build args). The container runs with `--network host` and pulls from a registry on
// the host's loopback.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, appendFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCKER_BIN, docker, startDockerd, type DockerdHandle } from '../support/dockerd.js';
import { envWithoutProxies, exec, onProcessExit } from '../support/exec.js';
import { fetchBlob, fetchManifest, pushMultiPlatformImage, type PushedIndex } from '../support/images.js';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BASE = 'sparse-mirror-test-base:bookworm';
const IMAGE = 'sparse-mirror:test';
const VOLUME = 'sparse-mirror-test-data';
const MIN = 60_000;

let dockerd: DockerdHandle | undefined;
let skipReason: string | undefined;
let registry: RegistryHandle;
let image: PushedIndex;
let port: number;
let workDir: string;
const cleanups: Array<() => Promise<unknown>> = [];

const run = async (cmd: string, args: string[], timeoutMs: number): Promise<void> => {
  const r = await exec(cmd, args, { timeoutMs });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stdout.slice(-2000)}${r.stderr.slice(-2000)}`);
};

/** A Debian bookworm root with this machine's node and npm, as a tarball for `docker import`. */
async function makeBaseRootfs(): Promise<string> {
  if (!existsSync('/usr/sbin/debootstrap')) throw new Error('debootstrap is not installed (apt-get install debootstrap)');
  const root = join(workDir, 'root');
  // The host's apt mirror, so debootstrap reaches Debian the way apt does here.
  const sources = existsSync('/etc/apt/sources.list.d/debian.sources') ? readFileSync('/etc/apt/sources.list.d/debian.sources', 'utf8') : '';
  const mirror = /^URIs:\s*(\S+\/debian)\s*$/m.exec(sources)?.[1] ?? 'http://deb.debian.org/debian';
  await run('/usr/sbin/debootstrap', ['--variant=minbase', '--include=python3,make,g++', 'bookworm', root, mirror], 15 * MIN);
  const node = process.execPath;
  const prefix = resolve(dirname(node), '..');
  cpSync(node, join(root, 'usr/local/bin/node'));
  cpSync(join(prefix, 'lib/node_modules/npm'), join(root, 'usr/local/lib/node_modules/npm'), { recursive: true });
  symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'));
  // Headers for node-gyp (better-sqlite3 and native/sendfile), which would otherwise download them.
  if (existsSync(join(prefix, 'include/node'))) cpSync(join(prefix, 'include/node'), join(root, 'usr/local/include/node'), { recursive: true });
  // The host's trust store and npm config (cafile, registry): npm in the build reaches the registry as npm here does.
  cpSync('/etc/ssl/certs/ca-certificates.crt', join(root, 'etc/ssl/certs/ca-certificates.crt'));
  const npmrc = join(prefix, 'etc/npmrc');
  if (existsSync(npmrc)) {
    mkdirSync(join(root, 'usr/local/etc'), { recursive: true });
    cpSync(npmrc, join(root, 'usr/local/etc/npmrc'));
  }
  // The official images' unprivileged user.
  appendFileSync(join(root, 'etc/passwd'), 'node:x:1000:1000::/home/node:/bin/sh\n');
  appendFileSync(join(root, 'etc/group'), 'node:x:1000:\n');
  mkdirSync(join(root, 'home/node'), { recursive: true, mode: 0o755 });
  await run('chown', ['1000:1000', join(root, 'home/node')], MIN);
  rmSync(join(root, 'var/cache/apt/archives'), { recursive: true, force: true });
  const tarball = join(workDir, 'base.tar');
  await run('tar', ['-C', root, '--numeric-owner', '-cf', tarball, '.'], 5 * MIN);
  rmSync(root, { recursive: true, force: true });
  return tarball;
}

const dk = async (args: string[], timeoutMs = 2 * MIN) => {
  const r = await docker(dockerd!, args, timeoutMs);
  expect(r.code, `docker ${args.join(' ')}\n${r.stdout.slice(-4000)}${r.stderr.slice(-4000)}`).toBe(0);
  return r.stdout.trim();
};

const health = (name: string) => dk(['inspect', '--format', '{{.State.Health.Status}}', name]);

async function waitHealthy(name: string): Promise<void> {
  const deadline = Date.now() + MIN;
  let status = '';
  while (Date.now() < deadline) {
    status = await health(name);
    if (status === 'healthy') return;
    if ((await dk(['inspect', '--format', '{{.State.Running}}', name])) !== 'true') break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const logs = await docker(dockerd!, ['logs', name]);
  throw new Error(`container ${name} is ${status}, not healthy\n${logs.stdout.slice(-3000)}${logs.stderr.slice(-3000)}`);
}

/** Runs the image on the host's network; the interval only shortens the wait for the Dockerfile's HEALTHCHECK command. */
async function runMirror(name: string, env: Record<string, string>): Promise<void> {
  await dk([
    'run', '-d', '--name', name, '--network', 'host', '-v', `${VOLUME}:/data`,
    '--health-interval', '1s', '--health-start-period', '30s',
    '-e', `MIRROR_PORT=${port}`, '-e', `MIRROR_UPSTREAM=${registry.url}`,
    ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    IMAGE,
  ]);
  await waitHealthy(name);
}

beforeAll(async () => {
  try {
    dockerd = await startDockerd();
  } catch (e) {
    skipReason = `dockerd cannot start here: ${(e as Error).message.split('\n')[0]}`;
    console.warn(`container-image.test.ts skipped: ${skipReason}`);
    return;
  }
  cleanups.push(() => dockerd!.stop());
  workDir = mkdtempSync(join(tmpdir(), 'sm-image-'));
  onProcessExit(() => rmSync(workDir, { recursive: true, force: true }));
  cleanups.push(async () => rmSync(workDir, { recursive: true, force: true }));

  registry = await startRegistry();
  cleanups.push(() => registry.stop());
  image = await pushMultiPlatformImage(registry.url, 'library/hello', '1.0', { platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'] });
  port = await freePort();

  const t0 = Date.now();
  const tarball = await makeBaseRootfs();
  await dk(['import', '--change', 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--change', 'ENV npm_config_nodedir=/usr/local', '--change', 'CMD ["node"]', tarball, BASE], 5 * MIN);
  rmSync(tarball, { force: true });
  const t1 = Date.now();
  // Legacy builder; build args for npm reaching its registry like the host's npm.
  const buildArgs = ['BASE=' + BASE];
  for (const k of ['npm_config_registry', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy']) {
    if (process.env[k]) buildArgs.push(`${k}=${process.env[k]}`);
  }
  const build = await exec(
    DOCKER_BIN,
    ['-H', `unix://${dockerd.socket}`, 'build', '--network', 'host', ...buildArgs.flatMap((a) => ['--build-arg', a]), '-t', IMAGE, ROOT],
    { env: envWithoutProxies({ DOCKER_BUILDKIT: '0', DOCKER_CONFIG: join(workDir, 'client') }), timeoutMs: 20 * MIN },
  );
  expect(build.code, `docker build\n${build.stdout.slice(-6000)}${build.stderr.slice(-4000)}`).toBe(0);
  console.log(`container-image: base ${((t1 - t0) / 1000).toFixed(0)} s, docker build ${((Date.now() - t1) / 1000).toFixed(0)} s`);
}, 40 * MIN);

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
}, 2 * MIN);

describe('the container image', () => {
  it('starts healthy as the unprivileged user, serves a pull through, and keeps its store in /data across a restart', async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    expect(await dk(['image', 'inspect', '--format', '{{.Config.User}} {{json .Config.Volumes}}', IMAGE])).toBe('node {"/data":{}}');

    await runMirror('sm-one', {});
    expect(await dk(['exec', 'sm-one', 'id', '-un'])).toBe('node');
    expect(await dk(['exec', 'sm-one', 'sh', '-c', 'stat -c %U /proc/1'])).toBe('node');

    const mirror = `http://127.0.0.1:${port}`;
    const index = await fetchManifest(mirror, 'library/hello', '1.0');
    expect(index.digest).toBe(image.digest);
    const amd64 = image.children.find((c) => c.platform?.architecture === 'amd64')!;
    expect((await fetchManifest(mirror, 'library/hello', amd64.digest)).digest).toBe(amd64.digest);
    const layer = amd64.layers[0]!;
    expect((await fetchBlob(mirror, 'library/hello', layer.digest)).length).toBe(layer.size);
    expect(await dk(['exec', 'sm-one', 'sh', '-c', 'ls -A /data | wc -l'])).not.toBe('0');

    // Stopped as an operator would (SIGTERM: the blob's put-off flush runs before the exit), then a
    // new container on the same volume, offline and with the upstream gone: served from /data.
    await dk(['stop', 'sm-one']);
    await dk(['rm', 'sm-one']);
    await registry.stop();
    await runMirror('sm-two', { MIRROR_OFFLINE: '1' });
    expect((await fetchManifest(mirror, 'library/hello', image.digest)).bytes.equals(index.bytes)).toBe(true);
    expect((await fetchManifest(mirror, 'library/hello', amd64.digest)).digest).toBe(amd64.digest);
    expect((await fetchBlob(mirror, 'library/hello', layer.digest)).length).toBe(layer.size);
    await dk(['rm', '-f', 'sm-two']);
  }, 5 * MIN);
});
