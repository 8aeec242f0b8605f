// Replicas of sparse-mirror over one S3 bucket (issue 16): a Ceph RADOS Gateway started here (the
// test suite's starter), a fresh bucket, and N `serve` processes that share it, each with its own
// data dir and the others as `cluster.peers`. Also a direct, SigV4-signed curl GET of a bucket
// object, the baseline for what a replica reads from the bucket.
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRgw, type RgwHandle } from '../../test/support/ceph-rgw.js';
import { freshBucket, s3Client } from '../../test/support/s3.js';
import { startSparseMirror, type SparseMirror } from './mirror.js';
import { freePort, tempDir, which } from './procs.js';

export const BUCKET_PREFIX = 'mirror/';
const SECRET = 'sparse-mirror-bench-cluster-secret';
const STOP_GRACE_MS = 5_000;

export interface Replica {
  name: string;
  port: number;
  dataDir: string;
  mirror: SparseMirror;
}

export interface ReplicaSet {
  rgw: RgwHandle;
  bucket: string;
  replicas: Replica[];
  urls: string[];
  /**
   * Stops one replica (SIGTERM, SIGKILL after 5 s), empties its data dir and starts it again: a new
   * replica with an empty disk. Resolves how long the graceful stop took, in milliseconds.
   */
  restartEmpty(r: Replica): Promise<number>;
  /** Waits until no replica has uploads to the bucket pending. */
  uploadsDrained(timeoutMs?: number): Promise<void>;
  /** curl arguments that sign a GET of a bucket object with the S3 user's keys (kept in a curl config file, off the command line). */
  s3CurlArgs: string[];
  /** The URL of a bucket object, path-style. */
  objectUrl(key: string): string;
  stop(): Promise<void>;
}

/** Why replicas cannot run here, or undefined when they can. */
export function replicasUnavailable(): string | undefined {
  const missing = ['radosgw', 'ceph-mon', 'ceph-osd', 'ceph', 'radosgw-admin', 'monmaptool'].filter((b) => !which(b));
  return missing.length ? `Ceph RADOS Gateway is not installed (missing ${missing.join(', ')}; apt-get install ceph-mon ceph-osd radosgw ceph-common)` : undefined;
}

export async function startReplicas(upstream: string, n: number, log: (m: string) => void): Promise<ReplicaSet> {
  const started = performance.now();
  const rgw = await startRgw({ dir: tempDir('rgw') });
  const replicas: Replica[] = [];
  try {
    const s3 = s3Client(rgw);
    const bucket = await freshBucket(s3, 'bench-replicas');
    s3.destroy();
    log(`Ceph RGW ${rgw.endpoint} up in ${((performance.now() - started) / 1000).toFixed(1)} s, bucket ${bucket}`);
    const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    const extraOf = (i: number) => ({
      storage: {
        s3: { endpoint: rgw.endpoint, region: rgw.region, bucket, prefix: BUCKET_PREFIX, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
      },
      cluster: { advertise: urls[i], peers: urls, secret: SECRET, probeIntervalMs: 500 },
    });
    const dataDirs = ports.map((_, i) => join(tempDir(`replica-${'ABC'[i] ?? i}-data`), 'data'));
    const start = (i: number) => startSparseMirror(`replica ${'ABC'[i] ?? i}`, { upstream, port: ports[i], dataDir: dataDirs[i], extra: extraOf(i) });
    for (const [i, mirror] of (await Promise.all(ports.map((_, i) => start(i)))).entries()) {
      replicas.push({ name: 'ABC'[i] ?? String(i), port: ports[i]!, dataDir: dataDirs[i]!, mirror });
    }
    const curlConfig = join(tempDir('s3-curl'), 'curl.conf');
    await writeFile(curlConfig, `user = "${rgw.accessKeyId}:${rgw.secretAccessKey}"\n`, { mode: 0o600 });
    const set: ReplicaSet = {
      rgw,
      bucket,
      replicas,
      urls,
      async restartEmpty(r) {
        const t0 = performance.now();
        await r.mirror.proc.stop(STOP_GRACE_MS);
        const stopMs = performance.now() - t0;
        await rm(r.dataDir, { recursive: true, force: true });
        const i = replicas.indexOf(r);
        r.mirror = await start(i);
        // The others find it back at their next probe; until then they rank without it.
        await new Promise((resolve) => setTimeout(resolve, 1200));
        return stopMs;
      },
      async uploadsDrained(timeoutMs = 120_000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const pending = await Promise.all(replicas.map((r) => pendingUploads(r.mirror.url)));
          if (pending.every((p) => p === 0)) return;
          if (Date.now() > deadline) throw new Error(`uploads to the bucket still pending after ${timeoutMs} ms: ${pending.join(', ')}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      },
      // RGW refuses a SigV4 GET without x-amz-content-sha256 (SignatureDoesNotMatch); curl 7.88 signs the header given here.
      s3CurlArgs: ['-K', curlConfig, '--aws-sigv4', `aws:amz:${rgw.region}:s3`, '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD'],
      objectUrl: (key) => `${rgw.endpoint}/${bucket}/${key}`,
      async stop() {
        await Promise.all(replicas.map((r) => r.mirror.stop()));
        await rgw.stop();
      },
    };
    return set;
  } catch (e) {
    await Promise.all(replicas.map((r) => r.mirror.stop()));
    await rgw.stop();
    throw e;
  }
}

async function pendingUploads(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^sparse_mirror_bucket_uploads_pending (\d+)$/m.exec(text);
  if (!m) throw new Error(`${url}/metrics reports no upload queue`);
  return Number(m[1]);
}
