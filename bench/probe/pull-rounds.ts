// What both diagnostics share: rounds of scenario 3's cold skopeo pull of a new image, direct and
// through each proxy, the order rotating each round (every one first in turn after as many rounds as
// there are of them; scenario 3's permutations would keep direct first for the first six rounds of four),
// with per-round ratios to direct.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { skopeoCopy, warmUpstreamImage } from '../lib/clients.js';
import { pushSevenPlatformIndex } from '../lib/images.js';
import type { Distribution } from '../lib/registry.js';
import { DEFAULT_LEAVE_FREE, pageCacheFill } from '../lib/page-cache.js';
import { groupCpuSeconds, removeDir, tempDir } from '../lib/procs.js';
import { median } from '../lib/stats.js';

export interface Proxy {
  name: string;
  host: string;
  /** Its process group, to report its CPU per pull. */
  pid?: number;
  /** Resolves once what it fetched is stored (a 100 ms pause when absent). */
  settled?: () => Promise<void>;
}

/** Pulls `rounds` new images of `layers` through each proxy and direct; logs every round and the medians. */
export async function pullRounds(upstream: Distribution, proxies: Proxy[], layers: number[], rounds: number, label: string): Promise<void> {
  // PROBE_DEST: where skopeo writes (say /dev/shm, to take its fsyncs off the disk); a temp dir otherwise.
  const work = process.env.PROBE_DEST ? mkdtempSync(join(process.env.PROBE_DEST, 'sm-probe-')) : tempDir('probe');
  const ratios = new Map(proxies.map((p) => [p.name, [] as number[]]));
  const cpus = new Map(proxies.map((p) => [p.name, [] as number[]]));
  const direct: Proxy = { name: 'direct', host: upstream.host };
  // PROBE_FILL=1: the page cache topped up before each pull, as scenario 3 does (lib/page-cache.ts).
  const fill = process.env.PROBE_FILL === '1' ? pageCacheFill(tempDir('page-cache'), DEFAULT_LEAVE_FREE, console.log) : undefined;
  try {
    for (let r = 0; r < rounds; r++) {
      const img = await pushSevenPlatformIndex(upstream.url, `probe/${label}-${r}`, 'v1', { bigPlatform: 'linux/amd64', bigLayers: layers, smallLayer: 256 * 1024 });
      execFileSync('sync'); // as scenario 3 does: the push's dirty pages written back before the pulls
      if (process.env.PROBE_WARM !== '0') await warmUpstreamImage(`docker://${upstream.host}/${img.repo}:v1`, { os: 'linux', arch: 'amd64' });
      const ms = new Map<string, number>();
      const order = [direct, ...proxies];
      for (const p of [...order.slice(r % order.length), ...order.slice(0, r % order.length)]) {
        fill?.topUp();
        const cpu0 = p.pid ? await groupCpuSeconds(p.pid) : 0;
        const dest = join(work, `${p.name}-${r}`);
        ms.set(p.name, (await skopeoCopy(`docker://${p.host}/${img.repo}:v1`, `dir:${dest}`, { os: 'linux', arch: 'amd64' })).ms);
        removeDir(dest);
        await (p.settled ? p.settled() : new Promise((res) => setTimeout(res, 100))); // its flushes, renames and records
        if (p.pid) cpus.get(p.name)!.push(((await groupCpuSeconds(p.pid)) - cpu0) * 1000);
      }
      for (const p of proxies) ratios.get(p.name)!.push(ms.get(p.name)! / ms.get('direct')!);
      console.log(`${label} round ${r}: ${[...ms].map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
    }
    const cpu = (name: string) => (cpus.get(name)!.length ? ` (cpu ${median(cpus.get(name)!).toFixed(0)} ms)` : '');
    console.log(`${label} median ÷ direct: ${proxies.map((p) => `${p.name} ${median(ratios.get(p.name)!).toFixed(2)}${cpu(p.name)}`).join(', ')}`);
  } finally {
    fill?.remove();
    removeDir(work);
  }
}
