// Diagnostic, not a scenario: what bounds scenario 8 (b), ten clients on one cold image over the
// shaped link. The same fleet runs with clients of different costs: skopeo into dirs on disk (as
// in 8 b), skopeo into dirs in memory (/dev/shm: no fsync to wait for), and curl fetching the blobs
// into /dev/null (no hashing, no files). Each against one direct pull by the same kind of client.
//   KINDS=skopeo-disk,skopeo-shm,curl CLIENTS=10 node dist-bench/bench/probe/fleet.js   (as root)
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { getManifest, skopeo, skopeoCopy } from '../lib/clients.js';
import { settingsFromEnv } from '../lib/context.js';
import { pushImage } from '../lib/images.js';
import { startSparseMirror } from '../lib/mirror.js';
import { createWan, wanUnavailable } from '../lib/netns.js';
import { removeAllTemp, removeDir, run, stopAll, tempDir } from '../lib/procs.js';
import { startDistribution } from '../lib/registry.js';
import { median } from '../lib/stats.js';

type Kind = 'skopeo-disk' | 'skopeo-shm' | 'curl';
const kinds = (process.env.KINDS ?? 'skopeo-disk,skopeo-shm,curl').split(',') as Kind[];
const clients = Number(process.env.CLIENTS ?? 10);
const { layers, rateMbit } = settingsFromEnv().s8;

const why = wanUnavailable();
if (why) {
  console.log(`skipped: ${why}`);
  process.exit(0);
}
const link = createWan({ rateMbit });
try {
  const upstream = await startDistribution('fleet-upstream', { listen: link.nsAddr, wrap: link.exec });
  const twin = await startDistribution('fleet-twin', { storageDir: upstream.storageDir });
  const mirror = await startSparseMirror('fleet', { upstream: upstream.url });
  let n = 0;
  const image = async () => {
    const repo = `probe/fleet-${n++}`;
    const img = await pushImage(twin.url, repo, 'linux/amd64', layers, 'v1');
    const config = (JSON.parse((await getManifest(twin.url, repo, 'v1')).bytes.toString()) as { config: { digest: string } }).config;
    return { repo, blobs: [...img.layers.map((l) => l.digest), config.digest] };
  };
  // One client pull of `repo` from `host`, of the given kind; resolves with its wall time.
  const pull = async (kind: Kind, host: string, img: { repo: string; blobs: string[] }, i: number): Promise<number> => {
    const t0 = performance.now();
    if (kind === 'curl') {
      const urls = img.blobs.flatMap((d) => ['-o', '/dev/null', `http://${host}/v2/${img.repo}/blobs/${d}`]);
      const r = await run('curl', ['-sf', `http://${host}/v2/${img.repo}/manifests/v1`, '-o', '/dev/null', ...urls], { timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`curl failed: ${r.code}`);
    } else {
      const base = kind === 'skopeo-shm' ? '/dev/shm' : tempDir('fleet');
      const dest = join(base, `fleet-${process.pid}-${img.repo.replace('/', '-')}-${i}`);
      mkdirSync(dest, { recursive: true });
      try {
        await skopeoCopy(`docker://${host}/${img.repo}:v1`, `dir:${dest}`);
      } finally {
        removeDir(dest);
      }
    }
    return performance.now() - t0;
  };
  await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${upstream.host}/${(await image()).repo}:v1`]);
  for (const kind of kinds) {
    const direct = await pull(kind, upstream.host, await image(), 0);
    const img = await image();
    const t0 = performance.now();
    const each = await Promise.all(Array.from({ length: clients }, (_, i) => pull(kind, mirror.host, img, i)));
    const last = performance.now() - t0;
    each.sort((a, b) => a - b);
    console.log(
      `${kind}: one direct pull ${(direct / 1000).toFixed(2)} s; ${clients} through sparse-mirror: first ${(each[0]! / 1000).toFixed(2)} s, ` +
        `median ${(median(each) / 1000).toFixed(2)} s, last ${(last / 1000).toFixed(2)} s = ${(last / direct).toFixed(2)}× the direct pull`,
    );
  }
} finally {
  await stopAll();
  removeAllTemp();
  link.remove();
}
