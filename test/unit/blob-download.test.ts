// BlobDownload against a real BlobStore and an in-process upstream body: the order in which a
// follower gets the end of a blob, the writer verifies, and the store flushes, renames and
// records it. (Cut, wrong and slow upstreams against a real mirror: test/reliability/.)
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobDownload, type DownloadSource } from '../../src/mirror/blob-download.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { BlobStore, type BlobWriter } from '../../src/store/blob-store.js';
import type { LentBody, LentSink } from '../../src/upstream/lent-body.js';

function digestFor(bytes: Uint8Array): Digest {
  const r = parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
  if (!r.ok) throw new Error(r.reason);
  return r.digest;
}

/** An upstream that sends `bytes` in 64 KiB chunks, as a socket would. */
function upstreamOf(bytes: Buffer): DownloadSource & { bodies: Readable[] } {
  const bodies: Readable[] = [];
  return {
    bodies,
    async fetch(offset: number) {
      const chunks: Buffer[] = [];
      for (let at = offset; at < bytes.length; at += 65_536) chunks.push(bytes.subarray(at, Math.min(at + 65_536, bytes.length)));
      const body = Readable.from(chunks, { objectMode: false });
      bodies.push(body);
      return { body, offset, size: bytes.length - offset };
    },
  };
}

/**
 * A body lent piece by piece out of one reused buffer, as socket-get's is, that fails after
 * `cutAt` bytes (a connection lost mid-body) when given.
 */
function lentBodyOf(bytes: Buffer, cutAt = Infinity): LentBody {
  const scratch = Buffer.alloc(65_536);
  let sink: LentSink | undefined;
  let at = 0;
  let stopped = false;
  const pump = (): void => {
    while (!stopped && sink) {
      if (at >= cutAt) return sink.error(new Error('socket hang up'));
      if (at >= bytes.length) return sink.end();
      const n = Math.min(scratch.length, bytes.length - at, cutAt - at);
      bytes.copy(scratch, 0, at, at + n);
      at += n;
      if (!sink.data(scratch.subarray(0, n))) return;
      scratch.fill(0); // what the next read does to a piece that was only lent
    }
  };
  return {
    lent: true,
    start: (s) => ((sink = s), setImmediate(pump)),
    resume: () => {
      scratch.fill(0);
      setImmediate(pump);
    },
    destroy: () => void (stopped = true),
  };
}

/**
 * An upstream whose first body is cut after `cutAt` bytes and which then ignores Range: the
 * resume gets the whole blob again from byte 0.
 */
function cutThenWholeAgain(bytes: Buffer, cutAt: number, kind: 'stream' | 'lent'): DownloadSource & { offsets: number[] } {
  const offsets: number[] = [];
  return {
    offsets,
    async fetch(offset: number) {
      offsets.push(offset);
      const cut = offsets.length === 1 ? cutAt : Infinity;
      const body =
        kind === 'lent'
          ? lentBodyOf(bytes, cut)
          : Readable.from(
              (async function* () {
                for (let at = 0; at < bytes.length; at += 65_536) {
                  if (at >= cut) throw new Error('socket hang up');
                  yield bytes.subarray(at, Math.min(at + 65_536, bytes.length, cut));
                }
              })(),
              { objectMode: false },
            );
      return { body, offset: 0, size: bytes.length };
    },
  };
}

/** A store whose writers' final flush (datasync) waits for `flush()`: a slow or failing disk. */
class HeldFlushStore extends BlobStore {
  flush: () => Promise<void> = async () => {};
  override async beginWrite(d: Digest, expectedSize?: number): Promise<BlobWriter> {
    const w = await super.beginWrite(d, expectedSize);
    const handle = (w as unknown as { handle: FileHandle }).handle;
    const real = handle.datasync.bind(handle);
    handle.datasync = async () => {
      await this.flush();
      return real();
    };
    return w;
  }
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

let root: string;
let store: HeldFlushStore;

beforeEach(async () => {
  root = mkdtempSync(join(tmpdir(), 'sparse-mirror-download-'));
  store = new HeldFlushStore(root);
  await store.init();
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('BlobDownload', () => {
  it('streams a blob into the store and to a follower, pausing upstream while the writer is full', async () => {
    const bytes = randomBytes(4 * 1024 * 1024 + 123);
    const d = digestFor(bytes);
    const upstream = upstreamOf(bytes);
    const committed: number[] = [];
    const download = new BlobDownload(d, store, upstream, bytes.length, (size) => committed.push(size));
    await download.ready;
    let pauses = 0;
    const pause = upstream.bodies[0]!.pause.bind(upstream.bodies[0]!);
    upstream.bodies[0]!.pause = () => (pauses++, pause());
    const got = await readAll(download.follow());
    await download.finished;
    expect(got.equals(bytes)).toBe(true);
    expect(committed).toEqual([bytes.length]);
    expect((await store.read(d))?.equals(bytes)).toBe(true);
    // Chunks arrive far faster than the file takes them: the body had to wait for the writer.
    expect(pauses).toBeGreaterThan(0);
  });

  it('stores an empty blob whose body has ended before anyone listens', async () => {
    const bytes = Buffer.alloc(0);
    const d = digestFor(bytes);
    const download = new BlobDownload(d, store, upstreamOf(bytes), 0);
    await download.finished;
    expect(download.state).toBe('done');
    expect((await store.read(d))?.length).toBe(0);
  });

  it("gives a follower the whole body once it verifies, before the store's flush and rename finish", async () => {
    const bytes = randomBytes(1024 * 1024);
    const d = digestFor(bytes);
    let release!: () => void;
    store.flush = () => new Promise<void>((r) => (release = r));
    const committed: number[] = [];
    const download = new BlobDownload(d, store, upstreamOf(bytes), bytes.length, (size) => committed.push(size));
    await download.ready;
    const got = await readAll(download.follow());
    expect(got.equals(bytes)).toBe(true);
    // The follower is done; the blob is not yet in place nor recorded.
    expect(download.state).toBe('running');
    expect(committed).toEqual([]);
    expect(existsSync(store.pathOf(d))).toBe(false);
    // A client arriving meanwhile is served the verified copy whole, too.
    const late = await readAll(download.follow());
    expect(late.equals(bytes)).toBe(true);
    // Upstream is done with it: the next read-ahead need not wait for the flush.
    await download.arrived;
    release();
    await download.finished;
    expect(committed).toEqual([bytes.length]);
    expect((await store.read(d))?.equals(bytes)).toBe(true);
  });

  it('still ends a verified body correctly when the flush then fails, and keeps nothing', async () => {
    const bytes = randomBytes(512 * 1024);
    const d = digestFor(bytes);
    store.flush = async () => {
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    };
    const committed: number[] = [];
    const download = new BlobDownload(d, store, upstreamOf(bytes), bytes.length, (size) => committed.push(size));
    await download.ready;
    const follower = download.follow();
    const [got, outcome] = await Promise.all([readAll(follower), download.finished.then(() => 'stored', (e: Error) => e.message)]);
    expect(got.equals(bytes)).toBe(true);
    expect(outcome).toMatch(/could not store blob .* \(EIO\); nothing was kept/);
    expect(download.state).toBe('failed');
    expect(committed).toEqual([]);
    expect(existsSync(store.pathOf(d))).toBe(false);
  });

  it('withholds the last byte of content that does not verify, and fails its followers', async () => {
    const bytes = randomBytes(300_000);
    const wrong = Buffer.from(bytes);
    wrong[wrong.length - 1] = wrong[wrong.length - 1]! ^ 0xff;
    const d = digestFor(bytes);
    const download = new BlobDownload(d, store, upstreamOf(wrong), bytes.length);
    await download.ready;
    const received: Buffer[] = [];
    const follower = download.follow();
    follower.on('data', (c: Buffer) => received.push(c));
    const failure = await new Promise<Error>((resolve) => follower.on('error', resolve));
    expect(failure.message).toMatch(/wrong content/);
    expect(Buffer.concat(received).length).toBeLessThan(bytes.length);
    await expect(download.finished).rejects.toThrow(/wrong content/);
    await expect(download.arrived).rejects.toThrow(/wrong content/);
    expect(existsSync(store.pathOf(d))).toBe(false);
  });

  it.each(['stream', 'lent'] as const)(
    'resumes a %s body cut mid-way from a server that ignores Range, skipping what it resends',
    async (kind) => {
      const bytes = randomBytes(1024 * 1024 + 77);
      const d = digestFor(bytes);
      const upstream = cutThenWholeAgain(bytes, 300_000, kind);
      const download = new BlobDownload(d, store, upstream, bytes.length);
      await download.ready;
      const received = await readAll(download.follow());
      await download.finished;
      expect(upstream.offsets).toEqual([0, 300_000]);
      expect(received.equals(bytes)).toBe(true);
      expect(download.written).toBe(bytes.length);
      expect(readFileSync(store.pathOf(d)).equals(bytes)).toBe(true);
    },
  );

  it('stores a lent body whose pieces are reused after each read', async () => {
    const bytes = randomBytes(2 * 1024 * 1024 + 5);
    const d = digestFor(bytes);
    const download = new BlobDownload(d, store, { fetch: async () => ({ body: lentBodyOf(bytes), offset: 0, size: bytes.length }) }, bytes.length);
    await download.finished;
    expect(readFileSync(store.pathOf(d)).equals(bytes)).toBe(true);
  });

  it('releases the source body when the store fails before the copy begins (its temp dir gone at shutdown)', async () => {
    const bytes = randomBytes(300_000);
    const upstream = upstreamOf(bytes);
    await store.dispose(); // what shutdown does to the temp dir
    const download = new BlobDownload(digestFor(bytes), store, upstream, bytes.length);
    await expect(download.finished).rejects.toThrow(/ENOENT/);
    expect(upstream.bodies).toHaveLength(1);
    // Left unread, its connection would stay busy and closing the client would wait for it.
    expect(upstream.bodies[0]!.destroyed).toBe(true);
  });
});
