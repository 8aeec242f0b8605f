import { EventEmitter, once } from 'node:events';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable, finished } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { DigestMismatchError, SizeMismatchError, type BlobStore, type BlobWriter, type FileRegion } from '../store/blob-store.js';
import { UpstreamError } from '../upstream/errors.js';
import { describeNetworkError, discard, type DownloadResponse, type UpstreamClient } from '../upstream/client.js';
import { isLent, type LentBody } from '../upstream/lent-body.js';
import { OciError } from '../oci/errors.js';

/** How many times a download cut off mid-body resumes (with a Range request) before it gives up. */
const MAX_RESUMES = 5;
const READ_CHUNK = 256 * 1024;

/** A follower's body; `regions` is there while it reads the temp file (see follow()). */
export type FollowStream = Readable & { regions?: () => AsyncGenerator<FileRegion> };

/** Where a download's bytes come from: upstream, the shared bucket, or the replica that owns the blob. */
export interface DownloadSource {
  /** The blob from `offset` on (a resume); the source may ignore the offset and send it all. */
  fetch(offset: number): Promise<DownloadResponse>;
  /** Which tier answered the last fetch, when the source has several (see TieredSource). */
  readonly origin?: 'bucket' | 'peer' | 'upstream';
}

export function upstreamSource(client: UpstreamClient, repo: string, digest: string): DownloadSource {
  return { fetch: (offset) => client.download(repo, digest, offset) };
}

/**
 * One blob being fetched from upstream into the store. Any number of clients follow it while it
 * runs, each reading the temp file as it grows, so all of them stream and upstream is asked once.
 * Followers are held back from the last byte until the digest has been verified: no client ever
 * receives a complete body that does not match its digest.
 */
export class BlobDownload extends EventEmitter {
  written = 0;
  size: number | undefined;
  state: 'starting' | 'running' | 'done' | 'failed' = 'starting';
  /**
   * The bytes have verified and are all in the temp file: followers may finish now, before the
   * flush, rename and record (the commit can still fail after this; the bytes they got are right).
   */
  verified = false;
  error: Error | undefined;
  /** Settles once upstream has answered (size known) or failed, so a client can still get a clean error. */
  readonly ready: Promise<void>;
  /** Settles when the blob is committed to the store, or rejects with why it was not. */
  readonly finished: Promise<void>;
  /**
   * Settles once every byte has arrived and verified (before the flush and rename), or rejects
   * when the download fails first: the moment upstream is free for the next blob.
   */
  readonly arrived: Promise<void>;
  private writer: BlobWriter | undefined;
  private body: Readable | LentBody | undefined;
  private aborted: Error | undefined;
  private readHandle: FileHandle | undefined;
  private followers = 0;

  constructor(
    readonly digest: Digest,
    private readonly store: BlobStore,
    readonly source: DownloadSource,
    private readonly expectedSize: number | undefined,
    /** Runs once the blob is in its final place (records it); followers may have finished already. */
    private readonly onCommitted: (size: number) => void = () => {},
  ) {
    super();
    this.setMaxListeners(0);
    let markReady!: () => void;
    this.ready = new Promise<void>((resolve) => (markReady = resolve));
    let markArrived!: () => void;
    this.arrived = new Promise<void>((resolve) => (markArrived = resolve));
    this.finished = this.run(markReady, markArrived);
    this.finished.catch(() => {}); // observed through `ready`, events and followers
    // A download that fails before its bytes verify rejects `arrived` too; after, it stays settled.
    this.arrived = Promise.race([this.arrived, this.finished]);
    this.arrived.catch(() => {});
  }

  private async run(markReady: () => void, markArrived: () => void): Promise<void> {
    let response: DownloadResponse | undefined;
    try {
      response = await this.source.fetch(0);
      if (response.size !== undefined && this.expectedSize !== undefined && response.size !== this.expectedSize) {
        discard(response.body);
        throw new UpstreamError(
          'bad_response',
          `upstream says blob ${this.digest.value} is ${response.size} bytes; the manifest says ${this.expectedSize}`,
        );
      }
      this.size = this.expectedSize ?? response.size;
      this.writer = await this.store.beginWrite(this.digest, this.size, { deferFlush: true });
      this.writer.onVerified = () => {
        this.verified = true;
        markArrived();
        this.emit('change');
      };
      this.writer.onAppend = () => {
        // The store cannot take more (disk full): stop reading upstream at once.
        const failure = this.writer?.failure;
        if (failure) this.body?.destroy(Object.assign(failure, { writeError: true }));
        this.emit('change');
      };
      this.readHandle = await open(this.writer.tempPath, 'r');
      this.state = 'running';
      markReady();
      for (let resumes = 0; ; resumes++) {
        try {
          this.body = response.body;
          if (this.aborted) {
            discard(response.body);
            throw this.aborted;
          }
          await this.copy(response.body, this.written - response.offset);
          break;
        } catch (e) {
          if (this.aborted) throw this.aborted;
          if (e instanceof UpstreamError || resumes >= MAX_RESUMES || isWriteError(e)) throw e;
          // Cut off mid-body: ask for the rest. The hash so far stays valid; bytes before
          // `written` that a server resends (ignoring Range) are skipped, not rewritten.
          response = await this.source.fetch(this.written);
        }
      }
      await this.writer.commit().catch((e: Error) => {
        if (e instanceof DigestMismatchError || e instanceof SizeMismatchError) throw asUpstreamFault(e, this.digest.value);
        throw Object.assign(e, { writeError: true }); // the flush or rename failed: the store's fault
      });
      this.onCommitted(this.written);
      this.state = 'done';
      this.emit('change');
    } catch (e) {
      this.state = 'failed';
      this.error = this.describeFailure(e);
      // A body never read to its end (the store failed before the copy began: its temp dir gone at
      // shutdown, say) would hold its connection, and closing the client would wait for it forever.
      if (response && (isLent(response.body) || !response.body.readableEnded)) discard(response.body);
      await this.writer?.abort();
      markReady();
      this.emit('change');
      throw this.error;
    } finally {
      this.releaseHandleIfIdle();
    }
  }

  /** Every failure as one a client can be told about: upstream's fault, or the store's. */
  private describeFailure(e: unknown): Error {
    if (e instanceof UpstreamError || e instanceof OciError || e === this.aborted) return e as Error;
    const size = this.size === undefined ? '' : ` of ${this.size}`;
    if (isWriteError(e)) {
      const code = (e as NodeJS.ErrnoException).code;
      return new OciError(
        code === 'ENOSPC' || code === 'EDQUOT' ? 507 : 500,
        'BLOB_UNKNOWN',
        `the mirror could not store blob ${this.digest.value} (${code ?? (e as Error).message}); nothing was kept`,
      );
    }
    return new UpstreamError(
      'unavailable',
      `blob ${this.digest.value}: upstream connection lost after ${this.written}${size} bytes (${describeNetworkError(e)})`,
    );
  }

  /** Stops the download (shutdown): followers get an error, the temp file is removed. */
  abort(reason = 'the mirror is shutting down'): void {
    if (this.state === 'done' || this.state === 'failed') return;
    this.aborted = new Error(`download of ${this.digest.value} aborted: ${reason}`);
    if (isLent(this.body)) this.body.destroy(this.aborted);
    else this.body?.on('error', () => {}).destroy(this.aborted);
  }

  /**
   * Feeds the body to the writer until it ends. Chunks are taken as 'data' events and the body is
   * paused only while the writer has no room: cheaper per chunk than an async iterator, which
   * joins buffered chunks into new ones.
   */
  private copy(body: Readable | LentBody, skip: number): Promise<void> {
    if (skip < 0) return Promise.reject(new UpstreamError('bad_response', 'upstream resumed at an offset past what was asked'));
    if (isLent(body)) return this.copyLent(body, skip);
    return new Promise<void>((resolve, reject) => {
      let failure: Error | undefined;
      const fail = (e: Error): void => {
        if (failure) return;
        failure = e;
        body.off('data', onData);
        body.destroy();
        reject(e);
      };
      const take = this.taker(skip, fail);
      const onData = (chunk: Buffer): void => {
        const room = take(chunk);
        if (!room) return;
        body.pause();
        last = room.then(() => void (failure || body.resume()));
      };
      // The write of the last chunk may still be waiting for room when the body ends.
      let last: Promise<void> = Promise.resolve();
      body.on('data', onData);
      // finished() also settles for a body that ended or failed before these listeners existed.
      finished(body, (e) => (e ? fail(e) : void last.then(() => failure || resolve())));
    });
  }

  /**
   * copy() for a body read straight off the socket: each piece is the connection's own buffer,
   * lent until this returns. The writer hashes it and copies it into its file buffer at once,
   * unless it has no room: then the piece stays lent (reading stops) until the writer has taken it.
   */
  private copyLent(body: LentBody, skip: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let failure: Error | undefined;
      let last: Promise<void> = Promise.resolve();
      const fail = (e: Error): void => {
        if (failure) return;
        failure = e;
        body.destroy();
        reject(e);
      };
      const take = this.taker(skip, fail);
      body.start({
        data: (piece) => {
          const room = take(piece as Buffer);
          if (!room) return true;
          last = room.then(() => void (failure || body.resume()));
          return false;
        },
        end: () => void last.then(() => failure || resolve()),
        error: fail,
      });
    });
  }

  /**
   * What both copies do with each piece: drop the first `skip` bytes of the body (a server that
   * resent what we had), hand the rest to the writer, and route a write failure to `fail` as the
   * store's fault (or upstream's, for too many bytes). Returns a promise of room when the writer
   * is full and the body must wait; it never rejects.
   */
  private taker(skip: number, fail: (e: Error) => void): (piece: Buffer) => Promise<void> | undefined {
    const writer = this.writer!;
    const writeFailed = (e: Error): void =>
      fail(e instanceof SizeMismatchError ? asUpstreamFault(e, this.digest.value) : Object.assign(e, { writeError: true }));
    return (piece) => {
      if (skip > 0) {
        const drop = Math.min(skip, piece.length);
        piece = piece.subarray(drop);
        skip -= drop;
        if (piece.length === 0) return undefined;
      }
      const written = writer.write(piece);
      this.written += piece.length;
      if (writer.blocked) return written.then(undefined, writeFailed);
      written.catch(writeFailed);
      return undefined;
    };
  }

  /**
   * A stream of the blob (or a range of it) that follows the download as it proceeds. Its
   * `regions()` hand out the same bytes as parts of the temp file instead, for sendfile; a caller
   * that takes them never reads the stream, and destroys it when done.
   */
  follow(range?: { start: number; end: number }): FollowStream {
    // Finished and nobody reading the temp file any more: the blob is in its final place.
    if (this.state === 'done' && !this.readHandle) return this.store.createReadStream(this.digest, range);
    this.followers++;
    const unhold = this.store.flushGate.hold(); // a client reading: put-off flushes wait for it
    const self = this;
    async function* chunks(): AsyncGenerator<Buffer> {
      const buffer = Buffer.allocUnsafe(READ_CHUNK);
      for await (const region of self.regions(range)) {
        for (let pos = region.start, end = region.start + region.length; pos < end; ) {
          const { bytesRead } = await self.readHandle!.read(buffer, 0, Math.min(READ_CHUNK, end - pos), pos);
          if (bytesRead === 0) throw new Error(`temp file of ${self.digest.value} is shorter than written`);
          pos += bytesRead;
          yield Buffer.from(buffer.subarray(0, bytesRead));
        }
      }
    }
    const stream = Object.assign(Readable.from(chunks(), { objectMode: false }), { regions: () => this.regions(range) });
    stream.once('close', () => {
      unhold();
      this.followers--;
      this.releaseHandleIfIdle();
    });
    return stream;
  }

  /**
   * The parts of the temp file a follower may send, in order, as they arrive. Until the digest
   * verifies, the last byte asked for is withheld (see class comment), so neither a whole body
   * nor a range of one ever completes with unverified bytes. It is released as soon as they
   * verify, without waiting for the flush and rename: those are the store's business. Only for
   * a follower (the temp file stays open while one exists).
   */
  private async *regions(range?: { start: number; end: number }): AsyncGenerator<FileRegion> {
    let pos = range?.start ?? 0;
    while (true) {
      const end = range?.end ?? (this.size !== undefined ? this.size - 1 : Infinity);
      if (pos > end) return;
      // Once verified, the temp file (still open here) is served whole whatever the commit does.
      const complete = this.verified;
      if (this.state === 'failed' && !complete) throw this.error ?? new Error('download failed');
      if (complete && pos > this.written - 1) return;
      // Only what has reached the temp file; before the end, less its last byte.
      const inFile = this.writer?.inFile ?? 0;
      const upTo = complete ? Math.min(this.written - 1, end) : Math.min(inFile - 2, end - 1);
      if (pos <= upTo && this.readHandle) {
        yield { fd: this.readHandle.fd, start: pos, length: upTo - pos + 1 };
        pos = upTo + 1;
        continue;
      }
      await once(this, 'change');
    }
  }

  private releaseHandleIfIdle(): void {
    if (this.followers === 0 && (this.state === 'done' || this.state === 'failed') && this.readHandle) {
      const h = this.readHandle;
      this.readHandle = undefined;
      void h.close().catch(() => {});
    }
  }
}

function isWriteError(e: unknown): boolean {
  return Boolean((e as { writeError?: boolean })?.writeError);
}

/** Bytes that fail verification are upstream's fault: the client hears so, nothing is stored. */
function asUpstreamFault(e: Error, digest: string): Error {
  if (e instanceof DigestMismatchError || e instanceof SizeMismatchError) {
    return new UpstreamError('bad_response', `blob ${digest}: upstream sent wrong content (${e.message}); refused, nothing stored`);
  }
  return e;
}
