// Upkeep with a shared bucket, against the run's real S3 server (Ceph RADOS Gateway): gc sweeps
// the bucket with a grace period, verify reads it, export takes what only the bucket holds,
// import writes to it, ls lists it, and eviction under storage.maxBytes touches only the disk.
// The bucket is filled as replicas fill it (Bucket puts of real manifests and blobs); the
// commands run as the CLI a user runs, with the S3 keys in the standard environment variables.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { Mirror } from '../../src/mirror/mirror.js';
import { manifestRecord } from '../../src/mirror/records.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { parseManifest } from '../../src/oci/manifest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { cosignTag } from '../../src/oci/referrers.js';
import { Bucket } from '../../src/store/bucket.js';
import { Catalogue } from '../../src/store/catalogue.js';
import { UploadQueueTable } from '../../src/store/upload-queue.js';
import { Maintenance } from '../../src/upkeep/maintenance.js';
import { buildCli, runCli, writeConfigFile, type CliBuild } from '../support/cli.js';
import { sha256 } from '../support/images.js';
import { freshBucket, s3Client } from '../support/s3.js';

const rgw = inject('s3');
const s3 = s3Client(rgw);
const REPO = 'registry.test/team/app';
const REF = `${REPO}:v1`;
const PLATFORMS = ['linux/amd64', 'linux/arm64'];
/** Long enough that what is written just before the two gc runs is still recent however loaded the machine. */
const GRACE_SECONDS = 8;
const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };

let build: CliBuild;
let bucketName: string;
let work: string;
const buckets: Bucket[] = [];

beforeAll(async () => {
  [build, bucketName, work] = await Promise.all([buildCli(), freshBucket(s3, 'bucket-upkeep'), mkdtemp(join(tmpdir(), 'bucket-upkeep-'))]);
}, 150_000);
afterAll(async () => {
  for (const b of buckets) b.close();
  s3.destroy();
  await build?.cleanup();
  await rm(work, { recursive: true, force: true });
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const digestOf = (value: string): Digest => {
  const p = parseDigest(value);
  if (!p.ok) throw new Error(p.reason);
  return p.digest;
};

/** Each test its own prefix of the file's bucket: what one test writes, another never sees. */
function bucketAt(prefix: string, endpoint = rgw.endpoint): Bucket {
  const b = new Bucket({ endpoint, region: rgw.region, bucket: bucketName, prefix, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  buckets.push(b);
  return b;
}

async function tempDir(name: string): Promise<string> {
  return mkdtemp(join(work, `${name}-`));
}

/** A config file for the CLI: a store in `dataDir`, this bucket under `prefix` (keys from the environment). */
async function configFor(dataDir: string, prefix: string, s3: Record<string, unknown> = {}): Promise<string> {
  return writeConfigFile(join(await tempDir('config'), 'mirror.config.mjs'), {
    dataDir,
    upstreams: [{ url: 'http://127.0.0.1:9', aliases: ['registry.test'] }],
    platforms: PLATFORMS,
    log: { level: 'warn' },
    storage: { s3: { endpoint: rgw.endpoint, region: rgw.region, bucket: bucketName, prefix, forcePathStyle: true, gcGraceSeconds: GRACE_SECONDS, untaggedRetentionDays: GRACE_SECONDS / 86_400, ...s3 } },
  });
}

const cli = (args: string[], config: string) => runCli(build, args, { config, env });

// ---------------------------------------------------------------------------------------------
// Real images, built here and written to the bucket as a replica writes them.

interface Blob {
  digest: string;
  bytes: Buffer;
}
interface Manifest {
  digest: string;
  bytes: Buffer;
  mediaType: string;
  platform?: string;
  blobs: Blob[];
}

const blob = (bytes: Buffer): Blob => ({ digest: sha256(bytes), bytes });

function image(platform: string | undefined, opts: { layers?: Blob[]; subject?: Manifest; artifactType?: string } = {}): Manifest {
  const [os, architecture, variant] = (platform ?? 'linux/amd64').split('/');
  const config = blob(Buffer.from(JSON.stringify({ os, architecture, variant, nonce: randomBytes(8).toString('hex'), rootfs: { type: 'layers', diff_ids: [] } })));
  const layers = opts.layers ?? [blob(randomBytes(2048 + Math.floor(Math.random() * 1024)))];
  const body: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: config.digest, size: config.bytes.length },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.bytes.length })),
  };
  if (opts.artifactType) body.artifactType = opts.artifactType;
  if (opts.subject) body.subject = { mediaType: opts.subject.mediaType, digest: opts.subject.digest, size: opts.subject.bytes.length };
  const bytes = Buffer.from(JSON.stringify(body));
  return { digest: sha256(bytes), bytes, mediaType: MediaType.ociManifest, platform, blobs: [config, ...layers] };
}

function index(children: Manifest[]): Manifest {
  const manifests = children.map((c) => {
    const [os, architecture, variant] = c.platform!.split('/');
    return { mediaType: c.mediaType, digest: c.digest, size: c.bytes.length, platform: variant ? { os, architecture, variant } : { os, architecture } };
  });
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }, null, 1));
  return { digest: sha256(bytes), bytes, mediaType: MediaType.ociIndex, blobs: [] };
}

async function putBlob(bucket: Bucket, b: Blob): Promise<void> {
  const file = join(work, `blob-${randomBytes(6).toString('hex')}`);
  await writeFile(file, b.bytes);
  await bucket.putBlobFile(digestOf(b.digest), file, b.bytes.length);
  await rm(file);
}

/** A manifest and (unless `blobs: false`) its blobs, as the upload queue writes them: blobs first. */
async function putManifest(bucket: Bucket, m: Manifest, opts: { blobs?: boolean } = {}): Promise<void> {
  if (opts.blobs !== false) for (const b of m.blobs) await putBlob(bucket, b);
  await bucket.putManifest(REPO, digestOf(m.digest), { bytes: m.bytes, mediaType: m.mediaType, platform: m.platform });
}

async function putTag(bucket: Bucket, tag: string, m: Manifest | string): Promise<void> {
  await bucket.putTag(REPO, tag, { digest: typeof m === 'string' ? m : m.digest, checkedAt: Date.now() });
}

async function keysOf(bucket: Bucket): Promise<string[]> {
  const keys: string[] = [];
  for (const area of ['blobs/', 'manifests/', 'tags/', 'referrers/']) for await (const o of bucket.list(area)) keys.push(o.key);
  return keys.sort();
}

const blobKey = (b: Blob | string) => `blobs/sha256/${(typeof b === 'string' ? b : b.digest).slice(7)}`;
const manifestKey = (m: Manifest) => `manifests/${REPO}/sha256/${m.digest.slice(7)}`;
const tagKey = (tag: string) => `tags/${REPO}/${tag}`;
const referrersKey = (m: Manifest) => `referrers/${REPO}/sha256/${m.digest.slice(7)}`;
/** Raw bytes under a key of this file's bucket (what a broken writer, or another version, leaves). */
const putRaw = (key: string, body: Buffer) => s3.send(new PutObjectCommand({ Bucket: bucketName, Key: key, Body: body, ContentLength: body.length }));
/** Upstream's referrers list for a subject, as replicas cache it in the bucket. */
const referrersRecord = () => Buffer.from(JSON.stringify({ descriptors: [], tags: [], checkedAt: Date.now() }));
const keysOfImage = (m: Manifest) => [manifestKey(m), ...m.blobs.map(blobKey)];

// ---------------------------------------------------------------------------------------------

describe('gc sweeps the bucket', () => {
  it('keeps what a tag reaches and what is recent, deletes what nothing references once past the grace period', async () => {
    const bucket = bucketAt('gc/');
    // Tagged: an index of two platforms, with a signature naming it as subject (no tag of its own).
    const amd64 = image('linux/amd64');
    const arm64 = image('linux/arm64');
    const top = index([amd64, arm64]);
    const signature = image(undefined, { subject: top, artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json' });
    for (const m of [amd64, arm64, top, signature]) await putManifest(bucket, m);
    await putTag(bucket, 'v1', top);
    // The tag's previous image, now untagged; it shares a layer with the tagged arm64 image, and
    // has a cosign signature under its tag-scheme tag, which goes with it.
    const old = image('linux/amd64', { layers: [arm64.blobs[1]!, blob(randomBytes(3000))] });
    const oldSig = image(undefined);
    await putManifest(bucket, old);
    await putManifest(bucket, oldSig);
    await bucket.putTag(REPO, cosignTag(old.digest, 'sig'), { digest: oldSig.digest, checkedAt: Date.now() });
    // Upstream's referrers lists: about the tagged index (kept) and about the old image (goes with it).
    await putRaw(`gc/${referrersKey(top)}`, referrersRecord());
    await putRaw(`gc/${referrersKey(old)}`, referrersRecord());
    // Garbage of other kinds: a blob nothing names, a tag record whose manifest is gone.
    const orphan = blob(randomBytes(5000));
    await putBlob(bucket, orphan);
    await putTag(bucket, 'gone', `sha256:${'0'.repeat(64)}`);
    // An old blob that a manifest queued for upload on this replica names: it must stay.
    const queuedLayer = blob(randomBytes(1500));
    await putBlob(bucket, queuedLayer);
    // An old blob that only a recent manifest names: it must stay too.
    const reused = blob(randomBytes(1700));
    await putBlob(bucket, reused);

    const dataDir = await tempDir('gc-data');
    const catalogue = new Catalogue(join(dataDir, 'mirror.db'));
    const queued = image('linux/amd64', { layers: [queuedLayer] });
    const parsed = parseManifest(queued.bytes, queued.mediaType);
    if (!parsed.ok) throw new Error(parsed.reason);
    catalogue.addManifest(manifestRecord({ repo: REPO, digest: queued.digest, mediaType: queued.mediaType, size: queued.bytes.length, manifest: parsed.manifest }));
    new UploadQueueTable(catalogue.db).add({ kind: 'manifest', repo: REPO, digest: queued.digest });
    catalogue.close();

    await pause((GRACE_SECONDS + 1.5) * 1000);
    // By default an image no tag names is kept for days (pulled by digest, it may be in use):
    // only the orphan blobs and the dangling tag record would go.
    const keepUntagged = await cli(['gc', '--dry-run'], await configFor(dataDir, 'gc/', { untaggedRetentionDays: undefined }));
    expect(keepUntagged.code, keepUntagged.stderr).toBe(0);
    expect(keepUntagged.stdout).toContain(`bucket: would delete blob ${orphan.digest}`);
    expect(keepUntagged.stdout).toMatch(/bucket dry run: 1 tag records, 0 referrers lists, 0 manifests, 2 blobs; would free/);

    // Written within the grace period: a manifest no tag names (a replica between its manifest
    // and its tag record) naming the old blob, and a fresh orphan blob.
    const fresh = image('linux/arm64', { layers: [reused] });
    await putManifest(bucket, fresh, { blobs: false });
    await putBlob(bucket, fresh.blobs[0]!);
    const freshOrphan = blob(randomBytes(800));
    await putBlob(bucket, freshOrphan);

    const before = await keysOf(bucket);
    const config = await configFor(dataDir, 'gc/');
    const dry = await cli(['gc', '--dry-run'], config);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`bucket: would delete manifest ${REPO}@${old.digest}`);
    expect(dry.stdout).toMatch(/bucket dry run: 2 tag records, 1 referrers lists, 2 manifests, 5 blobs; would free/);
    expect(await keysOf(bucket)).toEqual(before);

    const r = await cli(['gc'], config);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/bucket: deleted 2 tag records, 1 referrers lists, 2 manifests, 5 blobs; freed/);
    const kept = [
      ...[amd64, arm64, top, signature].flatMap(keysOfImage),
      tagKey('v1'),
      referrersKey(top),
      ...keysOfImage(fresh),
      blobKey(freshOrphan),
      blobKey(queuedLayer),
    ];
    expect(await keysOf(bucket)).toEqual([...new Set(kept)].sort());
    // What went: the old image (but not its layer shared with arm64), its signature and tag, the orphan, the dangling tag.
    for (const k of [manifestKey(old), blobKey(old.blobs[0]!), blobKey(old.blobs[2]!), manifestKey(oldSig), blobKey(orphan), tagKey('gone'), tagKey(cosignTag(old.digest, 'sig')), referrersKey(old)]) {
      expect(before).toContain(k);
    }
  });
});

describe('verify reads the bucket', () => {
  it('finds a clean bucket clean, and flags (and with --repair deletes) objects that do not match their key', async () => {
    const bucket = bucketAt('verify/');
    const amd64 = image('linux/amd64');
    await putManifest(bucket, amd64);
    await putTag(bucket, 'v1', amd64);
    const config = await configFor(await tempDir('verify-data'), 'verify/');
    const clean = await cli(['verify'], config);
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
    expect(clean.stdout).toMatch(/bucket: checked 4 objects \(.*\): 0 problem\(s\)/);

    // Wrong bytes under a blob's key and a manifest's key (as a broken writer would leave them), and a tag record that is none.
    const lie = blob(randomBytes(4096));
    const put = (key: string, body: Buffer) => putRaw(`verify/${key}`, body);
    await put(blobKey(lie), randomBytes(4096));
    const fakeManifest = image('linux/arm64');
    await put(manifestKey(fakeManifest), Buffer.from('{"schemaVersion": 2}'));
    await put(tagKey('broken'), Buffer.from('not json'));
    await put(referrersKey(amd64), Buffer.from('{"descriptors": "none"}'));
    await put('blobs/sha256/not-a-digest', Buffer.from('x'));

    const bad = await cli(['verify'], config);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain(`bucket corrupt      ${blobKey(lie)}  blob content hashes to sha256:`);
    expect(bad.stdout).toContain(`bucket corrupt      ${manifestKey(fakeManifest)}  manifest content hashes to`);
    expect(bad.stdout).toContain(`bucket bad-tag      ${tagKey('broken')}`);
    expect(bad.stdout).toContain(`bucket bad-referrers ${referrersKey(amd64)}`);
    expect(bad.stdout).toContain('bucket bad-name     blobs/sha256/not-a-digest');
    expect(bad.stdout).toMatch(/bucket: checked \d+ objects .*: 5 problem\(s\)/);

    const repaired = await cli(['verify', '--repair'], config);
    expect(repaired.code).toBe(1); // the stray key is only reported, never deleted
    expect(repaired.stdout).toContain('4 damaged object(s) deleted');
    expect(await keysOf(bucket)).toEqual([...keysOfImage(amd64), tagKey('v1'), 'blobs/sha256/not-a-digest'].sort());
    await bucket.delete(['blobs/sha256/not-a-digest']);
    const after = await cli(['verify'], config);
    expect(after.code, after.stdout).toBe(0);
  });
});

describe('export, import and ls with a bucket', () => {
  const amd64 = image('linux/amd64');
  const arm64 = image('linux/arm64');
  const s390x = image('linux/s390x');
  const top = index([amd64, arm64, s390x]);
  const sig = image(undefined);
  let layout: string;

  beforeAll(async () => {
    const bucket = bucketAt('airgap/');
    for (const m of [amd64, arm64, s390x, top, sig]) await putManifest(bucket, m);
    await putTag(bucket, 'v1', top);
    await bucket.putTag(REPO, cosignTag(top.digest, 'sig'), { digest: sig.digest, checkedAt: Date.now() });
  });

  it('ls lists what only the bucket holds, marked as such, and filters by repository', async () => {
    const config = await configFor(await tempDir('ls-data'), 'airgap/');
    const r = await cli(['ls', '--json'], config);
    expect(r.code, r.stderr).toBe(0);
    const entries = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    expect(entries).toEqual([
      expect.objectContaining({ repository: REPO, tag: 'v1', digest: top.digest, kind: 'index', platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'], signatures: 1, tiers: ['bucket'] }),
    ]);
    const table = await cli(['ls'], config);
    expect(table.stdout.split('\n')[0]).toMatch(/SIZE\s+TIER$/);
    expect(table.stdout).toMatch(new RegExp(`${REPO}\\s+v1\\s+.*\\s+bucket\\n`));
    const filtered = await Promise.all(['registry.test', 'registry.test/team/ap'].map((f) => cli(['ls', f, '--json'], config)));
    expect(filtered.map((f) => (JSON.parse(f.stdout) as unknown[]).length)).toEqual([1, 0]);
  });

  it('a bucket that does not answer is a clear error (exit 1), not a stack', async () => {
    const r = await cli(['ls'], await configFor(await tempDir('ls-down'), 'airgap/', { endpoint: 'http://127.0.0.1:1' }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^sparse-mirror: the shared bucket failed/m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr).not.toContain(rgw.secretAccessKey);
  });

  it('export on a replica with an empty disk takes the image from the bucket (carried platforms only, with its signature)', async () => {
    const dataDir = await tempDir('export-data');
    const config = await configFor(dataDir, 'airgap/');
    layout = join(await tempDir('layout'), 'app');
    const r = await cli(['export', layout, REF], config);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/copied from the shared bucket: 4 manifests, 6 blobs/);
    expect(r.stdout).toContain(`exported ${REF}  ${top.digest}  (linux/amd64, linux/arm64; not in the layout: linux/s390x; with 1 signature(s)`);
    const files = (await readdir(join(layout, 'blobs', 'sha256'))).map((hex) => `sha256:${hex}`).sort();
    const expected = [top, amd64, arm64, sig].flatMap((m) => [m.digest, ...m.blobs.map((b) => b.digest)]);
    expect(files).toEqual([...new Set(expected)].sort());
    expect((await readFile(join(layout, 'blobs', 'sha256', top.digest.slice(7)))).equals(top.bytes)).toBe(true);

    // The local tier now holds it too.
    const ls = await cli(['ls', '--json'], config);
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ digest: top.digest, tiers: ['local', 'bucket'] })]);
  });

  it('import writes what it imports to the bucket: blobs, manifests and the tag record', async () => {
    const dataDir = await tempDir('import-data');
    const r = await cli(['import', layout], await configFor(dataDir, 'imported/'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`imported ${REF}  ${top.digest}`);
    const target = bucketAt('imported/');
    const wanted = [top, amd64, arm64, sig];
    expect(r.stdout).toContain(`Wrote ${4 + 2 + new Set(wanted.flatMap((m) => m.blobs.map((b) => b.digest))).size} objects to the shared bucket`);
    expect(await target.tag(REPO, 'v1')).toMatchObject({ digest: top.digest });
    expect(await target.tag(REPO, cosignTag(top.digest, 'sig'))).toMatchObject({ digest: sig.digest });
    for (const m of wanted) {
      expect((await target.manifest(REPO, digestOf(m.digest)))?.bytes.equals(m.bytes)).toBe(true);
      for (const b of m.blobs) {
        const got = await target.blob(digestOf(b.digest));
        expect(Buffer.concat(await got!.body.toArray()).equals(b.bytes)).toBe(true);
      }
    }
    expect(await target.manifest(REPO, digestOf(s390x.digest))).toBeUndefined();
    // And another empty replica of that bucket exports the same image.
    const again = await cli(['export', join(await tempDir('layout'), 'again'), REF], await configFor(await tempDir('export-data'), 'imported/'));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`exported ${REF}  ${top.digest}  (linux/amd64, linux/arm64; not in the layout: linux/s390x`);
  });

  it('with the bucket down, import imports locally and leaves the uploads queued for serve; export exports from the disk', async () => {
    const dataDir = await tempDir('import-down');
    const config = await configFor(dataDir, 'down/', { endpoint: 'http://127.0.0.1:1' });
    const r = await cli(['import', layout], config);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Wrote 0 objects to the shared bucket; \d+ queued/);
    expect(r.stderr).toContain("wait in the upload queue: 'serve' sends them when the bucket is back");
    const catalogue = new Catalogue(join(dataDir, 'mirror.db'));
    const queue = new UploadQueueTable(catalogue.db);
    const kinds = queue.next(100).map((row) => row.item.kind);
    catalogue.close();
    expect(kinds[0]).toBe('blob');
    expect(kinds.at(-1)).toBe('tag');
    expect(kinds.filter((k) => k === 'manifest')).toHaveLength(4);

    const exported = await cli(['export', join(await tempDir('layout'), 'from-disk'), REF], config);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stderr).toMatch(/the shared bucket failed.*; exporting from this replica's disk only/);
    expect(exported.stdout).toContain(`exported ${REF}  ${top.digest}  (linux/amd64, linux/arm64`);
  });
});

describe('eviction under storage.maxBytes', () => {
  it('evicts from the local tier only, and keeps blobs the bucket does not have yet', async () => {
    const bucket = bucketAt('evict/');
    const dataDir = await tempDir('evict-data');
    const config = validateConfig({
      dataDir,
      upstreams: [{ url: 'http://127.0.0.1:9', aliases: ['registry.test'] }],
      platforms: PLATFORMS,
      offline: true,
      storage: {
        maxBytes: 1,
        s3: { endpoint: rgw.endpoint, bucket: bucketName, prefix: 'evict/', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
      },
    });
    const mirror = await Mirror.open(config, createLogger('silent'));
    try {
      const uploaded = image('linux/amd64');
      const pending = image('linux/amd64');
      for (const [m, tag] of [[uploaded, 'a'], [pending, 'b']] as const) {
        for (const b of m.blobs) {
          await mirror.store.put(digestOf(b.digest), b.bytes);
          mirror.catalogue.addBlob(b.digest, b.bytes.length);
        }
        await mirror.store.put(digestOf(m.digest), m.bytes);
        const parsed = parseManifest(m.bytes, m.mediaType);
        if (!parsed.ok) throw new Error(parsed.reason);
        mirror.catalogue.addManifest(manifestRecord({ repo: REPO, digest: m.digest, mediaType: m.mediaType, size: m.bytes.length, manifest: parsed.manifest, platform: m.platform }));
        mirror.catalogue.setTag(REPO, tag, m.digest);
      }
      await putManifest(bucket, uploaded);
      const pendingLayer = pending.blobs[1]!;
      new UploadQueueTable(mirror.catalogue.db).add({ kind: 'blob', digest: pendingLayer.digest });
      // Stored long ago: past eviction's own grace.
      mirror.catalogue.db.exec('UPDATE manifests SET stored_at = 0, last_access = 0; UPDATE blobs SET stored_at = 0');

      const freed = await new Maintenance(mirror, config, createLogger('silent')).evictIfNeeded();
      expect(freed).toBeGreaterThan(0);
      for (const m of [uploaded, pending]) expect(mirror.catalogue.getManifest(REPO, m.digest)).toBeUndefined();
      for (const b of uploaded.blobs) {
        expect(existsSync(mirror.store.pathOf(digestOf(b.digest)))).toBe(false);
        expect(await bucket.blobSize(digestOf(b.digest))).toBe(b.bytes.length);
      }
      expect(await bucket.manifest(REPO, digestOf(uploaded.digest))).toBeDefined();
      // The queued blob is still on disk (the only copy until it is uploaded); the other is gone.
      expect(await mirror.store.size(digestOf(pendingLayer.digest))).toBe(pendingLayer.bytes.length);
      expect(await mirror.store.size(digestOf(pending.blobs[0]!.digest))).toBeUndefined();
    } finally {
      await mirror.close();
    }
  });
});
