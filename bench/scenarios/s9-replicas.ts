// 9. Replicas over one bucket (issue 16): three sparse-mirror replicas sharing a Ceph RGW bucket,
// in front of the same upstream as the single node.
//   (a) warm blob throughput through one replica from its local tier, against the single node
//       (scenario 1's curl clients, rounds alternating);
//   (b) a replica with an empty disk serving a blob the bucket holds (a cold-from-bucket GET),
//       against a direct SigV4-signed S3 GET of the same object from RGW (and, for perspective,
//       the single node's cold GET of a blob of that size from upstream);
//   (c) a herd spread over the three replicas on one cold blob: upstream fetches (the upstream's
//       access log) and the time until the last client is done, against the single node and the anchor.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { curlParallel, getManifest, herd } from '../lib/clients.js';
import { rotate, type Ctx, type ScenarioResult, type Shared } from '../lib/context.js';
import { pushImage, type Image } from '../lib/images.js';
import { groupCpuSeconds, pidCpuSeconds } from '../lib/procs.js';
import { accessLines, logMark, logSince, settleLog, waitStored } from '../lib/registry.js';
import { BUCKET_PREFIX, replicasUnavailable, startReplicas, type ReplicaSet } from '../lib/replicas.js';
import { gbps, median, mib, ms, ratio } from '../lib/stats.js';

const TITLE = 'Replicas over one bucket';

function skipped(why: string): ScenarioResult {
  return {
    id: 9,
    title: TITLE,
    rows: [{ measure: `skipped: ${why}`, baseline: '—', sparse: '—', ratio: '—', target: '—' }],
    details: [`**Skipped:** ${why}. The scenario starts a one-node Ceph cluster with a RADOS Gateway as the replicas' bucket.`],
    problems: [],
    raw: { skipped: why },
  };
}

export async function replicas(ctx: Ctx): Promise<ScenarioResult> {
  const why = replicasUnavailable();
  if (why) return skipped(why);
  const shared = await ctx.shared();
  const set = await startReplicas(shared.upstream.url, 3, ctx.log);
  try {
    ctx.log(`replicas ${set.urls.join(', ')}`);
    const problems: string[] = [];
    const warm = await warmLocalTier(ctx, shared, set, problems);
    const bucket = await fromBucket(ctx, shared, set, warm.image, problems);
    const herds = await herdOverReplicas(ctx, shared, set, problems);
    return {
      id: 9,
      title: TITLE,
      rows: [...warm.rows, ...bucket.rows, ...herds.rows],
      details: [...warm.details, '', ...bucket.details, '', ...herds.details],
      problems,
      raw: { warm: warm.raw, bucket: bucket.raw, herd: herds.raw },
    };
  } finally {
    await set.stop();
  }
}

type Part = Pick<ScenarioResult, 'rows' | 'details' | 'raw'>;

function blobFile(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

/** Waits until a mirror's store holds the blob's file (it is renamed into place after the body ends). */
async function waitFile(file: string, size: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await stat(file).then((s) => s.size, () => -1)) !== size) {
    if (Date.now() > deadline) throw new Error(`${file} did not reach ${size} bytes within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function upstreamBlobGets(ctx: Ctx, shared: Shared, mark: number, digest: string): Promise<{ gets: number; bytes: number }> {
  await settleLog(shared.upstream.logFile, 300);
  const gets = accessLines(await logSince(shared.upstream.logFile, mark)).filter((l) => l.method === 'GET' && l.path.endsWith(`/blobs/${digest}`));
  return { gets: gets.length, bytes: gets.reduce((a, l) => a + l.bytes, 0) };
}

// (a) ------------------------------------------------------------------------------------------

async function warmLocalTier(ctx: Ctx, shared: Shared, set: ReplicaSet, problems: string[]): Promise<Part & { image: Image }> {
  const { blobBytes, clients } = ctx.settings.s9;
  const a = set.replicas[0]!;
  const repo = 'bench/s9-warm';
  ctx.log(`(a) pushing a ${mib(blobBytes)} layer`);
  const image = await pushImage(shared.upstream.url, repo, 'linux/amd64', [blobBytes], 'v1');
  const blob = image.layers[0]!;
  const systems = {
    single: { url: shared.mirror.url, pid: shared.mirror.proc.pid, dataDir: shared.mirror.dataDir },
    replica: { url: a.mirror.url, pid: a.mirror.proc.pid, dataDir: a.dataDir },
  };
  for (const s of Object.values(systems)) {
    await getManifest(s.url, repo, 'v1');
    const w = await curlParallel(`${s.url}/v2/${repo}/blobs/${blob.digest}`, 1, blobBytes);
    if (w.failures.length) throw new Error(`warming ${s.url}: ${w.failures.join('; ')}`);
    await waitFile(blobFile(s.dataDir, blob.digest), blobBytes);
  }
  // The replica's upload to the bucket must not overlap the measurement.
  await set.uploadsDrained();
  const rates = { single: [] as number[], replica: [] as number[] };
  const cpu = { single: [] as number[], replica: [] as number[] };
  for (let r = 0; r < ctx.settings.rounds; r++) {
    for (const who of rotate(['single', 'replica'] as const, r)) {
      const s = systems[who];
      const c0 = await groupCpuSeconds(s.pid);
      const d = await curlParallel(`${s.url}/v2/${repo}/blobs/${blob.digest}`, clients, blobBytes);
      const c1 = await groupCpuSeconds(s.pid);
      rates[who].push(d.bytesPerSec);
      cpu[who].push((c1 - c0) / (d.bytes / 2 ** 30));
      if (d.failures.length) problems.push(`(a) ${who} round ${r + 1}: ${d.failures.slice(0, 3).join('; ')}`);
      ctx.log(`(a) round ${r + 1} ${who}: ${gbps(d.bytesPerSec)} (${(d.ms / 1000).toFixed(2)} s)`);
    }
  }
  const m = { single: median(rates.single), replica: median(rates.replica) };
  const x = m.replica / m.single;
  return {
    image,
    rows: [
      {
        measure: `${clients} clients × ${mib(blobBytes)} warm blob through one replica (its local tier)`,
        baseline: `single node ${gbps(m.single)}`,
        sparse: gbps(m.replica),
        ratio: ratio(x),
        target: '≥ 0.9× single node',
        met: x >= 0.9,
      },
    ],
    details: [
      `**(a) Warm, local tier.** The same blob through replica A (its store holds it) and through the single-node sparse-mirror of scenarios 1–4; ${clients} curl processes at once, as in scenario 1; ${ctx.settings.rounds} rounds, order alternating.`,
      `Per round (GB/s): single node ${rates.single.map((v) => (v / 1e9).toFixed(2)).join(', ')}; replica ${rates.replica.map((v) => (v / 1e9).toFixed(2)).join(', ')}.`,
      `Server CPU seconds per GiB served (median): single node ${median(cpu.single).toFixed(2)} s, replica ${median(cpu.replica).toFixed(2)} s.`,
    ],
    raw: { rates, cpu, medians: m },
  };
}

// (b) ------------------------------------------------------------------------------------------

async function fromBucket(ctx: Ctx, shared: Shared, set: ReplicaSet, image: Image, problems: string[]): Promise<Part> {
  const blob = image.layers[0]!;
  const c = set.replicas[2]!;
  const key = `${BUCKET_PREFIX}blobs/sha256/${blob.digest.slice('sha256:'.length)}`;
  const rounds = ctx.settings.rounds;
  // For perspective, the single node's cold GET of a blob of the same size from upstream: a new one each round.
  const cold: Image[] = [];
  for (let r = 0; r < rounds; r++) {
    ctx.log(`(b) pushing a ${mib(blob.size)} layer for the single node, round ${r + 1}`);
    cold.push(await pushImage(shared.upstream.url, `bench/s9-cold-${r}`, 'linux/amd64', [blob.size], 'v1'));
  }
  const mark = await logMark(shared.upstream.logFile);
  type Way = 'direct' | 'replica' | 'single';
  const rates: Record<Way, number[]> = { direct: [], replica: [], single: [] };
  const times: Record<Way, number[]> = { direct: [], replica: [], single: [] };
  for (let r = 0; r < rounds; r++) {
    for (const who of rotate(['direct', 'replica', 'single'] as const, r)) {
      let d;
      if (who === 'direct') {
        d = await curlParallel(set.objectUrl(key), 1, blob.size, 1, set.s3CurlArgs);
      } else if (who === 'replica') {
        // A new replica: an empty disk; the manifest comes first, as in a pull (from the bucket too).
        const stopMs = await set.restartEmpty(c);
        if (stopMs > 3000) problems.push(`(b) replica C took ${ms(stopMs)} to stop on SIGTERM before round ${r + 1}${stopMs >= 5000 ? ' (SIGKILLed)' : ''}`);
        await getManifest(c.mirror.url, image.repo, 'v1');
        d = await curlParallel(`${c.mirror.url}/v2/${image.repo}/blobs/${blob.digest}`, 1, blob.size);
      } else {
        const img = cold[r]!;
        await getManifest(shared.mirror.url, img.repo, 'v1');
        d = await curlParallel(`${shared.mirror.url}/v2/${img.repo}/blobs/${img.layers[0]!.digest}`, 1, blob.size);
      }
      rates[who].push(d.bytesPerSec);
      times[who].push(d.ms);
      if (d.failures.length) problems.push(`(b) ${who} round ${r + 1}: ${d.failures.slice(0, 3).join('; ')}`);
      ctx.log(`(b) round ${r + 1} ${{ direct: 'direct S3 GET', replica: 'replica, empty disk', single: 'single node, cold from upstream' }[who]}: ${gbps(d.bytesPerSec)} (${ms(d.ms)})`);
    }
  }
  const upstream = await upstreamBlobGets(ctx, shared, mark, blob.digest);
  if (upstream.gets) problems.push(`(b) the replica with an empty disk fetched the blob from upstream ${upstream.gets} times: it should come from the bucket`);
  const m = { direct: median(rates.direct), replica: median(rates.replica), single: median(rates.single) };
  const perRound = (who: Way) => rates[who].map((v, i) => `${(v / 1e9).toFixed(2)} GB/s (${ms(times[who][i]!)})`).join(', ');
  return {
    rows: [
      {
        measure: `one cold GET of a ${mib(blob.size)} blob from the bucket tier (replica with an empty disk)`,
        baseline: `direct S3 GET ${gbps(m.direct)}`,
        sparse: gbps(m.replica),
        ratio: ratio(m.replica / m.direct),
        target: '(information)',
      },
      {
        measure: 'same, against the single node\'s cold GET of a blob of that size from upstream',
        baseline: `single node ${gbps(m.single)}`,
        sparse: gbps(m.replica),
        ratio: ratio(m.replica / m.single),
        target: '(information)',
      },
    ],
    details: [
      `**(b) Cold, from the bucket tier.** Replica C is stopped, its data dir removed and started again before each of its rounds; it gets the image's manifest (from the bucket), then one curl GETs the blob, which C reads from the bucket, verifies and stores while streaming it. The baseline is one curl GET of the same object straight from RGW, signed with \`--aws-sigv4\`; for perspective, the single node's cold GET of a new blob of the same size from the upstream registry. ${rounds} rounds, order rotated.`,
      `Per round: direct ${perRound('direct')}; replica ${perRound('replica')}; single node from upstream ${perRound('single')}.`,
      `Upstream GETs of the bucket-held blob meanwhile: ${upstream.gets} (expected 0: the bucket holds it).`,
    ],
    raw: { rates, times, medians: m, upstreamGets: upstream.gets },
  };
}

// (c) ------------------------------------------------------------------------------------------

type Who = 'replicas' | 'single' | 'anchor';

interface Trial {
  who: Who;
  round: number;
  upstreamGets: number;
  upstreamBytes: number;
  correct: number;
  ms: number;
  lastFirstByteMs: number;
  firstDoneMs: number;
  /** CPU seconds of the system's servers during the herd (for the replicas: the three, and RGW's daemons apart). */
  cpu: number;
  rgwCpu?: number;
}

async function herdOverReplicas(ctx: Ctx, shared: Shared, set: ReplicaSet, problems: string[]): Promise<Part> {
  const { herdBytes, herdClients: clients, herdRounds: rounds, anchor } = ctx.settings.s9;
  const systems: Who[] = anchor ? ['replicas', 'single', 'anchor'] : ['replicas', 'single'];
  const images = new Map<string, Image>();
  for (let r = 0; r < rounds; r++) {
    for (const who of systems) {
      ctx.log(`(c) pushing a ${mib(herdBytes)} blob for ${who}, round ${r + 1}`);
      images.set(`${who}-${r}`, await pushImage(shared.upstream.url, `bench/s9-herd-${who}-${r}`, 'linux/amd64', [herdBytes], 'v1'));
    }
  }
  const bases: Record<Who, string[]> = { replicas: set.urls, single: [shared.mirror.url], anchor: [shared.anchor.url] };
  const serverCpu = async (who: Who): Promise<number> => {
    const groups = who === 'replicas' ? set.replicas.map((r) => r.mirror.proc.pid) : [(who === 'single' ? shared.mirror : shared.anchor).proc.pid];
    return (await Promise.all(groups.map(groupCpuSeconds))).reduce((a, b) => a + b, 0);
  };
  const rgwCpu = async (): Promise<number> => (await Promise.all(set.rgw.pids.map(pidCpuSeconds))).reduce((a, b) => a + b, 0);
  const trials: Trial[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const who of rotate(systems, r)) {
      const img = images.get(`${who}-${r}`)!;
      const blob = img.layers[0]!;
      // Every replica asked holds the manifest first, as a client's pull would make it.
      for (const base of bases[who]) {
        await getManifest(base, img.repo, 'v1');
        await getManifest(base, img.repo, img.digest);
      }
      if (who === 'replicas') await set.uploadsDrained();
      await settleLog(shared.upstream.logFile, 200);
      const mark = await logMark(shared.upstream.logFile);
      const [cpu0, rgw0] = [await serverCpu(who), await rgwCpu()];
      const h = await herd(
        bases[who].map((b) => `${b}/v2/${img.repo}/blobs/${blob.digest}`),
        clients,
      );
      const [cpu1, rgw1] = [await serverCpu(who), await rgwCpu()];
      if (who === 'anchor') await waitStored(shared.anchor, [blob]);
      const up = await upstreamBlobGets(ctx, shared, mark, blob.digest);
      if (who === 'replicas') await set.uploadsDrained();
      const ok = h.bodies.filter((b) => b.status === 200 && b.bytes === blob.size && b.sha256 === blob.digest);
      const t: Trial = {
        who,
        round: r + 1,
        upstreamGets: up.gets,
        upstreamBytes: up.bytes,
        correct: ok.length,
        ms: h.ms,
        lastFirstByteMs: Math.max(...h.bodies.map((b) => b.firstByteMs ?? Infinity)),
        firstDoneMs: Math.min(...h.bodies.map((b) => b.doneMs ?? Infinity)),
        cpu: cpu1 - cpu0,
        rgwCpu: who === 'replicas' ? rgw1 - rgw0 : undefined,
      };
      trials.push(t);
      if (t.correct !== clients) {
        const bad = h.bodies.filter((b) => !ok.includes(b)).slice(0, 3);
        problems.push(`(c) ${who} round ${r + 1}: ${t.correct}/${clients} correct bodies; e.g. ${bad.map((b) => `HTTP ${b.status} ${b.bytes} bytes ${b.error ?? ''}`).join('; ')}`);
      }
      ctx.log(`(c) round ${r + 1} ${who}: ${t.upstreamGets} upstream GETs, ${t.correct}/${clients} correct, last done ${ms(t.ms)}, last first byte ${ms(t.lastFirstByteMs)}`);
    }
  }
  const of = (who: Who) => trials.filter((t) => t.who === who);
  const time = (who: Who) => median(of(who).map((t) => t.ms));
  const others = (f: (who: Who) => string) => systems.filter((s) => s !== 'replicas').map((s) => `${s === 'single' ? 'single node' : 'anchor'} ${f(s)}`).join('; ');
  return {
    rows: [
      {
        measure: `${clients} clients over 3 replicas on one cold ${mib(herdBytes)} blob: upstream blob fetches`,
        baseline: others((s) => of(s).map((t) => t.upstreamGets).join(', ')),
        sparse: `replicas ${of('replicas').map((t) => t.upstreamGets).join(', ')}`,
        ratio: '—',
        target: 'exactly 1 for the replicas',
        met: of('replicas').every((t) => t.upstreamGets === 1),
      },
      {
        measure: 'same: bodies with the right length and sha256',
        baseline: others((s) => of(s).map((t) => `${t.correct}/${clients}`).join(', ')),
        sparse: `replicas ${of('replicas').map((t) => `${t.correct}/${clients}`).join(', ')}`,
        ratio: '—',
        target: `all ${clients}`,
        met: of('replicas').every((t) => t.correct === clients),
      },
      {
        measure: 'same: time until the last client has its body (median)',
        baseline: others((s) => ms(time(s))),
        sparse: `replicas ${ms(time('replicas'))}`,
        ratio: `${ratio(time('replicas') / time('single'))} single node`,
        target: '(information)',
      },
    ],
    details: [
      `**(c) The herd.** Each round a new image per system; its manifest is pulled first through every replica (or the one server), then ${clients} Node HTTP clients on separate connections GET the blob in the same tick${systems.length > 1 ? ' — for the replicas, client i asks replica i mod 3' : ''} — and hash what they receive. Upstream GETs counted in the upstream registry's access log. ${rounds} round(s), order rotated.`,
      '',
      '| Round | Who | upstream GETs | bytes sent by upstream | correct | last client done | last first byte | first client done | server CPU during the herd |',
      '|---|---|---|---|---|---|---|---|---|',
      ...trials.map(
        (t) =>
          `| ${t.round} | ${t.who === 'single' ? 'single node' : t.who} | ${t.upstreamGets} | ${mib(t.upstreamBytes)} | ${t.correct}/${clients} | ${ms(t.ms)} | ${ms(t.lastFirstByteMs)} | ${ms(t.firstDoneMs)} | ${t.cpu.toFixed(1)} s${t.rgwCpu === undefined ? '' : ` (+ RGW ${t.rgwCpu.toFixed(1)} s)`} |`,
      ),
      '',
      `Every client streaming from the first bytes shows as its first byte arriving before the first client is done. Server CPU: user + system seconds of the servers under test (the three replicas together; the Ceph daemons apart) from the herd's start to its last body, on the 2 cores that also run the clients. The clients hash every body in the one benchmark process (${clients} × ${mib(herdBytes)}); where the three systems take about the same time, that hashing bounds it, and the CPU column tells the servers apart.`,
    ],
    raw: trials,
  };
}
