import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, createReadStream, fdatasync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync, type ReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { digestOf, newHasher, type Digest } from '../oci/digest.js';
import { FlushGate } from './flush-gate.js';

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

/**
 * Buffers up to this size are stored from the event loop (see putSmall()): a manifest or an image
 * config, a few µs of page-cache work, not worth five trips through the thread pool.
 */
const SMALL_PUT = 256 * 1024;

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

export interface BlobStoreOptions {
  /** Writers begun with `deferFlush` flush once no blob has been written or read for this long (0: at once). */
  flushQuietMs?: number;
  /** ... or this long after they first asked to, whichever is sooner. */
  flushMaxDelayMs?: number;
}

/**
 * Content-addressed files on disk: `<root>/blobs/<alg>/<2 hex>/<hex>`. Writers go to `<root>/tmp`
 * (same file system, so the final rename is atomic) and are verified against the digest before
 * they become visible. A digest is always parsed before it reaches a path here.
 */
export class BlobStore {
  readonly blobsDir: string;
  readonly tmpDir: string;
  readonly flushGate: FlushGate;

  constructor(
    readonly root: string,
    opts: BlobStoreOptions = {},
  ) {
    this.flushGate = new FlushGate(opts.flushQuietMs ?? 0, opts.flushMaxDelayMs ?? 5_000);
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
    const stream = createReadStream(this.pathOf(d), { ...range, highWaterMark: 1024 * 1024 });
    stream.once('close', this.flushGate.hold()); // a client reading: put-off flushes wait for it
    return stream;
  }

  /** Stores a buffer whose digest the caller has not checked yet; verifies it first. */
  async put(d: Digest, bytes: Uint8Array): Promise<void> {
    if (bytes.length <= SMALL_PUT) return this.putSmall(d, bytes);
    const writer = await this.beginWrite(d, bytes.length);
    try {
      await writer.write(bytes);
      await writer.commit();
    } catch (e) {
      await writer.abort();
      throw e;
    }
  }

  /**
   * put(), unless the store already holds a file of that size under the digest (the same content:
   * the store is content-addressed). For a manifest fetched or pushed again.
   */
  async putUnlessStored(d: Digest, bytes: Uint8Array): Promise<void> {
    if (storedSizeNow(this.pathOf(d)) === bytes.length) return;
    await this.put(d, bytes);
  }

  /**
   * put() for a small buffer, on the event loop but for the flush: open, write, close and rename
   * take microseconds in the page cache, while each trip through the thread pool costs 0.1-1 ms
   * (a cold manifest took 2-5 ms to store that way, twice per cold pull). Same steps, same order:
   * verified, written to a temp file, flushed, renamed into place.
   */
  private async putSmall(d: Digest, bytes: Uint8Array): Promise<void> {
    const actual = digestOf(bytes, d.algorithm);
    if (actual !== d.value) throw new DigestMismatchError(d.value, actual, bytes.length);
    const tmp = this.tempPathOf(d);
    let fd: number | undefined = openSync(tmp, 'wx');
    try {
      for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset, bytes.length - offset, offset);
      const flushing = fd;
      await new Promise<void>((resolve, reject) => fdatasync(flushing, (e) => (e ? reject(e) : resolve())));
      closeSync(fd);
      fd = undefined;
      renameIntoPlace(tmp, this.pathOf(d));
    } catch (e) {
      if (fd !== undefined) closeQuietly(fd);
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  private tempPathOf(d: Digest): string {
    return join(this.tmpDir, `${d.hex.slice(0, 16)}-${randomBytes(6).toString('hex')}`);
  }

  /**
   * A writer for one blob. With `deferFlush` its commit flushes through the store's FlushGate
   * (after the burst of writes it is part of), for downloads whose readers do not wait for the
   * flush; without, at once, for callers that await the commit (manifests, pushes).
   */
  async beginWrite(d: Digest, expectedSize?: number, opts: { deferFlush?: boolean } = {}): Promise<BlobWriter> {
    const tmp = this.tempPathOf(d);
    const handle = await open(tmp, 'wx');
    const gate = opts.deferFlush && this.flushGate.quietMs > 0 ? this.flushGate : undefined;
    return new BlobWriter(d, tmp, this.pathOf(d), handle, expectedSize, gate);
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
/** Size of a writer's two buffers: one being written to the temp file, one gathering the next. */
const WRITE_BUFFER = 256 * 1024;
/**
 * A writer whose source outruns its small buffers (a fast upstream: it waited for the file) takes
 * two of these instead, while any are free. With 256 KiB a download from a fast upstream waits for
 * the file about half of the time (bench/RESULTS.md, analysis "write buffers"). The large ones
 * are a fixed set, reused rather than dropped: freed buffers would wait for a collection, and
 * 32 downloads at once peaked 45 MiB higher that way.
 */
const LARGE_WRITE_BUFFER = 2 * 1024 * 1024;
const LARGE_BUFFERS = 8;
const freeLargeBuffers: Buffer[] = [];
let largeBuffersTaken = 0;
/**
 * Full-size small buffers kept for the next writers, up to this many. A new one is memory the
 * process has not touched yet: its first fill page-faults (on a VM whose freed memory goes back
 * to the host, a fault there too), for every blob of a cold pull; and it waits for a collection
 * to be freed.
 */
const KEPT_SMALL_BUFFERS = 16;
const freeSmallBuffers: Buffer[] = [];

/** Keeps a writer's full-size small buffer for the next writer, while there is room. */
function keepSmallBuffer(b: Buffer): void {
  if (b.length === WRITE_BUFFER && freeSmallBuffers.length < KEPT_SMALL_BUFFERS) freeSmallBuffers.push(b);
}

/**
 * One blob being written: hashed as it goes, committed by an atomic rename only if it verifies.
 * Chunks are copied into two buffers of the writer's own: while one is being written to the temp
 * file the other gathers what arrives, so a download is not held back by a file-system round
 * trip per small chunk. Copying, rather than keeping the caller's chunks until written, lets them
 * die young: kept across a write they outlive the young-generation collection and their memory
 * comes back only at a full one (bench scenario 6 peaked at 213 MiB that way, 168 MiB before).
 */
export class BlobWriter {
  private readonly hasher;
  private done = false;
  /** Bytes accepted (hashed). */
  written = 0;
  /** Bytes in the temp file, readable there; `onAppend` runs whenever this grows (or writing fails). */
  inFile = 0;
  onAppend: () => void = () => {};
  /**
   * True while a write() waits for room (both buffers busy). A caller that pushes chunks without
   * awaiting each write pauses its source while this is set, until that write resolves.
   */
  blocked = false;
  /** Runs once the content has verified and is all in the temp file, before the flush and rename. */
  onVerified: () => void = () => {};
  private readonly buffers: Buffer[] = [];
  private fill: Buffer | undefined;
  private filled = 0;
  private writing: Promise<void> | undefined;
  private writeError: Error | undefined;
  private syncedUpTo = 0;
  private syncing: Promise<void> | undefined;
  /** Bytes per buffer: WRITE_BUFFER, or LARGE_WRITE_BUFFER once grown (see there). */
  private bufferSize = WRITE_BUFFER;
  private waitedForFile = false;

  constructor(
    readonly digest: Digest,
    readonly tempPath: string,
    private readonly finalPath: string,
    private readonly handle: FileHandle,
    readonly expectedSize?: number,
    /** Set: the flush waits for this gate, and no flush runs while the blob is being written. */
    private readonly flushGate?: FlushGate,
  ) {
    this.hasher = newHasher(digest.algorithm);
    this.unhold = flushGate?.hold();
  }

  /** Lets the gate go quiet: this blob is no longer being written. */
  private readonly unhold: (() => void) | undefined;

  /**
   * Hashes the chunk and copies it for the temp file; resolves once there is room for more.
   * A failed file write rejects a later call, or commit().
   */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.writeError) throw this.writeError;
    if (this.expectedSize !== undefined && this.written + chunk.length > this.expectedSize) {
      throw new SizeMismatchError(this.expectedSize, this.written + chunk.length);
    }
    this.hasher.update(chunk);
    this.written += chunk.length;
    for (let offset = 0; offset < chunk.length; ) {
      const fill = (this.fill ??= this.newBuffer()); // unset only while fewer than two exist
      if (this.filled === fill.length) {
        this.waitedForFile = true;
        this.blocked = true;
        await this.writing; // both buffers busy: wait for the one being written
        this.blocked = false;
        if (this.writeError) throw this.writeError;
        this.startWrite();
        continue;
      }
      const n = Math.min(chunk.length - offset, fill.length - this.filled);
      fill.set(chunk.subarray(offset, offset + n), this.filled);
      this.filled += n;
      offset += n;
    }
    this.startWrite(); // the file is idle: write what there is now rather than wait for a full buffer
  }

  /** A second buffer, or the first: allocated on first use, small for a small blob. */
  private newBuffer(): Buffer {
    const b =
      this.bufferSize === LARGE_WRITE_BUFFER
        ? (freeLargeBuffers.pop() ?? Buffer.allocUnsafeSlow(LARGE_WRITE_BUFFER))
        : this.smallBuffer();
    this.buffers.push(b);
    return b;
  }

  private smallBuffer(): Buffer {
    const size = Math.max(1, Math.min(WRITE_BUFFER, this.expectedSize ?? WRITE_BUFFER));
    return (size === WRITE_BUFFER && freeSmallBuffers.pop()) || Buffer.allocUnsafeSlow(size);
  }

  /**
   * The buffer to gather into while `writing` is written: the other one, unless the writer has
   * just grown (then a small one is dropped and a large one allocated on the next write).
   */
  private nextFill(writing: Buffer): Buffer | undefined {
    this.growIfWaiting();
    const other = this.buffers.find((b) => b !== writing);
    if (!other || this.bufferSize !== LARGE_WRITE_BUFFER || other.length === LARGE_WRITE_BUFFER) return other;
    this.buffers.splice(this.buffers.indexOf(other), 1);
    keepSmallBuffer(other);
    return undefined;
  }

  private growIfWaiting(): void {
    if (!this.waitedForFile || this.bufferSize === LARGE_WRITE_BUFFER) return;
    if ((this.expectedSize ?? Infinity) <= 4 * WRITE_BUFFER) return; // a small blob is written by the time it would help
    if (largeBuffersTaken + 2 > LARGE_BUFFERS) return;
    largeBuffersTaken += 2;
    this.bufferSize = LARGE_WRITE_BUFFER;
  }

  /** Hands the buffers back for the next writers. Only once no write is running. */
  private releaseBuffers(): void {
    if (this.bufferSize === LARGE_WRITE_BUFFER) {
      freeLargeBuffers.push(...this.buffers.filter((b) => b.length === LARGE_WRITE_BUFFER));
      largeBuffersTaken -= 2;
    }
    this.buffers.forEach(keepSmallBuffer);
    this.bufferSize = WRITE_BUFFER;
    this.buffers.length = 0;
    this.fill = undefined;
  }

  /** Starts writing the gathered bytes unless a write is running (it starts the next one itself). */
  private startWrite(): void {
    if (this.writing || this.filled === 0 || this.writeError || !this.fill) return;
    const bytes = this.fill.subarray(0, this.filled);
    const at = this.inFile;
    this.fill = this.nextFill(this.fill);
    this.filled = 0;
    this.writing = writeAll(this.handle, bytes, at)
      .then(
        () => {
          this.inFile = at + bytes.length;
          this.syncInBackground();
        },
        (e: Error) => {
          this.writeError ??= e;
          this.filled = 0;
        },
      )
      .finally(() => {
        this.writing = undefined;
        this.onAppend(); // the owner learns of new bytes, or of the failure, now
        this.startWrite();
      });
  }

  /**
   * Flushes what is in the file so far while writing goes on: a client's last byte waits for
   * the flush before the rename, and that flush then has at most SYNC_EVERY bytes left, not the
   * whole blob (65-180 ms for 64 MiB on the benchmark machine). Not for a writer whose flush
   * waits for the FlushGate: nobody waits for that flush, and it is meant to come after the burst.
   */
  private syncInBackground(): void {
    if (this.flushGate || this.syncing || this.inFile - this.syncedUpTo < SYNC_EVERY) return;
    const upTo = this.inFile;
    this.syncing = this.handle
      .datasync()
      .then(
        () => void (this.syncedUpTo = upTo),
        (e: Error) => void (this.writeError ??= e),
      )
      .finally(() => (this.syncing = undefined));
  }

  /** Bytes the writer holds in its buffers now: what it costs in memory (the tests read it). */
  get bufferBytes(): number {
    return this.buffers.reduce((sum, b) => sum + b.length, 0);
  }

  /** Why writing to the temp file failed, once it has. */
  get failure(): Error | undefined {
    return this.writeError;
  }

  /**
   * Writes out what is gathered and waits until no write runs, nor (with `flushes`) a background
   * flush. Neither rejects.
   */
  private async settle(flushes = true): Promise<void> {
    for (;;) {
      this.startWrite();
      if (this.writing) await this.writing;
      else if (flushes && this.syncing) await this.syncing;
      else return;
    }
  }

  /**
   * Verifies size and digest, flushes, then renames into place. Throws (and cleans up) on
   * mismatch. `onVerified` runs between the verification and the flush.
   */
  async commit(): Promise<number> {
    if (this.done) throw new Error('blob writer already finished');
    this.done = true;
    try {
      if (this.expectedSize !== undefined && this.written !== this.expectedSize) {
        throw new SizeMismatchError(this.expectedSize, this.written);
      }
      const actual = `${this.digest.algorithm}:${this.hasher.digest('hex')}`;
      if (actual !== this.digest.value) throw new DigestMismatchError(this.digest.value, actual, this.written);
      await this.settle(false);
      if (this.writeError) throw this.writeError;
      this.releaseBuffers(); // all in the file: the flush and rename need no buffer
      this.onVerified(); // all in the temp file: readers may have the end without awaiting a flush
      await this.settle();
      if (this.writeError) throw this.writeError;
      this.unhold?.();
      await this.flushGate?.wait();
      await this.handle.datasync();
      await this.handle.close();
      renameIntoPlace(this.tempPath, this.finalPath);
      return this.written;
    } catch (e) {
      await this.discard();
      throw e;
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.discard();
  }

  private async discard(): Promise<void> {
    this.unhold?.();
    this.filled = 0;
    await this.settle();
    this.releaseBuffers();
    await this.handle.close().catch(() => {});
    await rm(this.tempPath, { force: true });
  }
}

/**
 * Folders a blob was renamed into before: they stay (nothing removes them), so a blob that lands
 * in one needs no mkdir.
 */
const knownFolders = new Set<string>();

/**
 * Renames a verified temp file to its final path, making the folder only the first time. On the
 * event loop: two metadata operations in the file system's journal, cheaper than a trip through
 * the thread pool for each.
 */
function renameIntoPlace(tempPath: string, finalPath: string): void {
  const folder = dirname(finalPath);
  if (knownFolders.has(folder)) {
    try {
      return renameSync(tempPath, finalPath);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      knownFolders.delete(folder); // removed from outside after all: make it again
    }
  }
  mkdirSync(folder, { recursive: true });
  renameSync(tempPath, finalPath);
  knownFolders.add(folder);
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // the error that brought us here is the one to report
  }
}

/** The size of the file at `path`, or undefined if there is none: one stat, on the event loop. */
function storedSizeNow(path: string): number | undefined {
  return statSync(path, { throwIfNoEntry: false })?.size;
}

/** Writes all of `bytes` at `position`, however the file system splits the write. */
async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let offset = 0; offset < bytes.length; ) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset, position + offset);
    offset += bytesWritten;
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
