// The machine's memory brought to the state of a server that has run for a while: the page cache
// full, little memory free.
//
// Why: on a VM with free page reporting (virtio-balloon) memory the guest frees goes back to the
// host within seconds, and a page touched afresh after that costs a fault on the host as well.
// Writing 1 GiB of new file data then costs 0.8-2.4 s of system time instead of 0.2-0.3 s (dd,
// bench/RESULTS.md, 2026-12-05 afternoon), for every process that writes: the client, the anchor
// and sparse-mirror alike. How much of the guest's free memory had gone back decided scenario 3's
// figures (a "slow mode": the language image 1.22x direct with ~20 GiB free, 1.13x with the cache
// full, the same build minutes apart). With the cache full, a write takes a page reclaimed from the
// cache (still backed by the host) instead. A long-running server's cache is full anyway.
import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { meminfo } from './sysinfo.js';

const GiB = 1024 ** 3;
const CHUNK = 4 * 1024 * 1024;
/** Left on the disk the fill file is on. */
const LEAVE_ON_DISK = 20 * GiB;
/** Tops up smaller than this are not logged (scenario 3 tops up before every pull). */
const LOG_FROM = GiB;
/** What the fill leaves free unless told otherwise (BENCH_FILL_LEAVE_FREE_MIB). */
export const DEFAULT_LEAVE_FREE = 512 * 1024 * 1024;

export interface PageCacheFill {
  /** Tops the fill up to all but `leaveFree` bytes of free memory. */
  topUp(): void;
  /** Removes the fill file. */
  remove(): void;
}

/** Free memory now (0 when it cannot be read). */
function memFreeBytes(): number {
  return meminfo().get('MemFree') ?? 0;
}

/**
 * A file in `dir` that grows to take the machine's free memory into the page cache. Its pages are
 * clean once written back (synced here), so the kernel reclaims them for whoever needs memory.
 */
export function pageCacheFill(dir: string, leaveFree: number, log: (m: string) => void): PageCacheFill {
  const path = join(dir, 'page-cache-fill');
  const fd = openSync(path, 'w');
  const zeros = Buffer.alloc(CHUNK);
  // The file never grows past the machine's memory: the kernel (and DAMON, where it runs) drops
  // its oldest pages as others need memory, and a top-up writes those offsets again.
  const wrapAt = Math.max(CHUNK, Math.floor((meminfo().get('MemTotal') ?? GiB) / CHUNK) * CHUNK);
  let size = 0;
  let at = 0;
  return {
    topUp() {
      let { bavail, bsize } = statfsSync(dir);
      // The scenarios before have taken the disk: the fill gives way, so that none runs out of it.
      const short = LEAVE_ON_DISK - bavail * bsize;
      if (short > 0 && size > 0) {
        size = Math.max(0, size - Math.ceil(short / CHUNK) * CHUNK);
        ftruncateSync(fd, size);
        at = Math.min(at, size);
        ({ bavail, bsize } = statfsSync(dir));
        log(`page cache: the fill file shrank to ${(size / GiB).toFixed(1)} GiB, leaving ${((bavail * bsize) / GiB).toFixed(1)} GiB on the disk`);
      }
      // Past its end the file takes disk space: it grows only while LEAVE_ON_DISK stays free.
      const end = Math.min(wrapAt, size + Math.max(0, Math.floor((bavail * bsize - LEAVE_ON_DISK) / CHUNK) * CHUNK));
      const want = memFreeBytes() - leaveFree;
      if (want < CHUNK || end < CHUNK) return;
      const started = performance.now();
      let wrote = 0;
      while (wrote + CHUNK <= want) {
        if (at + CHUNK > end) at = 0;
        const n = writeSync(fd, zeros, 0, CHUNK, at);
        wrote += n;
        at += n;
        size = Math.max(size, at);
      }
      spawnSync('sync', [path]); // written back: clean pages the kernel may reclaim at once
      if (wrote >= LOG_FROM) {
        log(`page cache: ${(wrote / GiB).toFixed(1)} GiB more of the fill file in ${((performance.now() - started) / 1000).toFixed(1)} s; ${(memFreeBytes() / GiB).toFixed(1)} GiB free now`);
      }
    },
    remove() {
      closeSync(fd);
      rmSync(path, { force: true });
    },
  };
}
