// 1. Warm blob throughput: N concurrent curl clients download one cached blob, from the anchor,
// from sparse-mirror, and from nginx (sendfile) serving sparse-mirror's own copy of the file.
import { join } from 'node:path';
import { curlParallel, getManifest } from '../lib/clients.js';
import { rotate, type Ctx, type ScenarioResult } from '../lib/context.js';
import { pushImage } from '../lib/images.js';
import { startNginx } from '../lib/nginx.js';
import { waitSettled } from '../lib/mirror.js';
import { accessLines, logMark, logSince, settleLog, waitStored } from '../lib/registry.js';
import { gbps, median, mib, ratio } from '../lib/stats.js';
import { groupCpuSeconds } from '../lib/procs.js';

export async function blobThroughput(ctx: Ctx): Promise<ScenarioResult> {
  const { upstream, anchor, mirror } = await ctx.shared();
  const { blobBytes, clients, repeat } = ctx.settings.s1;
  const repo = 'bench/s1-throughput';
  ctx.log(`pushing a ${mib(blobBytes)} layer`);
  const img = await pushImage(upstream.url, repo, 'linux/amd64', [blobBytes], 'v1');
  const blob = img.layers[0]!;
  const hex = blob.digest.slice('sha256:'.length);

  const mark = await logMark(upstream.logFile);
  for (const p of [anchor, mirror]) {
    await getManifest(p.url, repo, 'v1');
    const warm = await curlParallel(`${p.url}/v2/${repo}/blobs/${blob.digest}`, 1, blobBytes);
    if (warm.failures.length) throw new Error(`warming ${p.url}: ${warm.failures.join('; ')}`);
  }
  await waitStored(anchor, [blob]);
  await waitSettled(mirror.url); // its flush and rename (after fetching goes quiet): nginx serves that file
  const file = join(mirror.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
  const nginx = await startNginx(join(mirror.dataDir, 'blobs', 'sha256', hex.slice(0, 2)), hex);
  const urls = {
    anchor: `${anchor.url}/v2/${repo}/blobs/${blob.digest}`,
    sparse: `${mirror.url}/v2/${repo}/blobs/${blob.digest}`,
    nginx: `${nginx.url}/${hex}`,
  };
  const rates: Record<keyof typeof urls, number[]> = { anchor: [], sparse: [], nginx: [] };
  const cpu: Record<keyof typeof urls, number[]> = { anchor: [], sparse: [], nginx: [] };
  const pids = { anchor: anchor.proc.pid, sparse: mirror.proc.pid, nginx: nginx.proc.pid };
  const problems: string[] = [];
  try {
    for (let r = 0; r < ctx.settings.rounds; r++) {
      for (const who of rotate(['anchor', 'sparse', 'nginx'] as const, r)) {
        const c0 = await groupCpuSeconds(pids[who]);
        const d = await curlParallel(urls[who], clients, blobBytes, repeat);
        const c1 = await groupCpuSeconds(pids[who]);
        rates[who].push(d.bytesPerSec);
        cpu[who].push((c1 - c0) / (d.bytes / 2 ** 30));
        if (d.failures.length) problems.push(`${who} round ${r + 1}: ${d.failures.slice(0, 3).join('; ')}`);
        ctx.log(`round ${r + 1} ${who}: ${gbps(d.bytesPerSec)} (${(d.ms / 1000).toFixed(2)} s)`);
      }
    }
  } finally {
    await nginx.stop();
  }
  await settleLog(upstream.logFile);
  const upstreamGets = accessLines(await logSince(upstream.logFile, mark)).filter((l) => l.method === 'GET' && l.path.endsWith(blob.digest)).length;

  const m = { anchor: median(rates.anchor), sparse: median(rates.sparse), nginx: median(rates.nginx) };
  const vsAnchor = m.sparse / m.anchor;
  const vsNginx = m.sparse / m.nginx;
  return {
    id: 1,
    title: 'Warm blob throughput',
    rows: [
      { measure: `${clients} clients × ${mib(blobBytes)} cached blob`, baseline: `anchor ${gbps(m.anchor)}`, sparse: gbps(m.sparse), ratio: ratio(vsAnchor), target: '≥ 1.0× anchor', met: vsAnchor >= 1.0 },
      { measure: 'same, against nginx sendfile of the same file', baseline: `nginx ${gbps(m.nginx)}`, sparse: gbps(m.sparse), ratio: ratio(vsNginx), target: '≥ 0.8× nginx', met: vsNginx >= 0.8 },
    ],
    details: [
      `Clients: ${clients} curl processes started together, each downloading the blob ${repeat === 1 ? 'once' : `${repeat} times`} to /dev/null; throughput = all bytes / wall time of the slowest client. ${ctx.settings.rounds} rounds, order rotated each round.`,
      `Per round (GB/s): anchor ${rates.anchor.map((x) => (x / 1e9).toFixed(2)).join(', ')}; sparse-mirror ${rates.sparse.map((x) => (x / 1e9).toFixed(2)).join(', ')}; nginx ${rates.nginx.map((x) => (x / 1e9).toFixed(2)).join(', ')}.`,
      `Server CPU time per GiB served (user + system, all processes and threads of the server; median): anchor ${median(cpu.anchor).toFixed(2)} s, sparse-mirror ${median(cpu.sparse).toFixed(2)} s, nginx ${median(cpu.nginx).toFixed(2)} s. Less CPU per byte means more throughput once the cores are saturated, whatever else runs on the machine.`,
      `nginx served ${file.replace(mirror.dataDir, '<sparse-mirror store>')} (the file sparse-mirror serves), sendfile on, worker_processes auto.`,
      `Upstream GETs of the blob over the whole scenario: ${upstreamGets} (sparse-mirror fetches a cold blob once; distribution 2.8's proxy fetches it twice, once to stream to the client and once in the background to store it: 3 expected).`,
    ],
    problems,
    raw: { rates, cpu, medians: m, upstreamGets },
  };
}
