// Reliability: `kill -9` of a spawned `sparse-mirror serve` while 20 cold pulls are mid-flight
// (throttled upstream), then a restart on the same data dir. `verify` must find no corrupt blob and
// no catalogue row without its file (or the reverse; unreferenced files are fine), the stale
// `<data>/tmp/<dead pid>` is removed at start, and the same pulls then succeed with correct bytes.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exec, onProcessExit } from '../support/exec.js';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, MEDIA_TYPES } from '../support/images.js';
import { buildCli, type CliBuild } from '../support/cli.js';
import { httpRequest, listFiles, REPO_ROOT, rehashStore, report, seededRandom, sha256, sleep, waitFor } from './helpers.js';

const PULLS = 20;
const SEED = 0x6b696c6c;

const fx = useFixture({ fake: true });
let workDir: string;
let dataDir: string;
let configFile: string;
const children = new Set<ChildProcess>();
let cli: CliBuild;

beforeAll(async () => {
  cli = await buildCli(); // the same tsc build every CLI test runs, so it works where nothing was built (CI)
  fx.defer(() => cli.cleanup());
  workDir = await fx.tempDir('sparse-mirror-kill9-');
  dataDir = join(workDir, 'data');
  configFile = join(workDir, 'mirror.config.mjs');
  await writeFile(
    configFile,
    `export default ${JSON.stringify(
      {
        host: '127.0.0.1',
        port: 0,
        dataDir,
        upstreams: [{ url: fx.fake.url }],
        platforms: ['linux/amd64'],
        blobs: { requireReference: false },
        log: { level: 'info' },
      },
      null,
      2,
    )};\n`,
  );
  onProcessExit(() => {
    for (const c of children) c.kill('SIGKILL');
  });
});
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

interface Serve {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `serve` and waits for its "listening" log line (which names the port it got). */
async function spawnServe(): Promise<Serve> {
  const child = spawn(process.execPath, [cli.cli, 'serve'], {
    cwd: REPO_ROOT,
    env: { ...process.env, MIRROR_CONFIG: configFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  let url: string | undefined;
  await waitFor(
    'serve to listen',
    () => {
      if (child.exitCode !== null) throw new Error(`serve exited (${child.exitCode}) before listening:\n${out.slice(-2000)}`);
      const line = out.split('\n').find((l) => l.includes('"sparse-mirror listening"'));
      if (line) url = (JSON.parse(line) as { url: string }).url;
      return url !== undefined;
    },
    25_000,
  );
  return { child, url: url!, output: () => out, exited };
}

async function verify(): Promise<{ code: number; summary: string; output: string }> {
  const r = await exec(process.execPath, [cli.cli, 'verify'], { env: { ...process.env, MIRROR_CONFIG: configFile }, timeoutMs: 30_000 });
  const output = r.stdout + r.stderr;
  return { code: r.code, summary: output.split('\n').find((l) => l.startsWith('checked ')) ?? '', output };
}

interface Image {
  repo: string;
  tag: string;
  digest: string;
  bytes: Buffer;
  config: { digest: string; bytes: Buffer };
  layer: { digest: string; bytes: Buffer };
  throttled: boolean;
}

function addImage(i: number, layerSize: number, throttled: boolean): Image {
  const repo = `reliability/kill9-${i}`;
  const layerBytes = randomBytes(layerSize);
  const layer = { digest: fx.fake.addBlob(repo, layerBytes), bytes: layerBytes };
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] }, i }));
  const config = { digest: fx.fake.addBlob(repo, configBytes), bytes: configBytes };
  const t = MEDIA_TYPES.oci;
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.manifest,
      config: { mediaType: t.config, digest: config.digest, size: configBytes.length },
      layers: [{ mediaType: t.layer, digest: layer.digest, size: layerBytes.length }],
    }),
  );
  const digest = fx.fake.addManifest(repo, 'v1', bytes, t.manifest);
  // Slow enough (320 KiB/s) that a download is mid-flight for 1 to 3 seconds.
  if (throttled) fx.fake.throttle(layer.digest, 8 * 1024, 25);
  return { repo, tag: 'v1', digest, bytes, config, layer, throttled };
}

/** A pull as a client does it: the manifest by tag, then its config and layer, each verified. */
async function pull(base: string, img: Image): Promise<{ ok: boolean; bytes: number; why?: string }> {
  const m = await httpRequest(`${base}/v2/${img.repo}/manifests/${img.tag}`, { headers: { accept: MANIFEST_ACCEPT }, timeoutMs: 20_000 });
  if (m.status !== 200 || !m.complete) return { ok: false, bytes: 0, why: `manifest ${m.status} ${m.error ?? ''}` };
  if (sha256(m.body) !== img.digest || m.headers['docker-content-digest'] !== img.digest) return { ok: false, bytes: 0, why: 'manifest: wrong bytes' };
  let bytes = m.body.length;
  for (const blob of [img.config, img.layer]) {
    const g = await httpRequest(`${base}/v2/${img.repo}/blobs/${blob.digest}`, { timeoutMs: 20_000 });
    if (g.status !== 200 || !g.complete) return { ok: false, bytes, why: `blob ${g.status} ${g.error ?? ''}` };
    if (sha256(g.body) !== blob.digest) return { ok: false, bytes, why: `blob ${blob.digest}: WRONG BYTES` };
    bytes += g.body.length;
  }
  return { ok: true, bytes };
}

describe('kill -9 during 20 concurrent cold pulls', () => {
  it('leaves a store that verifies; restart cleans up and the same pulls succeed', { timeout: 58_000 }, async () => {
    const started = performance.now();
    const rnd = seededRandom(SEED);
    const step = (what: string): void => console.log(`kill9 +${Math.round(performance.now() - started)} ms: ${what}`);
    // Two rounds of 20 cold pulls, each killed with SIGKILL at a different stage:
    //  - 'manifests': while manifests and configs are being fetched and stored (files and rows);
    //  - 'layers': once 5 small pulls are done, while 15 throttled layers are mid-download.
    const rounds = [
      { name: 'manifests', images: Array.from({ length: PULLS }, (_, i) => addImage(i, rnd.int(200_000, 400_000), true)) },
      {
        name: 'layers',
        images: Array.from({ length: PULLS }, (_, i) =>
          i < 5 ? addImage(100 + i, rnd.int(1_000, 30_000), false) : addImage(100 + i, rnd.int(400_000, 800_000), true),
        ),
      },
    ];
    const figures: Record<string, string | number> = { pulls_per_round: PULLS, kills: rounds.length };
    let verifiedBytes = 0;
    let serve = await spawnServe();
    step('serve started');

    for (const [r, round] of rounds.entries()) {
      const { images } = round;
      const staleDir = join(dataDir, 'tmp', String(serve.child.pid));
      let smallDone = 0;
      const pulls = Promise.all(
        images.map((img) =>
          pull(serve.url, img).then((p) => {
            if (!img.throttled) smallDone++;
            return p;
          }),
        ),
      );
      const throttled = images.filter((i) => i.throttled);
      if (round.name === 'manifests') {
        // The mirror reads each image's config (for its platform) while storing the manifest.
        await waitFor('manifest fetches', () => images.filter((i) => fx.fake.count('GET', i.config.digest) > 0).length >= 8, 25_000);
        await sleep(rnd.int(0, 60));
      } else {
        await waitFor('downloads in flight', () => smallDone === 5 && throttled.filter((i) => fx.fake.count('GET', i.layer.digest) > 0).length >= 12, 25_000);
        await sleep(rnd.int(50, 250));
      }
      serve.child.kill('SIGKILL');
      const death = await serve.exited;
      expect(death.signal).toBe('SIGKILL');
      const before = await pulls;
      step(`round ${round.name}: killed; its pulls ended`);
      expect(before.filter((p) => p.why?.includes('WRONG')), 'a pull got wrong bytes').toEqual([]);

      // What the crash left: partial temp files, and only whole, verified files in blobs/.
      const partials = await listFiles(staleDir);
      const afterCrash = await rehashStore(dataDir);
      expect(afterCrash.bad).toEqual([]);
      verifiedBytes += afterCrash.bytes;
      const layersCut = images.filter((img, i) => img.throttled && !before[i]!.ok && !afterCrash.digests.has(img.layer.digest)).length;
      if (round.name === 'layers') {
        expect(partials.length).toBeGreaterThan(0);
        expect(layersCut).toBeGreaterThan(0);
      }
      // A stale dir of some other dead process too (a pid above pid_max can never be running).
      const otherStale = join(dataDir, 'tmp', '4194305');
      await mkdir(otherStale, { recursive: true });
      await writeFile(join(otherStale, 'partial'), randomBytes(1000));

      // Restart on the same data dir: stale temp dirs are gone at start.
      serve = await spawnServe();
      step(`round ${round.name}: restarted`);
      expect(existsSync(staleDir), `${staleDir} removed at start`).toBe(false);
      expect(existsSync(otherStale)).toBe(false);
      const checked = await verify();
      step(`round ${round.name}: verified`);
      expect(checked.code, checked.output).toBe(0);
      expect(checked.summary).toMatch(/: 0 problem\(s\)/);
      Object.assign(figures, {
        [`r${r + 1}_${round.name}_pulls_done_before_kill`]: before.filter((p) => p.ok).length,
        [`r${r + 1}_pulls_cut`]: layersCut,
        [`r${r + 1}_partial_temp_files`]: partials.length,
        [`r${r + 1}_files_after_crash`]: afterCrash.files,
        [`r${r + 1}_verify`]: JSON.stringify(checked.summary),
      });
    }

    // The same pulls (both rounds) now succeed, with correct bytes.
    fx.fake.clearFaults();
    const all = rounds.flatMap((r) => r.images);
    const after = await Promise.all(all.map((img) => pull(serve.url, img)));
    expect(after.filter((p) => !p.ok).map((p) => p.why)).toEqual([]);
    step('pulled again');
    verifiedBytes += after.reduce((n, p) => n + p.bytes, 0);

    serve.child.kill('SIGTERM');
    const stopped = await Promise.race([serve.exited, sleep(20_000).then(() => ({ code: -1, signal: null }))]);
    expect(stopped.code).toBe(0);
    const final = await verify();
    step('stopped and verified again');
    expect(final.code, final.output).toBe(0);
    expect(final.summary).toMatch(/: 0 problem\(s\)/);
    const store = await rehashStore(dataDir);
    expect(store.bad).toEqual([]);
    verifiedBytes += store.bytes;
    for (const img of all) for (const d of [img.digest, img.config.digest, img.layer.digest]) expect(store.digests.has(d), d).toBe(true);
    expect(serve.output()).not.toMatch(/"level":"error"/);

    report('kill9', {
      ...figures,
      pulls_after_restart_ok: after.filter((p) => p.ok).length,
      corrupt_files: store.bad.length,
      bytes_verified: verifiedBytes,
      ms: Math.round(performance.now() - started),
    });
  });
});
