import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushMultiPlatformImage, type PushedIndex } from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeoCopyToDir, skopeoInspectRaw } from '../support/skopeo.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';

describe('pull-through with skopeo', () => {
  let upstream: RegistryHandle;
  let mirror: TestMirror;
  let oci: PushedIndex;

  beforeAll(async () => {
    upstream = await startRegistry();
    oci = await pushMultiPlatformImage(upstream.url, 'library/app', '1.0', { format: 'oci', attestations: true, layersPerImage: 2 });
    mirror = await startTestMirror({ upstreams: [{ url: upstream.url }] });
  });
  afterAll(async () => {
    await mirror?.stop({ removeData: true });
    await upstream?.stop();
  });

  it('serves the index byte for byte', async () => {
    const raw = await skopeoInspectRaw(`docker://${mirror.host}/library/app:1.0`);
    expect(raw.equals(oci.bytes)).toBe(true);
  });

  it('pulls an allowed platform whose bytes equal upstream', async () => {
    const dest = await mkdtemp(join(tmpdir(), 'pull-'));
    const r = await skopeoCopyToDir(`docker://${mirror.host}/library/app:1.0`, dest, { os: 'linux', arch: 'arm64' });
    expect(r.code, r.stderr).toBe(0);
    const child = oci.children.find((c) => c.platform?.architecture === 'arm64' && !c.attestationFor)!;
    expect((await readFile(join(dest, 'manifest.json'))).equals(child.bytes)).toBe(true);
    expect((await readdir(dest)).length).toBeGreaterThan(2);
  });

  it('refuses a platform it does not carry, with a message naming it', async () => {
    const dest = await mkdtemp(join(tmpdir(), 'pull-'));
    const r = await skopeoCopyToDir(`docker://${mirror.host}/library/app:1.0`, dest, { os: 'linux', arch: 's390x' });
    expect(r.code).not.toBe(0);
    console.log(r.stderr);
    expect(r.stderr).toContain('platform linux/s390x is not mirrored here (this mirror carries linux/amd64, linux/arm64)');
  });
});
