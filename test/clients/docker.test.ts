// Docker 20.10 (Debian docker.io) pulling through the mirror, with its own dockerd started here:
// as `registry-mirrors` for Docker Hub images, and with the mirror named as the registry. Allowed
// platforms pull with upstream's index digest; a platform the mirror does not carry fails, and
// what the person sees is pinned down below (and in the README's client table).
//
// dockerd falls back to Docker Hub whenever a registry-mirror errs. Its HTTPS_PROXY points at a
// trap on loopback, so that fallback is seen here and never leaves the machine.
import { beforeAll, describe, expect, it } from 'vitest';
import { docker, startDockerd, type DockerdHandle } from '../support/dockerd.js';
import { useFixture } from '../support/fixture.js';
import { pushMultiPlatformImage } from '../support/images.js';
import { startTrap, type Trap } from '../support/trap.js';

const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/s390x'];

const fx = useFixture({
  registry: true,
  images: async ({ registry }) => ({
    hello: await pushMultiPlatformImage(registry.url, 'library/hello', '1.0', { platforms: PLATFORMS, format: 'docker' }),
    app: await pushMultiPlatformImage(registry.url, 'library/app', '2.0', { platforms: PLATFORMS }),
  }),
  mirror: ({ registry }) => ({ upstreams: [{ url: registry.url, aliases: ['registry.test'] }] }),
});

let trap: Trap;
let dockerd: DockerdHandle;

beforeAll(async () => {
  trap = await startTrap();
  fx.defer(() => trap.stop());
  dockerd = await startDockerd({
    registryMirrors: [fx.mirror.url],
    insecureRegistries: [fx.mirror.host],
    proxy: `http://${trap.host}`,
  });
  fx.defer(() => dockerd.stop());
}, 120_000);

const inspect = async (ref: string) => {
  const r = await docker(dockerd, ['image', 'inspect', '--format', '{{json .RepoDigests}} {{.Os}}/{{.Architecture}}', ref]);
  expect(r.code, r.stderr).toBe(0);
  const [digests, platform] = r.stdout.trim().split(' ');
  return { repoDigests: JSON.parse(digests!) as string[], platform };
};

describe('Docker with the mirror as registry-mirrors', () => {
  it('pulls an allowed platform of a Docker Hub name through the mirror: upstream index digest, no fallback', async () => {
    const before = trap.connections;
    const r = await docker(dockerd, ['pull', '--platform', 'linux/arm64', 'hello:1.0']);
    expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
    expect(r.stdout).toContain(`Digest: ${fx.images.hello.digest}`);
    const got = await inspect('hello:1.0');
    expect(got.platform).toBe('linux/arm64');
    expect(got.repoDigests).toEqual([`hello@${fx.images.hello.digest}`]);
    expect(trap.connections, 'Docker Hub was not asked').toBe(before);
    const served = fx.mirror.logs.filter((l) => l.includes('"msg":"request"') && l.includes('/v2/library/hello/'));
    expect(served.length).toBeGreaterThan(0);
  });

  it('for a platform not mirrored, falls back to Docker Hub and shows only that failure; the message is in dockerd\'s log', async () => {
    const before = trap.connections;
    const r = await docker(dockerd, ['pull', '--platform', 'linux/s390x', 'app:2.0']);
    expect(r.code).not.toBe(0);
    // What the person sees: Docker Hub's failure (here: the trap standing in for the proxy).
    expect(r.stderr.trim()).toBe('Get "https://registry-1.docker.io/v2/": unexpected EOF');
    expect(trap.connections).toBeGreaterThan(before);
    expect(trap.firstBytes.some((b) => b.startsWith('CONNECT registry-1.docker.io:443'))).toBe(true);
    expect(dockerd.log()).toMatch(/platform linux\/s390x is not mirrored here/);
  });
});

describe('Docker with the mirror named as the registry', () => {
  it('pulls allowed platforms by the mirror\'s name: upstream index digest', async () => {
    for (const platform of ['linux/amd64', 'linux/arm64']) {
      const ref = `${fx.mirror.host}/library/app:2.0`;
      const r = await docker(dockerd, ['pull', '--platform', platform, ref]);
      expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(`Digest: ${fx.images.app.digest}`);
      const got = await inspect(ref);
      expect(got.platform).toBe(platform);
      expect(got.repoDigests).toEqual([`${fx.mirror.host}/library/app@${fx.images.app.digest}`]);
      await docker(dockerd, ['image', 'rm', ref]);
    }
  });

  it('refuses a platform not mirrored with the mirror\'s message, and no fallback', async () => {
    const before = trap.connections;
    const ref = `${fx.mirror.host}/library/app:2.0`;
    const r = await docker(dockerd, ['pull', '--platform', 'linux/s390x', ref]);
    expect(r.code).not.toBe(0);
    const s390x = fx.images.app.children.find((c) => c.platform?.architecture === "s390x")!;
    expect(r.stderr.trim()).toBe(
      `pull access denied for ${fx.mirror.host}/library/app, repository does not exist or may require 'docker login': ` +
        `denied: platform linux/s390x is not mirrored here (this mirror carries linux/amd64, linux/arm64); ${s390x.digest} is the linux/s390x entry of index ${fx.mirror.host}/library/app@${fx.images.app.digest}`,
    );
    expect(trap.connections).toBe(before);
  });
});
