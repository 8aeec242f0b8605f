// 8. The WAN: the upstream registry in a network namespace behind a veth pair shaped to 200 Mbit/s
// each way (tbf); the anchor, sparse-mirror and the clients on the host. (a) One cold pull of a
// ~150 MiB single-platform image; (b) ten clients pulling one cold image at once (a CI fleet after
// a release); (c) the same ten, warm. Images are pushed through a loopback twin of the upstream (a
// second docker-registry serving the same storage), so pushing does not cross the link; the twin
// is also (c)'s baseline: a registry on loopback that holds the image.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { getManifest, skopeo, skopeoCopy } from '../lib/clients.js';
import { rotate, type Ctx, type ScenarioResult } from '../lib/context.js';
import { pushImage } from '../lib/images.js';
import { startSparseMirror, waitSettled } from '../lib/mirror.js';
import { createWan, wanUnavailable, type Wan } from '../lib/netns.js';
import { removeDir, tempDir } from '../lib/procs.js';
import { accessLines, logMark, logSince, settleLog, startDistribution, waitStored, type Distribution } from '../lib/registry.js';
import { median, mib, ms, ratio } from '../lib/stats.js';

type Who = 'direct' | 'anchor' | 'sparse';
const WHO: readonly Who[] = ['direct', 'anchor', 'sparse'];
const LABEL: Record<Who | 'loopback', string> = { direct: 'direct', anchor: 'anchor', sparse: 'sparse-mirror', loopback: 'loopback registry' };

interface Blob {
  digest: string;
  size: number;
}

/** A pushed image: its repository (tag v1) and every blob a pull fetches (layers, then config). */
interface TestImage {
  repo: string;
  layers: Blob[];
  blobs: Blob[];
  bytes: number;
}

interface Fleet {
  /** Start of the first client to the end of the last. */
  ms: number;
  /** When each client was done, sorted. */
  each: number[];
  complete: number;
  problems: string[];
}

interface Traffic {
  requests: number;
  blobGets: number;
  blobBytes: number;
  manifestRequests: number;
}

function skipped(why: string): ScenarioResult {
  return {
    id: 8,
    title: 'The WAN',
    rows: [{ measure: `skipped: ${why}`, baseline: '—', sparse: '—', ratio: '—', target: '—' }],
    details: [`**Skipped:** ${why}. The scenario builds a network namespace and shapes a veth pair with tc, as root.`],
    problems: [],
    raw: { skipped: why },
  };
}

export async function wideArea(ctx: Ctx): Promise<ScenarioResult> {
  const why = wanUnavailable();
  if (why) return skipped(why);
  let link: Wan;
  try {
    link = createWan({ rateMbit: ctx.settings.s8.rateMbit });
  } catch (e) {
    return skipped(`could not build the namespace: ${(e as Error).message}`);
  }
  const running: Array<{ stop(): Promise<void>; dir: string }> = [];
  try {
    return await measure(ctx, link, running);
  } finally {
    for (const s of running.reverse()) {
      await s.stop();
      if (s.dir) removeDir(s.dir);
    }
    link.remove();
  }
}

async function measure(ctx: Ctx, link: Wan, running: Array<{ stop(): Promise<void>; dir: string }>): Promise<ScenarioResult> {
  const { layers: layerSizes, rounds, clients } = ctx.settings.s8;
  const upstream = await startDistribution('s8-upstream', { listen: link.nsAddr, wrap: link.exec });
  running.push({ stop: upstream.stop, dir: upstream.storageDir });
  const twin = await startDistribution('s8-twin', { storageDir: upstream.storageDir });
  running.push({ stop: twin.stop, dir: '' });
  const anchor = await startDistribution('s8-anchor', { proxy: upstream.url });
  running.push({ stop: anchor.stop, dir: anchor.storageDir });
  const mirror = await startSparseMirror('s8', { upstream: upstream.url });
  running.push({ stop: mirror.stop, dir: mirror.dataDir });
  ctx.log(`namespace ${link.ns}: upstream ${upstream.url} (twin on loopback ${twin.url}), host end ${link.hostAddr}; anchor ${anchor.url}, sparse-mirror ${mirror.url}`);

  const push = async (repo: string): Promise<TestImage> => {
    const img = await pushImage(twin.url, repo, 'linux/amd64', layerSizes, 'v1');
    const config = (JSON.parse((await getManifest(twin.url, repo, 'v1')).bytes.toString()) as { config: Blob }).config;
    const blobs = [...img.layers, { digest: config.digest, size: config.size }];
    return { repo, layers: img.layers, blobs, bytes: blobs.reduce((a, b) => a + b.size, 0) };
  };
  const cold: Array<Record<Who, TestImage>> = [];
  for (let r = 0; r < rounds; r++) {
    ctx.log(`pushing the images of round ${r + 1}/${rounds} of (a)`);
    const round: Partial<Record<Who, TestImage>> = {};
    for (const who of WHO) round[who] = await push(`bench/s8-a${r}-${who}`);
    cold.push(round as Record<Who, TestImage>);
  }
  ctx.log('pushing the images of (b) and (c)');
  const herd: Partial<Record<Who, TestImage>> = {};
  for (const who of WHO) herd[who] = await push(`bench/s8-b-${who}`);
  const imageBytes = herd.direct!.bytes;
  const hosts: Record<Who, string> = { direct: upstream.host, anchor: anchor.host, sparse: mirror.host };
  const problems: string[] = [];
  const work = tempDir('s8');

  // skopeo's first start and the first connection over the link, out of the measurements.
  await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${upstream.host}/${herd.direct!.repo}:v1`]);

  // (a) One cold pull each; with the default 3 rounds every system goes first once.
  const single: Array<Partial<Record<Who, { ms: number; down: number; blobBytes: number }>>> = [];
  for (let r = 0; r < rounds; r++) {
    const round: (typeof single)[number] = {};
    single.push(round);
    for (const who of rotate([...WHO], r)) {
      const img = cold[r]![who];
      const dest = join(work, `a${r}-${who}`);
      const mark = await logMark(upstream.logFile);
      const before = link.sent().down;
      try {
        const res = await skopeoCopy(`docker://${hosts[who]}/${img.repo}:v1`, `dir:${dest}`);
        // distribution stores what it served with a second, background fetch: let it finish first.
        if (who === 'anchor') await waitStored(anchor, img.layers, 300_000);
        if (who === 'sparse') await waitSettled(mirror.url); // its flushes, after the pull, overlap no other pull
        const bad = await checkDir(dest, img.blobs);
        if (bad) problems.push(`(a) ${LABEL[who]} round ${r + 1}: ${bad}`);
        const t = await traffic(upstream, mark, img.repo);
        round[who] = { ms: res.ms, down: link.sent().down - before, blobBytes: t.blobBytes };
        ctx.log(`(a) round ${r + 1} ${who}: ${ms(res.ms)}, ${mib(t.blobBytes)} from upstream`);
      } catch (e) {
        problems.push(`(a) ${LABEL[who]} round ${r + 1}: ${(e as Error).message}`);
      }
      removeDir(dest);
    }
  }
  const singleOf = (who: Who, k: 'ms' | 'down' | 'blobBytes') => single.flatMap((t) => (t[who] ? [t[who][k]] : []));
  const one = { direct: median(singleOf('direct', 'ms')), anchor: median(singleOf('anchor', 'ms')), sparse: median(singleOf('sparse', 'ms')) };

  // (b) Ten clients at once on a cold image, one round per system.
  const cold10: Partial<Record<Who, Fleet & Traffic & { down: number }>> = {};
  for (const who of WHO) {
    const img = herd[who]!;
    const mark = await logMark(upstream.logFile);
    const before = link.sent().down;
    ctx.log(`(b) ${clients} clients through ${LABEL[who]}`);
    const f = await fleet(`docker://${hosts[who]}/${img.repo}:v1`, clients, img.blobs, join(work, `b-${who}`));
    if (who === 'anchor' && f.complete > 0) await waitStored(anchor, img.layers, 600_000).catch((e: Error) => problems.push(`(b) anchor: ${e.message}`));
    if (who === 'sparse') await waitSettled(mirror.url).catch((e: Error) => problems.push(`(b) sparse-mirror: ${e.message}`));
    const t = await traffic(upstream, mark, img.repo);
    cold10[who] = { ...f, ...t, down: link.sent().down - before };
    problems.push(...f.problems.map((p) => `(b) ${LABEL[who]}: ${p}`));
    ctx.log(`(b) ${who}: last done ${ms(f.ms)}, ${f.complete}/${clients} complete, ${mib(t.blobBytes)} from upstream`);
  }

  // (c) The same ten clients on the warm proxies; the baseline is the twin on loopback serving the same image.
  type Warm = 'loopback' | 'sparse' | 'anchor';
  const warmSrc: Record<Warm, string> = {
    loopback: `docker://${twin.host}/${herd.sparse!.repo}:v1`,
    sparse: `docker://${mirror.host}/${herd.sparse!.repo}:v1`,
    anchor: `docker://${anchor.host}/${herd.anchor!.repo}:v1`,
  };
  const warmMark = await logMark(upstream.logFile);
  const warm: Array<Partial<Record<Warm, Fleet>>> = [];
  for (let r = 0; r < rounds; r++) {
    const round: Partial<Record<Warm, Fleet>> = {};
    warm.push(round);
    for (const who of rotate(['loopback', 'sparse', 'anchor'] as const, r)) {
      const f = await fleet(warmSrc[who], clients, herd[who === 'anchor' ? 'anchor' : 'sparse']!.blobs, join(work, `c${r}-${who}`));
      round[who] = f;
      problems.push(...f.problems.map((p) => `(c) ${LABEL[who]} round ${r + 1}: ${p}`));
      ctx.log(`(c) round ${r + 1} ${who}: last done ${ms(f.ms)}, ${f.complete}/${clients} complete`);
    }
  }
  const warmUp = { sparse: await traffic(upstream, warmMark, herd.sparse!.repo), anchor: await traffic(upstream, warmMark, herd.anchor!.repo) };
  removeDir(work);
  const warmOf = (who: Warm) => warm.flatMap((t) => (t[who] ? [t[who].ms] : []));
  const w = { loopback: median(warmOf('loopback')), sparse: median(warmOf('sparse')), anchor: median(warmOf('anchor')) };
  const b = (who: Who) => cold10[who]!;
  const completeCold = (who: Who) => `${b(who).complete}/${clients}`;
  const completeWarm = (who: Warm) => warm.map((t) => `${t[who]?.complete ?? 0}/${clients}`).join(', ');
  const allComplete = b('sparse').complete === clients && warm.every((t) => t.sparse?.complete === clients);
  const images = (bytes: number) => `${(bytes / imageBytes).toFixed(2)} images`;
  const rate = link.shaping.rate.replace('mbit', ' Mbit/s');

  return {
    id: 8,
    title: 'The WAN',
    rows: [
      { measure: `(a) one cold pull, ${mib(imageBytes)}, upstream behind ${rate}`, baseline: `direct ${ms(one.direct)}`, sparse: ms(one.sparse), ratio: ratio(one.sparse / one.direct), target: '≤ 1.05× direct', met: one.sparse / one.direct <= 1.05 },
      { measure: '(a) same, against the anchor', baseline: `anchor ${ms(one.anchor)}`, sparse: ms(one.sparse), ratio: ratio(one.sparse / one.anchor), target: '(information)' },
      { measure: `(b) ${clients} clients at once on a cold image: last one done`, baseline: `one direct pull ${ms(one.direct)}`, sparse: ms(b('sparse').ms), ratio: ratio(b('sparse').ms / one.direct), target: '≤ 1.3× one direct pull', met: b('sparse').ms / one.direct <= 1.3 },
      { measure: `(b) same, ${clients} clients direct and through the anchor`, baseline: `direct ${ms(b('direct').ms)}, anchor ${ms(b('anchor').ms)}`, sparse: ms(b('sparse').ms), ratio: `${ratio(b('sparse').ms / b('direct').ms)} direct, ${ratio(b('sparse').ms / b('anchor').ms)} anchor`, target: '(information)' },
      { measure: '(b) blob bytes sent by upstream', baseline: `direct ${mib(b('direct').blobBytes)}, anchor ${mib(b('anchor').blobBytes)}`, sparse: mib(b('sparse').blobBytes), ratio: images(b('sparse').blobBytes), target: `one image (${mib(imageBytes)})`, met: b('sparse').blobBytes === imageBytes },
      { measure: '(b, c) complete pulls (skopeo exit 0, every blob\'s size and sha256)', baseline: `direct ${completeCold('direct')}; anchor ${completeCold('anchor')}, warm ${completeWarm('anchor')}`, sparse: `${completeCold('sparse')}, warm ${completeWarm('sparse')}`, ratio: '—', target: `all ${clients}`, met: allComplete },
      { measure: `(c) the same ${clients} clients, warm: last one done`, baseline: `loopback registry ${ms(w.loopback)}`, sparse: ms(w.sparse), ratio: ratio(w.sparse / w.loopback), target: '≤ 1.15× loopback', met: w.sparse / w.loopback <= 1.15 },
      { measure: '(c) same, through the warm anchor', baseline: `anchor ${ms(w.anchor)}`, sparse: ms(w.sparse), ratio: ratio(w.sparse / w.anchor), target: '(information)' },
      { measure: '(c) upstream requests / blob bytes while warm', baseline: `anchor ${warmUp.anchor.requests} / ${mib(warmUp.anchor.blobBytes)}`, sparse: `${warmUp.sparse.requests} / ${mib(warmUp.sparse.blobBytes)}`, ratio: '—', target: '0 bytes', met: warmUp.sparse.blobBytes === 0 },
    ],
    details: [
      `Link: the upstream docker-registry runs in network namespace \`${link.ns}\` at ${link.nsAddr}; the host end of the veth pair is ${link.hostAddr}/30. Both ends are shaped, \`tc qdisc add dev … root tbf rate ${link.shaping.rate} burst ${link.shaping.burst} latency ${link.shaping.latency}\` (tbf adds no delay: its latency is the longest a packet may queue, so the round trip stays a veth's). The namespace has no default route. The anchor (\`proxy.remoteurl\` ${upstream.url}), sparse-mirror and the skopeo clients run on the host, on loopback.`,
      `Image: single-platform OCI manifest (linux/amd64) with layers of ${layerSizes.map(mib).join(', ')} (raw random bytes); ${mib(imageBytes)} of blobs with the config. A new repository per system and part, so every first pull is cold. Pushed through a second docker-registry on loopback that serves the upstream's storage (the twin), so pushes do not cross the link.`,
      `Clients: \`skopeo copy docker://… dir:…\` (wall time, skopeo's start-up included); every blob of every pull is checked for size and sha256 afterwards.`,
      '',
      `(a) ${rounds} rounds, the order rotating. Per round: ${WHO.map((who) => `${LABEL[who]} ${singleOf(who, 'ms').map(ms).join(', ')}`).join('; ')}. The direct pull moves ${((imageBytes / one.direct) * 1000 / 1e6).toFixed(1)} MB/s of the link's ${(ctx.settings.s8.rateMbit / 8).toFixed(1)}. Blob bytes sent by upstream per pull (median): ${WHO.map((who) => `${LABEL[who]} ${mib(median(singleOf(who, 'blobBytes')))}`).join(', ')}; bytes across the link ns → host (with TCP/IP headers): ${WHO.map((who) => `${LABEL[who]} ${mib(median(singleOf(who, 'down')))}`).join(', ')}.`,
      '',
      `(b) ${clients} skopeo processes started at once per system, one round each:`,
      '',
      '| | first done | median | last done | upstream blob GETs | upstream blob bytes | across the link ns → host | upstream manifest requests | complete |',
      '|---|---|---|---|---|---|---|---|---|',
      ...WHO.map((who) => {
        const f = b(who);
        return `| ${LABEL[who]} | ${ms(f.each[0] ?? NaN)} | ${ms(median(f.each))} | ${ms(f.ms)} | ${f.blobGets} | ${mib(f.blobBytes)} (${images(f.blobBytes)}) | ${mib(f.down)} | ${f.manifestRequests} | ${f.complete}/${clients} |`;
      }),
      '',
      `(c) ${rounds} rounds, the order rotating; last one done per round: ${(['loopback', 'sparse', 'anchor'] as const).map((who) => `${LABEL[who]} ${warmOf(who).map(ms).join(', ')}`).join('; ')}. The loopback registry is the twin serving the image sparse-mirror pulled in (b); direct has nothing to warm (its ten clients take as long as in (b)). Upstream requests while warm: sparse-mirror ${warmUp.sparse.requests} (${warmUp.sparse.manifestRequests} for manifests, ${mib(warmUp.sparse.blobBytes)} of blobs), anchor ${warmUp.anchor.requests} (${warmUp.anchor.manifestRequests} for manifests, ${mib(warmUp.anchor.blobBytes)} of blobs).`,
    ],
    problems,
    raw: { link: { ns: link.ns, hostAddr: link.hostAddr, nsAddr: link.nsAddr, shaping: link.shaping }, imageBytes, single, cold10, warm, warmUpstream: warmUp },
  };
}

/** `n` skopeo pulls of `src` started at once, each into its own dir: and checked afterwards. */
async function fleet(src: string, n: number, blobs: Blob[], work: string): Promise<Fleet> {
  await mkdir(work, { recursive: true });
  const started = performance.now();
  const runs = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const dest = join(work, `client-${i}`);
      const error = await skopeoCopy(src, `dir:${dest}`).then(
        () => undefined,
        (e: Error) => e.message,
      );
      return { dest, ms: performance.now() - started, error };
    }),
  );
  const total = performance.now() - started;
  const problems: string[] = [];
  for (const r of runs) {
    const bad = r.error ?? (await checkDir(r.dest, blobs));
    if (bad) problems.push(bad);
  }
  removeDir(work);
  return { ms: total, each: runs.map((r) => r.ms).sort((x, y) => x - y), complete: n - problems.length, problems };
}

/** What a dir: destination lacks, or undefined: every blob there with its size and sha256. */
async function checkDir(dir: string, blobs: Blob[]): Promise<string | undefined> {
  for (const b of blobs) {
    const file = join(dir, b.digest.slice('sha256:'.length));
    const size = await stat(file).then(
      (s) => s.size,
      () => -1,
    );
    if (size !== b.size) return `${b.digest}: ${size < 0 ? 'missing' : `${size} bytes`}, expected ${b.size}`;
    const h = createHash('sha256');
    for await (const c of createReadStream(file)) h.update(c as Buffer);
    if (`sha256:${h.digest('hex')}` !== b.digest) return `${b.digest}: wrong sha256`;
  }
  return undefined;
}

/** What the upstream served for `repo` since `mark` (its access log, once it has gone quiet). */
async function traffic(upstream: Distribution, mark: number, repo: string): Promise<Traffic> {
  await settleLog(upstream.logFile, 500);
  const lines = accessLines(await logSince(upstream.logFile, mark)).filter((l) => l.path.startsWith(`/v2/${repo}/`));
  const blobGets = lines.filter((l) => l.method === 'GET' && l.path.includes('/blobs/'));
  return {
    requests: lines.length,
    blobGets: blobGets.length,
    blobBytes: blobGets.reduce((a, l) => a + l.bytes, 0),
    manifestRequests: lines.filter((l) => l.path.includes('/manifests/')).length,
  };
}
