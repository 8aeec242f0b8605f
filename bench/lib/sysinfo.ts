// The machine the numbers were taken on.
import { readFileSync } from 'node:fs';
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
}

export function sysInfo(repoRoot: string, mirrorCli: string): SysInfo {
  let osName = '';
  try {
    osName = /^PRETTY_NAME="?([^"\n]*)/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '';
  } catch {
    // not Linux
  }
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
  };
}

/** Which sparse-mirror was measured: the commit, and whether src/ had uncommitted changes. */
function buildOf(repoRoot: string, mirrorCli: string): string {
  const head = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout?.trim() || 'unknown commit';
  const dirty = (spawnSync('git', ['-C', repoRoot, 'status', '--porcelain', 'src'], { encoding: 'utf8' }).stdout ?? '').trim() !== '';
  const where = mirrorCli.startsWith(repoRoot) ? mirrorCli.slice(repoRoot.length + 1) : mirrorCli;
  return `${where} built from ${head}${dirty ? ' plus uncommitted changes in src/' : ''}`;
}
