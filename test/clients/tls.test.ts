// The mirror serving HTTPS with a certificate from a CA the test makes with openssl: real clients
// (skopeo, containerd, Docker, podman, buildah) pull over TLS trusting that CA; client certificates
// (mTLS) when tls.clientCA is set; the certificate swapped without a restart when its files
// change; and a bad certificate file stops start-up naming it.
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { containersTool } from '../support/containers.js';
import { ctrPull, startContainerd } from '../support/containerd.js';
import { docker, startDockerd } from '../support/dockerd.js';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, pushMultiPlatformImage } from '../support/images.js';
import { startTestMirror } from '../support/mirror.js';
import { skopeo } from '../support/skopeo.js';
import { makeCa, type TestCa } from '../support/tls.js';

const fx = useFixture({
  registry: true,
  images: async ({ registry }) => ({
    app: await pushMultiPlatformImage(registry.url, 'library/app', '2.0', { platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'] }),
  }),
});

let ca: TestCa;
let otherCa: TestCa;
let serving: { cert: string; key: string };

beforeAll(async () => {
  [ca, otherCa] = await Promise.all([makeCa(), makeCa('another CA')]);
  const issued = await ca.issue('mirror', 'server');
  // The files the mirror serves from: overwritten by the reload test.
  const dir = await fx.tempDir('sm-tls-');
  serving = { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
  await copyFile(issued.cert, serving.cert);
  await copyFile(issued.key, serving.key);
}, 60_000);

const manifestUrl = (base: string) => `${base}/v2/library/app/manifests/2.0`;
const trusting = (caPem: Buffer, client?: { cert: Buffer; key: Buffer }) => new Agent({ connect: { ca: caPem, ...client } });

async function get(url: string, dispatcher: Agent): Promise<number> {
  const r = await request(url, { dispatcher, headers: { accept: MANIFEST_ACCEPT } });
  await r.body.dump();
  return r.statusCode;
}

describe('serving HTTPS', () => {
  it('serves the registry API over TLS only, with the configured certificate', async () => {
    const m = await fx.startMirror({ upstreams: [{ url: fx.registry.url }], tls: serving });
    expect(m.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await get(manifestUrl(m.url), trusting(ca.certPem))).toBe(200);
    await expect(get(manifestUrl(m.url), trusting(otherCa.certPem))).rejects.toThrow(/certificate/i);
    const plain = await fetch(manifestUrl(m.url.replace('https:', 'http:'))).then((r) => r.status, (e: Error) => e.message);
    expect(plain).not.toBe(200);
  });

  it('real clients pull over TLS trusting the test CA: skopeo, containerd, Docker, podman, buildah', async () => {
    const m = await fx.startMirror({ upstreams: [{ url: fx.registry.url }], tls: serving });
    const certDir = await fx.tempDir('sm-certs-');
    await copyFile(ca.cert, join(certDir, 'ca.crt'));

    const s = await skopeo(['inspect', '--cert-dir', certDir, '--override-arch', 'arm64', `docker://${m.host}/library/app:2.0`]);
    expect(s.code, s.stderr).toBe(0);
    expect(JSON.parse(s.stdout).Architecture).toBe('arm64');
    const untrusted = await skopeo(['inspect', '--raw', `docker://${m.host}/library/app:2.0`]);
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toContain('x509: certificate signed by unknown authority');

    const cd = await startContainerd();
    fx.defer(() => cd.stop());
    const hosts = await fx.tempDir('sm-hosts-');
    await mkdir(join(hosts, m.host));
    await writeFile(join(hosts, m.host, 'hosts.toml'), `server = "https://${m.host}"\n\n[host."https://${m.host}"]\n  capabilities = ["pull", "resolve"]\n  ca = ${JSON.stringify(ca.cert)}\n`);
    const c = await ctrPull(cd, `${m.host}/library/app:2.0`, { hostsDir: hosts, platform: 'linux/arm64', unpack: false });
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toContain(fx.images.app.digest);

    // Docker reads /etc/docker/certs.d/<host:port>/ca.crt; there is no flag to move it. The
    // directory is named after this mirror's ephemeral port and removed afterwards.
    const dockerCerts = join('/etc/docker/certs.d', m.host);
    await mkdir(dockerCerts, { recursive: true });
    fx.defer(() => rm(dockerCerts, { recursive: true, force: true }));
    await copyFile(ca.cert, join(dockerCerts, 'ca.crt'));
    const d = await startDockerd();
    fx.defer(() => d.stop());
    const dp = await docker(d, ['pull', '--platform', 'linux/amd64', `${m.host}/library/app:2.0`]);
    expect(dp.code, `${dp.stdout}${dp.stderr}`).toBe(0);
    expect(dp.stdout).toContain(`Digest: ${fx.images.app.digest}`);
    const refused = await docker(d, ['pull', '--platform', 'linux/s390x', `${m.host}/library/app:2.0`]);
    expect(refused.stderr).toContain('platform linux/s390x is not mirrored here');

    const podman = await containersTool('podman');
    fx.defer(() => podman.stop());
    await podman.configure([]);
    const pp = await podman.run(['pull', '--cert-dir', certDir, '--platform', 'linux/arm64', `${m.host}/library/app:2.0`]);
    expect(pp.code, pp.stderr).toBe(0);
    const inspect = await podman.run(['image', 'inspect', '--format', '{{json .RepoDigests}}', `${m.host}/library/app:2.0`]);
    expect(JSON.parse(inspect.stdout)).toContain(`${m.host}/library/app@${fx.images.app.digest}`);

    const buildah = await containersTool('buildah');
    fx.defer(() => buildah.stop());
    await buildah.configure([]);
    const bp = await buildah.run(['pull', '--cert-dir', certDir, '--platform', 'linux/amd64', `${m.host}/library/app:2.0`]);
    expect(bp.code, bp.stderr).toBe(0);
    const built = await buildah.run(['images', '--digests', '--format', '{{.Digest}}', `${m.host}/library/app:2.0`]);
    expect(built.stdout.trim()).toBe(fx.images.app.digest);
  }, 180_000);

  it('with tls.clientCA, requires a client certificate signed by it (mTLS)', async () => {
    const clientCa = await makeCa('client CA');
    const client = await clientCa.issue('client', 'client');
    const stranger = await otherCa.issue('stranger', 'client');
    const m = await fx.startMirror({ upstreams: [{ url: fx.registry.url }], tls: { ...serving, clientCA: clientCa.cert } });
    const pem = async (p: { cert: string; key: string }) => ({ cert: await readFile(p.cert), key: await readFile(p.key) });
    await expect(get(manifestUrl(m.url), trusting(ca.certPem))).rejects.toThrow();
    await expect(get(manifestUrl(m.url), trusting(ca.certPem, await pem(stranger)))).rejects.toThrow();
    expect(await get(manifestUrl(m.url), trusting(ca.certPem, await pem(client)))).toBe(200);
    // skopeo takes the client pair from the cert dir as NAME.cert and NAME.key.
    const certDir = await fx.tempDir('sm-mtls-');
    await copyFile(ca.cert, join(certDir, 'ca.crt'));
    const without = await skopeo(['inspect', '--raw', '--cert-dir', certDir, `docker://${m.host}/library/app:2.0`]);
    expect(without.code).not.toBe(0);
    await copyFile(client.cert, join(certDir, 'client.cert'));
    await copyFile(client.key, join(certDir, 'client.key'));
    const s = await skopeo(['inspect', '--raw', '--cert-dir', certDir, `docker://${m.host}/library/app:2.0`]);
    expect(s.code, s.stderr).toBe(0);
  });

  it('reloads the certificate when its files change, without a restart; a broken change keeps the old one', async () => {
    const m = await fx.startMirror({ upstreams: [{ url: fx.registry.url }], tls: serving });
    expect(await get(manifestUrl(m.url), trusting(ca.certPem))).toBe(200);
    const reloaded = () => m.logs.filter((l) => l.includes('tls certificate reloaded')).length;
    const rejected = () => m.logs.filter((l) => l.includes('tls certificate change not applied')).length;

    // A half-written change (not PEM): logged, the old certificate still served.
    await writeFile(serving.cert, 'not a certificate');
    await vi.waitFor(() => expect(rejected()).toBeGreaterThan(0), { timeout: 10_000 });
    expect(await get(manifestUrl(m.url), trusting(ca.certPem))).toBe(200);

    const renewed = await otherCa.issue('mirror-renewed', 'server');
    await copyFile(renewed.key, serving.key);
    await copyFile(renewed.cert, serving.cert);
    await vi.waitFor(async () => {
      expect(reloaded()).toBeGreaterThan(0);
      expect(await get(manifestUrl(m.url), trusting(otherCa.certPem))).toBe(200);
    }, { timeout: 10_000 });
    await expect(get(manifestUrl(m.url), trusting(ca.certPem))).rejects.toThrow(/certificate/i);
  });

  it('stops start-up with a message naming a missing or unusable certificate file', async () => {
    const dir = await fx.tempDir('sm-badtls-');
    const upstreams = [{ url: fx.registry.url }];
    const missing = join(dir, 'nope.crt');
    await expect(startTestMirror({ upstreams, tls: { cert: missing, key: serving.key } })).rejects.toThrow(`tls.cert: cannot read ${missing}: ENOENT`);
    const garbage = join(dir, 'garbage.key');
    await writeFile(garbage, 'hello');
    await expect(startTestMirror({ upstreams, tls: { cert: serving.cert, key: garbage } })).rejects.toThrow(`tls.key: ${garbage} is not a PEM file`);
    const otherKey = (await ca.issue('unrelated', 'server')).key;
    await expect(startTestMirror({ upstreams, tls: { cert: serving.cert, key: otherKey } })).rejects.toThrow(
      `tls: the certificate ${serving.cert} and key ${otherKey} are unusable together`,
    );
  });
});
