// 6. Memory: peak RSS (VmHWM) of a fresh sparse-mirror process while 32 clients pull 32 distinct
// cold 512 MiB blobs through it from a fast synthetic upstream, then under a request flood
// (s6-flood.ts). The anchor is measured the same way for reference.
import { curlEach, getManifest } from '../lib/clients.js';
import type { Ctx, ScenarioResult } from '../lib/context.js';
import { startSparseMirror } from '../lib/mirror.js';
import { memoryOf, removeDir } from '../lib/procs.js';
import { startDistribution, waitStored } from '../lib/registry.js';
import { gbps, mib, ms, ratio } from '../lib/stats.js';
import { startSynthUpstream } from '../lib/synth-upstream.js';
import { requestFlood } from './s6-flood.js';

interface MemRun {
  baselineHwm: number;
  peakHwm: number;
  peakSampledRss: number;
  ms: number;
  bytesPerSec: number;
  failures: string[];
  upstreamGets: number;
}

async function measure(
  pid: number,
  base: string,
  repo: string,
  blobs: Array<{ digest: string; size: number }>,
  settled: () => Promise<unknown> = async () => {},
): Promise<Omit<MemRun, 'upstreamGets'>> {
  const before = await memoryOf(pid);
  let peakSampled = before?.rss ?? 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const m = await memoryOf(pid);
      if (m) peakSampled = Math.max(peakSampled, m.rss);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const d = await curlEach(
    blobs.map((b) => `${base}/v2/${repo}/blobs/${b.digest}`),
    blobs[0]!.size,
  );
  await settled(); // the anchor keeps fetching into its store after the clients are served
  sampling = false;
  await sampler;
  const after = await memoryOf(pid);
  return { baselineHwm: before?.hwm ?? NaN, peakHwm: after?.hwm ?? NaN, peakSampledRss: peakSampled, ms: d.ms, bytesPerSec: d.bytesPerSec, failures: d.failures };
}

export async function memory(ctx: Ctx): Promise<ScenarioResult> {
  const { blobs: count, blobBytes, anchor: withAnchor } = ctx.settings.s6;
  ctx.log(`synthetic upstream: ${count} blobs of ${mib(blobBytes)} (hashing)`);
  const problems: string[] = [];
  const runs: Record<string, MemRun> = {};
  for (const who of withAnchor ? (['sparse', 'anchor'] as const) : (['sparse'] as const)) {
    // A fresh upstream per proxy: new blobs, nothing cached anywhere.
    const up = await startSynthUpstream({ count, size: blobBytes });
    try {
      if (who === 'sparse') {
        const m = await startSparseMirror('s6', { upstream: up.url });
        try {
          await getManifest(m.url, up.repo, up.tag);
          ctx.log(`sparse-mirror: ${count} clients pulling`);
          const r = await measure(m.proc.pid, m.url, up.repo, up.blobs);
          runs.sparse = { ...r, upstreamGets: [...up.gets.entries()].filter(([d]) => up.blobs.some((b) => b.digest === d)).reduce((a, [, n]) => a + n, 0) };
        } finally {
          await m.stop();
          removeDir(m.dataDir);
        }
      } else {
        const a = await startDistribution('anchor-s6', { proxy: up.url });
        try {
          await getManifest(a.url, up.repo, up.tag);
          ctx.log(`anchor: ${count} clients pulling`);
          const r = await measure(a.proc.pid, a.url, up.repo, up.blobs, () => waitStored(a, up.blobs, 600_000));
          runs.anchor = { ...r, upstreamGets: [...up.gets.entries()].filter(([d]) => up.blobs.some((b) => b.digest === d)).reduce((a2, [, n]) => a2 + n, 0) };
        } finally {
          await a.stop();
          removeDir(a.storageDir);
        }
      }
    } finally {
      await up.stop();
    }
    const r = runs[who]!;
    if (r.failures.length) problems.push(`${who}: ${r.failures.length} failed downloads, e.g. ${r.failures.slice(0, 2).join('; ')}`);
    ctx.log(`${who}: VmHWM ${mib(r.peakHwm)} (before ${mib(r.baselineHwm)}), ${gbps(r.bytesPerSec)}`);
  }
  const s = runs.sparse!;
  const a = runs.anchor;
  const LIMIT = 200 * 1024 * 1024;
  const flood = await requestFlood(ctx);
  return {
    id: 6,
    title: 'Memory under concurrent cold pulls and under a request flood',
    rows: [
      {
        measure: `peak RSS (VmHWM), ${count} clients × distinct cold ${mib(blobBytes)} blobs`,
        baseline: a ? `anchor ${mib(a.peakHwm)}` : '—',
        sparse: mib(s.peakHwm),
        ratio: a ? ratio(s.peakHwm / a.peakHwm) : '—',
        target: '< 200 MiB',
        met: s.peakHwm < LIMIT && s.failures.length === 0,
      },
      ...flood.rows,
    ],
    details: [
      `Fresh process per proxy; upstream: an in-process synthetic registry streaming ${count} distinct ${mib(blobBytes)} blobs (digest-correct). Clients: ${count} curl processes, one blob each. VmHWM read from /proc/<pid>/status after the last client finished; RSS also sampled every 100 ms.`,
      '',
      '| Who | VmHWM before clients | VmHWM after | highest sampled RSS | upstream blob GETs | wall time | throughput |',
      '|---|---|---|---|---|---|---|',
      ...Object.entries(runs).map(
        ([who, r]) => `| ${who === 'anchor' ? 'anchor' : 'sparse-mirror'} | ${mib(r.baselineHwm)} | ${mib(r.peakHwm)} | ${mib(r.peakSampledRss)} | ${r.upstreamGets} | ${ms(r.ms)} | ${gbps(r.bytesPerSec)} |`,
      ),
      '',
      ...flood.details,
    ],
    problems: [...problems, ...flood.problems],
    raw: { coldPulls: runs, flood: flood.raw },
  };
}
