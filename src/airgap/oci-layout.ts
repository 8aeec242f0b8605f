// Shared pieces of `export` and `import`: the OCI image layout's names, CLI reference resolution,
// and staging (verified temp files in the store's per-process tmp dir, renamed into place only
// when everything an image needs has verified).
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { newHasher, type Digest } from '../oci/digest.js';
import { parseImageReference } from '../oci/reference.js';
import { DigestMismatchError, SizeMismatchError, type BlobStore } from '../store/blob-store.js';
import type { Route, Router } from '../mirror/routing.js';

/** The OCI image layout's marker file and the version this writes (and reads). */
export const LAYOUT_FILE = 'oci-layout';
export const LAYOUT_VERSION = '1.0.0';
export const INDEX_FILE = 'index.json';
/** The tag of an entry in index.json, as skopeo's `oci:DIR:TAG` and oras look it up. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** The full image name (containerd and `ctr images export` write it): how import knows where an image goes. */
export const IMAGE_NAME_ANNOTATION = 'io.containerd.image.name';
/** index.json and oci-layout are read into memory; no real layout comes near this. */
export const MAX_LAYOUT_FILE_BYTES = 16 * 1024 * 1024;

/** Bytes from a file, a tar entry or a buffer. */
export type Chunks = AsyncIterable<unknown> | Iterable<Uint8Array>;

/** A failure of export or import that is reported as such (exit 1), with a message a person can act on. */
export class LayoutError extends Error {
  override name = 'LayoutError';
}

/** A failure to report as a message, not a stack: a LayoutError, or a file system error (ENOSPC, EACCES …). */
export function isReportable(e: unknown): e is Error {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return e instanceof LayoutError || (e instanceof Error && typeof code === 'string' && /^E[A-Z]+$/.test(code));
}

/** `<root>/blobs/<alg>/<hex>`; the digest is parsed, so this never leaves `root`. */
export function layoutBlobPath(root: string, d: Digest): string {
  return join(root, 'blobs', d.algorithm, d.hex);
}

export function layoutBlobName(d: Digest): string {
  return `blobs/${d.algorithm}/${d.hex}`;
}

/** A reference given on the command line, mapped to the mirror's repository. */
export interface ResolvedRef {
  input: string;
  route: Route;
  tag?: string;
  digest?: string;
}

/**
 * Maps `docker.io/library/alpine:3.20`, `ghcr.io/org/app@sha256:…` or `alpine:3.20` (default
 * upstream) to the route the mirror stores it under, exactly as `serve` would route a pull of it.
 */
export function resolveRef(router: Router, input: string): ResolvedRef {
  let ref;
  try {
    ref = parseImageReference(input);
  } catch (e) {
    throw new LayoutError(`"${input}" is not an image reference: ${(e as Error).message}`);
  }
  let route: Route;
  try {
    route = router.route(ref.repository, ref.registry);
  } catch (e) {
    throw new LayoutError(`${input}: ${(e as Error).message}`);
  }
  return { input, route, tag: ref.tag, digest: ref.digest };
}

/** The name an image is exported under: `<mirror key>:<tag>` or `<mirror key>@<digest>`. */
export function imageName(route: Route, tag: string | undefined, digest: string): string {
  return tag ? `${route.key}:${tag}` : `${route.key}@${digest}`;
}

/** A verified file waiting in the staging dir to be renamed into the store. */
export interface StagedFile {
  digest: Digest;
  size: number;
  path: string;
  /** Staged for one image (dropped if that image fails) rather than shared by the whole import. */
  owned: boolean;
  /** Renamed into the store; `path` is then the store's path. */
  committed: boolean;
}

/**
 * Temp files under the store's per-process tmp dir (same file system as the store, so a commit
 * is an atomic rename). A file is hashed while it is written and kept only if its bytes match
 * the digest (and size) it claims: nothing unverified ever reaches the store.
 */
export class Staging {
  private constructor(
    private readonly store: BlobStore,
    readonly dir: string,
  ) {}

  static async create(store: BlobStore): Promise<Staging> {
    const dir = join(store.tmpDir, `layout-${randomBytes(6).toString('hex')}`);
    await mkdir(dir, { recursive: true });
    return new Staging(store, dir);
  }

  /**
   * Writes `source` to a temp file, verifying it. The source is always read to its end, even
   * after a mismatch is certain, so a tar entry is fully consumed.
   */
  async fromStream(d: Digest, source: Chunks, expectedSize: number | undefined, owned: boolean): Promise<StagedFile> {
    const path = join(this.dir, `${d.algorithm}-${d.hex}-${randomBytes(4).toString('hex')}`);
    const handle = await open(path, 'wx');
    const hasher = newHasher(d.algorithm);
    let written = 0;
    let seen = 0;
    try {
      try {
        for await (const c of source) {
          const chunk = c as Uint8Array;
          seen += chunk.length;
          if (expectedSize !== undefined && seen > expectedSize) continue; // already wrong: just drain
          hasher.update(chunk);
          let offset = 0;
          while (offset < chunk.length) {
            const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, written + offset);
            offset += bytesWritten;
          }
          written += chunk.length;
        }
      } catch (e) {
        throw new LayoutError(`cannot read ${d.value}: ${(e as Error).message}`);
      }
      if (expectedSize !== undefined && seen !== expectedSize) throw new SizeMismatchError(expectedSize, seen);
      const actual = `${d.algorithm}:${hasher.digest('hex')}`;
      if (actual !== d.value) throw new DigestMismatchError(d.value, actual, written);
      await handle.datasync();
      await handle.close();
      return { digest: d, size: written, path, owned, committed: false };
    } catch (e) {
      await handle.close().catch(() => {});
      await rm(path, { force: true });
      throw e;
    }
  }

  fromBytes(d: Digest, bytes: Uint8Array, owned: boolean): Promise<StagedFile> {
    return this.fromStream(d, [bytes], bytes.length, owned);
  }

  /** Moves a staged file into the store (unless the store got the same content meanwhile). */
  async commit(f: StagedFile): Promise<void> {
    if (f.committed) return;
    const target = this.store.pathOf(f.digest);
    if ((await this.store.size(f.digest)) === f.size) {
      await rm(f.path, { force: true });
    } else {
      await mkdir(dirname(target), { recursive: true });
      await rename(f.path, target);
    }
    f.path = target;
    f.committed = true;
  }

  async discard(f: StagedFile): Promise<void> {
    if (!f.committed) await rm(f.path, { force: true });
  }

  async dispose(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Reads a whole stream, hashing it, and checks it against its digest and size. */
export async function hashCheck(d: Digest, size: number, source: Chunks, sink: (chunk: Uint8Array) => Promise<void>): Promise<void> {
  const hasher = newHasher(d.algorithm);
  let seen = 0;
  for await (const c of source) {
    const chunk = c as Uint8Array;
    seen += chunk.length;
    if (seen > size) throw new SizeMismatchError(size, seen);
    hasher.update(chunk);
    await sink(chunk);
  }
  if (seen !== size) throw new SizeMismatchError(size, seen);
  const actual = `${d.algorithm}:${hasher.digest('hex')}`;
  if (actual !== d.value) throw new DigestMismatchError(d.value, actual, seen);
}
