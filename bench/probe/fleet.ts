// Diagnostic, not a scenario: what bounds scenario 8 (b), ten clients on one cold image over the
// shaped link. The same fleet runs with clients of different costs: skopeo into dirs on disk (as
// in 8 b), skopeo into dirs in memory (/dev/shm: no fsync to wait for), and curl fetching the blobs
// into /dev/null (no hashing, no files). Each against one direct pull by the same kind of client.
//   KINDS=skopeo-disk,skopeo-shm,curl CLIENTS=10 node dist-bench/bench/probe/fleet.js   (as root)
// SAMPLE_MS=500 prints a timeline of each fleet: the link's bytes, the clients' bytes on disk, the
// machine's CPU (busy / idle / iowait / steal), the mirror's own CPU, dirty and writeback page cache
// and the threads in uninterruptible sleep (name@wchan; the mirror's marked MIRROR), per interval.
// SAMPLE_STACKS=1 also prints the kernel stacks those threads were blocked in (needs root).
// FLEET_LOG=<file> keeps the mirror's request log, one line per request with its duration.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { getManifest, skopeo, skopeoCopy } from '../lib/clients.js';
import { settingsFromEnv } from '../lib/context.js';
import { pushImage } from '../lib/images.js';
import { startSparseMirror } from '../lib/mirror.js';
import { createWan, wanUnavailable } from '../lib/netns.js';
import { pidCpuSeconds, removeAllTemp, removeDir, run, stopAll, tempDir } from '../lib/procs.js';
import { startDistribution } from '../lib/registry.js';
import { meminfo } from '../lib/sysinfo.js';
import { median } from '../lib/stats.js';

type Kind = 'skopeo-disk' | 'skopeo-shm' | 'curl';
const kinds = (process.env.KINDS ?? 'skopeo-disk,skopeo-shm,curl').split(',') as Kind[];
const clients = Number(process.env.CLIENTS ?? 10);
const { layers, rateMbit } = settingsFromEnv().s8;
const sampleMs = Number(process.env.SAMPLE_MS ?? 0);

/** The machine's CPU jiffies from /proc/stat: busy (user, nice, system, irq, softirq), idle, iowait, steal. */
function machineCpu(): { busy: number; idle: number; iowait: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { busy: f[0]! + f[1]! + f[2]! + f[5]! + f[6]!, idle: f[3]!, iowait: f[4]!, steal: f[7]! };
}

/** Bytes in the files under `dir` (the clients' destinations), 0 while it does not exist. */
function bytesUnder(dir: string): number {
  let total = 0;
  try {
    for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) total += statSync(join(e.parentPath, e.name), { throwIfNoEntry: false })?.size ?? 0;
  } catch {
    // not there yet, or removed meanwhile
  }
  return total;
}

/** Samples every `sampleMs` until stopped; prints one line per interval. */
async function timeline(label: string, dirs: string, pid: number, sent: () => number): Promise<() => void> {
  if (!sampleMs) return () => {};
  const t0 = performance.now();
  let last = { t: t0, cpu: machineCpu(), link: sent(), disk: 0, mirror: await pidCpuSeconds(pid) };
  console.log(`${label}: t(s)  link MB/s  clients' disk MB/s  busy% idle% iowait% steal%  mirror CPU%  dirty/writeback MB  blocked threads`);
  const timer = setInterval(async () => {
    const now = { t: performance.now(), cpu: machineCpu(), link: sent(), disk: bytesUnder(dirs), mirror: await pidCpuSeconds(pid) };
    const dt = (now.t - last.t) / 1000;
    const j = (k: keyof typeof now.cpu) => now.cpu[k] - last.cpu[k];
    const all = j('busy') + j('idle') + j('iowait') + j('steal') || 1;
    const pct = (x: number) => ((100 * x) / all).toFixed(0).padStart(3);
    const dirty = dirtyMb();
    console.log(
      `  ${((now.t - t0) / 1000).toFixed(1).padStart(5)}  ${((now.link - last.link) / dt / 1e6).toFixed(1).padStart(6)}  ${((now.disk - last.disk) / dt / 1e6).toFixed(1).padStart(6)}` +
        `  ${pct(j('busy'))} ${pct(j('idle'))} ${pct(j('iowait'))} ${pct(j('steal'))}  ${(((now.mirror - last.mirror) / dt) * 100).toFixed(0).padStart(4)}` +
        `  ${dirty.dirty.toFixed(0).padStart(5)}/${dirty.writeback.toFixed(0).padStart(4)}  ${blocked(pid)}`,
    );
    last = now;
  }, sampleMs);
  return () => {
    clearInterval(timer);
    for (const st of stacks) console.log(`  blocked in: ${st}`);
    stacks.clear();
  };
}

/** Dirty and under-writeback page cache from /proc/meminfo, in MB. */
function dirtyMb(): { dirty: number; writeback: number } {
  const m = meminfo();
  return { dirty: (m.get('Dirty') ?? 0) / 2 ** 20, writeback: (m.get('Writeback') ?? 0) / 2 ** 20 };
}

/** Kernel stacks of blocked threads (the mirror's; with SAMPLE_STACKS, everyone's), printed after the fleet. */
const stacks = new Set<string>();

/** Threads in uninterruptible sleep (D), counted by name and wait channel: "name@wchan×count" (the mirror's as MIRROR:…). */
function blocked(mirrorPid: number): string {
  const by = new Map<string, number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        if (stat.slice(stat.lastIndexOf(') ') + 2, stat.lastIndexOf(') ') + 3) !== 'D') continue;
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        let wchan = '';
        try {
          wchan = readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8');
        } catch {
          // not readable here
        }
        let k = `${name}@${wchan || '?'}`;
        if (Number(pid) === mirrorPid || process.env.SAMPLE_STACKS) {
          if (Number(pid) === mirrorPid) k = `MIRROR:${tid === pid ? 'main' : name}@${wchan || '?'}`;
          try {
            stacks.add(readFileSync(`/proc/${pid}/task/${tid}/stack`, 'utf8').split('\n').slice(0, 14).join(' < '));
          } catch {
            // not root
          }
        }
        by.set(k, (by.get(k) ?? 0) + 1);
      } catch {
        // gone
      }
    }
  }
  return [...by].map(([k, v]) => `${k}×${v}`).join(' ');
}


const why = wanUnavailable();
if (why) {
  console.log(`skipped: ${why}`);
  process.exit(0);
}
const link = createWan({ rateMbit });
let mirrorLog: string | undefined;
try {
  const upstream = await startDistribution('fleet-upstream', { listen: link.nsAddr, wrap: link.exec });
  const twin = await startDistribution('fleet-twin', { storageDir: upstream.storageDir });
  const mirror = await startSparseMirror('fleet', { upstream: upstream.url });
  mirrorLog = mirror.logFile;
  const shmBase = join('/dev/shm', `fleet-${process.pid}`);
  const diskBase = tempDir('fleet');
  let n = 0;
  const image = async () => {
    const repo = `probe/fleet-${n++}`;
    const img = await pushImage(twin.url, repo, 'linux/amd64', layers, 'v1');
    const config = (JSON.parse((await getManifest(twin.url, repo, 'v1')).bytes.toString()) as { config: { digest: string } }).config;
    return { repo, blobs: [...img.layers.map((l) => l.digest), config.digest] };
  };
  const pulled: string[] = [];
  const removePulled = () => pulled.splice(0).forEach(removeDir);
  // One client pull of `repo` from `host`, of the given kind; resolves with its wall time.
  const pull = async (kind: Kind, host: string, img: { repo: string; blobs: string[] }, i: number): Promise<number> => {
    const t0 = performance.now();
    if (kind === 'curl') {
      const urls = img.blobs.flatMap((d) => ['-o', '/dev/null', `http://${host}/v2/${img.repo}/blobs/${d}`]);
      const r = await run('curl', ['-sf', `http://${host}/v2/${img.repo}/manifests/v1`, '-o', '/dev/null', ...urls], { timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`curl failed: ${r.code}`);
    } else {
      const dest = join(kind === 'skopeo-shm' ? shmBase : diskBase, `fleet-${img.repo.replace('/', '-')}-${i}`);
      mkdirSync(dest, { recursive: true });
      pulled.push(dest); // removed once the whole fleet is done, so the timeline's byte counts only grow
      await skopeoCopy(`docker://${host}/${img.repo}:v1`, `dir:${dest}`);
    }
    return performance.now() - t0;
  };
  await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${upstream.host}/${(await image()).repo}:v1`]);
  for (const kind of kinds) {
    const direct = await pull(kind, upstream.host, await image(), 0);
    removePulled();
    const img = await image();
    const stopSampling = await timeline(kind, kind === 'skopeo-shm' ? shmBase : diskBase, mirror.proc.pid!, () => link.sent().down);
    const cpu0 = await pidCpuSeconds(mirror.proc.pid!);
    const t0 = performance.now();
    const each = await Promise.all(Array.from({ length: clients }, (_, i) => pull(kind, mirror.host, img, i)));
    const last = performance.now() - t0;
    stopSampling();
    removePulled();
    each.sort((a, b) => a - b);
    console.log(
      `${kind}: one direct pull ${(direct / 1000).toFixed(2)} s; ${clients} through sparse-mirror: first ${(each[0]! / 1000).toFixed(2)} s, ` +
        `median ${(median(each) / 1000).toFixed(2)} s, last ${(last / 1000).toFixed(2)} s = ${(last / direct).toFixed(2)}× the direct pull; ` +
        `the mirror's CPU meanwhile ${((await pidCpuSeconds(mirror.proc.pid!)) - cpu0).toFixed(2)} s`,
    );
  }
} finally {
  // FLEET_LOG=<file> keeps the mirror's log (one line per request, with its duration) for a look afterwards.
  if (process.env.FLEET_LOG && mirrorLog) copyFileSync(mirrorLog, process.env.FLEET_LOG);
  await stopAll();
  removeAllTemp();
  removeDir(join('/dev/shm', `fleet-${process.pid}`));
  link.remove();
}
