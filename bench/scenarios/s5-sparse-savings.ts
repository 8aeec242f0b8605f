// 5. Sparse savings: 20 images of 7 platforms each. sparse-mirror prefetches them with the
// platforms linux/amd64 and linux/arm64 (`sparse-mirror prefetch`); a full mirror copies every
// platform (`skopeo copy --all`) into a plain docker-registry. For reference, the anchor pulls the
// same two platforms with skopeo. Bytes fetched are counted in the upstream's access log; bytes
// stored are the apparent size of each store directory.
import { join } from 'node:path';
import { skopeoCopy } from '../lib/clients.js';
import type { Ctx, ScenarioResult } from '../lib/context.js';
import { pushMultiPlatformImage } from '../lib/images.js';
import { mirrorCli, writeMirrorConfig } from '../lib/mirror.js';
import { removeDir, run, tempDir } from '../lib/procs.js';
import { accessLines, logMark, logSince, settleLog, startDistribution, waitStored } from '../lib/registry.js';
import { mib, ms, ratio } from '../lib/stats.js';

async function du(dir: string): Promise<number> {
  const r = await run('du', ['-sb', dir]);
  return Number(r.stdout.split(/\s/)[0] ?? NaN);
}

export async function sparseSavings(ctx: Ctx): Promise<ScenarioResult> {
  const { upstream } = await ctx.shared();
  const { images, layersPerPlatform, layerBytes } = ctx.settings.s5;
  const refs: string[] = [];
  const pushedImages: Array<Awaited<ReturnType<typeof pushMultiPlatformImage>>> = [];
  ctx.log(`pushing ${images} images × 7 platforms × ${layersPerPlatform} layers of ${mib(layerBytes)}`);
  for (let i = 0; i < images; i++) {
    const repo = `bench/s5-app-${String(i).padStart(2, '0')}`;
    pushedImages.push(await pushMultiPlatformImage(upstream.url, repo, 'v1', { rawLayers: true, layersPerImage: layersPerPlatform, layerSize: layerBytes }));
    refs.push(`${repo}:v1`);
  }
  const fetchedSince = async (mark: number) => {
    await settleLog(upstream.logFile, 300);
    return accessLines(await logSince(upstream.logFile, mark))
      .filter((l) => l.method === 'GET' && l.status < 300)
      .reduce((a, l) => a + l.bytes, 0);
  };

  // sparse-mirror: prefetch, the CLI, no server needed.
  const work = tempDir('s5');
  const dataDir = join(work, 'sparse-data');
  const config = await writeMirrorConfig(work, { upstream: upstream.url, dataDir, platforms: ['linux/amd64', 'linux/arm64'] });
  let mark = await logMark(upstream.logFile);
  const pre = await mirrorCli(['prefetch', ...refs.map((r) => `${upstream.host}/${r}`)], config);
  if (pre.code !== 0) throw new Error(`prefetch failed (exit ${pre.code}): ${pre.stderr.slice(-800)}`);
  const sparse = { fetched: await fetchedSince(mark), stored: await du(dataDir), blobs: await du(join(dataDir, 'blobs')), ms: pre.ms };
  ctx.log(`sparse-mirror prefetch: ${mib(sparse.fetched)} fetched, ${mib(sparse.stored)} stored, ${ms(pre.ms)}`);

  // The anchor, pulling the same two platforms (a fresh instance, so its store holds only these).
  const anchor = await startDistribution('anchor-s5', { proxy: upstream.url });
  mark = await logMark(upstream.logFile);
  const started = performance.now();
  const pulled: Array<{ digest: string; size: number }> = [];
  for (const [i, ref] of refs.entries()) {
    for (const p of pushedImages[i]!.children) if (/^linux\/(amd64|arm64)$/.test(`${p.platform?.os}/${p.platform?.architecture}`)) pulled.push(...p.layers);
    for (const arch of ['amd64', 'arm64']) {
      const dest = join(work, 'pull');
      await skopeoCopy(`docker://${anchor.host}/${ref}`, `dir:${dest}`, { os: 'linux', arch });
      removeDir(dest);
    }
  }
  await waitStored(anchor, pulled);
  const anchorMs = performance.now() - started;
  const anchorRes = {
    fetched: await fetchedSince(mark),
    stored: await du(anchor.storageDir),
    blobs: await du(join(anchor.storageDir, 'docker', 'registry', 'v2', 'blobs')),
    ms: anchorMs,
  };
  await anchor.stop();

  // A full mirror: every platform into a plain registry.
  const full = await startDistribution('full-mirror-s5');
  mark = await logMark(upstream.logFile);
  const fullStart = performance.now();
  for (const ref of refs) await skopeoCopy(`docker://${upstream.host}/${ref}`, `docker://${full.host}/${ref}`, { all: true });
  const fullRes = {
    fetched: await fetchedSince(mark),
    stored: await du(full.storageDir),
    blobs: await du(join(full.storageDir, 'docker', 'registry', 'v2', 'blobs')),
    ms: performance.now() - fullStart,
  };
  await full.stop();
  removeDir(work);

  // What `ls` would show: the stored platforms per image (spot check on the first).
  const fetchedRatio = sparse.fetched / fullRes.fetched;
  const storedRatio = sparse.stored / fullRes.stored;
  return {
    id: 5,
    title: 'Sparse savings (2 of 7 platforms, 20 images)',
    rows: [
      { measure: 'bytes fetched from upstream', baseline: `full mirror ${mib(fullRes.fetched)}`, sparse: mib(sparse.fetched), ratio: ratio(fetchedRatio), target: '≤ 0.3× full', met: fetchedRatio <= 0.3 },
      { measure: 'bytes stored (whole store dir, incl. SQLite)', baseline: `full mirror ${mib(fullRes.stored)}`, sparse: mib(sparse.stored), ratio: ratio(storedRatio), target: '≤ 0.3× full', met: storedRatio <= 0.3 },
      { measure: 'bytes fetched, against the anchor pulling the same 2 platforms', baseline: `anchor ${mib(anchorRes.fetched)}`, sparse: mib(sparse.fetched), ratio: ratio(sparse.fetched / anchorRes.fetched), target: '(information)' },
    ],
    details: [
      `${images} images, each an OCI index of 7 platforms (${['linux/amd64', 'linux/arm64/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/386', 'linux/ppc64le', 'linux/s390x'].join(', ')}), ${layersPerPlatform} layers of ${mib(layerBytes)} (random) per platform. sparse-mirror carries linux/amd64 and linux/arm64 (which matches linux/arm64/v8). By construction the ideal ratio is 2/7 = 0.29 plus index and config overhead.`,
      '',
      '| Store | fetched from upstream | stored (dir) | of which blobs | time |',
      '|---|---|---|---|---|',
      `| sparse-mirror \`prefetch\` (2 platforms) | ${mib(sparse.fetched)} | ${mib(sparse.stored)} | ${mib(sparse.blobs)} | ${ms(sparse.ms)} |`,
      `| anchor, skopeo pulls of 2 platforms | ${mib(anchorRes.fetched)} | ${mib(anchorRes.stored)} | ${mib(anchorRes.blobs)} | ${ms(anchorRes.ms)} |`,
      `| full mirror, \`skopeo copy --all\` into docker-registry | ${mib(fullRes.fetched)} | ${mib(fullRes.stored)} | ${mib(fullRes.blobs)} | ${ms(fullRes.ms)} |`,
      '',
      'The anchor stores on demand as well, so it is as sparse as the pulls it has served; what it cannot do is prefetch or keep a chosen set of platforms (and a later pull of another platform through it fetches that platform too).',
    ],
    problems: [],
    raw: { sparse, anchor: anchorRes, full: fullRes },
  };
}
