import { createHash, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { BlobStore } from '../store/blob-store.js';
import type { Catalogue } from '../store/catalogue.js';
import type { Logger } from '../log.js';

/** A chunk's place in the blob, from `Content-Range: <start>-<end>` (inclusive). */
export interface ChunkRange {
  start: number;
  end: number;
}

/** The body of a request that carries blob data. Errors thrown while reading it mean the client went away. */
export type BodySource = AsyncIterable<Uint8Array>;

export interface ChunkInput {
  body: BodySource;
  /** The raw `Content-Range` header, if any. */
  contentRange?: string;
  /** The raw `Content-Length` header, if any. */
  contentLength?: string;
}

/** Raised when the client's connection broke mid-body: what arrived is kept, so the client can resume. */
export class UploadInterrupted extends Error {
  constructor(
    readonly session: UploadSession,
    cause: unknown,
  ) {
    super(`upload ${session.id} interrupted after ${session.size} bytes: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'UploadInterrupted';
  }
}

const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** How long a status request waits for a chunk still being written before answering with what it has. */
const STATUS_WAIT_MS = 5000;

/** One blob upload in progress: a temp file in the store's tmp dir, hashed as it grows. */
export class UploadSession {
  /** Bytes received and written, in order: the next chunk must start here. */
  size = 0;
  lastActive = Date.now();
  finished = false;
  /** sha256 of the bytes so far; dropped when a chunk is rolled back (then the file is re-read at the end). */
  hasher: Hash | undefined = createHash('sha256');
  /** Operations in progress (a long PATCH keeps the session alive however long it takes). */
  busy = 0;
  timer: NodeJS.Timeout | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly id: string,
    /** The mirror's key of the repository it was started for; other repositories cannot see it. */
    readonly repo: string,
    readonly tempPath: string,
    readonly handle: FileHandle,
  ) {}

  /** Runs `fn` after every earlier operation on this session (chunks are written strictly in order). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => {});
    return run;
  }

  /** Resolves once earlier operations are done, or after `ms` (a status report must not hang). */
  async settled(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.tail, new Promise((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  /** The spec's `Range` value: the inclusive range received so far (`0-0` when nothing yet, as distribution does). */
  rangeHeader(): string {
    return `0-${Math.max(0, this.size - 1)}`;
  }
}

export interface UploadPolicy {
  /** An upload idle this long is cancelled and its temp file removed. */
  timeoutMs: number;
}

export interface CompletedUpload {
  digest: string;
  size: number;
}

/**
 * Blob upload sessions (POST, PATCH, PUT, GET status, DELETE). Data goes to a temp file on the
 * store's file system; at completion the digest is verified and the file is renamed into place
 * atomically, exactly as the store's own writers do. A rejected or abandoned upload leaves nothing.
 */
export class UploadManager {
  private readonly sessions = new Map<string, UploadSession>();
  private closed = false;

  constructor(
    private readonly store: BlobStore,
    private readonly catalogue: Catalogue,
    private readonly policy: UploadPolicy,
    private readonly log: Logger,
  ) {}

  get active(): number {
    return this.sessions.size;
  }

  async create(repo: string): Promise<UploadSession> {
    if (this.closed) throw new OciError(503, 'UNSUPPORTED', 'the mirror is shutting down');
    const id = randomUUID();
    await mkdir(this.store.tmpDir, { recursive: true });
    const tempPath = join(this.store.tmpDir, `upload-${id}`);
    const handle = await open(tempPath, 'wx');
    const session = new UploadSession(id, repo, tempPath, handle);
    this.sessions.set(id, session);
    this.schedule(session, this.policy.timeoutMs);
    return session;
  }

  /** The session `id` of `repo`, or the spec's 404 BLOB_UPLOAD_UNKNOWN. */
  get(repo: string, id: string): UploadSession {
    const session = SESSION_ID.test(id) ? this.sessions.get(id) : undefined;
    if (!session || session.repo !== repo || session.finished) throw this.unknown(repo, id);
    return session;
  }

  private unknown(repo: string, id: string): OciError {
    return new OciError(
      404,
      'BLOB_UPLOAD_UNKNOWN',
      `upload ${clip(id)} is not known to this mirror for ${repo} (finished, cancelled, or expired after ` +
        `${formatSeconds(this.policy.timeoutMs)} idle); start a new upload`,
      { session: clip(id) },
    );
  }

  /** Current state, after any chunk still being written (bounded wait). */
  async status(session: UploadSession): Promise<UploadSession> {
    await session.settled(STATUS_WAIT_MS);
    this.touch(session);
    return session;
  }

  /** PATCH: appends a chunk, enforcing the spec's ordering rules (416 for a bad or out-of-order range). */
  append(session: UploadSession, input: ChunkInput): Promise<UploadSession> {
    return this.op(session, async () => {
      await this.writeChunk(session, input);
      return session;
    });
  }

  /**
   * PUT ?digest=: appends the last chunk (if any), verifies every given digest against the whole
   * content and commits it to the store. A mismatch cancels the upload: nothing is stored.
   */
  complete(session: UploadSession, digests: string[], input: ChunkInput): Promise<CompletedUpload> {
    const parsed = parseDigests(digests);
    return this.op(session, async () => {
      await this.writeChunk(session, input);
      return this.commit(session, parsed);
    });
  }

  /** POST ?digest= with the whole blob as body: a session of one request. */
  async monolithic(repo: string, digests: string[], input: ChunkInput): Promise<CompletedUpload> {
    const parsed = parseDigests(digests);
    const session = await this.create(repo);
    try {
      return await this.op(session, async () => {
        await this.writeChunk(session, input);
        return this.commit(session, parsed);
      });
    } finally {
      if (!session.finished) await this.discard(session);
    }
  }

  /** DELETE: cancels the upload and removes its data. */
  async cancel(session: UploadSession): Promise<void> {
    await session.settled(STATUS_WAIT_MS);
    await this.discard(session);
  }

  /** Whether a blob is in the store, for a cross-repository mount. Invalid digests simply do not mount. */
  async present(digestText: string): Promise<Digest | undefined> {
    const parsed = parseDigest(digestText);
    if (!parsed.ok) return undefined;
    const row = this.catalogue.getBlob(parsed.digest.value);
    if (!row) return undefined;
    const size = await this.store.size(parsed.digest);
    return size === row.size ? parsed.digest : undefined;
  }

  /** Cancels every session (shutdown): temp files are removed. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.sessions.values()].map((s) => this.discard(s)));
  }

  private async op<T>(session: UploadSession, fn: () => Promise<T>): Promise<T> {
    session.busy++;
    try {
      return await session.exclusive(async () => {
        if (session.finished) throw this.unknown(session.repo, session.id); // cancelled or expired meanwhile
        return fn();
      });
    } finally {
      session.busy--;
      this.touch(session);
    }
  }

  private touch(session: UploadSession): void {
    session.lastActive = Date.now();
  }

  private schedule(session: UploadSession, ms: number): void {
    session.timer = setTimeout(() => this.expire(session), Math.max(10, ms));
    session.timer.unref();
  }

  private expire(session: UploadSession): void {
    if (session.finished) return;
    const idle = Date.now() - session.lastActive;
    if (session.busy > 0 || idle < this.policy.timeoutMs) {
      this.schedule(session, session.busy > 0 ? this.policy.timeoutMs : this.policy.timeoutMs - idle);
      return;
    }
    this.log.info('upload expired; its data is removed', { session: session.id, repo: session.repo, bytes: session.size });
    void this.discard(session);
  }

  private async discard(session: UploadSession): Promise<void> {
    if (!session.finished) {
      session.finished = true;
      clearTimeout(session.timer);
      this.sessions.delete(session.id);
      await session.handle.close().catch(() => {});
    }
    await rm(session.tempPath, { force: true });
  }

  /**
   * Writes one chunk at the session's end. A range that does not start where the data ends, is
   * malformed, or disagrees with Content-Length is refused with 416 before anything is written.
   * A body that turns out longer or shorter than its declared range is rolled back; a body cut
   * off by a broken connection is kept (the client asks for the status and resumes).
   */
  private async writeChunk(session: UploadSession, input: ChunkInput): Promise<void> {
    const declared = this.checkRange(session, input);
    const start = session.size;
    const iterator = input.body[Symbol.asyncIterator]();
    let overflow = false;
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await iterator.next();
      } catch (e) {
        throw new UploadInterrupted(session, e);
      }
      if (next.done) break;
      let chunk = next.value;
      if (declared !== undefined && session.size - start + chunk.length > declared) {
        overflow = true;
        chunk = chunk.subarray(0, declared - (session.size - start));
      }
      await this.write(session, chunk);
      if (overflow) {
        await iterator.return?.();
        break;
      }
    }
    const received = session.size - start;
    if (declared !== undefined && (overflow || received !== declared)) {
      await this.rollback(session, start);
      throw new OciError(400, 'SIZE_INVALID', `chunk body is ${overflow ? 'longer' : `${received} bytes, shorter`} than the ${declared} bytes its headers declare; the chunk was discarded`, {
        declared,
        ...(overflow ? {} : { received }),
      });
    }
  }

  /** The chunk's declared length, or undefined when neither Content-Range nor Content-Length says. */
  private checkRange(session: UploadSession, input: ChunkInput): number | undefined {
    const length = input.contentLength === undefined || input.contentLength === '' ? undefined : Number(input.contentLength);
    if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) {
      throw new OciError(400, 'SIZE_INVALID', `Content-Length "${clip(input.contentLength!)}" is not a byte count`);
    }
    if (input.contentRange === undefined || input.contentRange === '') return length;
    const range = parseContentRange(input.contentRange);
    const refuse = (why: string) =>
      new OciError(416, 'BLOB_UPLOAD_INVALID', `${why}; the upload holds bytes 0-${session.size - 1} (${session.size} bytes), resume at ${session.size}`, {
        size: session.size,
        contentRange: clip(input.contentRange!),
      }, rangeHeaders(session));
    if (!range) throw refuse(`Content-Range "${clip(input.contentRange)}" is not <start>-<end>`);
    if (range.start !== session.size) throw refuse(`chunk ${range.start}-${range.end} is out of order`);
    const declared = range.end - range.start + 1;
    if (length !== undefined && length !== declared) {
      throw refuse(`Content-Range ${range.start}-${range.end} is ${declared} bytes but Content-Length is ${length}`);
    }
    return declared;
  }

  private async write(session: UploadSession, chunk: Uint8Array): Promise<void> {
    // Cancelled, expired or shut down while this chunk was arriving: its file is gone.
    if (session.finished) throw this.unknown(session.repo, session.id);
    let offset = 0;
    try {
      while (offset < chunk.length) {
        const { bytesWritten } = await session.handle.write(chunk, offset, chunk.length - offset, session.size + offset);
        offset += bytesWritten;
      }
    } catch (e) {
      if (session.finished) throw this.unknown(session.repo, session.id);
      // The file may hold part of this chunk: cut it back to what is known to be good.
      await this.rollback(session, session.size);
      throw e;
    }
    session.hasher?.update(chunk);
    session.size += chunk.length;
    this.touch(session);
  }

  private async rollback(session: UploadSession, size: number): Promise<void> {
    if (session.finished) return;
    await session.handle.truncate(size);
    if (size !== session.size) session.hasher = undefined; // re-read at completion
    session.size = size;
  }

  private async commit(session: UploadSession, digests: Digest[]): Promise<CompletedUpload> {
    const primary = digests[0]!;
    for (const d of digests) {
      const actual = await this.hashOf(session, d.algorithm);
      if (actual !== d.value) {
        await this.discard(session);
        throw new OciError(
          400,
          'DIGEST_INVALID',
          `uploaded content (${session.size} bytes) has digest ${actual}, not ${d.value}; the upload was discarded and nothing was stored`,
          { expected: d.value, actual, size: session.size },
        );
      }
    }
    session.finished = true;
    clearTimeout(session.timer);
    this.sessions.delete(session.id);
    try {
      await session.handle.datasync();
      await session.handle.close();
      const existing = await this.store.size(primary);
      if (existing === session.size) {
        await rm(session.tempPath, { force: true });
      } else {
        const finalPath = this.store.pathOf(primary);
        await mkdir(dirname(finalPath), { recursive: true });
        await rename(session.tempPath, finalPath);
      }
      this.catalogue.addBlob(primary.value, session.size);
    } catch (e) {
      await session.handle.close().catch(() => {});
      await rm(session.tempPath, { force: true });
      throw e;
    }
    this.log.debug('upload committed', { digest: primary.value, repo: session.repo, bytes: session.size });
    return { digest: primary.value, size: session.size };
  }

  private async hashOf(session: UploadSession, algorithm: Digest['algorithm']): Promise<string> {
    if (algorithm === 'sha256' && session.hasher) return `sha256:${session.hasher.copy().digest('hex')}`;
    const hash = createHash(algorithm);
    if (session.size > 0) {
      for await (const chunk of createReadStream(session.tempPath, { start: 0, end: session.size - 1 })) hash.update(chunk as Buffer);
    }
    return `${algorithm}:${hash.digest('hex')}`;
  }
}

/** `Location`, `Range` and the session-id headers every upload response carries. */
export function rangeHeaders(session: UploadSession): Record<string, string> {
  return {
    Range: session.rangeHeader(),
    'Docker-Upload-UUID': session.id,
    'Blob-Upload-Session-ID': session.id,
  };
}

/** `<start>-<end>`, tolerating a `bytes ` / `bytes=` prefix and a `/<total>` suffix some clients add. */
export function parseContentRange(header: string): ChunkRange | undefined {
  const m = /^\s*(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?\s*$/.exec(header);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  return end >= start ? { start, end } : undefined;
}

function parseDigests(digests: string[]): Digest[] {
  if (digests.length === 0) {
    throw new OciError(400, 'DIGEST_INVALID', 'the digest query parameter is required to complete an upload (PUT …?digest=sha256:…)');
  }
  return digests.map((text) => {
    const parsed = parseDigest(text);
    if (!parsed.ok) throw new OciError(400, 'DIGEST_INVALID', parsed.reason, { digest: clip(text) });
    return parsed.digest;
  });
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
