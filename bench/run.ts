// `npm run bench`: sparse-mirror against distribution's proxy (the anchor), everything on loopback,
// started and torn down here. Results go to bench/RESULTS.md (BENCH_QUICK=1: .bench-work/).
//
// Environment: BENCH_QUICK=1 (a ~2-minute smoke run), BENCH_SCENARIOS=1,3 (a subset),
// BENCH_ROUNDS, BENCH_OUT (results file), BENCH_MIRROR_CLI (another build of sparse-mirror's
// cli.js, for A/B runs of a change), BENCH_MIRROR_CONFIG (config keys as JSON, for A/B runs of a
// setting), BENCH_FILL_PAGE_CACHE=0 (leave free memory free: see lib/page-cache.ts), and
// per-scenario sizes (see lib/context.ts).
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { settingsFromEnv, type Ctx, type ScenarioResult, type Shared } from './lib/context.js';
import { MIRROR_CLI, REPO_ROOT, startSparseMirror } from './lib/mirror.js';
import { pageCacheFill } from './lib/page-cache.js';
import { onCleanup, removeAllTemp, run, stopAll, tempDir, which } from './lib/procs.js';
import { startDistribution } from './lib/registry.js';
import { sysInfo, type SysInfo } from './lib/sysinfo.js';
import { mib } from './lib/stats.js';
import { blobThroughput } from './scenarios/s1-blob-throughput.js';
import { manifestResolution } from './scenarios/s2-manifests.js';
import { coldPull } from './scenarios/s3-cold-pull.js';
import { thunderingHerd } from './scenarios/s4-herd.js';
import { sparseSavings } from './scenarios/s5-sparse-savings.js';
import { memory } from './scenarios/s6-memory.js';
import { catalogueScale } from './scenarios/s7-catalogue-scale.js';
import { wideArea } from './scenarios/s8-wan.js';
import { replicas } from './scenarios/s9-replicas.js';

const SCENARIOS: Array<{ id: number; name: string; run: (ctx: Ctx) => Promise<ScenarioResult> }> = [
  { id: 1, name: 'Warm blob throughput', run: blobThroughput },
  { id: 2, name: 'Warm manifest resolution', run: manifestResolution },
  { id: 3, name: 'Cold pull of one platform', run: coldPull },
  { id: 4, name: 'Thundering herd', run: thunderingHerd },
  { id: 5, name: 'Sparse savings', run: sparseSavings },
  { id: 6, name: 'Memory', run: memory },
  { id: 7, name: 'Catalogue scale', run: catalogueScale },
  { id: 8, name: 'The WAN', run: wideArea },
  { id: 9, name: 'Replicas over one bucket', run: replicas },
];

const TOOLS: Array<{ bin: string; pkg: string }> = [
  { bin: 'docker-registry', pkg: 'docker-registry' },
  { bin: 'nginx', pkg: 'nginx' },
  { bin: 'wrk', pkg: 'wrk' },
  { bin: 'ab', pkg: 'apache2-utils' },
  { bin: 'curl', pkg: 'curl' },
  { bin: 'skopeo', pkg: 'skopeo' },
];

async function ensureTools(): Promise<void> {
  const missing = TOOLS.filter((t) => !which(t.bin));
  if (missing.length === 0) return;
  const pkgs = missing.map((t) => t.pkg);
  if (process.getuid?.() !== 0) throw new Error(`missing ${pkgs.join(', ')}; install them: sudo apt-get install -y ${pkgs.join(' ')}`);
  log(`installing ${pkgs.join(', ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = await run('apt-get', ['update'], { env, timeoutMs: 300_000 });
  if (update.code !== 0) throw new Error(`apt-get update failed: ${update.stderr.slice(-500)}`);
  const install = await run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { env, timeoutMs: 600_000 });
  if (install.code !== 0) throw new Error(`apt-get install ${pkgs.join(' ')} failed: ${install.stderr.slice(-500)}`);
  const still = TOOLS.filter((t) => !which(t.bin));
  if (still.length) throw new Error(`still missing after apt-get: ${still.map((t) => t.bin).join(', ')}`);
}

const t0 = performance.now();
function log(msg: string): void {
  process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);
}

async function main(): Promise<number> {
  const settings = settingsFromEnv();
  const only = (process.env.BENCH_SCENARIOS ?? '').split(',').map((s) => Number(s.trim())).filter((n) => n > 0);
  const selected = SCENARIOS.filter((s) => only.length === 0 || only.includes(s.id));
  const out = process.env.BENCH_OUT ?? (settings.quick || only.length ? join(REPO_ROOT, '.bench-work', 'RESULTS-partial.md') : join(REPO_ROOT, 'bench', 'RESULTS.md'));
  if (!existsSync(MIRROR_CLI)) throw new Error(`${MIRROR_CLI} does not exist: run npm run build first`);
  await ensureTools();
  const info = sysInfo(REPO_ROOT, MIRROR_CLI);
  log(`${settings.quick ? 'quick' : 'full'} run; scenarios ${selected.map((s) => s.id).join(', ')}; mirror ${relative(REPO_ROOT, MIRROR_CLI)}`);
  log(`machine: ${info.cpu}, ${info.cores} cores, ${info.memoryGiB} GiB, ${info.node}, load ${info.loadAtStart}`);

  const fill = settings.fillPageCache ? pageCacheFill(tempDir('page-cache'), settings.fillLeaveFree, log) : undefined;
  if (fill) onCleanup(() => fill.remove());
  let shared: Promise<Shared> | undefined;
  const ctx: Ctx = {
    settings,
    log,
    fillPageCache: () => fill?.topUp(),
    shared: () =>
      (shared ??= (async () => {
        const upstream = await startDistribution('upstream');
        const anchor = await startDistribution('anchor', { proxy: upstream.url });
        const mirror = await startSparseMirror('main', { upstream: upstream.url });
        log(`upstream ${upstream.url}, anchor ${anchor.url}, sparse-mirror ${mirror.url} (pid ${mirror.proc.pid})`);
        return { upstream, anchor, mirror };
      })()),
  };

  const results: ScenarioResult[] = [];
  for (const s of selected) {
    log(`— scenario ${s.id}: ${s.name}`);
    ctx.fillPageCache();
    const started = performance.now();
    const load = loadavg()[0]!;
    try {
      const r = await s.run({ ...ctx, log: (m) => log(`  [${s.id}] ${m}`) });
      r.seconds = (performance.now() - started) / 1000;
      results.push(r);
      for (const row of r.rows) log(`  [${s.id}] ${row.measure}: ${row.baseline} | sparse-mirror ${row.sparse} | ${row.ratio} | ${row.target} ${row.met === undefined ? '' : row.met ? 'MET' : 'MISSED'}`);
      for (const p of r.problems) log(`  [${s.id}] problem: ${p}`);
    } catch (e) {
      log(`  [${s.id}] FAILED: ${(e as Error).stack ?? e}`);
      results.push({ id: s.id, title: s.name, rows: [], details: [], problems: [], raw: null, error: (e as Error).message, seconds: (performance.now() - started) / 1000 });
    }
    (results.at(-1)! as ScenarioResult & { load?: number }).load = load;
  }
  const totalSeconds = (performance.now() - t0) / 1000;
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, await render(results, info, settings, totalSeconds, out));
  await writeFile(out.replace(/\.md$/, '.json'), JSON.stringify({ info, settings, results, totalSeconds }, null, 2));
  log(`results written to ${relative(REPO_ROOT, out)} (${totalSeconds.toFixed(0)} s)`);
  return results.some((r) => r.error) ? 1 : 0;
}

const ANALYSIS_BEGIN = '<!-- analysis:begin (kept across runs) -->';
const ANALYSIS_END = '<!-- analysis:end -->';

async function render(results: ScenarioResult[], info: SysInfo, settings: ReturnType<typeof settingsFromEnv>, seconds: number, out: string): Promise<string> {
  let analysis = `${ANALYSIS_BEGIN}\n${ANALYSIS_END}`;
  try {
    const previous = await readFile(out, 'utf8');
    const a = previous.indexOf(ANALYSIS_BEGIN);
    const b = previous.indexOf(ANALYSIS_END);
    if (a >= 0 && b > a) analysis = previous.slice(a, b + ANALYSIS_END.length);
  } catch {
    // first run
  }
  const met = (m: boolean | undefined) => (m === undefined ? '—' : m ? '**met**' : '**missed**');
  const lines: string[] = [
    '# sparse-mirror benchmarks',
    '',
    `Generated by \`npm run bench\`${settings.quick ? ' (BENCH_QUICK=1: small sizes, a smoke run — not the figures to quote)' : ''} on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${seconds.toFixed(0)} s in total.`,
    'Everything ran on loopback on one machine: an upstream docker-registry holding the test images, the anchor',
    '(the same docker-registry in proxy mode, `proxy.remoteurl` = the upstream) and sparse-mirror (`node dist/src/cli.js serve`,',
    'its own process, default log level) in front of it, nginx for scenario 1, Ceph RGW and three replicas for scenario 9, and the clients. Ratios are sparse-mirror ÷ baseline',
    '(for times, lower is better; for rates, higher is better). Medians over the rounds.',
    settings.fillPageCache
      ? `Before each scenario, and before every pull of scenario 3, a file fills the page cache to all but ${mib(settings.fillLeaveFree)} of free memory, as on a server that has run a while (\`bench/lib/page-cache.ts\`: on a VM whose freed memory goes back to the host, a write to freshly touched memory costs several times more, for every process; \`BENCH_FILL_PAGE_CACHE=0\` leaves free memory free, \`BENCH_FILL_LEAVE_FREE_MIB\` sets what is left).`
      : 'Free memory was left free (`BENCH_FILL_PAGE_CACHE=0`): on a VM whose freed memory goes back to the host, writes cost more the more of it the machine had freed before (`bench/lib/page-cache.ts`).',
    '',
    '## Machine',
    '',
    '| | |',
    '|---|---|',
    `| CPU | ${info.cpu} |`,
    `| Cores | ${info.cores} |`,
    `| Memory | ${info.memoryGiB} GiB; ${info.guestMemory} |`,
    `| OS / kernel | ${info.os} / ${info.kernel} |`,
    `| Node | ${info.node} |`,
    `| Anchor and upstream | ${info.registry} (Debian docker-registry) |`,
    `| nginx | ${info.nginx} |`,
    `| S3 (scenario 9) | ${info.rgw ? `${info.rgw}: Ceph RADOS Gateway, one mon and one memstore OSD` : 'Ceph RGW not installed'} |`,
    `| Clients | ${info.curl}; ${info.wrk}; ${info.ab}; ${info.skopeo}; Node http |`,
    `| Load average at start (1/5/15 min) | ${info.loadAtStart} |`,
    `| sparse-mirror | ${info.build} |`,
    '',
    `Load average at the start: ${info.loadAtStart} on ${info.cores} cores (the 1-minute load at the start of each scenario is in its heading); this is a virtual machine on a shared host, so figures also move with its neighbours. Rounds alternate between the systems under test so that noise hits all of them alike, and medians are reported, but single figures move by ±20% from run to run.`,
    '',
    '## Summary',
    '',
    '| # | Measure | Baseline | sparse-mirror | Ratio | Target | Result |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    if (r.error) {
      lines.push(`| ${r.id} | ${r.title} | — | — | — | — | **failed to run**: ${r.error.replace(/\|/g, '/').slice(0, 200)} |`);
      continue;
    }
    for (const row of r.rows) lines.push(`| ${r.id} | ${row.measure} | ${row.baseline} | ${row.sparse} | ${row.ratio} | ${row.target} | ${met(row.met)} |`);
  }
  lines.push('', analysis, '');
  for (const r of results) {
    const load = (r as ScenarioResult & { load?: number }).load;
    lines.push(`## ${r.id}. ${r.title}`, '', `_${r.seconds?.toFixed(0) ?? '?'} s; 1-minute load average at start ${load?.toFixed(2) ?? '?'}_`, '');
    if (r.error) {
      lines.push(`**The scenario failed:** ${r.error}`, '');
      continue;
    }
    lines.push(...r.details, '');
    if (r.problems.length) lines.push('Problems seen:', '', ...r.problems.map((p) => `- ${p}`), '');
  }
  lines.push(
    '## Settings of this run',
    '',
    '```json',
    JSON.stringify(settings, null, 2),
    '```',
    '',
    'Reproduce: `npm run bench` (full, ~40 min) or `BENCH_QUICK=1 npm run bench` (~2 min, written to .bench-work/). `BENCH_SCENARIOS=1,2` runs a subset; `BENCH_MIRROR_CLI=/path/to/dist/src/cli.js` benchmarks another build of sparse-mirror, `BENCH_MIRROR_CONFIG={"blobs":{"flushQuietMs":0}}` another setting.',
    '',
  );
  return lines.join('\n');
}

main()
  .then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      log(`bench failed: ${(e as Error).stack ?? e}`);
      process.exitCode = 1;
    },
  )
  .finally(async () => {
    await stopAll();
    removeAllTemp();
  });
