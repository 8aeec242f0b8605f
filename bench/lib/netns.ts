// A private "WAN" for scenario 8: a network namespace joined to the host by a veth pair, both ends
// shaped with tbf (a qdisc shapes only what leaves its device: the host end's shapes host → ns,
// the namespace end's ns → host). The pair gets a private /30 and the namespace no default route,
// so nothing in it can reach anything but the host end: no traffic leaves the machine. Removed
// when the benchmark ends, however it ends (an exit hook in procs.ts).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { onCleanup, which } from './procs.js';

export interface Shaping {
  rate: string;
  burst: string;
  latency: string;
}

export interface Wan {
  ns: string;
  hostIf: string;
  nsIf: string;
  hostAddr: string;
  nsAddr: string;
  shaping: Shaping;
  /** The prefix that runs a command inside the namespace. */
  exec: string[];
  /** Bytes each tbf has sent so far: `down` ns → host, `up` host → ns (headers included). */
  sent(): { down: number; up: number };
  remove(): void;
}

/** Why the WAN cannot be built here, or undefined if it can be tried. */
export function wanUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (ip netns, veth, tc)';
  for (const bin of ['ip', 'tc']) if (!which(bin)) return `\`${bin}\` is missing (iproute2)`;
  return undefined;
}

function sh(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  return r.stdout;
}

const ipToInt = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const intToIp = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

/**
 * A /30 in 10.231.0.0/16 that overlaps no address or route of the host. Broader routes (a /8 of a
 * cloud network) are ignored: the /30 is more specific, and shadows four of their addresses for
 * the length of the run.
 */
function pickSubnet(): number {
  const used: Array<[number, number]> = [];
  const text = sh('ip', ['-4', '-o', 'addr', 'show']).replace(/^.*?\binet\s+/gm, '') + '\n' + sh('ip', ['-4', 'route', 'show', 'table', 'all']);
  for (const line of text.split('\n')) {
    const m = /^(?:(?:local|broadcast|unicast|multicast|anycast|blackhole|unreachable|prohibit|throw|nat)\s+)?(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?/.exec(line.trim());
    if (!m) continue;
    const len = Number(m[2] ?? 32);
    if (len < 16) continue;
    const start = ipToInt(m[1]!) & (len === 32 ? -1 : ~((1 << (32 - len)) - 1));
    used.push([start >>> 0, (start >>> 0) + 2 ** (32 - len) - 1]);
  }
  const base = ipToInt('10.231.0.0');
  for (let i = 0; i < 16384; i++) {
    const net = base + ((process.pid + i) % 16384) * 4;
    if (!used.some(([s, e]) => net <= e && net + 3 >= s)) return net;
  }
  throw new Error('no free /30 in 10.231.0.0/16');
}

const names = (pid: number) => ({ ns: `smbench-${pid}`, hostIf: `smb${pid}h`, nsIf: `smb${pid}n` });

function removeNames(pid: number): void {
  const n = names(pid);
  // Deleting one end of a veth pair deletes both; the namespace itself goes once its last process has.
  spawnSync('ip', ['link', 'del', n.hostIf], { stdio: 'ignore', timeout: 15_000 });
  spawnSync('ip', ['netns', 'del', n.ns], { stdio: 'ignore', timeout: 15_000 });
}

/** Namespaces a killed (SIGKILL) earlier run left behind: ours by name, and their process is gone. */
function sweepStale(): void {
  let entries: string[] = [];
  try {
    entries = readdirSync('/run/netns');
  } catch {
    return;
  }
  for (const e of entries) {
    const pid = Number(/^smbench-(\d+)$/.exec(e)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // that run is still going
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EPERM') continue;
    }
    removeNames(pid);
  }
}

function tbfSent(args: string[]): number {
  return Number(/Sent (\d+) bytes/.exec(sh('tc', [...args]))?.[1] ?? NaN);
}

/** Builds the namespace and the shaped pair; throws (having removed what it made) if anything fails. */
export function createWan(opts: { rateMbit: number }): Wan {
  sweepStale();
  const { ns, hostIf, nsIf } = names(process.pid);
  const net = pickSubnet();
  const hostAddr = intToIp(net + 1);
  const nsAddr = intToIp(net + 2);
  const shaping: Shaping = { rate: `${opts.rateMbit}mbit`, burst: '64kb', latency: '100ms' };
  let removed = false;
  const unregister = onCleanup(() => removeNames(process.pid));
  const remove = () => {
    if (removed) return;
    removed = true;
    removeNames(process.pid);
    unregister();
  };
  try {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns]);
    sh('ip', ['addr', 'add', `${hostAddr}/30`, 'dev', hostIf]);
    sh('ip', ['link', 'set', hostIf, 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', `${nsAddr}/30`, 'dev', nsIf]);
    sh('ip', ['-n', ns, 'link', 'set', nsIf, 'up']);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const tbf = ['root', 'tbf', 'rate', shaping.rate, 'burst', shaping.burst, 'latency', shaping.latency];
    sh('tc', ['qdisc', 'add', 'dev', hostIf, ...tbf]);
    sh('tc', ['-n', ns, 'qdisc', 'add', 'dev', nsIf, ...tbf]);
    const routes = sh('ip', ['-n', ns, '-4', 'route', 'show']).trim();
    if (/default/.test(routes)) throw new Error(`the namespace has a default route: ${routes}`);
  } catch (e) {
    remove();
    throw e;
  }
  return {
    ns,
    hostIf,
    nsIf,
    hostAddr,
    nsAddr,
    shaping,
    exec: ['ip', 'netns', 'exec', ns],
    sent: () => ({ down: tbfSent(['-s', '-n', ns, 'qdisc', 'show', 'dev', nsIf]), up: tbfSent(['-s', 'qdisc', 'show', 'dev', hostIf]) }),
    remove,
  };
}
