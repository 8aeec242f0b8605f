// Diagnostic, not a scenario: one client's cold GET of a blob, with curl into /dev/null, so that
// the mirror's own cold path (upstream → hash → temp file → client) is measured without a client's
// costs on top. Per blob size: the direct GET, then each build's cold GET, then its warm GET;
// first byte and whole body, medians over ROUNDS new blobs.
//   BUILDS='new;base=/tmp/base/dist/src/cli.js' SIZES_MIB=8,32,128 ROUNDS=5 node dist-bench/bench/probe/cold-get.js
import { getManifest } from '../lib/clients.js';
import { pushImage } from '../lib/images.js';
import { startSparseMirror } from '../lib/mirror.js';
import { removeAllTemp, run, stopAll } from '../lib/procs.js';
import { startDistribution } from '../lib/registry.js';
import { median } from '../lib/stats.js';

const MIB = 1024 * 1024;
const builds = (process.env.BUILDS ?? 'new').split(';').map((b) => {
  const [name, cli] = b.split('=');
  return { name: name!, cli: cli || undefined };
});
const sizes = (process.env.SIZES_MIB ?? '8,32,128').split(',').map((m) => Number(m) * MIB);
const rounds = Number(process.env.ROUNDS ?? 5);

/** curl's time to first byte and to the end, in ms. */
async function get(url: string, size: number): Promise<{ first: number; total: number }> {
  const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_starttransfer} %{time_total}', url]);
  const [code, bytes, first, total] = r.stdout.trim().split(' ');
  if (code !== '200' || Number(bytes) !== size) throw new Error(`GET ${url}: HTTP ${code}, ${bytes} of ${size} bytes`);
  return { first: Number(first) * 1000, total: Number(total) * 1000 };
}

const upstream = await startDistribution('cold-get-upstream');
// Read-ahead off: each GET is the only download running.
const mirrors = await Promise.all(builds.map((b) => startSparseMirror(`cold-get-${b.name}`, { upstream: upstream.url, cli: b.cli, extra: { blobs: { readAhead: false } } })));
try {
  for (const size of sizes) {
    const times = new Map<string, Array<{ first: number; total: number }>>();
    const add = (k: string, t: { first: number; total: number }) => times.set(k, [...(times.get(k) ?? []), t]);
    for (let r = 0; r < rounds; r++) {
      const img = await pushImage(upstream.url, `probe/cold-get-${size}-${r}`, 'linux/amd64', [size], 'v1');
      const path = `/v2/${img.repo}/blobs/${img.layers[0]!.digest}`;
      add('direct', await get(`${upstream.url}${path}`, size));
      for (const [i, m] of mirrors.entries()) {
        await getManifest(m.url, img.repo, 'v1'); // as a client would first: the mirror learns of the blob
        add(`${builds[i]!.name} cold`, await get(`${m.url}${path}`, size));
        add(`${builds[i]!.name} warm`, await get(`${m.url}${path}`, size));
      }
    }
    const line = [...times].map(([k, ts]) => {
      const total = median(ts.map((t) => t.total));
      return `${k} ${median(ts.map((t) => t.first)).toFixed(1)}/${total.toFixed(0)} ms (${((size / MIB / total) * 1000).toFixed(0)} MiB/s)`;
    });
    console.log(`${size / MIB} MiB, first byte/whole body: ${line.join('; ')}`);
  }
} finally {
  await stopAll();
  removeAllTemp();
}
