// Three replicas (separate `sparse-mirror serve` processes, separate data dirs) over one bucket
// on the run's real S3 server (Ceph RGW), in front of a real docker-registry upstream behind a
// counting proxy, so every upstream request is seen. The bucket is reached through a proxy too,
// which the bucket-down test takes away.
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { PEER_HEADER, signPeerRequest } from '../../src/cluster/peer-auth.js';
import { rankMembers } from '../../src/cluster/ranking.js';
import { buildCli, runCli, spawnServe, writeConfigFile, type CliBuild, type ServeProcess } from '../support/cli.js';
import { startCountingProxy, type CountingProxy } from '../support/counting-proxy.js';
import { pushBlob, pushMultiPlatformImage, pushSinglePlatformImage, putManifest, sha256 } from '../support/images.js';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { freshBucket, s3Client } from '../support/s3.js';
import { skopeoCopyToDir, skopeoInspectRaw } from '../support/skopeo.js';

const SECRET = 'replicas-test-secret-0123456789';
const rgw = inject('s3');
const s3 = s3Client(rgw);

interface Replica {
  name: string;
  url: string;
  host: string;
  port: number;
  dataDir: string;
  config: string;
  proc?: ServeProcess;
}

let build: CliBuild;
let registry: RegistryHandle;
let upstream: CountingProxy;
let bucketProxy: CountingProxy;
let bucket: string;
let work: string;
const replicas: Replica[] = [];

async function start(r: Replica): Promise<void> {
  // The secret comes from the environment, as from a Kubernetes Secret; so do C's S3 keys.
  const keys: Record<string, string> = r.name === 'C' ? { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey } : {};
  r.proc = await spawnServe(build, { config: r.config, port: r.port, env: { MIRROR_CLUSTER_SECRET: SECRET, ...keys } });
}

async function stopAll(): Promise<void> {
  await Promise.all(
    replicas.map(async (r) => {
      if (!r.proc || r.proc.child.exitCode !== null || r.proc.child.signalCode !== null) return;
      r.proc.child.kill('SIGTERM');
      await r.proc.exited;
    }),
  );
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; firstByteAt: number; endAt: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      let firstByteAt = 0;
      res.on('data', (c: Buffer) => {
        firstByteAt ||= Date.now();
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), firstByteAt, endAt: Date.now(), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * Uploads queued, plus blobs fetched but not yet recorded: a blob joins the upload queue only once
 * its put-off flush has run (blobs.flushQuietMs after the pull), so an empty queue alone says little.
 */
async function pendingUploads(r: Replica): Promise<number> {
  const text = (await get(`${r.url}/metrics`)).body.toString();
  const gauge = (name: string) => {
    const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
    if (!m) throw new Error(`${r.name} reports no ${name}`);
    return Number(m[1]);
  };
  return gauge('sparse_mirror_bucket_uploads_pending') + gauge('sparse_mirror_blob_downloads_in_flight');
}

async function uploadsDrained(timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending = await Promise.all(replicas.filter((r) => r.proc?.child.exitCode === null && r.proc.child.signalCode === null).map(pendingUploads));
    if (pending.every((n) => n === 0)) return;
    if (Date.now() > deadline) throw new Error(`uploads still pending: ${pending.join(', ')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function bucketObjects(under: string): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `mirror/${under}`, ContinuationToken: token }));
    for (const o of page.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0 });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** Every blob object's bytes hash to its key: nothing partial or corrupt ever reached the bucket. */
async function expectBucketBlobsIntact(): Promise<number> {
  const blobs = await bucketObjects('blobs/sha256/');
  for (const b of blobs) {
    const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: b.key }));
    const bytes = Buffer.from(await res.Body!.transformToByteArray());
    expect(`mirror/blobs/sha256/${sha256(bytes).slice('sha256:'.length)}`).toBe(b.key);
  }
  return blobs.length;
}

/**
 * Pulls a cold 48 MiB blob through a replica that does not own it, and sends `signal` to the owner
 * once the client has 8 MiB: the client's status, hash and size, and how often upstream was asked.
 */
async function pullWhileOwner(repo: string, signal: NodeJS.Signals) {
  const image = await pushSinglePlatformImage(registry.url, repo, '1', { layersPerImage: 1, layerSize: 48 * 1024 * 1024, rawLayers: true });
  const layer = image.layers[0]!;
  const owner = replicas.find((r) => r.url === rankMembers(layer.digest, replicas.map((x) => x.url))[0])!;
  const asked = replicas.find((r) => r !== owner)!;
  expect((await get(`${asked.url}/v2/${repo}/manifests/1`, { accept: image.mediaType })).status).toBe(200);
  upstream.reset();
  const got = await new Promise<{ status: number; hash: string; size: number }>((resolve, reject) => {
    request(`${asked.url}/v2/${repo}/blobs/${layer.digest}`, (res) => {
      const h = createHash('sha256');
      let size = 0;
      let sent = false;
      res.on('data', (chunk: Buffer) => {
        h.update(chunk);
        size += chunk.length;
        if (!sent && size > 8 * 1024 * 1024) {
          sent = true;
          owner.proc!.child.kill(signal);
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, hash: `sha256:${h.digest('hex')}`, size }));
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
  const fetches = upstream.requests.filter((r) => r.method === 'GET' && r.url.includes(layer.digest)).length;
  return { owner, asked, image, layer, got, fetches };
}

beforeAll(async () => {
  build = await buildCli();
  registry = await startRegistry();
  // 24 MiB/s: a 64 MiB blob takes ~2.7 s, long enough to act while it streams.
  upstream = await startCountingProxy(registry.url, { bytesPerSecond: 24 * 1024 * 1024 });
  bucket = await freshBucket(s3, 'replicas');
  bucketProxy = await startCountingProxy(rgw.endpoint, { preserveHost: true });
  work = await mkdtemp(join(tmpdir(), 'sm-replicas-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  for (const [i, port] of ports.entries()) {
    const name = 'ABC'[i]!;
    const dataDir = join(work, name);
    const config = await writeConfigFile(join(work, `${name}.mjs`), {
      host: '127.0.0.1',
      dataDir,
      platforms: ['linux/amd64', 'linux/arm64'],
      upstreams: [{ url: upstream.url }],
      storage: {
        s3: {
          endpoint: bucketProxy.url,
          region: rgw.region,
          bucket,
          prefix: 'mirror/',
          forcePathStyle: true,
          ...(name === 'C' ? {} : { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey }),
        },
      },
      cluster: { advertise: urls[i], peers: urls, secret: 'overridden-by-the-environment', probeIntervalMs: 500, peerTimeoutMs: 3000 },
      log: { level: 'debug' },
    });
    replicas.push({ name, url: urls[i]!, host: `127.0.0.1:${port}`, port, dataDir, config });
  }
  await Promise.all(replicas.map(start));
}, 180_000);

afterAll(async () => {
  await stopAll();
  await upstream?.stop();
  await bucketProxy?.stop();
  await registry?.stop();
  await build?.cleanup();
  s3.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('three replicas over one bucket', () => {
  it('serves through B and C, from empty disks, what was pulled through A: no upstream request, byte-exact', async () => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const image = await pushMultiPlatformImage(registry.url, 'app', '1.0', {
      platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'],
      layersPerImage: 2,
      layerSize: 512 * 1024,
    });
    const dest = await mkdtemp(join(work, 'pull-'));
    const viaA = await skopeoCopyToDir(`docker://${a.host}/app:1.0`, join(dest, 'a'), { os: 'linux', arch: 'arm64' });
    expect(viaA.code, viaA.stderr).toBe(0);
    expect(upstream.count('GET', '/blobs/')).toBeGreaterThan(0);
    await uploadsDrained();
    // B starts again as a new replica would: an empty disk (as owner of some blobs it held a few).
    b.proc!.child.kill('SIGTERM');
    await b.proc!.exited;
    await rm(b.dataDir, { recursive: true, force: true });
    await start(b);
    expect(await readdir(b.dataDir, { recursive: true }).then((names) => names.filter((n) => n.startsWith('blobs/sha256/')))).toEqual([]);

    upstream.reset();
    for (const r of [b, c]) {
      const out = await skopeoCopyToDir(`docker://${r.host}/app:1.0`, join(dest, r.name), { os: 'linux', arch: 'arm64' });
      expect(out.code, `${r.name}: ${out.stderr}`).toBe(0);
      expect((await skopeoInspectRaw(`docker://${r.host}/app:1.0`)).equals(image.bytes)).toBe(true);
      const child = image.children.find((ch) => ch.platform?.architecture === 'arm64')!;
      expect((await skopeoInspectRaw(`docker://${r.host}/app@${child.digest}`)).equals(child.bytes)).toBe(true);
    }
    expect(upstream.lines()).toEqual([]);

    // The status page shows the bucket and the replicas, each answering.
    const status = JSON.parse((await get(`${b.url}/api/v1/status`)).body.toString()) as { replicas: { bucket: { name: string; pendingUploads: number }; members: Array<{ url: string; self: boolean; alive: boolean }> } };
    expect(status.replicas.bucket).toMatchObject({ name: bucket, pendingUploads: 0 });
    expect(status.replicas.members.map((x) => [x.url, x.self, x.alive]).sort()).toEqual(replicas.map((r) => [r.url, r === b, true]).sort());
    expect((await get(`${b.url}/`)).body.toString()).toContain('<h2>Replicas</h2>');

    // The allow-list holds from the bucket too: s390x was never stored anywhere, and B says why.
    const refused = await skopeoCopyToDir(`docker://${b.host}/app:1.0`, join(dest, 's390x'), { os: 'linux', arch: 's390x' });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('linux/s390x is not mirrored here');
  });

  it('shares what upstream lists as attached to an image: another replica answers the referrers API without asking upstream', async () => {
    const [a, , c] = replicas as [Replica, Replica, Replica];
    const subject = await pushSinglePlatformImage(registry.url, 'signed', '1', { layersPerImage: 1, layerSize: 1024 });
    // An SBOM-like artifact naming the image as its subject, listed under the spec's fallback tag
    // (distribution 2.8 has no referrers API).
    const blob = Buffer.from('{"sbom":"for the test"}');
    const blobDigest = await pushBlob(registry.url, 'signed', blob);
    const empty = Buffer.from('{}');
    const emptyDigest = await pushBlob(registry.url, 'signed', empty);
    const artifact = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/spdx+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: emptyDigest, size: empty.length },
      layers: [{ mediaType: 'application/spdx+json', digest: blobDigest, size: blob.length }],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    }));
    const artifactDigest = await putManifest(registry.url, 'signed', sha256(artifact), artifact, 'application/vnd.oci.image.manifest.v1+json');
    const fallback = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: artifactDigest, size: artifact.length, artifactType: 'application/spdx+json' }],
    }));
    await putManifest(registry.url, 'signed', `sha256-${subject.digest.slice(7)}`, fallback, 'application/vnd.oci.image.index.v1+json');

    const viaA = await get(`${a.url}/v2/signed/referrers/${subject.digest}`);
    expect(viaA.status).toBe(200);
    expect(JSON.parse(viaA.body.toString()).manifests.map((m: { digest: string }) => m.digest)).toEqual([artifactDigest]);
    expect((await get(`${a.url}/v2/signed/manifests/${artifactDigest}`, { accept: 'application/vnd.oci.image.manifest.v1+json' })).status).toBe(200);
    await uploadsDrained();
    upstream.reset();
    const viaC = await get(`${c.url}/v2/signed/referrers/${subject.digest}`);
    expect(viaC.status).toBe(200);
    expect(viaC.body.equals(viaA.body)).toBe(true);
    const sbom = await get(`${c.url}/v2/signed/manifests/${artifactDigest}`, { accept: 'application/vnd.oci.image.manifest.v1+json' });
    expect(sbom.body.equals(artifact)).toBe(true);
    expect(upstream.lines()).toEqual([]);
  });

  it('30 clients over the three replicas on one cold 64 MiB blob: one upstream fetch, all streaming from the first bytes', async () => {
    const image = await pushSinglePlatformImage(registry.url, 'herd', '1', { layersPerImage: 1, layerSize: 64 * 1024 * 1024, rawLayers: true });
    const layer = image.layers[0]!;
    // Each replica holds the manifest (blobs are served for images a replica knows).
    for (const r of replicas) expect((await get(`${r.url}/v2/herd/manifests/1`, { accept: image.mediaType })).status).toBe(200);
    upstream.reset();
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => get(`${replicas[i % 3]!.url}/v2/herd/blobs/${layer.digest}`)));
    expect(upstream.count('GET', layer.digest)).toBe(1);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(sha256(r.body)).toBe(layer.digest);
    }
    const lastFirstByte = Math.max(...results.map((r) => r.firstByteAt));
    const firstDone = Math.min(...results.map((r) => r.endAt));
    expect(lastFirstByte).toBeLessThan(firstDone);
    expect(firstDone - started).toBeGreaterThan(1500); // the throttled download really streamed
  });

  it('refuses peer requests without a valid signature, and answers signed ones', async () => {
    const a = replicas[0]!;
    const digest = `sha256:${'0'.repeat(64)}`;
    const path = `/_peer/v2/app/blobs/${digest}?ns=${encodeURIComponent(upstream.host)}`;
    upstream.reset();
    const none = await get(`${a.url}${path}`);
    expect(none.status).toBe(401);
    expect(JSON.parse(none.body.toString()).errors[0]).toMatchObject({ code: 'UNAUTHORIZED' });
    const forged = await get(`${a.url}${path}`, { [PEER_HEADER]: signPeerRequest('another-secret-of-some-length', 'GET', path) });
    expect(forged.status).toBe(401);
    expect(forged.body.toString()).toContain('does not match');
    const replayedElsewhere = await get(`${a.url}/_peer/health`, { [PEER_HEADER]: signPeerRequest(SECRET, 'GET', path) });
    expect(replayedElsewhere.status).toBe(401);
    const stale = await get(`${a.url}/_peer/health`, { [PEER_HEADER]: signPeerRequest(SECRET, 'GET', '/_peer/health', Date.now() - 10 * 60_000) });
    expect(stale.status).toBe(401);
    expect(upstream.lines()).toEqual([]);
    const health = await get(`${a.url}/_peer/health`, { [PEER_HEADER]: signPeerRequest(SECRET, 'GET', '/_peer/health') });
    expect(health.status).toBe(200);
    // The client-facing API is not a way in either: a peer header opens nothing there.
    const viaClientRoute = await get(`${a.url}/v2/app/blobs/${digest}`, { [PEER_HEADER]: signPeerRequest(SECRET, 'GET', `/v2/app/blobs/${digest}`) });
    expect(viaClientRoute.status).toBe(404);
    expect(JSON.parse(viaClientRoute.body.toString()).errors[0].code).toBe('BLOB_UNKNOWN');
  });

  it('with the bucket unreachable, serves what each replica holds, fetches the rest from upstream, and loses nothing when it returns', async () => {
    const [, b, c] = replicas as [Replica, Replica, Replica];
    await bucketProxy.down();
    try {
      const dest = await mkdtemp(join(work, 'down-'));
      const held = await skopeoCopyToDir(`docker://${b.host}/app:1.0`, join(dest, 'held'), { os: 'linux', arch: 'arm64' });
      expect(held.code, held.stderr).toBe(0);
      const fresh = await pushSinglePlatformImage(registry.url, 'while-down', '1', { layersPerImage: 2, layerSize: 256 * 1024 });
      const pulled = await skopeoCopyToDir(`docker://${c.host}/while-down:1`, join(dest, 'fresh'), {});
      expect(pulled.code, pulled.stderr).toBe(0);
      const queued = (await Promise.all(replicas.map(pendingUploads))).reduce((x, y) => x + y, 0);
      expect(queued).toBeGreaterThan(0);
      // Neither tier can answer for what C never held: a clear error, not a hang or a crash.
      await upstream.down();
      const missing = await get(`${c.url}/v2/never-pulled/manifests/1`);
      expect(missing.status).toBe(502);
      const message = JSON.parse(missing.body.toString()).errors[0].message as string;
      expect(message).toContain('does not hold it');
      expect(message).toContain('the shared bucket is unreachable too');
      await upstream.up();
      // Still queued while the bucket is away.
      expect(await bucketObjects(`manifests/${upstream.host}/while-down/`)).toEqual([]);
      await bucketProxy.up();
      await uploadsDrained(60_000);
      const manifests = await bucketObjects(`manifests/${upstream.host}/while-down/`);
      expect(manifests.map((m) => m.key)).toContain(`mirror/manifests/${upstream.host}/while-down/sha256/${fresh.digest.slice(7)}`);
      for (const l of fresh.layers) expect((await bucketObjects(`blobs/sha256/${l.digest.slice(7)}`)).length).toBe(1);
    } finally {
      await upstream.up();
      await bucketProxy.up();
    }
  });

  it('with upstream unreachable, a tag another replica recorded long ago still resolves (stale-if-error from the bucket)', async () => {
    const c = replicas[2]!;
    const index = await skopeoInspectRaw(`docker://${replicas[0]!.host}/app:1.0`);
    const body = JSON.stringify({ digest: sha256(index), checkedAt: Date.now() - 30 * 86_400_000 });
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `mirror/tags/${upstream.host}/app/old`, Body: body, ContentType: 'application/json' }));
    await upstream.down();
    try {
      const res = await get(`${c.url}/v2/app/manifests/old`, { accept: 'application/vnd.oci.image.index.v1+json' });
      expect(res.status).toBe(200);
      expect(res.body.equals(index)).toBe(true);
    } finally {
      await upstream.up();
    }
  });

  it('the owner cut off mid-download (frozen: no FIN, no RST): after cluster.peerTimeoutMs the next replica takes over', async () => {
    const { owner, layer, got, fetches } = await pullWhileOwner('frozen', 'SIGSTOP');
    try {
      expect(got).toEqual({ status: 200, hash: layer.digest, size: layer.size });
      expect(fetches).toBeGreaterThanOrEqual(2);
      expect(fetches).toBeLessThanOrEqual(3);
    } finally {
      owner.proc!.child.kill('SIGCONT');
    }
    await uploadsDrained(60_000);
    expect(await expectBucketBlobsIntact()).toBeGreaterThan(0);
  });

  it('the owner killed mid-download (kill -9): the next replica takes over, the client gets the right bytes, the bucket holds nothing partial', async () => {
    const { owner, asked, image, layer, got, fetches } = await pullWhileOwner('killed', 'SIGKILL');
    expect(await owner.proc!.exited).toMatchObject({ signal: 'SIGKILL' });
    expect(got).toEqual({ status: 200, hash: layer.digest, size: layer.size });
    // The replica that took over shows the owner as not answering.
    const members = JSON.parse((await get(`${asked.url}/api/v1/status`)).body.toString()).replicas.members as Array<{ url: string; alive: boolean }>;
    expect(members.find((x) => x.url === owner.url)).toEqual({ url: owner.url, self: false, alive: false });
    // The owner fetched first; after its death another fetch resumed it (allowed), no more.
    expect(fetches).toBeGreaterThanOrEqual(2);
    expect(fetches).toBeLessThanOrEqual(3);

    await uploadsDrained(60_000);
    expect(await expectBucketBlobsIntact()).toBeGreaterThan(0);
    const check = await runCli(build, ['verify'], { config: asked.config });
    expect(check.code, check.stdout + check.stderr).toBe(0);

    // The owner comes back with its store intact and serves the blob (now from the bucket or upstream).
    await start(owner);
    const again = await get(`${owner.url}/v2/killed/manifests/1`, { accept: image.mediaType });
    expect(again.status).toBe(200);
    const blob = await get(`${owner.url}/v2/killed/blobs/${layer.digest}`);
    expect(sha256(blob.body)).toBe(layer.digest);
  });
});
