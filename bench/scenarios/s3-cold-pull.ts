// 3. Cold pull of one platform (linux/amd64) of a 7-platform image with `skopeo copy` to dir:,
// direct from upstream, through the anchor and through sparse-mirror, for each image shape of the
// settings (a row each: a target met on one shape and missed on another is not met). Each round
// uses a new image, so it is cold in both proxies; the rounds go through every order of the three.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { skopeoCopy, warmUpstreamImage } from '../lib/clients.js';
import { permutation, type Ctx, type ImageShape, type Row, type ScenarioResult, type Shared } from '../lib/context.js';
import { pushSevenPlatformIndex, type Index } from '../lib/images.js';
import { groupCpuSeconds, removeDir, tempDir } from '../lib/procs.js';
import { waitSettled } from '../lib/mirror.js';
import { waitStored } from '../lib/registry.js';
import { median, mib, ms, ratio } from '../lib/stats.js';

type Who = 'direct' | 'anchor' | 'sparse';

interface ShapeResult {
  shape: ImageShape;
  times: Record<Who, number[]>;
  /** Per round, the proxy's CPU seconds for the pull (its background store included), per GiB delivered. */
  cpuPerGiB: Record<'anchor' | 'sparse', number[]>;
  byRound: Partial<Record<Who, number>>[];
}

export async function coldPull(ctx: Ctx): Promise<ScenarioResult> {
  const shared = await ctx.shared();
  const { shapes, smallLayer, rounds } = ctx.settings.s3;
  const problems: string[] = [];
  const results: ShapeResult[] = [];
  for (const [i, shape] of shapes.entries()) {
    ctx.log(`shape ${i + 1}/${shapes.length}: ${shape.name}`);
    results.push(await pullShape(ctx, shared, shape, i, smallLayer, rounds, problems));
  }

  const rows: Row[] = [];
  const details: string[] = [
    `Each image: an OCI index of 7 platforms; linux/amd64 has the shape's layers (raw random bytes), the other six one ${mib(smallLayer)} layer each. A new image per round (cold in both proxies). Wall time of \`skopeo copy --override-os linux --override-arch amd64 docker://… dir:…\` (includes skopeo's own start-up, ~the same for all three). ${rounds} rounds per shape, going through the six orders of the three pulls in turn; medians.`,
    'CPU per GiB: user + system seconds of the proxy process and its threads (the kernel\'s rusage counters, read from /proc/<pid>/stat) from just before a pull until it is over and, for the anchor, its background store of the same blobs has finished, divided by the bytes skopeo received.',
    '',
    '| Shape | layers | direct | anchor | sparse-mirror | ÷ direct (per-round median) | ÷ anchor | CPU s/GiB anchor | CPU s/GiB sparse-mirror |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    const m = { direct: median(r.times.direct), anchor: median(r.times.anchor), sparse: median(r.times.sparse) };
    const paired = median(r.byRound.flatMap((t) => (t.sparse && t.direct ? [t.sparse / t.direct] : [])));
    const cpu = { anchor: median(r.cpuPerGiB.anchor), sparse: median(r.cpuPerGiB.sparse) };
    const total = r.shape.layers.reduce((a, b) => a + b, 0);
    const label = `${r.shape.name} (${r.shape.layers.length} layers, ${mib(total)})`;
    rows.push(
      { measure: `skopeo copy, ${label}`, baseline: `direct ${ms(m.direct)}`, sparse: ms(m.sparse), ratio: ratio(m.sparse / m.direct), target: '≤ 1.15× direct', met: m.sparse / m.direct <= 1.15 },
      { measure: 'same, against the anchor', baseline: `anchor ${ms(m.anchor)}`, sparse: ms(m.sparse), ratio: ratio(m.sparse / m.anchor), target: '≤ 1.0× anchor', met: m.sparse / m.anchor <= 1.0 },
      { measure: 'same, proxy CPU seconds per GiB delivered', baseline: `anchor ${cpu.anchor.toFixed(2)} s`, sparse: `${cpu.sparse.toFixed(2)} s`, ratio: ratio(cpu.sparse / cpu.anchor), target: '≤ 1.0× anchor', met: cpu.sparse <= cpu.anchor },
    );
    details.push(
      `| ${r.shape.name} | ${r.shape.layers.map((b) => (b >= 1024 * 1024 ? (b / 1024 / 1024).toFixed(1) : `${(b / 1024).toFixed(0)} KiB`)).join(', ')} | ${ms(m.direct)} | ${ms(m.anchor)} | ${ms(m.sparse)} | ${ratio(m.sparse / m.direct)} (${ratio(paired)}) | ${ratio(m.sparse / m.anchor)} | ${cpu.anchor.toFixed(2)} | ${cpu.sparse.toFixed(2)} |`,
    );
  }
  details.push('');
  for (const r of results) {
    details.push(`Per round, ${r.shape.name}: direct ${r.times.direct.map(ms).join(', ')}; anchor ${r.times.anchor.map(ms).join(', ')}; sparse-mirror ${r.times.sparse.map(ms).join(', ')}.`, '');
  }
  return { id: 3, title: 'Cold pull of one platform of a 7-platform image, on every image shape', rows, details, problems, raw: results };
}

async function pullShape(ctx: Ctx, shared: Shared, shape: ImageShape, shapeIndex: number, smallLayer: number, rounds: number, problems: string[]): Promise<ShapeResult> {
  const { upstream, anchor, mirror } = shared;
  const images: Index[] = [];
  for (let r = 0; r < rounds; r++) {
    images.push(await pushSevenPlatformIndex(upstream.url, `bench/s3-cold-${shapeIndex}-${r}`, 'v1', { bigPlatform: 'linux/amd64', bigLayers: shape.layers, smallLayer }));
  }
  // The push leaves up to GBs of dirty pages in the registry's storage. Written back now, not by
  // the kernel's flusher half a minute later in the middle of some round's pull (any of the three).
  execFileSync('sync');
  const hosts: Record<Who, string> = { direct: upstream.host, anchor: anchor.host, sparse: mirror.host };
  const pids = { anchor: anchor.proc.pid, sparse: mirror.proc.pid };
  const result: ShapeResult = { shape, times: { direct: [], anchor: [], sparse: [] }, cpuPerGiB: { anchor: [], sparse: [] }, byRound: [] };
  const work = tempDir('s3');
  for (let r = 0; r < images.length; r++) {
    const round: Partial<Record<Who, number>> = {};
    result.byRound.push(round);
    const amd64 = images[r]!.children.find((c) => c.platform === 'linux/amd64')!;
    const delivered = amd64.layers.reduce((a, l) => a + l.size, 0);
    await warmUpstreamImage(`docker://${upstream.host}/${images[r]!.repo}:v1`, { os: 'linux', arch: 'amd64' });
    for (const who of permutation(['direct', 'anchor', 'sparse'] as const, r)) {
      const dest = join(work, `${who}-${r}`);
      // The pulls before freed what they wrote, and their clients' memory (and DAMON, where it
      // runs, frees cold pages): filled again, so that no pull's writes land on memory the VM has
      // handed back since (lib/page-cache.ts).
      ctx.fillPageCache();
      try {
        const cpu0 = who === 'direct' ? 0 : await groupCpuSeconds(pids[who]);
        const res = await skopeoCopy(`docker://${hosts[who]}/${images[r]!.repo}:v1`, `dir:${dest}`, { os: 'linux', arch: 'amd64' });
        round[who] = res.ms;
        result.times[who].push(res.ms);
        // distribution stores what it served with a second, background fetch: let it finish first
        // (it is part of its cold path, and it must not overlap the next pull).
        if (who === 'anchor') await waitStored(anchor, amd64.layers);
        if (who !== 'direct') {
          if (who === 'sparse') await waitSettled(mirror.url); // its flushes, renames and records
          result.cpuPerGiB[who].push(((await groupCpuSeconds(pids[who])) - cpu0) / (delivered / 2 ** 30));
        }
        ctx.log(`${shape.name}, round ${r + 1} ${who}: ${ms(res.ms)}`);
      } catch (e) {
        problems.push(`${shape.name}, ${who} round ${r + 1}: ${(e as Error).message}`);
      }
      removeDir(dest);
    }
  }
  removeDir(work);
  return result;
}
