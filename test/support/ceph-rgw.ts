// A real S3 server for the tests: Ceph RADOS Gateway (Debian's ceph 16), one mon, one memstore OSD
// and one radosgw, all on loopback under a fresh temp dir, with auth `none` towards the cluster and
// a random S3 user. The start sequence and its traps are described in /work/shared/notes/ceph-rgw.md:
// paxos_propose_interval lowered and the pools created in parallel (12.9 s -> ~3 s), every ceph CLI
// call under a hard timeout (some hang forever without a mgr), a per-pid admin socket for the CLI,
// `ms_mon_client_mode = crc` for radosgw, and SIGKILL by PID in reverse start order to stop.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, mkdir, writeFile, appendFile } from 'node:fs/promises';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, envWithoutProxies, onProcessExit, type ExecResult } from './exec.js';
import { freePort } from './registry.js';

export interface RgwHandle {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  region: 'us-east-1';
  accessKeyId: string;
  secretAccessKey: string;
  /** PIDs of the daemons in start order (mon, osd, radosgw). */
  pids: number[];
  /** SIGKILLs the daemons in reverse start order and removes the temp dir. */
  stop(): Promise<void>;
}

export interface StartRgwOptions {
  /** Parent directory for the cluster's fresh temp dir (default: the OS temp dir). */
  dir?: string;
}

/** Limit for each step of the start sequence. */
const STEP_TIMEOUT_MS = 60_000;
/** Limit for one ceph CLI call (the steps retry within STEP_TIMEOUT_MS). */
const CLI_TIMEOUT_MS = 20_000;
/** memstore keeps everything in RAM, about twice the live data; when full, PUTs hang. */
const MEMSTORE_BYTES = 8 * 1024 ** 3;

const RGW_POOLS = [
  '.rgw.root',
  'default.rgw.log',
  'default.rgw.control',
  'default.rgw.meta',
  'default.rgw.buckets.index',
  'default.rgw.buckets.data',
  'default.rgw.buckets.non-ec',
];


function tail(file: string, lines = 40): string {
  try {
    const text = readFileSync(file, 'utf8').trimEnd();
    if (text === '') return '';
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Random S3 credentials in the shapes AWS uses (20 upper-case alphanumerics, 40 base64-ish). */
function randomKey(length: number, alphabet: string): string {
  const bytes = randomBytes(length);
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[bytes[i]! % alphabet.length];
  return out;
}
const UPPER_ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const SECRET_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function cephConf(dir: string, fsid: string, monPort: number, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon_host = v2:127.0.0.1:${monPort}
public_addr = 127.0.0.1
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = ${dir}/run
crash_dir = ${dir}/crash
admin_socket = ${dir}/run/$cluster-$name.asok
log_file = ${dir}/log/$cluster-$name.log
pid_file = ${dir}/run/$cluster-$name.pid
keyring = ${dir}/keyring
mon_cluster_log_file = ${dir}/log/$cluster.log
mon_data = ${dir}/mon-$id
osd_data = ${dir}/osd-$id
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
osd_objectstore = memstore
memstore_device_bytes = ${MEMSTORE_BYTES}
paxos_propose_interval = 0.05
mon_data_avail_warn = 2
mon_data_avail_crit = 1

[client.admin]
admin_socket = ${dir}/run/$cluster-$name.$pid.asok
ms_mon_client_mode = crc

[client.rgw.a]
ms_mon_client_mode = crc
auth_client_required = none
rgw_frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30
`;
}

/** Daemons started by any startRgw() in this process, killed if it exits without stop(). */
const liveDaemons = new Map<number, { pids: number[]; dir: string }>();
let exitHookInstalled = false;
let clusterCounter = 0;

function killAll(pids: number[]): void {
  for (const pid of [...pids].reverse()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  onProcessExit(() => {
    for (const { pids, dir } of liveDaemons.values()) {
      killAll(pids);
      rmSync(dir, { recursive: true, force: true });
    }
    liveDaemons.clear();
  });
}

export async function startRgw(opts: StartRgwOptions = {}): Promise<RgwHandle> {
  const started = Date.now();
  if (opts.dir !== undefined) await mkdir(opts.dir, { recursive: true });
  const dir = await mkdtemp(join(opts.dir ?? tmpdir(), 'ceph-rgw-'));
  const conf = join(dir, 'ceph.conf');
  const logDir = join(dir, 'log');
  const pidsFile = join(dir, 'pids');
  const pids: number[] = [];
  const children: ChildProcess[] = [];
  const names = new Map<ChildProcess, string>();
  const clusterId = ++clusterCounter;
  installExitHook();
  liveDaemons.set(clusterId, { pids, dir });

  let watchdog: ChildProcess | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    liveDaemons.delete(clusterId);
    watchdog?.kill('SIGKILL');
    const exits = children.filter((c) => c.exitCode === null && c.signalCode === null).map((c) => new Promise<void>((resolve) => c.once('exit', () => resolve())));
    killAll(pids);
    // Node reaps its own children, so waiting for 'exit' leaves no zombies behind.
    await Promise.race([Promise.all(exits), new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
    rmSync(dir, { recursive: true, force: true });
  };

  const ceph = (args: string[], timeoutMs = CLI_TIMEOUT_MS): Promise<ExecResult> =>
    exec('timeout', ['-s', 'KILL', String(Math.ceil(timeoutMs / 1000)), 'ceph', '-c', conf, '--connect-timeout', '10', ...args], { timeoutMs: timeoutMs + 2000 });

  /** What went wrong, with the tail of the logs that tell why. */
  const failure = (step: string, detail: string, logs: string[]): Error => {
    const parts = [`ceph-rgw: ${step} failed after ${Date.now() - started} ms: ${detail.trim()}`];
    // The first named log is the failing daemon's: most of its tail; a few lines of the others.
    for (const [i, name] of logs.entries()) {
      for (const file of [join(logDir, `${name}.log`), join(logDir, `${name}.stderr`)]) {
        const text = tail(file, i === 0 ? 40 : 8);
        if (text !== '') parts.push(`--- tail of ${file} ---\n${text}`);
      }
    }
    parts.push(`(cluster dir ${dir})`);
    return new Error(parts.join('\n'));
  };

  const check = (step: string, result: ExecResult, logs: string[]): ExecResult => {
    if (result.code !== 0) throw failure(step, `exit ${result.code}${result.timedOut ? ' (timed out)' : ''}\n${result.stderr}\n${result.stdout}`, logs);
    return result;
  };

  const daemon = async (name: string, command: string, args: string[]): Promise<ChildProcess> => {
    const fd = openSync(join(logDir, `${name}.stderr`), 'a');
    const child = spawn(command, [...args, '-f', '-c', conf], { stdio: ['ignore', fd, fd], env: envWithoutProxies() });
    closeSync(fd);
    if (child.pid === undefined) {
      await new Promise((resolve) => child.once('error', resolve));
      throw failure(`starting ${name}`, `could not spawn ${command}`, [name]);
    }
    pids.push(child.pid);
    children.push(child);
    names.set(child, name);
    child.on('error', () => {});
    await appendFile(pidsFile, `${child.pid}\n`);
    return child;
  };

  const exited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null;

  /** Polls `probe` until it returns a value, the step runs over STEP_TIMEOUT_MS or a daemon dies. */
  const waitFor = async <T>(step: string, logs: string[], watch: ChildProcess[], probe: () => Promise<T | undefined>): Promise<T> => {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    let last = '';
    for (;;) {
      const dead = watch.find(exited);
      if (dead !== undefined) {
        const name = names.get(dead) ?? dead.spawnfile;
        throw failure(step, `${name} exited (${dead.exitCode ?? dead.signalCode})`, [name, ...logs.filter((l) => l !== name)]);
      }
      try {
        const value = await probe();
        if (value !== undefined) return value;
      } catch (e) {
        last = e instanceof Error ? e.message : String(e);
      }
      if (Date.now() > deadline) throw failure(step, `not done within ${STEP_TIMEOUT_MS} ms${last ? `; last error: ${last}` : ''}`, logs);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  try {
    await Promise.all(['run', 'crash', 'log'].map((d) => mkdir(join(dir, d))));
    // If this process is SIGKILLed (no 'exit' handlers run), a detached watchdog kills the daemons.
    watchdog = spawn(
      'sh',
      [
        '-c',
        `while kill -0 ${process.pid} 2>/dev/null && [ -d "$0" ]; do sleep 1; done
         [ -d "$0" ] || exit 0
         for p in $(tac "$0/pids" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
         rm -rf "$0"`,
        dir,
      ],
      { stdio: 'ignore', detached: true },
    );
    watchdog.on('error', () => {});
    watchdog.unref();

    const [monPort, rgwPort] = [await freePort(), await freePort()];
    const fsid = randomUUID();
    await writeFile(conf, cephConf(dir, fsid, monPort, rgwPort));

    // 1. The monitor.
    const monmap = join(dir, 'monmap');
    check('monmaptool', await exec('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, monmap], { timeoutMs: STEP_TIMEOUT_MS }), []);
    check('ceph-mon --mkfs', await exec('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap], { timeoutMs: STEP_TIMEOUT_MS }), ['ceph-mon.a']);
    const mon = await daemon('ceph-mon.a', 'ceph-mon', ['-i', 'a']);

    // 2. The OSD; the pools are created while it boots.
    const osdUuid = randomUUID();
    const osdId = await waitFor('ceph osd new', ['ceph-mon.a'], [mon], async () => {
      const r = await ceph(['osd', 'new', osdUuid]);
      if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr.trim()}`);
      return r.stdout.trim();
    });
    if (!/^\d+$/.test(osdId)) throw failure('ceph osd new', `unexpected output ${JSON.stringify(osdId)}`, ['ceph-mon.a']);
    const osdName = `ceph-osd.${osdId}`;
    await mkdir(join(dir, `osd-${osdId}`));
    check('ceph-osd --mkfs', await exec('ceph-osd', ['-c', conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid], { timeoutMs: STEP_TIMEOUT_MS }), [osdName]);
    const osd = await daemon(osdName, 'ceph-osd', ['-i', osdId]);

    await Promise.all(
      RGW_POOLS.map(async (pool) => {
        check(`ceph osd pool create ${pool}`, await ceph(['osd', 'pool', 'create', pool, '8', '8']), ['ceph-mon.a']);
        check(`ceph osd pool application enable ${pool}`, await ceph(['osd', 'pool', 'application', 'enable', pool, 'rgw']), ['ceph-mon.a']);
      }),
    );
    await waitFor(`waiting for osd.${osdId} up`, [osdName, 'ceph-mon.a'], [mon, osd], async () => {
      const r = await ceph(['osd', 'dump', '--format', 'json']);
      if (r.code !== 0) throw new Error(`ceph osd dump: exit ${r.code}: ${r.stderr.trim()}`);
      const dump = JSON.parse(r.stdout) as { osds?: Array<{ osd: number; up: number }> };
      return dump.osds?.some((o) => String(o.osd) === osdId && o.up === 1) ? true : undefined;
    });

    // 3. The S3 user, with random keys for this run.
    const accessKeyId = randomKey(20, UPPER_ALNUM);
    const secretAccessKey = randomKey(40, SECRET_CHARS);
    check(
      'radosgw-admin user create',
      await exec('timeout', ['-s', 'KILL', String(STEP_TIMEOUT_MS / 1000), 'radosgw-admin', '-c', conf, 'user', 'create', '--uid=test', '--display-name=test', `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`], { timeoutMs: STEP_TIMEOUT_MS + 2000 }),
      [osdName, 'ceph-mon.a'],
    );

    // 4. The gateway.
    const rgw = await daemon('ceph-client.rgw.a', 'radosgw', ['-n', 'client.rgw.a']);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await waitFor('waiting for radosgw to answer 200 on GET /', ['ceph-client.rgw.a', osdName, 'ceph-mon.a'], [mon, osd, rgw], async () => {
      const res = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`GET / answered ${res.status}`);
      return true;
    });

    return { endpoint, region: 'us-east-1', accessKeyId, secretAccessKey, pids: [...pids], stop };
  } catch (e) {
    // Read the logs into the error before stop() removes them (failure() already did).
    await stop();
    throw e;
  }
}
