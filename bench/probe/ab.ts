// Diagnostic, not a scenario: scenario 3's cold skopeo pull, direct against several variants of
// sparse-mirror started side by side (each its own process, with its own environment and config
// keys), the order rotating each round, per-round ratios to the direct pull and each variant's CPU.
// A/B runs of the cold path find their answer here in minutes instead of a full bench run.
//   VARIANTS='base||{};no-read-ahead||{"blobs":{"readAhead":false}}' SHAPES=3,2 ROUNDS=12 \
//     node dist-bench/bench/probe/ab.js
// A variant is name|ENV=value,…|{config keys}; SHAPES are scenario 3's, by number (bench/lib/context.ts).
import { join } from 'node:path';
import { skopeoCopy } from '../lib/clients.js';
import { SHAPES, shapeLayers } from '../lib/context.js';
import { pushSevenPlatformIndex } from '../lib/images.js';
import { startDistribution } from '../lib/registry.js';
import { startSparseMirror } from '../lib/mirror.js';
import { median } from '../lib/stats.js';
import { groupCpuSeconds, removeDir, stopAll, tempDir, removeAllTemp } from '../lib/procs.js';

const variants = (process.env.VARIANTS ?? 'base||{}').split(';').map((v) => {
  const [name, env, extra] = v.split('|');
  return { name: name!, env: Object.fromEntries((env ?? '').split(',').filter(Boolean).map((kv) => kv.split('='))), extra: JSON.parse(extra || '{}') };
});
const rounds = Number(process.env.ROUNDS ?? 6);
const upstream = await startDistribution('upstream');
const mirrors = await Promise.all(variants.map((v) => startSparseMirror(v.name, { upstream: upstream.url, env: v.env, extra: v.extra })));
const work = tempDir('probe');
try {
  for (const shapeName of (process.env.SHAPES ?? '3').split(',')) {
    const shape = shapeLayers(SHAPES[Number(shapeName) - 1]!);
    const ratios: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]));
    const cpus: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]));
    // every variant's code paths once, so that no round pays for the JIT
    const warm = await pushSevenPlatformIndex(upstream.url, `probe/${shapeName}-warm`, 'v1', { bigPlatform: 'linux/amd64', bigLayers: [4 << 20, 4 << 20], smallLayer: 262144 });
    for (const m of mirrors) { await skopeoCopy(`docker://${m.host}/${warm.repo}:v1`, `dir:${join(work, 'w')}`, { os: 'linux', arch: 'amd64' }); removeDir(join(work, 'w')); }
    for (let r = 0; r < rounds; r++) {
      const img = await pushSevenPlatformIndex(upstream.url, `probe/${shapeName}-${r}`, 'v1', { bigPlatform: 'linux/amd64', bigLayers: shape, smallLayer: 262144 });
      const t: Record<string, number> = {};
      const order = ['direct', ...variants.map((v) => v.name)];
      for (let k = 0; k < r % order.length; k++) order.push(order.shift()!);
      for (const who of order) {
        const m = mirrors[variants.findIndex((v) => v.name === who)];
        const cpu0 = m ? await groupCpuSeconds(m.proc.pid) : 0;
        const res = await skopeoCopy(`docker://${m ? m.host : upstream.host}/${img.repo}:v1`, `dir:${join(work, who + r)}`, { os: 'linux', arch: 'amd64' });
        t[who] = res.ms;
        removeDir(join(work, who + r));
        await new Promise((res) => setTimeout(res, 100));
        if (m) cpus[who]!.push(((await groupCpuSeconds(m.proc.pid)) - cpu0) * 1000);
      }
      for (const v of variants) ratios[v.name]!.push(t[v.name]! / t.direct!);
      console.log(`${shapeName} round ${r}: ` + Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', '));
    }
    console.log(`${shapeName} median ÷ direct: ` + variants.map((v) => `${v.name} ${median(ratios[v.name]!).toFixed(2)} (cpu ${median(cpus[v.name]!).toFixed(0)} ms)`).join(', '));
  }
} finally {
  await stopAll();
  removeAllTemp();
}
