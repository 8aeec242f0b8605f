// Diagnostic, not a scenario: scenario 3's cold skopeo pull, direct against several variants of
// sparse-mirror started side by side (each its own process, with its own environment and config
// keys), the order rotating each round (pull-rounds.ts), per-round ratios to the direct pull and each variant's CPU.
// A/B runs of the cold path find their answer here in minutes instead of a full bench run.
//   VARIANTS='base||{};no-read-ahead||{"blobs":{"readAhead":false}}' SHAPES=3,2 ROUNDS=12 \
//     node dist-bench/bench/probe/ab.js
// A variant is name|ENV=value,…|{config keys}[|path of another build's dist/src/cli.js]; SHAPES are
// scenario 3's, by number (bench/lib/context.ts). PROBE_PIN_SERVERS=<cpu list> pins the registry and the
// mirrors there (start the probe under `taskset -c <the other cpus>`, and skopeo runs on those).
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { skopeoCopy } from '../lib/clients.js';
import { SHAPES, shapeLayers } from '../lib/context.js';
import { pushSevenPlatformIndex } from '../lib/images.js';
import { startDistribution } from '../lib/registry.js';
import { startSparseMirror, waitSettled } from '../lib/mirror.js';
import { removeDir, stopAll, tempDir, removeAllTemp } from '../lib/procs.js';
import { pullRounds } from './pull-rounds.js';

const variants = (process.env.VARIANTS ?? 'base||{}').split(';').map((v) => {
  const [name, env, extra, cli] = v.split('|');
  return { name: name!, env: Object.fromEntries((env ?? '').split(',').filter(Boolean).map((kv) => kv.split('='))), extra: JSON.parse(extra || '{}'), cli: cli || undefined };
});
const rounds = Number(process.env.ROUNDS ?? 6);
const upstream = await startDistribution('upstream');
const mirrors = await Promise.all(variants.map((v) => startSparseMirror(v.name, { upstream: upstream.url, env: v.env, extra: v.extra, cli: v.cli })));
if (process.env.PROBE_PIN_SERVERS) {
  for (const pid of [upstream.proc.pid, ...mirrors.map((m) => m.proc.pid)]) execFileSync('taskset', ['-a', '-cp', process.env.PROBE_PIN_SERVERS, String(pid)], { stdio: 'ignore' });
}
try {
  for (const shape of (process.env.SHAPES ?? '3').split(',')) {
    const layers = shapeLayers(SHAPES[Number(shape) - 1]!);
    // every variant's code paths once, so that no round pays for the JIT
    const warm = await pushSevenPlatformIndex(upstream.url, `probe/${shape}-warm`, 'v1', { bigPlatform: 'linux/amd64', bigLayers: [4 << 20, 4 << 20], smallLayer: 256 * 1024 });
    for (const m of mirrors) {
      const dest = tempDir('warm');
      await skopeoCopy(`docker://${m.host}/${warm.repo}:v1`, `dir:${join(dest, 'image')}`, { os: 'linux', arch: 'amd64' });
      removeDir(dest);
    }
    await pullRounds(upstream, mirrors.map((m, i) => ({ name: variants[i]!.name, host: m.host, pid: m.proc.pid, settled: () => waitSettled(m.url, { olderBuild: true }) })), layers, rounds, `shape-${shape}`);
  }
} finally {
  await stopAll();
  removeAllTemp();
}
