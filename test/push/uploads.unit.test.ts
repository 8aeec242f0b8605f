import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { OciError } from '../../src/oci/errors.js';
import { parseDigest } from '../../src/oci/digest.js';
import { UploadInterrupted, UploadManager, type BodySource } from '../../src/push/uploads.js';
import { BlobStore } from '../../src/store/blob-store.js';
import { Catalogue } from '../../src/store/catalogue.js';

const sha = (alg: 'sha256' | 'sha512', b: Buffer) => `${alg}:${createHash(alg).update(b).digest('hex')}`;

async function* chunks(...parts: Buffer[]): BodySource {
  for (const p of parts) yield p;
}

async function* breaksAfter(part: Buffer): BodySource {
  yield part;
  throw Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
}

let dir: string;
let store: BlobStore;
let catalogue: Catalogue;
let uploads: UploadManager;

async function tempFiles(): Promise<string[]> {
  return (await readdir(store.tmpDir)).filter((f) => f.startsWith('upload-'));
}

async function rejection(p: Promise<unknown>): Promise<OciError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof OciError)) throw new Error(`expected an OciError, got ${String(e)}`);
  return e;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'push-uploads-'));
  store = new BlobStore(dir);
  await store.init();
  catalogue = new Catalogue(':memory:');
  uploads = new UploadManager(store, catalogue, { timeoutMs: 60_000 }, silentLogger);
});
afterEach(async () => {
  await uploads.close();
  catalogue.close();
  await rm(dir, { recursive: true, force: true });
});

describe('UploadManager', () => {
  it('commits verified content atomically into the store and records it', async () => {
    const data = randomBytes(10_000);
    const s = await uploads.create('local/a');
    await uploads.append(s, { body: chunks(data.subarray(0, 4000)), contentRange: '0-3999', contentLength: '4000' });
    const done = await uploads.complete(s, [sha('sha256', data)], { body: chunks(data.subarray(4000)) });
    expect(done).toEqual({ digest: sha('sha256', data), size: 10_000 });
    const d = parseDigest(done.digest);
    if (!d.ok) throw new Error('digest');
    expect((await readFile(store.pathOf(d.digest))).equals(data)).toBe(true);
    expect(catalogue.getBlob(done.digest)?.size).toBe(10_000);
    expect(await tempFiles()).toEqual([]);
    expect(uploads.active).toBe(0);
  });

  it('verifies sha512 and several digests (re-reading the file)', async () => {
    const data = randomBytes(3000);
    const s = await uploads.create('local/a');
    const done = await uploads.complete(s, [sha('sha512', data), sha('sha256', data)], { body: chunks(data) });
    expect(done.digest).toBe(sha('sha512', data));
    const s2 = await uploads.create('local/a');
    const e = await rejection(uploads.complete(s2, [sha('sha256', data), sha('sha512', randomBytes(3))], { body: chunks(data) }));
    expect(e.code).toBe('DIGEST_INVALID');
    expect(await tempFiles()).toEqual([]);
  });

  it('keeps what arrived before a broken connection, and resumes there', async () => {
    const data = randomBytes(5000);
    const s = await uploads.create('local/a');
    const err = await uploads.append(s, { body: breaksAfter(data.subarray(0, 1234)), contentRange: '0-4999', contentLength: '5000' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UploadInterrupted);
    expect((await uploads.status(s)).size).toBe(1234);
    expect(s.rangeHeader()).toBe('0-1233');
    await uploads.append(s, { body: chunks(data.subarray(1234)), contentRange: '1234-4999' });
    expect((await uploads.complete(s, [sha('sha256', data)], { body: chunks() })).size).toBe(5000);
  });

  it('rolls back a chunk whose body is shorter or longer than its range (and still verifies afterwards)', async () => {
    const data = randomBytes(300);
    const s = await uploads.create('local/a');
    await uploads.append(s, { body: chunks(data.subarray(0, 100)) });
    const short = await rejection(uploads.append(s, { body: chunks(data.subarray(100, 150)), contentRange: '100-199' }));
    expect([short.status, short.code]).toEqual([400, 'SIZE_INVALID']);
    expect(s.size).toBe(100);
    const long = await rejection(uploads.append(s, { body: chunks(data.subarray(100, 250)), contentRange: '100-199' }));
    expect(long.message).toContain('longer');
    expect(s.size).toBe(100);
    await uploads.append(s, { body: chunks(data.subarray(100)), contentRange: '100-299' });
    expect((await uploads.complete(s, [sha('sha256', data)], { body: chunks() })).size).toBe(300);
  });

  it('416 for out-of-order, malformed or inconsistent ranges, with the Range to resume from', async () => {
    const s = await uploads.create('local/a');
    await uploads.append(s, { body: chunks(Buffer.alloc(10)) });
    for (const [contentRange, contentLength] of [
      ['0-9', '10'],
      ['11-20', '10'],
      ['x', undefined],
      ['10-19', '5'],
    ] as const) {
      const e = await rejection(uploads.append(s, { body: chunks(Buffer.alloc(10)), contentRange, contentLength }));
      expect([e.status, e.code, e.headers.Range]).toEqual([416, 'BLOB_UPLOAD_INVALID', '0-9']);
    }
    expect(s.size).toBe(10);
  });

  it('sessions are per repository and end when cancelled', async () => {
    const s = await uploads.create('local/a');
    expect(() => uploads.get('local/b', s.id)).toThrow(/not known to this mirror for local\/b/);
    expect(uploads.get('local/a', s.id)).toBe(s);
    await uploads.cancel(s);
    expect(() => uploads.get('local/a', s.id)).toThrow(OciError);
    expect(await tempFiles()).toEqual([]);
  });

  it('expires idle sessions, never busy ones', async () => {
    const quick = new UploadManager(store, catalogue, { timeoutMs: 100 }, silentLogger);
    const idle = await quick.create('local/a');
    const busy = await quick.create('local/a');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow(): BodySource {
      yield Buffer.from('x');
      await gate;
      yield Buffer.from('y');
    }
    const writing = quick.append(busy, { body: slow() });
    await new Promise((r) => setTimeout(r, 400));
    expect(() => quick.get('local/a', idle.id)).toThrow(/expired/);
    expect(quick.get('local/a', busy.id)).toBe(busy);
    release();
    await writing;
    expect(busy.size).toBe(2);
    await new Promise((r) => setTimeout(r, 400));
    expect(() => quick.get('local/a', busy.id)).toThrow(OciError);
    expect(await tempFiles()).toEqual([]);
  });

  it('close() removes every session and refuses new ones', async () => {
    await uploads.create('local/a');
    await uploads.create('local/b');
    expect((await tempFiles()).length).toBe(2);
    await uploads.close();
    expect(await tempFiles()).toEqual([]);
    expect((await rejection(uploads.create('local/a'))).status).toBe(503);
  });

  it('a chunk still arriving when the session is discarded (shutdown) fails cleanly with BLOB_UPLOAD_UNKNOWN', async () => {
    const s = await uploads.create('local/a');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow(): BodySource {
      yield Buffer.from('first');
      await gate;
      yield Buffer.from('second');
    }
    const writing = uploads.append(s, { body: slow() });
    await new Promise((r) => setTimeout(r, 50));
    await uploads.close();
    release();
    const e = await rejection(writing);
    expect([e.status, e.code]).toEqual([404, 'BLOB_UPLOAD_UNKNOWN']);
    expect(await tempFiles()).toEqual([]);
  });

  it('present(): a stored blob mounts; unknown, invalid or damaged ones do not', async () => {
    const data = randomBytes(100);
    const digest = sha('sha256', data);
    const d = parseDigest(digest);
    if (!d.ok) throw new Error('digest');
    expect(await uploads.present(digest)).toBeUndefined();
    await store.put(d.digest, data);
    expect(await uploads.present(digest)).toBeUndefined(); // on disk but not catalogued
    catalogue.addBlob(digest, 100);
    expect((await uploads.present(digest))?.value).toBe(digest);
    catalogue.addBlob(digest, 99);
    expect(await uploads.present(digest)).toBeUndefined();
    expect(await uploads.present('sha256:zz')).toBeUndefined();
  });
});
