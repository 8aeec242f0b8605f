import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseDigest, type Digest, type DigestAlgorithm } from '../../src/oci/digest.js';
import { BlobStore, DigestMismatchError, SizeMismatchError, type BlobWriter } from '../../src/store/blob-store.js';

function digestFor(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): Digest {
  const r = parseDigest(`${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`);
  if (!r.ok) throw new Error(r.reason);
  return r.digest;
}

/** Every regular file under dir (recursively), relative to it. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(full).map((f) => join(entry.name, f)));
    else out.push(entry.name);
  }
  return out;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function readStream(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

let root: string;
let store: BlobStore;

beforeEach(async () => {
  root = mkdtempSync(join(tmpdir(), 'sparse-mirror-blobs-'));
  store = new BlobStore(root);
  await store.init();
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

const tmpRoot = () => join(root, 'tmp');

describe('BlobStore put / read / size', () => {
  it('stores bytes under their digest and reads them back', async () => {
    const bytes = randomBytes(10_000);
    const d = digestFor(bytes);
    expect(await store.size(d)).toBeUndefined();
    expect(await store.read(d)).toBeUndefined();
    await store.put(d, bytes);
    expect(await store.size(d)).toBe(bytes.length);
    const back = await store.read(d);
    expect(back?.equals(bytes)).toBe(true);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });

  it('stores sha512 content', async () => {
    const bytes = randomBytes(333);
    const d = digestFor(bytes, 'sha512');
    await store.put(d, bytes);
    expect((await store.read(d))?.equals(bytes)).toBe(true);
  });

  it('stores an empty blob', async () => {
    const d = digestFor(new Uint8Array(0));
    await store.put(d, new Uint8Array(0));
    expect(await store.size(d)).toBe(0);
    expect((await store.read(d))?.length).toBe(0);
  });

  it('putting the same content twice is harmless', async () => {
    const bytes = randomBytes(100);
    const d = digestFor(bytes);
    await store.put(d, bytes);
    await store.put(d, bytes);
    expect((await store.read(d))?.equals(bytes)).toBe(true);
    expect(await collect(store.list())).toEqual([d.value]);
  });

  it('lays files out as blobs/<alg>/<first two hex>/<hex>', async () => {
    const bytes = randomBytes(64);
    const d = digestFor(bytes);
    await store.put(d, bytes);
    expect(store.pathOf(d)).toBe(join(root, 'blobs', 'sha256', d.hex.slice(0, 2), d.hex));
    expect(statSync(store.pathOf(d)).size).toBe(64);
  });

  it('stores a blob whose prefix folder was removed from outside after an earlier blob made it', async () => {
    // Two contents whose digests share the first two hex digits: the same folder.
    const first = randomBytes(100);
    const d1 = digestFor(first);
    let second: Buffer;
    do second = randomBytes(100);
    while (digestFor(second).hex.slice(0, 2) !== d1.hex.slice(0, 2));
    await store.put(d1, first);
    rmSync(join(store.pathOf(d1), '..'), { recursive: true });
    const d2 = digestFor(second);
    await store.put(d2, second);
    expect(readFileSync(store.pathOf(d2)).equals(second)).toBe(true);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });

  // Small buffers (manifests) are written on the event loop, larger ones through a writer: both kept alike.
  it.each([
    ['small (a manifest)', 2_000],
    ['large (past the event-loop path)', 700 * 1024],
  ])('a %s put is verified, stored whole and leaves nothing in tmp/', async (_, size) => {
    const bytes = randomBytes(size);
    await store.put(digestFor(bytes), bytes);
    expect(readFileSync(store.pathOf(digestFor(bytes))).equals(bytes)).toBe(true);
    expect(filesUnder(tmpRoot())).toEqual([]);
    const claimed = digestFor(randomBytes(size));
    await expect(store.put(claimed, bytes)).rejects.toBeInstanceOf(DigestMismatchError);
    expect(existsSync(store.pathOf(claimed))).toBe(false);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });

  it('a put into a store whose temp folder is gone fails cleanly, storing nothing', async () => {
    const bytes = randomBytes(500);
    rmSync(store.tmpDir, { recursive: true });
    const err = await store.put(digestFor(bytes), bytes).catch((e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(filesUnder(join(root, 'blobs'))).toEqual([]);
  });

  it('putUnlessStored leaves a stored file of the right size alone, and replaces a missing or truncated one', async () => {
    const bytes = randomBytes(3_000);
    const d = digestFor(bytes);
    await store.putUnlessStored(d, bytes);
    expect(readFileSync(store.pathOf(d)).equals(bytes)).toBe(true);
    const inode = statSync(store.pathOf(d)).ino;
    await store.putUnlessStored(d, bytes);
    expect(statSync(store.pathOf(d)).ino).toBe(inode); // not written again
    writeFileSync(store.pathOf(d), bytes.subarray(0, 100)); // damaged from outside
    await store.putUnlessStored(d, bytes);
    expect(readFileSync(store.pathOf(d)).equals(bytes)).toBe(true);
    rmSync(store.pathOf(d));
    await store.putUnlessStored(d, bytes);
    expect(readFileSync(store.pathOf(d)).equals(bytes)).toBe(true);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });

  it('refuses bytes that do not match the digest, leaving no file in blobs/ nor tmp/', async () => {
    const claimed = digestFor(Buffer.from('what upstream promised'));
    const actual = Buffer.from('what upstream sent');
    const err = await store.put(claimed, actual).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigestMismatchError);
    const m = err as DigestMismatchError;
    expect(m.expected).toBe(claimed.value);
    expect(m.actual).toBe(digestFor(actual).value);
    expect(m.size).toBe(actual.length);
    expect(await store.size(claimed)).toBeUndefined();
    expect(filesUnder(join(root, 'blobs'))).toEqual([]);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });
});

describe('BlobWriter', () => {
  it('writes in chunks, verifies and commits atomically', async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const d = digestFor(bytes);
    const w = await store.beginWrite(d, bytes.length);
    expect(resolve(w.tempPath).startsWith(resolve(store.tmpDir) + sep)).toBe(true);
    for (let off = 0; off < bytes.length; off += 100_000) {
      await w.write(bytes.subarray(off, Math.min(off + 100_000, bytes.length)));
      // Not visible until committed.
      expect(await store.size(d)).toBeUndefined();
    }
    expect(w.written).toBe(bytes.length);
    expect(await w.commit()).toBe(bytes.length);
    expect((await store.read(d))?.equals(bytes)).toBe(true);
    expect(existsSync(w.tempPath)).toBe(false);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });

  it('keeps the temp file a prefix of what was written, and says when it grows', async () => {
    // Odd chunk sizes, some larger than the writer's buffers, some tiny.
    const sizes = [1, 65_536, 300_000, 7, 262_144, 1_000_000, 3, 524_289];
    const bytes = randomBytes(sizes.reduce((a, b) => a + b, 0));
    const w = await store.beginWrite(digestFor(bytes), bytes.length);
    const seen: number[] = [];
    w.onAppend = () => {
      seen.push(w.inFile);
      // What the temp file holds is exactly the first inFile bytes written.
      const onDisk = readFileSync(w.tempPath);
      expect(onDisk.length).toBeGreaterThanOrEqual(w.inFile);
      expect(onDisk.subarray(0, w.inFile).equals(bytes.subarray(0, w.inFile))).toBe(true);
    };
    let off = 0;
    for (const n of sizes) {
      await w.write(bytes.subarray(off, off + n));
      off += n;
      expect(w.written).toBe(off);
      expect(w.inFile).toBeLessThanOrEqual(w.written);
    }
    expect(await w.commit()).toBe(bytes.length);
    expect(seen.length).toBeGreaterThan(2);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(seen.at(-1)).toBe(bytes.length);
    expect((await store.read(digestFor(bytes)))?.equals(bytes)).toBe(true);
  });

  it('says when the content has verified and is all in the temp file, before the rename', async () => {
    const bytes = randomBytes(700_000);
    const d = digestFor(bytes);
    const w = await store.beginWrite(d, bytes.length);
    let seen: { inFile: number; tempBytes: Buffer; stored: boolean } | undefined;
    w.onVerified = () => {
      seen = { inFile: w.inFile, tempBytes: readFileSync(w.tempPath), stored: existsSync(store.pathOf(d)) };
    };
    for (let off = 0; off < bytes.length; off += 100_000) await w.write(bytes.subarray(off, off + 100_000));
    expect(seen).toBeUndefined(); // not before commit
    await w.commit();
    expect(seen?.inFile).toBe(bytes.length);
    expect(seen?.tempBytes.equals(bytes)).toBe(true);
    expect(seen?.stored).toBe(false);
    expect(existsSync(store.pathOf(d))).toBe(true);
  });

  it('never says so for content that does not verify', async () => {
    const bytes = randomBytes(1000);
    const w = await store.beginWrite(digestFor(randomBytes(1000)), bytes.length);
    let called = false;
    w.onVerified = () => (called = true);
    await w.write(bytes);
    await expect(w.commit()).rejects.toBeInstanceOf(DigestMismatchError);
    expect(called).toBe(false);
  });

  it('is blocked exactly while a write waits for room in its two buffers', async () => {
    const bytes = randomBytes(3 * 1024 * 1024);
    const w = await store.beginWrite(digestFor(bytes), bytes.length);
    expect(w.blocked).toBe(false);
    const small = w.write(bytes.subarray(0, 1000)); // fits: done at once
    expect(w.blocked).toBe(false);
    await small;
    const big = w.write(bytes.subarray(1000)); // far more than two buffers hold
    expect(w.blocked).toBe(true);
    await big;
    expect(w.blocked).toBe(false);
    await w.commit();
    expect((await store.read(digestFor(bytes)))?.equals(bytes)).toBe(true);
  });

  /** Writes `bytes` in 64 KiB chunks as a download does: without awaiting each, pausing while blocked. */
  async function feed(w: BlobWriter, bytes: Buffer, each: () => void = () => {}): Promise<void> {
    for (let at = 0; at < bytes.length; at += 64 * 1024) {
      const written = w.write(bytes.subarray(at, at + 64 * 1024));
      if (w.blocked) await written;
      each();
    }
  }

  it('grows its two buffers once its source outruns the file, and gives the room back when done', async () => {
    const bytes = randomBytes(24 * 1024 * 1024);
    const w = await store.beginWrite(digestFor(bytes), bytes.length);
    let most = 0;
    await feed(w, bytes, () => (most = Math.max(most, w.bufferBytes)));
    expect(most).toBeGreaterThan(2 * 256 * 1024); // it did wait for the file, and grew
    expect(most).toBeLessThanOrEqual(2 * 2 * 1024 * 1024 + 256 * 1024); // two large ones, and a small one still being written
    await w.commit();
    expect(w.bufferBytes).toBe(0);
    expect((await store.read(digestFor(bytes)))?.equals(bytes)).toBe(true);
  });

  it('grown writers stay within a budget together; the others keep small buffers, and every blob is intact', async () => {
    const blobs = Array.from({ length: 10 }, () => randomBytes(8 * 1024 * 1024));
    const writers = await Promise.all(blobs.map((b) => store.beginWrite(digestFor(b), b.length)));
    let most = 0;
    const total = () => (most = Math.max(most, writers.reduce((sum, w) => sum + w.bufferBytes, 0)));
    await Promise.all(writers.map((w, i) => feed(w, blobs[i]!, total)));
    // 8 large buffers of 2 MiB at most, the other writers at two 256 KiB each (plus small ones being replaced)
    expect(most).toBeGreaterThan(10 * 2 * 256 * 1024);
    expect(most).toBeLessThanOrEqual(16 * 1024 * 1024 + 10 * 2 * 256 * 1024);
    await Promise.all(writers.map((w) => w.commit()));
    for (const b of blobs) expect((await store.read(digestFor(b)))?.equals(b)).toBe(true);
    // The budget came back: a new fast writer grows again.
    const again = randomBytes(16 * 1024 * 1024);
    const w = await store.beginWrite(digestFor(again), again.length);
    let grown = 0;
    await feed(w, again, () => (grown = Math.max(grown, w.bufferBytes)));
    expect(grown).toBeGreaterThan(2 * 256 * 1024);
    await w.commit();
  });

  it('buffers handed back are taken by later writers with none of their bytes crossing blobs, aborted writers too', async () => {
    for (let wave = 0; wave < 3; wave++) {
      const blobs = Array.from({ length: 12 }, (_, i) => randomBytes(((i % 3) + 1) * 700 * 1024 + i));
      const writers = await Promise.all(blobs.map((b) => store.beginWrite(digestFor(b), b.length)));
      await Promise.all(
        writers.map(async (w, i) => {
          if (i % 4 !== 3) return feed(w, blobs[i]!).then(() => w.commit());
          // Aborted while a write still waits for room: that write resumes after the abort.
          const pending: Promise<void>[] = [];
          for (let at = 0; !w.blocked; at += 64 * 1024) pending.push(w.write(blobs[i]!.subarray(at, at + 64 * 1024)));
          await w.abort();
          await Promise.allSettled(pending);
        }),
      );
      for (const [i, b] of blobs.entries()) {
        if (i % 4 === 3) expect(await store.size(digestFor(b))).toBeUndefined();
        else expect((await store.read(digestFor(b)))?.equals(b)).toBe(true);
      }
      for (const w of writers) expect(w.bufferBytes).toBe(0);
    }
  });

  it('works without an expected size', async () => {
    const bytes = randomBytes(1000);
    const d = digestFor(bytes);
    const w = await store.beginWrite(d);
    await w.write(bytes.subarray(0, 10));
    await w.write(bytes.subarray(10));
    expect(await w.commit()).toBe(1000);
    expect(await store.size(d)).toBe(1000);
  });

  it('a wrong digest fails commit with DigestMismatchError and cleans up', async () => {
    const d = digestFor(Buffer.from('expected'));
    const w = await store.beginWrite(d, 8);
    await w.write(Buffer.from('tampered'));
    await expect(w.commit()).rejects.toBeInstanceOf(DigestMismatchError);
    expect(existsSync(w.tempPath)).toBe(false);
    expect(filesUnder(join(root, 'blobs'))).toEqual([]);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });

  it('more bytes than expected fail at write with SizeMismatchError; abort removes the temp file', async () => {
    const bytes = randomBytes(100);
    const d = digestFor(bytes);
    const w = await store.beginWrite(d, 50);
    await w.write(bytes.subarray(0, 40));
    const err = await w.write(bytes.subarray(40)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SizeMismatchError);
    expect((err as SizeMismatchError).expected).toBe(50);
    expect((err as SizeMismatchError).actual).toBe(100);
    await w.abort();
    expect(existsSync(w.tempPath)).toBe(false);
    expect(filesUnder(tmpRoot())).toEqual([]);
    expect(await store.size(d)).toBeUndefined();
  });

  it('fewer bytes than expected fail at commit with SizeMismatchError and clean up', async () => {
    const bytes = randomBytes(100);
    const d = digestFor(bytes);
    const w = await store.beginWrite(d, 101);
    await w.write(bytes);
    const err = await w.commit().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SizeMismatchError);
    expect((err as SizeMismatchError).expected).toBe(101);
    expect((err as SizeMismatchError).actual).toBe(100);
    expect(filesUnder(tmpRoot())).toEqual([]);
    expect(await store.size(d)).toBeUndefined();
  });

  it('abort removes the temp file and stores nothing; a second abort is harmless', async () => {
    const bytes = randomBytes(100);
    const d = digestFor(bytes);
    const w = await store.beginWrite(d, 100);
    await w.write(bytes);
    expect(existsSync(w.tempPath)).toBe(true);
    await w.abort();
    await w.abort();
    expect(existsSync(w.tempPath)).toBe(false);
    expect(await store.size(d)).toBeUndefined();
    await expect(w.commit()).rejects.toThrow(/already finished/);
  });

  it('commit twice is refused', async () => {
    const bytes = randomBytes(10);
    const w = await store.beginWrite(digestFor(bytes));
    await w.write(bytes);
    await w.commit();
    await expect(w.commit()).rejects.toThrow(/already finished/);
  });

  it('two concurrent writers of the same blob both succeed, and the content is intact', async () => {
    const bytes = randomBytes(50_000);
    const d = digestFor(bytes);
    const [a, b] = [await store.beginWrite(d, bytes.length), await store.beginWrite(d, bytes.length)];
    expect(a.tempPath).not.toBe(b.tempPath);
    await Promise.all([a.write(bytes), b.write(bytes)]);
    await Promise.all([a.commit(), b.commit()]);
    expect((await store.read(d))?.equals(bytes)).toBe(true);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });
});

describe('BlobWriter with a deferred flush', () => {
  it('serves its verified temp file while the flush waits for writes to pause, then renames into place', async () => {
    const deferred = new BlobStore(root, { flushQuietMs: 150, flushMaxDelayMs: 10_000 });
    const bytes = randomBytes(300_000);
    const d = digestFor(bytes);
    const w = await deferred.beginWrite(d, bytes.length, { deferFlush: true });
    let verifiedAt = 0;
    w.onVerified = () => (verifiedAt = performance.now());
    await w.write(bytes);
    const committed = w.commit();
    // Another download keeps writing: the flush (and so the rename) waits for it to pause.
    const other = randomBytes(4_000);
    const ow = await deferred.beginWrite(digestFor(other), other.length, { deferFlush: true });
    for (let i = 0; i < 10; i++) {
      await ow.write(other.subarray(i * 400, (i + 1) * 400));
      await new Promise((res) => setTimeout(res, 30));
    }
    expect(verifiedAt).toBeGreaterThan(0);
    expect(readFileSync(w.tempPath).equals(bytes)).toBe(true); // what followers are served meanwhile
    expect(existsSync(deferred.pathOf(d))).toBe(false); // nothing in place before its flush
    expect(deferred.flushGate.pending).toBe(1);
    await ow.commit();
    expect(await committed).toBe(bytes.length);
    // its last write came 9 × 30 ms after the first blob verified; the flush came 150 ms after that
    expect(performance.now() - verifiedAt).toBeGreaterThanOrEqual(270 + 140);
    expect(readFileSync(deferred.pathOf(d)).equals(bytes)).toBe(true);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });

  it('puts (manifests) and writers without deferFlush flush at once whatever the gate holds', async () => {
    const deferred = new BlobStore(root, { flushQuietMs: 10_000, flushMaxDelayMs: 60_000 });
    const held = randomBytes(1000);
    const hw = await deferred.beginWrite(digestFor(held), held.length, { deferFlush: true });
    await hw.write(held);
    const heldCommit = hw.commit();
    const bytes = randomBytes(2000);
    const t0 = performance.now();
    await deferred.put(digestFor(bytes), bytes);
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(await deferred.read(digestFor(bytes))).toEqual(bytes);
    expect(existsSync(deferred.pathOf(digestFor(held)))).toBe(false);
    deferred.flushGate.openNow();
    await heldCommit;
    expect(existsSync(deferred.pathOf(digestFor(held)))).toBe(true);
  });

  it('a client reading a stored blob holds put-off flushes until its stream closes', async () => {
    const deferred = new BlobStore(root, { flushQuietMs: 30, flushMaxDelayMs: 10_000 });
    const servedBytes = randomBytes(5000);
    await deferred.put(digestFor(servedBytes), servedBytes);
    const reading = deferred.createReadStream(digestFor(servedBytes));
    const bytes = randomBytes(1000);
    const w = await deferred.beginWrite(digestFor(bytes), bytes.length, { deferFlush: true });
    await w.write(bytes);
    let committed = false;
    const commit = w.commit().then(() => (committed = true));
    await new Promise((res) => setTimeout(res, 200));
    expect(committed).toBe(false); // the send goes on: no flush yet
    reading.destroy();
    await commit;
    expect(existsSync(deferred.pathOf(digestFor(bytes)))).toBe(true);
  });

  it('a digest mismatch still fails before any wait, leaving nothing behind', async () => {
    const deferred = new BlobStore(root, { flushQuietMs: 10_000, flushMaxDelayMs: 60_000 });
    const w = await deferred.beginWrite(digestFor(randomBytes(100)), 100, { deferFlush: true });
    await w.write(randomBytes(100));
    await expect(w.commit()).rejects.toBeInstanceOf(DigestMismatchError);
    expect(deferred.flushGate.pending).toBe(0);
    expect(filesUnder(tmpRoot())).toEqual([]);
  });
});

describe('BlobStore init', () => {
  it('creates blobs/ and its temp dir', () => {
    expect(statSync(join(root, 'blobs')).isDirectory()).toBe(true);
    expect(statSync(store.tmpDir).isDirectory()).toBe(true);
    expect(resolve(store.tmpDir).startsWith(resolve(tmpRoot()))).toBe(true);
  });

  it('clears leftover temp files (a crash mid-download) and keeps stored blobs', async () => {
    const bytes = randomBytes(100);
    const d = digestFor(bytes);
    await store.put(d, bytes);
    // A writer that never finished, as after kill -9.
    const w = await store.beginWrite(digestFor(Buffer.from('partial')), 1000);
    await w.write(Buffer.from('par'));
    writeFileSync(join(store.tmpDir, 'stray'), 'x');
    // Leftovers of a process that is gone, and a file directly in tmp/.
    mkdirSync(join(tmpRoot(), '2147483646'), { recursive: true });
    writeFileSync(join(tmpRoot(), '2147483646', 'orphan'), 'x');
    writeFileSync(join(tmpRoot(), 'loose-file'), 'x');

    const again = new BlobStore(root);
    await again.init();
    expect(filesUnder(tmpRoot())).toEqual([]);
    expect(statSync(again.tmpDir).isDirectory()).toBe(true);
    expect((await again.read(d))?.equals(bytes)).toBe(true);
    await w.abort();
  });

  it('is idempotent', async () => {
    await store.init();
    await store.init();
    const bytes = randomBytes(5);
    await store.put(digestFor(bytes), bytes);
  });
});

describe('BlobStore list / delete / createReadStream', () => {
  it('list() yields every stored digest', async () => {
    expect(await collect(store.list())).toEqual([]);
    const digests: string[] = [];
    for (let i = 0; i < 20; i++) {
      const bytes = randomBytes(10 + i);
      const d = digestFor(bytes, i % 5 === 0 ? 'sha512' : 'sha256');
      await store.put(d, bytes);
      digests.push(d.value);
    }
    const listed = await collect(store.list());
    expect([...listed].sort()).toEqual([...digests].sort());
    for (const v of listed) expect(parseDigest(v).ok).toBe(true);
  });

  it('list() does not report temp files', async () => {
    const w = await store.beginWrite(digestFor(Buffer.from('x')));
    await w.write(Buffer.from('x'));
    expect(await collect(store.list())).toEqual([]);
    await w.abort();
  });

  it('delete removes a blob and reports whether there was one', async () => {
    const bytes = randomBytes(10);
    const d = digestFor(bytes);
    expect(await store.delete(d)).toBe(false);
    await store.put(d, bytes);
    expect(await store.delete(d)).toBe(true);
    expect(await store.size(d)).toBeUndefined();
    expect(await collect(store.list())).toEqual([]);
  });

  it('createReadStream serves the whole blob or an inclusive range', async () => {
    const bytes = randomBytes(1000);
    const d = digestFor(bytes);
    await store.put(d, bytes);
    expect((await readStream(store.createReadStream(d))).equals(bytes)).toBe(true);
    expect((await readStream(store.createReadStream(d, { start: 10, end: 19 }))).equals(bytes.subarray(10, 20))).toBe(true);
    expect((await readStream(store.createReadStream(d, { start: 999, end: 999 }))).equals(bytes.subarray(999))).toBe(true);
  });
});

describe('BlobStore paths never escape the store', () => {
  it('every parsed digest maps under blobs/ with exactly alg/prefix/hex', () => {
    for (let i = 0; i < 200; i++) {
      const d = digestFor(randomBytes(8), i % 2 ? 'sha512' : 'sha256');
      const p = store.pathOf(d);
      const rel = relative(join(root, 'blobs'), p);
      expect(rel.startsWith('..')).toBe(false);
      expect(resolve(p).startsWith(resolve(root) + sep)).toBe(true);
      expect(rel.split(sep)).toEqual([d.algorithm, d.hex.slice(0, 2), d.hex]);
    }
  });

  it('traversal strings never become digests, so never reach pathOf', () => {
    for (const s of ['sha256:../../../../etc/passwd', `sha256:..${'/'.repeat(62)}`, `sha256:${'.'.repeat(64)}`, `../sha256:${'a'.repeat(64)}`]) {
      expect(parseDigest(s).ok).toBe(false);
    }
  });

  it('temp files live in the temp dir under the store root', async () => {
    const w = await store.beginWrite(digestFor(Buffer.from('t')));
    expect(resolve(w.tempPath).startsWith(resolve(tmpRoot()) + sep)).toBe(true);
    await w.abort();
  });
});
