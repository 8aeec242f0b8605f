// 3. Cold pull of one platform (linux/amd64) of a 7-platform image with `skopeo copy` to dir:,
// direct from upstream, through the anchor and through sparse-mirror. Each round uses a new
// image, so it is cold in both proxies; the rounds go through every order of the three in turn.
import { join } from 'node:path';
import { skopeoCopy } from '../lib/clients.js';
import { permutation, type Ctx, type ScenarioResult } from '../lib/context.js';
import { pushSevenPlatformIndex, type Index } from '../lib/images.js';
import { removeDir, tempDir } from '../lib/procs.js';
import { waitStored } from '../lib/registry.js';
import { median, mib, ms, ratio } from '../lib/stats.js';

export async function coldPull(ctx: Ctx): Promise<ScenarioResult> {
  const { upstream, anchor, mirror } = await ctx.shared();
  const { bigLayers, smallLayer, rounds } = ctx.settings.s3;
  const images: Index[] = [];
  for (let r = 0; r < rounds; r++) {
    ctx.log(`pushing image ${r + 1}/${rounds}`);
    images.push(await pushSevenPlatformIndex(upstream.url, `bench/s3-cold-${r}`, 'v1', { bigPlatform: 'linux/amd64', bigLayers, smallLayer }));
  }
  const hosts = { direct: upstream.host, anchor: anchor.host, sparse: mirror.host };
  type Who = keyof typeof hosts;
  const byRound: Partial<Record<Who, number>>[] = [];
  const problems: string[] = [];
  const work = tempDir('s3');
  for (let r = 0; r < images.length; r++) {
    const round: Partial<Record<Who, number>> = {};
    byRound.push(round);
    for (const who of permutation(['direct', 'anchor', 'sparse'] as const, r)) {
      const dest = join(work, `${who}-${r}`);
      try {
        const res = await skopeoCopy(`docker://${hosts[who]}/${images[r]!.repo}:v1`, `dir:${dest}`, { os: 'linux', arch: 'amd64' });
        round[who] = res.ms;
        // distribution stores what it served with a second, background fetch: let it finish first.
        if (who === 'anchor') {
          const amd64 = images[r]!.children.find((c) => c.platform === 'linux/amd64')!;
          await waitStored(anchor, amd64.layers);
        }
        ctx.log(`round ${r + 1} ${who}: ${ms(res.ms)}`);
      } catch (e) {
        problems.push(`${who} round ${r + 1}: ${(e as Error).message}`);
      }
      removeDir(dest);
    }
  }
  removeDir(work);
  const timesOf = (who: Who) => byRound.flatMap((t) => (t[who] === undefined ? [] : [t[who]]));
  const times = { direct: timesOf('direct'), anchor: timesOf('anchor'), sparse: timesOf('sparse') };
  const m = { direct: median(times.direct), anchor: median(times.anchor), sparse: median(times.sparse) };
  // The pulls of one round run within seconds of each other: their ratio cancels a slow minute.
  const paired = (who: 'anchor' | 'sparse') => median(byRound.flatMap((t) => (t[who] && t.direct ? [t[who] / t.direct] : [])));
  const total = bigLayers.reduce((a, b) => a + b, 0);
  return {
    id: 3,
    title: 'Cold pull of one platform of a 7-platform image',
    rows: [
      { measure: `skopeo copy linux/amd64 (${bigLayers.length} layers, ${mib(total)})`, baseline: `direct ${ms(m.direct)}`, sparse: ms(m.sparse), ratio: ratio(m.sparse / m.direct), target: '≤ 1.15× direct', met: m.sparse / m.direct <= 1.15 },
      { measure: 'same, against the anchor', baseline: `anchor ${ms(m.anchor)}`, sparse: ms(m.sparse), ratio: ratio(m.sparse / m.anchor), target: '≤ 1.0× anchor', met: m.sparse / m.anchor <= 1.0 },
    ],
    details: [
      `Image: OCI index of 7 platforms; linux/amd64 has layers of ${bigLayers.map((b) => mib(b)).join(', ')} (raw random bytes), the other six one ${mib(smallLayer)} layer each. A new image per round (cold in both proxies). Wall time of \`skopeo copy --override-os linux --override-arch amd64 docker://… dir:…\` (includes skopeo's own start-up, ~the same for all three).`,
      `${images.length} rounds, going through the six orders of the three pulls in turn. Median of the per-round ratios to the direct pull: sparse-mirror ${ratio(paired('sparse'))}, anchor ${ratio(paired('anchor'))} (informational; the target is on the ratio of medians).`,
      `Per round: direct ${times.direct.map(ms).join(', ')}; anchor ${times.anchor.map(ms).join(', ')}; sparse-mirror ${times.sparse.map(ms).join(', ')}.`,
    ],
    problems,
    raw: { times, byRound, medians: m },
  };
}
