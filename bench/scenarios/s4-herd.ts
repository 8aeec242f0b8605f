// 4. Thundering herd: 50 clients GET the same cold blob at the same moment, through each proxy.
// Upstream fetches are counted in the upstream's access log; every body is hashed.
import { getManifest, herd } from '../lib/clients.js';
import { rotate, type Ctx, type ScenarioResult } from '../lib/context.js';
import { pushImage, type Image } from '../lib/images.js';
import { waitSettled } from '../lib/mirror.js';
import { accessLines, logMark, logSince, settleLog, waitStored } from '../lib/registry.js';
import { median, mib, ms } from '../lib/stats.js';

interface Trial {
  who: 'anchor' | 'sparse';
  round: number;
  upstreamGets: number;
  upstreamHeads: number;
  upstreamBytes: number;
  correct: number;
  wrong: number;
  failed: number;
  ms: number;
}

export async function thunderingHerd(ctx: Ctx): Promise<ScenarioResult> {
  const { upstream, anchor, mirror } = await ctx.shared();
  const { blobBytes, clients } = ctx.settings.s4;
  const rounds = Math.max(1, Math.min(ctx.settings.rounds, 3));
  const images = new Map<string, Image>();
  for (let r = 0; r < rounds; r++) {
    for (const who of ['anchor', 'sparse']) {
      ctx.log(`pushing a ${mib(blobBytes)} blob for ${who}, round ${r + 1}`);
      images.set(`${who}-${r}`, await pushImage(upstream.url, `bench/s4-herd-${who}-${r}`, 'linux/amd64', [blobBytes], 'v1'));
    }
  }
  const trials: Trial[] = [];
  const problems: string[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const who of rotate(['anchor', 'sparse'] as const, r)) {
      const img = images.get(`${who}-${r}`)!;
      const base = who === 'anchor' ? anchor.url : mirror.url;
      const blob = img.layers[0]!;
      // The pull starts with the manifest, as a client's would (sparse-mirror fetches only blobs a stored manifest references).
      await getManifest(base, img.repo, 'v1');
      await getManifest(base, img.repo, img.digest);
      await settleLog(upstream.logFile, 200);
      const mark = await logMark(upstream.logFile);
      const h = await herd(`${base}/v2/${img.repo}/blobs/${blob.digest}`, clients);
      if (who === 'anchor') await waitStored(anchor, [blob]);
      else await waitSettled(mirror.url);
      await settleLog(upstream.logFile, 500);
      const lines = accessLines(await logSince(upstream.logFile, mark)).filter((l) => l.path.endsWith(`/blobs/${blob.digest}`));
      const gets = lines.filter((l) => l.method === 'GET');
      const t: Trial = {
        who,
        round: r + 1,
        upstreamGets: gets.length,
        upstreamHeads: lines.filter((l) => l.method === 'HEAD').length,
        upstreamBytes: gets.reduce((a, l) => a + l.bytes, 0),
        correct: h.bodies.filter((b) => b.status === 200 && b.bytes === blob.size && b.sha256 === blob.digest).length,
        wrong: h.bodies.filter((b) => b.status === 200 && b.bytes === blob.size && b.sha256 !== blob.digest).length,
        failed: h.bodies.filter((b) => b.status !== 200 || b.bytes !== blob.size).length,
        ms: h.ms,
      };
      trials.push(t);
      if (t.correct !== clients) {
        const sample = h.bodies.filter((b) => !(b.status === 200 && b.sha256 === blob.digest)).slice(0, 3);
        problems.push(`${who} round ${r + 1}: ${t.correct}/${clients} correct bodies; e.g. ${sample.map((b) => `HTTP ${b.status} ${b.bytes} bytes ${b.error ?? ''}`).join('; ')}`);
      }
      ctx.log(`round ${r + 1} ${who}: ${t.upstreamGets} upstream GETs, ${t.correct}/${clients} correct, ${ms(t.ms)}`);
    }
  }
  const of = (who: 'anchor' | 'sparse') => trials.filter((t) => t.who === who);
  const sparseGets = of('sparse').map((t) => t.upstreamGets);
  const anchorGets = of('anchor').map((t) => t.upstreamGets);
  const allCorrect = (who: 'anchor' | 'sparse') => of(who).every((t) => t.correct === clients);
  return {
    id: 4,
    title: 'Thundering herd on a cold blob',
    rows: [
      {
        measure: `${clients} simultaneous GETs of a cold ${mib(blobBytes)} blob: upstream blob fetches`,
        baseline: `anchor ${anchorGets.join(', ')}`,
        sparse: sparseGets.join(', '),
        ratio: '—',
        target: 'exactly 1 for sparse-mirror',
        met: sparseGets.every((g) => g === 1),
      },
      {
        measure: 'bodies with the right length and sha256',
        baseline: `anchor ${of('anchor').map((t) => `${t.correct}/${clients}`).join(', ')}`,
        sparse: of('sparse').map((t) => `${t.correct}/${clients}`).join(', '),
        ratio: '—',
        target: `all ${clients}`,
        met: allCorrect('sparse'),
      },
      {
        measure: 'time until the last client has its body (median)',
        baseline: `anchor ${ms(median(of('anchor').map((t) => t.ms)))}`,
        sparse: ms(median(of('sparse').map((t) => t.ms))),
        ratio: `${(median(of('sparse').map((t) => t.ms)) / median(of('anchor').map((t) => t.ms))).toFixed(2)}×`,
        target: '(information)',
      },
    ],
    details: [
      `Each round: a new image per proxy; its manifest is pulled first (as a client would), then ${clients} Node HTTP clients on separate connections GET the blob in the same tick and hash what they receive.`,
      '',
      '| Round | Who | upstream GETs | upstream HEADs | bytes sent by upstream | correct | wrong digest | failed/short | time |',
      '|---|---|---|---|---|---|---|---|---|',
      ...trials.map((t) => `| ${t.round} | ${t.who === 'anchor' ? 'anchor' : 'sparse-mirror'} | ${t.upstreamGets} | ${t.upstreamHeads} | ${mib(t.upstreamBytes)} | ${t.correct} | ${t.wrong} | ${t.failed} | ${ms(t.ms)} |`),
    ],
    problems,
    raw: trials,
  };
}
