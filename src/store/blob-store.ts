import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, type ReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { newHasher, type Digest } from '../oci/digest.js';

export class DigestMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
    readonly size: number,
  ) {
    super(`content does not match its digest: expected ${expected}, got ${actual} (${size} bytes)`);
    this.name = 'DigestMismatchError';
  }
}

export class SizeMismatchError extends Error {
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`content is ${actual} bytes, expected ${expected}`);
    this.name = 'SizeMismatchError';
  }
}

/** Part of an open file: what sendfile(2) sends. The descriptor stays open while the region is in use. */
export interface FileRegion {
  fd: number;
  start: number;
  length: number;
}

/** A file stream's descriptor once it is open (rejects if it cannot be opened). */
export async function openedFd(stream: ReadStream): Promise<number> {
  const fdOf = () => (stream as unknown as { fd: number | null }).fd;
  if (typeof fdOf() !== 'number') await once(stream, 'ready');
  return fdOf()!;
}

/**
 * Content-addressed files on disk: `<root>/blobs/<alg>/<2 hex>/<hex>`. Writers go to `<root>/tmp`
 * (same file system, so the final rename is atomic) and are verified against the digest before
 * they become visible. A digest is always parsed before it reaches a path here.
 */
export class BlobStore {
  readonly blobsDir: string;
  readonly tmpDir: string;

  constructor(readonly root: string) {
    this.blobsDir = join(root, 'blobs');
    // One temp dir per process: `serve` and a CLI command (prefetch, import) may share a store.
    this.tmpDir = join(root, 'tmp', String(process.pid));
  }

  async init(): Promise<void> {
    await mkdir(this.blobsDir, { recursive: true });
    // Temp files of processes that are gone (a crash, kill -9) are never valid content.
    const tmpRoot = join(this.root, 'tmp');
    for (const entry of await readdirSafe(tmpRoot)) {
      if (entry === String(process.pid) || !isRunning(Number(entry))) await rm(join(tmpRoot, entry), { recursive: true, force: true });
    }
    await mkdir(this.tmpDir, { recursive: true });
  }

  /** Removes this process's temp dir (on shutdown, after writers have finished or aborted). */
  async dispose(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
  }

  pathOf(d: Digest): string {
    return join(this.blobsDir, d.algorithm, d.hex.slice(0, 2), d.hex);
  }

  async size(d: Digest): Promise<number | undefined> {
    try {
      return (await stat(this.pathOf(d))).size;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async read(d: Digest): Promise<Buffer | undefined> {
    try {
      return await readFile(this.pathOf(d));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  createReadStream(d: Digest, range?: { start: number; end: number }): ReadStream {
    // Large reads: fewer chunks through the stream and HTTP layers per byte (see bench/RESULTS.md, scenario 1).
    return createReadStream(this.pathOf(d), { ...range, highWaterMark: 1024 * 1024 });
  }

  /** Stores a buffer whose digest the caller has not checked yet; verifies it first. */
  async put(d: Digest, bytes: Uint8Array): Promise<void> {
    const writer = await this.beginWrite(d, bytes.length);
    try {
      await writer.write(bytes);
      await writer.commit();
    } catch (e) {
      await writer.abort();
      throw e;
    }
  }

  async beginWrite(d: Digest, expectedSize?: number): Promise<BlobWriter> {
    const tmp = join(this.tmpDir, `${d.hex.slice(0, 16)}-${randomBytes(6).toString('hex')}`);
    const handle = await open(tmp, 'wx');
    return new BlobWriter(d, tmp, this.pathOf(d), handle, expectedSize);
  }

  async delete(d: Digest): Promise<boolean> {
    try {
      await unlink(this.pathOf(d));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  /** Every stored file, as `alg:hex` strings (for verify and gc). */
  async *list(): AsyncGenerator<string> {
    for await (const entry of this.entries()) yield entry.name;
  }

  /** Every file under blobs/ with its path: `name` is `alg:hex` as laid out (it may not be a valid digest). */
  async *entries(): AsyncGenerator<{ name: string; path: string }> {
    for (const alg of await readdirSafe(this.blobsDir)) {
      for (const prefix of await readdirSafe(join(this.blobsDir, alg))) {
        for (const hex of await readdirSafe(join(this.blobsDir, alg, prefix))) {
          yield { name: `${alg}:${hex}`, path: join(this.blobsDir, alg, prefix, hex) };
        }
      }
    }
  }
}

/** Bytes written between background flushes, so that the one before the rename has little left. */
const SYNC_EVERY = 16 * 1024 * 1024;

/** One blob being written: hashed as it goes, committed by an atomic rename only if it verifies. */
export class BlobWriter {
  private readonly hasher;
  private done = false;
  written = 0;
  private syncedUpTo = 0;
  private syncing: Promise<void> | undefined;
  private syncError: Error | undefined;

  constructor(
    readonly digest: Digest,
    readonly tempPath: string,
    private readonly finalPath: string,
    private readonly handle: FileHandle,
    readonly expectedSize?: number,
  ) {
    this.hasher = newHasher(digest.algorithm);
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.expectedSize !== undefined && this.written + chunk.length > this.expectedSize) {
      throw new SizeMismatchError(this.expectedSize, this.written + chunk.length);
    }
    this.hasher.update(chunk);
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await this.handle.write(chunk, offset, chunk.length - offset, this.written + offset);
      offset += bytesWritten;
    }
    this.written += chunk.length;
    this.syncInBackground();
  }

  /**
   * Flushes what has been written so far while writing goes on: a client's last byte waits for
   * the flush before the rename, and that flush then has at most SYNC_EVERY bytes left, not the
   * whole blob (65-180 ms for 64 MiB on the benchmark machine).
   */
  private syncInBackground(): void {
    if (this.syncing || this.written - this.syncedUpTo < SYNC_EVERY) return;
    const upTo = this.written;
    this.syncing = this.handle
      .datasync()
      .then(
        () => void (this.syncedUpTo = upTo),
        (e: Error) => void (this.syncError ??= e),
      )
      .finally(() => (this.syncing = undefined));
  }

  /** Verifies size and digest, flushes, then renames into place. Throws (and cleans up) on mismatch. */
  async commit(): Promise<number> {
    if (this.done) throw new Error('blob writer already finished');
    this.done = true;
    try {
      if (this.expectedSize !== undefined && this.written !== this.expectedSize) {
        throw new SizeMismatchError(this.expectedSize, this.written);
      }
      const actual = `${this.digest.algorithm}:${this.hasher.digest('hex')}`;
      if (actual !== this.digest.value) throw new DigestMismatchError(this.digest.value, actual, this.written);
      await this.syncing;
      if (this.syncError) throw this.syncError;
      await this.handle.datasync();
      await this.handle.close();
      await mkdir(join(this.finalPath, '..'), { recursive: true });
      await rename(this.tempPath, this.finalPath);
      return this.written;
    } catch (e) {
      await this.syncing;
      await this.handle.close().catch(() => {});
      await rm(this.tempPath, { force: true });
      throw e;
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.syncing;
    await this.handle.close().catch(() => {});
    await rm(this.tempPath, { force: true });
  }
}

function isRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isNotFound(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if (isNotFound(e)) return [];
    throw e;
  }
}
