// podman 4.3 and buildah 1.28 (Debian) with their storage in a temp dir and a registries.conf of
// the test's own (CONTAINERS_REGISTRIES_CONF), never the machine's.
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithoutProxies, exec, onProcessExit, type ExecResult } from './exec.js';

export interface RegistryEntry {
  prefix: string;
  location: string;
  insecure?: boolean;
  /** `[[registry.mirror]]` locations, tried before `location`. */
  mirrors?: Array<{ location: string; insecure?: boolean }>;
}

/** registries.conf v2 text for these entries, no short-name search. */
export function registriesConf(entries: RegistryEntry[]): string {
  const q = JSON.stringify;
  const lines = ['unqualified-search-registries = []', 'short-name-mode = "disabled"', ''];
  for (const e of entries) {
    lines.push('[[registry]]', `prefix = ${q(e.prefix)}`, `location = ${q(e.location)}`, `insecure = ${e.insecure ?? false}`, '');
    for (const m of e.mirrors ?? []) lines.push('[[registry.mirror]]', `location = ${q(m.location)}`, `insecure = ${m.insecure ?? false}`, '');
  }
  return lines.join('\n');
}

export interface ContainersTool {
  dir: string;
  /** Runs the tool with this storage and registries.conf. */
  run(args: string[], timeoutMs?: number): Promise<ExecResult>;
  /** Replaces the registries.conf the tool reads. */
  configure(entries: RegistryEntry[]): Promise<void>;
  stop(): Promise<void>;
}

/** `podman` or `buildah` with vfs storage under a fresh temp dir. */
export async function containersTool(bin: 'podman' | 'buildah'): Promise<ContainersTool> {
  const dir = await mkdtemp(join(tmpdir(), `sm-${bin}-`));
  onProcessExit(() => rmSync(dir, { recursive: true, force: true }));
  const conf = join(dir, 'registries.conf');
  await writeFile(conf, registriesConf([]));
  await writeFile(join(dir, 'auth.json'), '{}');
  const env = envWithoutProxies({
    CONTAINERS_REGISTRIES_CONF: conf,
    REGISTRY_AUTH_FILE: join(dir, 'auth.json'),
  });
  const storage = ['--storage-driver', 'vfs', '--root', join(dir, 'root'), '--runroot', join(dir, 'runroot')];
  return {
    dir,
    run: (args, timeoutMs = 120_000) => exec(bin, [...storage, ...args], { env, timeoutMs }),
    configure: (entries) => writeFile(conf, registriesConf(entries)),
    stop: () => rm(dir, { recursive: true, force: true }).catch(() => {}),
  };
}
