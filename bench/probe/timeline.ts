// Diagnostic, not a scenario: where one cold skopeo pull's time goes, blob by blob. Pulls a new image
// of one of scenario 3's shapes direct, then through sparse-mirror, and prints for each request when
// it ended (ms after skopeo started) and how long it took, as the mirror's request log and the
// registry's own log tell it, then the CPU each server spent on that pull, thread by thread, and
// how long skopeo ran and how long it waited, runnable, for a CPU (sampled; slightly low).
//   SHAPE=3 ROUNDS=2 node dist-bench/bench/probe/timeline.js
// EXTRA='{"blobs":{"readAhead":false}}' passes config keys to the mirror. FILL=1 tops the page
// cache up before each pull, as the bench does (lib/page-cache.ts); IDLE_MS waits that long before
// each pull (the bench's pulls follow seconds of quiet: the settling of the one before, the fill).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { skopeoCopy } from '../lib/clients.js';
import { SHAPES, shapeLayers } from '../lib/context.js';
import { pushSevenPlatformIndex } from '../lib/images.js';
import { logMark, logSince, startDistribution } from '../lib/registry.js';
import { startSparseMirror } from '../lib/mirror.js';
import { DEFAULT_LEAVE_FREE, pageCacheFill } from '../lib/page-cache.js';
import { onCleanup, removeAllTemp, removeDir, stopAll, tempDir } from '../lib/procs.js';

type ThreadCpu = Map<string, number>;

/** CPU milliseconds (user + system) of each thread of `pid`, keyed by thread id and name. */
function threadCpu(pid: number): ThreadCpu {
  const out: ThreadCpu = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      out.set(`${tid === String(pid) ? 'main' : tid} ${name}`, (Number(f[11]) + Number(f[12])) * 10); // USER_HZ 100
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

function cpuSpent(before: ThreadCpu, after: ThreadCpu): string {
  let total = 0;
  const parts: string[] = [];
  for (const [thread, ms] of after) {
    const d = ms - (before.get(thread) ?? 0);
    total += d;
    if (d > 0) parts.push(`${thread} ${d}`);
  }
  return `${total} ms (${parts.join(', ')})`;
}

/** A /proc/<pid>/stat line of a skopeo this probe started (its parent is this process). */
function isOurSkopeo(stat: string): boolean {
  const ppid = Number(stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[1]);
  return stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) === 'skopeo' && ppid === process.pid;
}

/**
 * Samples skopeo's threads every 10 ms while `pull` runs (cheaply: the probe must not compete for
 * the CPU it measures): CPU time, and time spent runnable but waiting for a CPU (schedstat's
 * run_delay), the last values seen of each thread, so slightly low.
 */
async function clientSched<T>(pull: Promise<T>): Promise<{ result: T; cpuMs: number; waitMs: number }> {
  const seen = new Map<string, [number, number]>();
  let done = false;
  const result = pull.finally(() => (done = true));
  let skopeo: string | undefined;
  while (!done) {
    try {
      skopeo ??= readdirSync('/proc').find((e) => /^\d+$/.test(e) && isOurSkopeo(readFileSync(`/proc/${e}/stat`, 'utf8')));
      if (skopeo) {
        for (const tid of readdirSync(`/proc/${skopeo}/task`)) {
          const [run, wait] = readFileSync(`/proc/${skopeo}/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
          seen.set(tid, [run!, wait!]);
        }
      }
    } catch {
      // gone meanwhile
    }
    await new Promise((res) => setTimeout(res, 10));
  }
  const sum = (i: 0 | 1) => [...seen.values()].reduce((a, v) => a + v[i], 0) / 1e6;
  return { result: await result, cpuMs: sum(0), waitMs: sum(1) };
}

const short = (path: string) => (path.includes('sha256:') ? `…${path.slice(path.indexOf('sha256:') + 7, path.indexOf('sha256:') + 19)}` : path);

const shape = SHAPES[Number(process.env.SHAPE ?? 3) - 1]!;
const upstream = await startDistribution('upstream');
const fill = process.env.FILL === '1' ? pageCacheFill(tempDir('page-cache'), DEFAULT_LEAVE_FREE, console.log) : undefined;
if (fill) onCleanup(() => fill.remove());
const mirror = await startSparseMirror('timeline', { upstream: upstream.url, extra: JSON.parse(process.env.EXTRA ?? '{}') });
try {
  // the mirror's code paths once, so that no measured pull pays for the JIT
  const warm = await pushSevenPlatformIndex(upstream.url, 'probe/timeline-warm', 'v1', { bigPlatform: 'linux/amd64', bigLayers: [4 << 20, 4 << 20], smallLayer: 256 * 1024 });
  const warmDest = tempDir('warm');
  await skopeoCopy(`docker://${mirror.host}/${warm.repo}:v1`, `dir:${join(warmDest, 'image')}`, { os: 'linux', arch: 'amd64' });
  removeDir(warmDest);
  console.log(`shape: ${shape.name} (${shape.mib.join(', ')} MiB)`);
  for (let r = 0; r < Number(process.env.ROUNDS ?? 2); r++) {
    const img = await pushSevenPlatformIndex(upstream.url, `probe/timeline-${r}`, 'v1', { bigPlatform: 'linux/amd64', bigLayers: shapeLayers(shape), smallLayer: 256 * 1024 });
    for (const [name, host, pid] of [['direct', upstream.host, upstream.proc.pid], ['sparse-mirror', mirror.host, mirror.proc.pid]] as const) {
      fill?.topUp();
      await new Promise((res) => setTimeout(res, Number(process.env.IDLE_MS ?? 0)));
      const marks = { registry: await logMark(upstream.logFile), mirror: await logMark(mirror.logFile) };
      const dest = tempDir('pull');
      const cpu0 = threadCpu(pid!);
      const started = Date.now();
      const { result: pull, cpuMs, waitMs } = await clientSched(skopeoCopy(`docker://${host}/${img.repo}:v1`, `dir:${join(dest, 'image')}`, { os: 'linux', arch: 'amd64' }));
      await new Promise((res) => setTimeout(res, 200)); // the last commit, and the logs
      const cpu1 = threadCpu(pid!);
      removeDir(dest);
      console.log(`round ${r}, ${name}: ${pull.ms.toFixed(0)} ms; skopeo ran ${cpuMs.toFixed(0)} ms and waited ${waitMs.toFixed(0)} ms for a CPU`);
      if (name === 'sparse-mirror') {
        for (const line of (await logSince(mirror.logFile, marks.mirror)).split('\n')) {
          if (!line.includes('"msg":"request"')) continue;
          const l = JSON.parse(line) as { time: string; ms: number; method: string; path: string; cache?: string; bytes: number };
          console.log(`  mirror    ends +${Date.parse(l.time) - started} ms, took ${l.ms} ms: ${l.method} ${short(l.path)} ${l.cache ?? ''} ${l.bytes} B`);
        }
      }
      // distribution logs each request's end and duration: the direct pull's, or the mirror's fetches
      for (const line of (await logSince(upstream.logFile, marks.registry)).split('\n')) {
        const m = line.match(/time="([^"]+)".*http\.request\.method=(\w+).*http\.request\.uri="([^"]+)".*http\.response\.duration=([\d.]+)(ms|µs|s)/);
        if (!m) continue;
        const took = Number(m[4]) * (m[5] === 's' ? 1000 : m[5] === 'µs' ? 0.001 : 1);
        console.log(`  registry  ends +${Date.parse(m[1]!) - started} ms, took ${took.toFixed(1)} ms: ${m[2]} ${short(m[3]!)}`);
      }
      console.log(`  CPU of ${name === 'direct' ? 'the registry' : 'the mirror'} in this pull: ${cpuSpent(cpu0, cpu1)}`);
    }
  }
} finally {
  await stopAll();
  removeAllTemp();
}

