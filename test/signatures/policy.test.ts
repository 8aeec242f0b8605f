// The signature policy end to end: images signed the cosign way (a `.sig` tag) and with a Sigstore
// bundle referrer (cosign 3), unsigned ones, one whose signature is over another digest, one
// signed with another key, and signatures that are garbage. Pulled through the mirror by skopeo
// and containerd under `enforce` and `warn`, then prefetched, exported and imported with
// --require-signatures into an offline store. Upstream is docker-registry 2.8 (no referrers API:
// the bundle is found through its fallback tag, as cosign writes it there).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportImages } from '../../src/airgap/export.js';
import { importLayout } from '../../src/airgap/import.js';
import { parseDigest } from '../../src/oci/digest.js';
import { inventory } from '../../src/store/inventory.js';
import { prefetchImage } from '../../src/upkeep/prefetch.js';
import { buildCli, runCli, writeConfigFile, type CliBuild } from '../support/cli.js';
import { ctrPull, startContainerd, writeHostsDir, type ContainerdHandle } from '../support/containerd.js';
import { useFixture } from '../support/fixture.js';
import { pushMultiPlatformImage, putManifest, type PushedIndex } from '../support/images.js';
import type { TestMirror } from '../support/mirror.js';
import {
  bundleReferrer,
  cosignSignature,
  fallbackIndex,
  newSigningKey,
  OCI_INDEX,
  pushArtifact,
  schemeTag,
  sigstoreDsseBundle,
  writePublicKey,
  type Artifact,
} from '../support/signing.js';
import { skopeoCopyToDir } from '../support/skopeo.js';

const ALIAS = 'signed.example';
const signer = newSigningKey();
const stranger = newSigningKey();
const keysDir = await mkdtemp(join(tmpdir(), 'sm-sigkeys-'));
const keyPath = await writePublicKey(keysDir, 'org.pub', signer.publicKey);
const strangerPath = await writePublicKey(keysDir, 'stranger.pub', stranger.publicKey);
afterAll(() => rm(keysDir, { recursive: true, force: true }));

const NAMES = ['cosign', 'bundle', 'child', 'unsigned', 'wrong', 'stranger', 'garbage', 'huge'] as const;
type Name = (typeof NAMES)[number];
/** The images, and the signature manifests pushed for them. */
type Images = Record<Name, PushedIndex> & { sigs: Partial<Record<Name, Artifact>> };
const SIGNED: Name[] = ['cosign', 'bundle'];
const REFUSED: Name[] = ['unsigned', 'wrong', 'stranger', 'garbage', 'huge'];

const repo = (n: Name) => `sig/${n}`;
const key = (n: Name) => `${ALIAS}/${repo(n)}`;
const upstream = (url: string) => ({ url, aliases: [ALIAS] });
const policy = (mode: 'enforce' | 'warn', keys = [keyPath]) => ({ policies: [{ repositories: [`${ALIAS}/sig/*`], keys, mode }] });

/** Why each refused image is refused, as the 403's message ends. */
function why(images: Images, n: Name): string {
  const d = images[n].digest;
  const tag = schemeTag(d, 'sig');
  switch (n) {
    case 'unsigned':
      return `no ${tag} tag and no signature referrer`;
    case 'wrong':
      return `the signature under ${tag} is over ${images.cosign.digest}, not ${d}`;
    case 'stranger':
      return `the signature under ${tag} does not verify`;
    case 'garbage':
      return `the signature under ${tag} layer ${payloadOf(images, n)}: its signature annotation is not a base64 signature`;
    case 'huge':
      return `the signature under ${tag} layer ${payloadOf(images, n)}: a 200000-byte payload is too large for a signature (limit 65536)`;
    default:
      throw new Error(`${n} is not refused`);
  }
}

function payloadOf(images: Images, n: Name): string {
  return (JSON.parse(images.sigs[n]!.bytes.toString()) as { layers: Array<{ digest: string }> }).layers[0]!.digest;
}

/** The refusal of `n:1.0` by tag (skopeo), or by digest (containerd resolves the tag with a HEAD, then GETs the digest). */
const message = (images: Images, n: Name, byDigest = false) =>
  `${ALIAS}/${repo(n)}${byDigest ? `@${images[n].digest}` : `:1.0 (${images[n].digest})`} has no signature by ${keyPath}: ${why(images, n)}`;

describe('signature policy', () => {
  const fx = useFixture({
    registry: true,
    images: async ({ registry }): Promise<Images> => {
      const push = (n: Name) => pushMultiPlatformImage(registry.url, repo(n), '1.0', { platforms: ['linux/amd64', 'linux/arm64'] });
      const images = Object.fromEntries(await Promise.all(NAMES.map(async (n) => [n, await push(n)] as const))) as unknown as Images;
      images.sigs = {};
      const sign = (n: Name, digest: string, k = signer.privateKey, opts?: Parameters<typeof cosignSignature>[3]) => {
        const sig = (images.sigs[n] = cosignSignature(key(n), digest, k, opts));
        return pushArtifact(registry.url, repo(n), sig, schemeTag(images[n].digest, 'sig'));
      };
      // cosign sign --key (tag scheme), on the index.
      await sign('cosign', images.cosign.digest);
      // cosign 3: a Sigstore bundle referrer; without a referrers API, listed in the fallback tag's index.
      const b = images.bundle;
      const bundle = bundleReferrer({ mediaType: b.mediaType, digest: b.digest, size: b.bytes.length }, sigstoreDsseBundle(b.digest, signer.privateKey));
      await pushArtifact(registry.url, repo('bundle'), bundle);
      await putManifest(registry.url, repo('bundle'), schemeTag(b.digest), fallbackIndex([bundle.descriptor]), OCI_INDEX);
      // Only the linux/amd64 manifest is signed, not the index.
      const amd64 = images.child.children.find((c) => c.platform?.architecture === 'amd64')!;
      await pushArtifact(registry.url, repo('child'), cosignSignature(key('child'), amd64.digest, signer.privateKey), schemeTag(amd64.digest, 'sig'));
      // A valid signature, of another image.
      await sign('wrong', images.cosign.digest);
      await sign('stranger', images.stranger.digest, stranger.privateKey);
      await sign('garbage', images.garbage.digest, signer.privateKey, { signature: '!!! this is not base64 !!!' });
      await sign('huge', images.huge.digest, signer.privateKey, { payload: Buffer.alloc(200_000, '{') });
      return images;
    },
    mirror: ({ registry }) => ({ upstreams: [upstream(registry.url)], signatures: policy('enforce') }),
  });

  let containerd: ContainerdHandle;
  let hostsDir: string;
  beforeAll(async () => {
    containerd = await startContainerd();
    fx.defer(() => containerd.stop());
    hostsDir = await writeHostsDir(ALIAS, { server: fx.mirror.url });
  });

  const pull = async (m: TestMirror, n: Name, arch = 'amd64') =>
    skopeoCopyToDir(`docker://${m.host}/${ALIAS}/${repo(n)}:1.0`, await fx.tempDir('pulled-'), { os: 'linux', arch });

  it('under enforce, skopeo pulls the signed images (on the index, by a bundle, on the platform pulled) and is refused the others with why', async () => {
    for (const n of SIGNED) {
      const r = await pull(fx.mirror, n);
      expect(r.code, `${n}: ${r.stderr}`).toBe(0);
    }
    const child = await pull(fx.mirror, 'child', 'amd64');
    expect(child.code, child.stderr).toBe(0);
    for (const n of REFUSED) {
      const r = await pull(fx.mirror, n);
      expect(r.code, n).not.toBe(0);
      expect(r.stderr).toContain(message(fx.images, n));
    }
    // The arm64 manifest of `child` is signed neither itself nor through its index.
    const arm64 = fx.images.child.children.find((c) => c.platform?.architecture === 'arm64')!;
    const refused = await pull(fx.mirror, 'child', 'arm64');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`${ALIAS}/${repo('child')}@${arm64.digest} has no signature by ${keyPath}: no ${schemeTag(arm64.digest, 'sig')} tag and no signature referrer`);
  });

  it('the refusal is a 403 DENIED for a GET by tag or digest (a HEAD answers), and for the blobs of a refused manifest; signatures themselves are served; verdicts are kept, counted and listed', async () => {
    const m = fx.mirror;
    const unsigned = fx.images.unsigned;
    for (const ref of ['1.0', unsigned.digest]) {
      const res = await fetch(`${m.url}/v2/${ALIAS}/${repo('unsigned')}/manifests/${ref}`, { headers: { accept: OCI_INDEX } });
      expect(res.status, ref).toBe(403);
      const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
      expect(body.errors[0]!.code).toBe('DENIED');
      expect(body.errors[0]!.message).toContain(`has no signature by ${keyPath}: no ${schemeTag(unsigned.digest, 'sig')} tag`);
    }
    // A HEAD carries no manifest: it answers, so that containerd goes on to the GET and shows its message.
    const head = await fetch(`${m.url}/v2/${ALIAS}/${repo('unsigned')}/manifests/1.0`, { method: 'HEAD', headers: { accept: OCI_INDEX } });
    expect(head.status).toBe(200);
    expect(head.headers.get('docker-content-digest')).toBe(unsigned.digest);
    // cosign verifying through the mirror still gets the signature manifest.
    const sig = await fetch(`${m.url}/v2/${ALIAS}/${repo('cosign')}/manifests/${schemeTag(fx.images.cosign.digest, 'sig')}`);
    expect(sig.status).toBe(200);

    // Nor is a refused image had layer by layer: the arm64 manifest of `child` was refused above.
    const platform = (a: string) => fx.images.child.children.find((c) => c.platform?.architecture === a)!;
    const [amd64, arm64] = [platform('amd64'), platform('arm64')];
    const blob = (digest: string) => fetch(`${m.url}/v2/${ALIAS}/${repo('child')}/blobs/${digest}`);
    const refusedBlob = await blob(arm64.layers[0]!.digest);
    expect(refusedBlob.status).toBe(403);
    expect(((await refusedBlob.json()) as { errors: Array<{ message: string }> }).errors[0]!.message).toBe(
      `blob ${arm64.layers[0]!.digest} of ${ALIAS}/${repo('child')} belongs to no image signed by ${keyPath}: the manifest that uses it, ${arm64.digest}, is not signed (no ${schemeTag(arm64.digest, 'sig')} tag and no signature referrer)`,
    );
    expect((await blob(amd64.layers[0]!.digest)).status).toBe(200);
    const payload = (JSON.parse(Buffer.from(await sig.arrayBuffer()).toString()) as { layers: Array<{ digest: string }> }).layers[0]!.digest;
    expect((await fetch(`${m.url}/v2/${ALIAS}/${repo('cosign')}/blobs/${payload}`)).status).toBe(200);

    const metrics = await (await fetch(`${m.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`sparse_mirror_signature_refusals_total\\{repository="${ALIAS}/sig/unsigned"\\} [1-9]`));
    expect(metrics).not.toContain(`repository="${ALIAS}/sig/cosign"`);

    const verdicts = m.running.mirror.catalogue.verdicts;
    expect(verdicts.get(key('cosign'), fx.images.cosign.digest)).toMatchObject({ status: 'verified', signer: keyPath });
    expect(verdicts.get(key('bundle'), fx.images.bundle.digest)).toMatchObject({ status: 'verified' });
    expect(verdicts.get(key('unsigned'), unsigned.digest)).toMatchObject({ status: 'unsigned' });
    expect(verdicts.get(key('wrong'), fx.images.wrong.digest)).toMatchObject({ status: 'failed' });
    const listed = new Map(inventory(m.running.mirror.catalogue).map((e) => [e.repository, e.signature]));
    expect(listed.get(key('cosign'))).toBe('verified');
    expect(listed.get(key('child'))).toBe('verified'); // through its signed linux/amd64 manifest
    expect(listed.get(key('unsigned'))).toBe('unsigned');
    expect(listed.get(key('stranger'))).toBe('failed');
    // The status page shows the same verdicts, in its API and on the coverage page.
    const api = (await (await fetch(`${m.url}/api/v1/images?n=200`)).json()) as { images: Array<{ repository: string; signature?: string }> };
    const shown = new Map(api.images.map((e) => [e.repository, e.signature]));
    expect([shown.get(key('cosign')), shown.get(key('unsigned')), shown.get(key('stranger'))]).toEqual(['verified', 'unsigned', 'failed']);
    const page = await (await fetch(`${m.url}/ui/images?q=${encodeURIComponent(key('unsigned'))}`)).text();
    expect(page).toContain('<span class="tag not-mirrored">unsigned</span>');
    // The mirror took all that in its stride.
    expect((await fetch(`${m.url}/readyz`)).status).toBe(200);
  });

  it('containerd pulls a signed image and is refused an unsigned one with the message', async () => {
    const ok = await ctrPull(containerd, `${ALIAS}/${repo('cosign')}:1.0`, { hostsDir, platform: 'linux/amd64' });
    expect(ok.code, ok.stderr).toBe(0);
    const bundle = await ctrPull(containerd, `${ALIAS}/${repo('bundle')}:1.0`, { hostsDir, platform: 'linux/arm64', unpack: false });
    expect(bundle.code, bundle.stderr).toBe(0);
    for (const n of ['unsigned', 'stranger'] as const) {
      const r = await ctrPull(containerd, `${ALIAS}/${repo(n)}:1.0`, { hostsDir, platform: 'linux/amd64' });
      expect(r.code, n).not.toBe(0);
      expect(r.stderr).toContain(`403 Forbidden - Server message: denied: ${message(fx.images, n, true)}`);
    }
  });

  it('under warn, everything pulls and the log says why each image does not verify', async () => {
    const warn = await fx.startMirror({ upstreams: [upstream(fx.registry.url)], signatures: policy('warn') });
    for (const n of [...SIGNED, ...REFUSED]) {
      const r = await pull(warn, n);
      expect(r.code, `${n}: ${r.stderr}`).toBe(0);
    }
    const warnings = warn.logs.map((l) => JSON.parse(l) as { level: string; msg: string; reason?: string }).filter((l) => l.msg.startsWith('signature policy (warn)'));
    for (const n of REFUSED) expect(warnings.some((w) => w.level === 'warn' && w.reason === message(fx.images, n)), n).toBe(true);
    expect(warnings.some((w) => w.reason?.includes(key('cosign')))).toBe(false);
  });

  it('a verdict is reached again when the signatures change or other keys are configured', async () => {
    const late = await pushMultiPlatformImage(fx.registry.url, 'sig/late', '1.0', { platforms: ['linux/amd64'] });
    const config = { upstreams: [upstream(fx.registry.url)], tags: { ttlSeconds: 0 }, signatures: policy('enforce') };
    const m = await fx.startMirror(config);
    const get = (mirror: TestMirror, r: string, ref: string) => fetch(`${mirror.url}/v2/${ALIAS}/sig/${r}/manifests/${ref}`, { headers: { accept: OCI_INDEX } });
    expect((await get(m, 'late', '1.0')).status).toBe(403);
    await pushArtifact(fx.registry.url, 'sig/late', cosignSignature(`${ALIAS}/sig/late`, late.digest, signer.privateKey), schemeTag(late.digest, 'sig'));
    expect((await get(m, 'late', '1.0')).status).toBe(200);
    expect((await get(m, 'cosign', '1.0')).status).toBe(200);
    // The same store, restarted with another key: the stored verdict no longer stands.
    await m.stop();
    const rekeyed = await fx.startMirror({ ...config, dataDir: m.dataDir, signatures: policy('enforce', [strangerPath]) });
    const res = await get(rekeyed, 'cosign', '1.0');
    expect(res.status).toBe(403);
    expect(((await res.json()) as { errors: Array<{ message: string }> }).errors[0]!.message).toContain(`has no signature by ${strangerPath}: the signature under`);
  });

  it('a rotated key file is reloaded while serving; one that no longer loads leaves the keys in force', async () => {
    const rotating = await writePublicKey(keysDir, 'rotating.pub', signer.publicKey);
    const m = await fx.startMirror({ upstreams: [upstream(fx.registry.url)], signatures: policy('enforce', [rotating]) });
    const status = async () => (await fetch(`${m.url}/v2/${ALIAS}/${repo('cosign')}/manifests/1.0`, { headers: { accept: OCI_INDEX } })).status;
    const until = async (want: number) => {
      for (let i = 0; i < 100 && (await status()) !== want; i++) await new Promise((r) => setTimeout(r, 100));
      return status();
    };
    expect(await status()).toBe(200);
    await writePublicKey(keysDir, 'rotating.pub', stranger.publicKey);
    expect(await until(403)).toBe(403);
    expect(m.logs.some((l) => l.includes('signature keys reloaded'))).toBe(true);
    await writeFile(rotating, 'not a key any more\n');
    for (let i = 0; i < 100 && !m.logs.some((l) => l.includes('signature keys not reloaded')); i++) await new Promise((r) => setTimeout(r, 100));
    expect(m.logs.find((l) => l.includes('signature keys not reloaded'))).toContain(`signature key ${rotating} is not a PEM public key`);
    expect(await status()).toBe(403);
    await writePublicKey(keysDir, 'rotating.pub', signer.publicKey);
    expect(await until(200)).toBe(200);
  });

  it('prefetch under enforce fetches the signed images and skips the others, fetching none of their platforms or blobs', async () => {
    const m = await fx.startMirror({ upstreams: [upstream(fx.registry.url)], signatures: policy('enforce') });
    const { catalogue } = m.running.mirror;
    for (const n of SIGNED) {
      const r = await prefetchImage(m.running.mirror, `${key(n)}:1.0`);
      expect(r.refused, n).toBeUndefined();
      expect(r.signature).toMatchObject({ status: 'verified', mode: 'enforce' });
      expect(r.platformsFetched.sort()).toEqual(['linux/amd64', 'linux/arm64']);
      expect(r.blobs).toBeGreaterThan(0);
    }
    for (const n of REFUSED) {
      const r = await prefetchImage(m.running.mirror, `${key(n)}:1.0`);
      expect(r.refused, n).toBe(message(fx.images, n));
      expect(r.blobs).toBe(0);
      for (const c of fx.images[n].children) {
        expect(catalogue.getManifest(key(n), c.digest)).toBeUndefined();
        for (const l of c.layers) expect(catalogue.getBlob(l.digest)).toBeUndefined();
      }
    }
  });

  it('sync skips and reports an unsigned image, and keeps the signed one fresh', async () => {
    const m = await fx.startMirror({
      upstreams: [upstream(fx.registry.url)],
      signatures: policy('enforce'),
      sync: { images: [`${key('unsigned')}:1.0`, `${key('cosign')}:1.0`], intervalSeconds: 3600 },
    });
    await m.running.maintenance.sync();
    const lines = m.logs.map((l) => JSON.parse(l) as { msg: string; ref?: string; reason?: string });
    expect(lines.find((l) => l.msg === 'sync: image skipped: not signed as the signature policy asks')).toMatchObject({ reason: message(fx.images, 'unsigned') });
    expect(lines.find((l) => l.msg === 'sync: image fresh')?.ref).toBe(`${key('cosign')}:1.0`);
    const amd64 = fx.images.unsigned.children[0]!;
    expect(m.running.mirror.catalogue.getManifest(key('unsigned'), amd64.digest)).toBeUndefined();
  });

  it('export under enforce carries the signed images and refuses an unsigned one, naming it', async () => {
    const m = await fx.startMirror({ upstreams: [upstream(fx.registry.url)], signatures: policy('warn') });
    for (const n of ['cosign', 'unsigned'] as const) await prefetchImage(m.running.mirror, `${key(n)}:1.0`);
    await m.stop();
    const enforcing = await fx.startMirror({ upstreams: [upstream(fx.registry.url)], dataDir: m.dataDir, signatures: policy('enforce') });
    const dir = await fx.tempDir('sig-export-');
    const ok = await exportImages(enforcing.running.mirror, [`${key('cosign')}:1.0`], join(dir, 'signed'));
    expect(ok.images.map((i) => i.name)).toEqual([`${key('cosign')}:1.0`]);
    await expect(exportImages(enforcing.running.mirror, [`${key('cosign')}:1.0`, `${key('unsigned')}:1.0`], join(dir, 'mixed'))).rejects.toThrow(
      `nothing exported:\n  ${key('unsigned')}:1.0: refused by the signature policy: ${message(fx.images, 'unsigned')}`,
    );
  });

  describe('export, then import with --require-signatures into an offline store', () => {
    let layout: string;
    let build: CliBuild;
    let work: string;
    beforeAll(async () => {
      // A mirror without a policy carries everything across.
      const connected = await fx.startMirror({ upstreams: [upstream(fx.registry.url)] });
      const refs = [...SIGNED, ...REFUSED].map((n) => `${key(n)}:1.0`);
      for (const ref of refs) await prefetchImage(connected.running.mirror, ref);
      layout = join(await fx.tempDir('sig-layout-'), 'layout');
      const exported = await exportImages(connected.running.mirror, refs, layout);
      expect(exported.images.find((i) => i.name.includes('sig/cosign'))!.attached.signature).toBe(1);
      [build, work] = await Promise.all([buildCli(), fx.tempDir('sig-cli-')]);
      fx.defer(() => build.cleanup());
    });

    it('admits the signed images, refuses the others with why, and keeps nothing of them; the signed ones pull offline under enforce', async () => {
      const offline = await fx.startMirror({ offline: true, upstreams: [upstream('http://127.0.0.1:9')], signatures: policy('enforce') });
      const result = await importLayout(offline.running.mirror, layout, { requireSignatures: true });
      expect(result.images.map((i) => i.name).filter((n) => !n.includes('sha256')).sort()).toEqual(SIGNED.map((n) => `${key(n)}:1.0`).sort());
      for (const n of REFUSED) {
        const failure = result.failures.find((f) => f.name === `${key(n)}:1.0`);
        expect(failure?.error, n).toBe(`refused by the signature policy: ${message(fx.images, n)}`);
      }
      // Their signatures were left out with them.
      const leftOut = result.failures.filter((f) => f.error.includes('left out with'));
      expect(leftOut.map((f) => f.name).sort()).toEqual((['wrong', 'stranger', 'garbage', 'huge'] as const).map((n) => `${key(n)}:${schemeTag(fx.images[n].digest, 'sig')}`).sort());
      const { catalogue, store } = offline.running.mirror;
      for (const n of REFUSED) {
        const image = fx.images[n];
        expect(catalogue.getManifest(key(n), image.digest), n).toBeUndefined();
        expect(catalogue.getTag(key(n), schemeTag(image.digest, 'sig'))).toBeUndefined();
        for (const c of image.children) {
          expect(catalogue.getManifest(key(n), c.digest)).toBeUndefined();
          for (const l of [...c.layers, { digest: c.configDigest }]) {
            expect(catalogue.getBlob(l.digest)).toBeUndefined();
            const d = parseDigest(l.digest);
            expect(d.ok && (await store.size(d.digest))).toBeUndefined();
          }
        }
      }
      expect(catalogue.verdicts.get(key('cosign'), fx.images.cosign.digest)?.status).toBe('verified');
      // Served offline, verified from the store alone.
      for (const n of SIGNED) {
        const r = await pull(offline, n, 'arm64');
        expect(r.code, `${n}: ${r.stderr}`).toBe(0);
      }
    });

    it('without the flag, an enforce policy of the importing side refuses the same; a warn policy imports all, verdicts recorded', async () => {
      const enforcing = await fx.startMirror({ offline: true, upstreams: [upstream('http://127.0.0.1:9')], signatures: policy('enforce') });
      const refused = await importLayout(enforcing.running.mirror, layout);
      expect(refused.failures.filter((f) => f.error.includes('has no signature by')).map((f) => f.name).sort()).toEqual(REFUSED.map((n) => `${key(n)}:1.0`).sort());
      const warning = await fx.startMirror({ offline: true, upstreams: [upstream('http://127.0.0.1:9')], signatures: policy('warn') });
      const all = await importLayout(warning.running.mirror, layout);
      expect(all.failures).toEqual([]);
      const unsigned = all.images.find((i) => i.name === `${key('unsigned')}:1.0`);
      expect(unsigned?.signature).toEqual({ status: 'unsigned', reason: why(fx.images, 'unsigned') });
      expect(all.images.find((i) => i.name === `${key('cosign')}:1.0`)?.signature?.status).toBe('verified');
      const listed = new Map(inventory(warning.running.mirror.catalogue).map((e) => [e.repository, e.signature]));
      expect(listed.get(key('stranger'))).toBe('failed');
    });

    it('the CLI: import --require-signatures refuses an image no policy covers; ls shows the verdicts; prefetch reports a refusal; a malformed key stops serve, naming the file', async () => {
      const data = join(work, 'data');
      const base = { dataDir: data, offline: true, upstreams: [upstream('http://127.0.0.1:9')] };
      const uncovered = await writeConfigFile(join(work, 'none.config.mjs'), base);
      const none = await runCli(build, ['import', '--require-signatures', layout], { config: uncovered });
      expect(none.code).toBe(1);
      expect(none.stderr).toContain(`no signature policy covers ${key('cosign')}, and --require-signatures admits only images signed by a policy's keys`);

      const covered = await writeConfigFile(join(work, 'policy.config.mjs'), { ...base, signatures: policy('warn') });
      const imported = await runCli(build, ['import', '--require-signatures', layout], { config: covered });
      expect(imported.code).toBe(1);
      expect(imported.stdout).toContain(`imported ${key('cosign')}:1.0`);
      expect(imported.stderr).toContain(`failed   ${key('unsigned')}:1.0: refused by the signature policy: ${message(fx.images, 'unsigned')}`);
      const ls = await runCli(build, ['ls', `${ALIAS}/sig`], { config: covered });
      expect(ls.code, ls.stderr).toBe(0);
      const rows = ls.stdout.trim().split('\n');
      expect(rows[0]).toMatch(/\bSIGNED\b/);
      expect(rows.filter((r) => r.startsWith(`${key('cosign')} `))[0]).toMatch(/\sverified\s/);
      expect(rows.some((r) => r.startsWith(`${key('unsigned')} `))).toBe(false);

      const online = await writeConfigFile(join(work, 'online.config.mjs'), { dataDir: join(work, 'online'), upstreams: [upstream(fx.registry.url)], signatures: policy('enforce') });
      const prefetched = await runCli(build, ['prefetch', `${key('cosign')}:1.0`, `${key('unsigned')}:1.0`], { config: online });
      expect(prefetched.code).toBe(1);
      expect(prefetched.stderr).toContain(`${key('unsigned')}:1.0  REFUSED: not signed as the signature policy asks: ${message(fx.images, 'unsigned')}`);
      expect(prefetched.stdout).toMatch(/images:\s+1 fetched, 1 refused \(not signed as the signature policy asks\)/);

      await mkdir(join(work, 'keys'));
      const bad = join(work, 'keys', 'broken.pub');
      await writeFile(bad, '-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n');
      const badConfig = await writeConfigFile(join(work, 'bad.config.mjs'), { ...base, signatures: { policies: [{ repositories: ['**'], keys: [bad] }] } });
      const serve = await runCli(build, ['serve'], { config: badConfig, env: { MIRROR_PORT: '0' }, timeoutMs: 30_000 });
      expect(serve.code).toBe(1);
      expect(serve.stderr).toContain(`sparse-mirror: signature key ${bad} is not a valid PEM public key`);
      expect(serve.stdout).not.toContain('listening');
      await expect(fx.startMirror({ upstreams: [upstream(fx.registry.url)], signatures: { policies: [{ repositories: ['**'], keys: [bad] }] } })).rejects.toThrow(bad);
    });
  });
});

describe('signature policy with an upstream that fails', () => {
  const fx = useFixture({ fake: true });

  it('signatures that cannot be looked up refuse the image with why, and the verdict is not kept: it verifies once upstream answers', async () => {
    const index = fx.fake.addImage('flaky/app', '1', { platforms: ['linux/amd64'] });
    const sig = cosignSignature(`${fx.fake.host}/flaky/app`, index.digest, signer.privateKey);
    for (const b of sig.blobs) fx.fake.addBlob('flaky/app', b);
    fx.fake.addManifest('flaky/app', schemeTag(index.digest, 'sig'), sig.bytes, sig.descriptor.mediaType);
    const m = await fx.startMirror({
      upstreams: [{ url: fx.fake.url }],
      upstream: { attempts: 1 },
      signatures: { policies: [{ repositories: [`${fx.fake.host}/flaky/*`], keys: [keyPath] }] },
    });
    const get = () => fetch(`${m.url}/v2/flaky/app/manifests/1`, { headers: { accept: OCI_INDEX } });
    // Upstream answers for the image but fails every request about its signatures.
    fx.fake.failWith(/sha256-|\/referrers\//, 503);
    const refused = await get();
    expect(refused.status).toBe(403);
    const err = ((await refused.json()) as { errors: Array<{ code: string; message: string }> }).errors[0]!;
    expect(err.code).toBe('DENIED');
    // Named as the client asked: through the mirror's own address, for the default upstream.
    expect(err.message).toContain(`${m.host}/flaky/app:1 (${index.digest}) has no signature by ${keyPath}: its signatures could not be looked up`);
    expect(m.running.mirror.catalogue.verdicts.get(`${fx.fake.host}/flaky/app`, index.digest)).toBeUndefined();
    fx.fake.clearFaults();
    expect((await get()).status).toBe(200);
    expect(m.running.mirror.catalogue.verdicts.get(`${fx.fake.host}/flaky/app`, index.digest)?.status).toBe('verified');
  });
});
