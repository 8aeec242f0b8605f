// The machine the numbers were taken on.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, totalmem, loadavg, release } from 'node:os';
import { spawnSync } from 'node:child_process';

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
}

export interface SysInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  node: string;
  registry: string;
  nginx: string;
  skopeo: string;
  wrk: string;
  ab: string;
  curl: string;
  /** Ceph's RADOS Gateway, the replicas' bucket in scenario 9 (empty when not installed). */
  rgw: string;
  loadAtStart: string;
  build: string;
  /** What the hypervisor does with the guest's free memory (decides what writing to new pages costs). */
  guestMemory: string;
}

export function sysInfo(repoRoot: string, mirrorCli: string): SysInfo {
  const osName = /^PRETTY_NAME="?([^"\n]*)/m.exec(readSafe('/etc/os-release'))?.[1] ?? ''; // empty: not Linux
  const lscpu = spawnSync('lscpu', [], { encoding: 'utf8' }).stdout ?? '';
  const model = /^Model name:\s*(.+)$/m.exec(lscpu)?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown';
  const flags = /^Flags:\s*(.+)$/m.exec(lscpu)?.[1] ?? '';
  const hyper = /hypervisor/.test(flags) ? ' (virtual machine)' : '';
  return {
    cpu: `${model}${hyper}`,
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: release(),
    os: osName,
    node: process.version,
    registry: firstLine('docker-registry', ['--version']),
    nginx: firstLine('nginx', ['-v']),
    skopeo: firstLine('skopeo', ['--version']),
    wrk: firstLine('wrk', ['--version']).replace(/\s+Copyright.*/, ''),
    ab: firstLine('ab', ['-V']).replace(/^This is /, '').replace(/ <.*$/, ''),
    curl: firstLine('curl', ['--version']).split(' ').slice(0, 2).join(' '),
    rgw: firstLine('sh', ['-c', 'command -v radosgw >/dev/null && radosgw --version']).replace(/ \([0-9a-f]{40}\)/, ''),
    loadAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
    build: buildOf(repoRoot, mirrorCli),
    guestMemory: guestMemory(),
  };
}

/**
 * Free page reporting (virtio-balloon) hands memory the guest has freed back to the host, and
 * DAMON's pageout evicts what has gone cold; a page touched afresh after either costs a fault on
 * the host too. On this kind of VM writing 1 GiB of new file data then costs 0.8-2.4 s of system
 * time instead of 0.2-0.3 s, for every process that writes (bench/RESULTS.md, 2026-12-05 afternoon).
 */
function guestMemory(): string {
  const parts: string[] = [];
  const balloonDir = '/sys/bus/virtio/drivers/virtio_balloon';
  for (const dev of readdirSafe(balloonDir).filter((d) => d.startsWith('virtio'))) {
    const features = readSafe(join(balloonDir, dev, 'features'));
    // Bit 5 of the feature string: VIRTIO_BALLOON_F_REPORTING.
    parts.push(`virtio-balloon, free page reporting ${features[5] === '1' ? 'on' : 'off'}`);
  }
  const damon = '/sys/kernel/mm/damon/admin/kdamonds';
  for (const k of readdirSafe(damon).filter((d) => /^\d+$/.test(d))) {
    if (readSafe(join(damon, k, 'state')).trim() !== 'on') continue;
    for (const c of readdirSafe(join(damon, k, 'contexts')).filter((d) => /^\d+$/.test(d))) {
      for (const sc of readdirSafe(join(damon, k, 'contexts', c, 'schemes')).filter((d) => /^\d+$/.test(d))) {
        parts.push(`DAMON ${readSafe(join(damon, k, 'contexts', c, 'schemes', sc, 'action')).trim() || 'scheme'} on`);
      }
    }
  }
  return parts.length ? parts.join('; ') : 'no balloon or DAMON seen';
}

/** /proc/meminfo's fields in bytes (empty when it cannot be read). */
export function meminfo(): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of readSafe('/proc/meminfo').matchAll(/^(\w+(?:\(\w+\))?):\s+(\d+)(?: kB)?$/gm)) {
    out.set(m[1]!, Number(m[2]) * (m[0].endsWith('kB') ? 1024 : 1));
  }
  return out;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function readSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Which sparse-mirror was measured: the commit, and whether src/ had uncommitted changes. */
function buildOf(repoRoot: string, mirrorCli: string): string {
  const head = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout?.trim() || 'unknown commit';
  const dirty = (spawnSync('git', ['-C', repoRoot, 'status', '--porcelain', 'src'], { encoding: 'utf8' }).stdout ?? '').trim() !== '';
  const where = mirrorCli.startsWith(repoRoot) ? mirrorCli.slice(repoRoot.length + 1) : mirrorCli;
  return `${where} built from ${head}${dirty ? ' plus uncommitted changes in src/' : ''}`;
}
