// 6b. Memory under a request flood: peak RSS (VmHWM) of a fresh proxy process after a minute of
// 64-connection wrk on one cached tag, the load of a CI fleet resolving the same image. Measured
// for sparse-mirror and for the anchor, one after the other, each its own fresh process.
import { getManifest, MANIFEST_ACCEPT, wrk, type WrkResult } from '../lib/clients.js';
import type { Ctx, Row } from '../lib/context.js';
import { pushSevenPlatformIndex } from '../lib/images.js';
import { startSparseMirror } from '../lib/mirror.js';
import { memoryOf, removeDir } from '../lib/procs.js';
import { startDistribution } from '../lib/registry.js';
import { mib, num, ratio } from '../lib/stats.js';

interface FloodRun {
  before: number;
  hwm: number;
  rss: number;
  wrk: WrkResult;
}

export async function requestFlood(ctx: Ctx): Promise<{ rows: Row[]; details: string[]; problems: string[]; raw: unknown }> {
  const { upstream } = await ctx.shared();
  const { floodSeconds: seconds } = ctx.settings.s6;
  const connections = 64;
  const repo = 'bench/s6-flood';
  await pushSevenPlatformIndex(upstream.url, repo, 'v1', { bigPlatform: 'linux/amd64', bigLayers: [4096], smallLayer: 4096 });
  const runs: Partial<Record<'sparse' | 'anchor', FloodRun>> = {};
  const problems: string[] = [];
  for (const who of ['sparse', 'anchor'] as const) {
    const proxy = who === 'sparse' ? await startSparseMirror('s6-flood', { upstream: upstream.url }) : await startDistribution('anchor-s6-flood', { proxy: upstream.url });
    try {
      await getManifest(proxy.url, repo, 'v1');
      const before = (await memoryOf(proxy.proc.pid))?.hwm ?? NaN;
      ctx.log(`${who}: wrk, ${connections} connections × ${seconds} s on one tag`);
      const w = await wrk(`${proxy.url}/v2/${repo}/manifests/v1`, { method: 'GET', headers: { Accept: MANIFEST_ACCEPT }, connections, seconds });
      const after = await memoryOf(proxy.proc.pid);
      runs[who] = { before, hwm: after?.hwm ?? NaN, rss: after?.rss ?? NaN, wrk: w };
      if (w.non2xx || w.errors) problems.push(`${who}: ${w.non2xx} non-2xx responses, ${w.errors} socket errors`);
      ctx.log(`${who}: VmHWM ${mib(runs[who]!.hwm)} (before ${mib(before)}), ${num(w.rps)} req/s`);
    } finally {
      await proxy.stop();
      removeDir('dataDir' in proxy ? proxy.dataDir : proxy.storageDir);
    }
  }
  const s = runs.sparse!;
  const a = runs.anchor!;
  return {
    rows: [
      {
        measure: `peak RSS (VmHWM) after ${seconds} s of ${connections}-connection wrk on one tag`,
        baseline: `anchor ${mib(a.hwm)}`,
        sparse: mib(s.hwm),
        ratio: ratio(s.hwm / a.hwm),
        target: '< 200 MiB',
        met: s.hwm < 200 * 1024 * 1024 && s.wrk.non2xx === 0 && s.wrk.errors === 0,
      },
    ],
    details: [
      `Request flood: a fresh process per proxy, the tag fetched once, then wrk with ${connections} connections for ${seconds} s on GET by tag (\`Accept\` listing the four manifest types); VmHWM from /proc/<pid>/status before and after.`,
      '',
      '| Who | VmHWM before | VmHWM after | RSS after | req/s |',
      '|---|---|---|---|---|',
      ...Object.entries(runs).map(([who, r]) => `| ${who === 'anchor' ? 'anchor' : 'sparse-mirror'} | ${mib(r.before)} | ${mib(r.hwm)} | ${mib(r.rss)} | ${num(r.wrk.rps)} |`),
    ],
    problems,
    raw: runs,
  };
}
