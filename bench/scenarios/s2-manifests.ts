// 2. Warm manifest resolution: HEAD and GET of a cached tag and of a cached digest, 64 connections
// (wrk), against the anchor and sparse-mirror, alternating. The tag is within sparse-mirror's TTL
// (default 300 s); distribution asks upstream on every tag request, which the upstream's access
// log shows.
import { ab, getManifest, MANIFEST_ACCEPT, wrk, type WrkResult } from '../lib/clients.js';
import { rotate, type Ctx, type ScenarioResult } from '../lib/context.js';
import { pushSevenPlatformIndex } from '../lib/images.js';
import { accessLines, logMark, logSince, settleLog } from '../lib/registry.js';
import { median, ms, num, ratio } from '../lib/stats.js';

export async function manifestResolution(ctx: Ctx): Promise<ScenarioResult> {
  const { upstream, anchor, mirror } = await ctx.shared();
  const { seconds, connections, rounds } = ctx.settings.s2;
  const repo = 'bench/s2-manifests';
  const index = await pushSevenPlatformIndex(upstream.url, repo, 'v1', { bigPlatform: 'linux/amd64', bigLayers: [4096], smallLayer: 4096 });
  for (const p of [anchor, mirror]) {
    const got = await getManifest(p.url, repo, 'v1');
    if (got.digest !== index.digest) throw new Error(`${p.url} served digest ${got.digest}, upstream has ${index.digest}`);
    await getManifest(p.url, repo, index.digest);
  }
  const variants = [
    { name: 'GET by digest', method: 'GET' as const, ref: index.digest, kind: 'digest' },
    { name: 'HEAD by digest', method: 'HEAD' as const, ref: index.digest, kind: 'digest' },
    { name: 'GET by tag', method: 'GET' as const, ref: 'v1', kind: 'tag' },
    { name: 'HEAD by tag', method: 'HEAD' as const, ref: 'v1', kind: 'tag' },
  ];
  const results: Record<string, { anchor: WrkResult[]; sparse: WrkResult[]; upstreamCalls: { anchor: number[]; sparse: number[] } }> = {};
  const problems: string[] = [];
  for (const v of variants) results[v.name] = { anchor: [], sparse: [], upstreamCalls: { anchor: [], sparse: [] } };
  for (let r = 0; r < rounds; r++) {
    for (const [vi, v] of variants.entries()) {
      for (const who of rotate(['anchor', 'sparse'] as const, r + vi)) {
        const base = who === 'anchor' ? anchor.url : mirror.url;
        const mark = await logMark(upstream.logFile);
        const w = await (v.method === 'HEAD' ? ab : wrk)(`${base}/v2/${repo}/manifests/${v.ref}`, {
          method: v.method as 'GET',
          headers: { Accept: MANIFEST_ACCEPT },
          connections,
          seconds,
        });
        await settleLog(upstream.logFile, 200);
        const calls = accessLines(await logSince(upstream.logFile, mark)).filter((l) => l.path.includes(`/${repo}/manifests/`)).length;
        results[v.name]![who].push(w);
        results[v.name]!.upstreamCalls[who].push(calls);
        if (w.non2xx || w.errors) problems.push(`${who} ${v.name} round ${r + 1}: ${w.non2xx} non-2xx, ${w.errors} socket errors of ${w.requests}`);
        ctx.log(`round ${r + 1} ${v.name} ${who}: ${num(w.rps)} req/s, p50 ${ms(w.p50Ms)}, upstream calls ${calls}`);
      }
    }
  }
  const rows = variants.map((v) => {
    const res = results[v.name]!;
    const a = median(res.anchor.map((x) => x.rps));
    const s = median(res.sparse.map((x) => x.rps));
    const goal = v.kind === 'digest' ? 5 : 10;
    return {
      measure: `${v.name}, ${connections} connections`,
      baseline: `anchor ${num(a)} req/s`,
      sparse: `${num(s)} req/s`,
      ratio: ratio(s / a),
      target: `≥ ${goal}× anchor`,
      met: s / a >= goal,
    };
  });
  const details = [
    `GET: wrk, ${connections} connections, 2 threads. HEAD: ApacheBench (\`ab -k -i\`), ${connections} concurrent keep-alive connections — wrk 4.1 and autocannon 9 both wait for a body after a HEAD response that carries Content-Length (as a registry's does) and complete no request at all; ab's latency percentiles are whole milliseconds. ${seconds} s per run, \`Accept\` listing the four manifest types; ${rounds} round(s), order alternating. The manifest is a 7-platform OCI index (${index.bytes.length} bytes); sparse-mirror's tag TTL is its default, 300 s.`,
    '',
    '| Request | Who | req/s per round | p50 latency (median) | p99 latency (median) | upstream manifest requests per run |',
    '|---|---|---|---|---|---|',
  ];
  for (const v of variants) {
    for (const who of ['anchor', 'sparse'] as const) {
      const res = results[v.name]![who];
      details.push(
        `| ${v.name} | ${who === 'anchor' ? 'anchor' : 'sparse-mirror'} | ${res.map((x) => num(x.rps)).join(', ')} | ${ms(median(res.map((x) => x.p50Ms)))} | ${ms(median(res.map((x) => x.p99Ms)))} | ${results[v.name]!.upstreamCalls[who].join(', ')} |`,
      );
    }
  }
  return { id: 2, title: 'Warm manifest resolution', rows, details, problems, raw: results };
}
