// `sparse-mirror import`: images from an OCI image layout (a directory or a tar) into the store.
// Every manifest and blob is verified against its digest while it is copied; an image is recorded
// in the catalogue only once all it needs is verified and in place, in one transaction. A corrupt
// or incomplete image is reported and leaves nothing behind; the other images still import.
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract } from 'tar-stream';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { indexChildren, parseManifest, referencedBlobs, type Descriptor, type ImageManifest } from '../oci/manifest.js';
import { isImageConfigType } from '../oci/media-types.js';
import { formatPlatform, platformOfImageConfig } from '../oci/platform.js';
import { isValidTag, parseImageReference } from '../oci/reference.js';
import { DigestMismatchError, SizeMismatchError } from '../store/blob-store.js';
import type { NewManifest } from '../store/catalogue.js';
import type { Mirror } from '../mirror/mirror.js';
import { manifestRecord } from '../mirror/records.js';
import { signatureGate } from '../signatures/gate.js';
import type { VerdictStatus } from '../store/signature-verdicts.js';
import { silentLogger } from '../log.js';
import { screenLayout, type Screened } from './layout-signatures.js';
import {
  IMAGE_NAME_ANNOTATION,
  imageName,
  INDEX_FILE,
  LAYOUT_FILE,
  layoutBlobPath,
  LayoutError,
  MAX_LAYOUT_FILE_BYTES,
  REF_NAME_ANNOTATION,
  resolveRef,
  Staging,
  type ResolvedRef,
  type StagedFile,
} from './oci-layout.js';

export interface ImportOptions {
  /** Where entries without `io.containerd.image.name` go (`registry/repo`); their ref.name becomes the tag. */
  repo?: string;
  /** Called as each image is done (imported or failed), for progress output. */
  onImage?(outcome: ImportedImage | ImportFailure): void;
  /**
   * Admit only images signed by the keys of the signature policy covering their repository
   * (`warn` policies count as `enforce`; an image no policy covers is refused). Without it, the
   * importing side's `enforce` policies still apply.
   */
  requireSignatures?: boolean;
}

export interface ImportedImage {
  ok: true;
  name: string;
  digest: string;
  tag?: string;
  /** The digest the tag pointed at before, if it moved. */
  previous?: string;
  platforms: string[];
  /** Platforms listed in the index but not imported (not in the layout, or not carried here). */
  absent: string[];
  manifests: number;
  blobs: number;
  /** The repository it went to, and what it consists of (manifests parents first), for the shared bucket. */
  repo: string;
  content: { manifests: string[]; blobs: Array<{ digest: string; size: number }> };
  /** The signature policy's verdict, when a policy covers the repository (`warn`: imported all the same). */
  signature?: { status: VerdictStatus; reason: string };
}

export interface ImportFailure {
  ok: false;
  name: string;
  error: string;
}

export interface ImportResult {
  images: ImportedImage[];
  failures: ImportFailure[];
  manifests: number;
  blobs: number;
  /** Bytes copied into the store. */
  bytesCopied: number;
  /** Bytes the store already held (not copied again). */
  bytesPresent: number;
}

/** Where the layout's content comes from: files in a directory, or entries extracted from a tar. */
interface LayoutSource {
  has(d: Digest): Promise<boolean>;
  /** A manifest or image config, verified against digest and size. */
  readSmall(d: Digest, size: number): Promise<Buffer>;
  /** A blob, verified into staging. */
  stage(d: Digest, size: number): Promise<StagedFile>;
}

export async function importLayout(mirror: Mirror, src: string, opts: ImportOptions = {}): Promise<ImportResult> {
  let info;
  try {
    info = await stat(src);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LayoutError(`${src} does not exist`);
    throw e;
  }
  // Resolve --repo before reading anything, so a bad one fails fast.
  const fallback = opts.repo ? resolveRepo(mirror, opts.repo) : undefined;
  const staging = await Staging.create(mirror.store);
  try {
    let source: LayoutSource;
    let files: Map<string, Buffer>;
    if (info.isDirectory()) {
      files = await readLayoutFiles(src);
      source = dirSource(src, staging, mirror.config.limits.maxManifestBytes);
    } else if (info.isFile()) {
      const tar = await extractTar(src, staging, mirror);
      files = tar.files;
      source = tar.source;
    } else {
      throw new LayoutError(`${src} is neither a directory nor a tar file`);
    }
    const entries = parseLayoutIndex(src, files);
    const gate = signatureGate(mirror, silentLogger);
    const screened: Screened | undefined =
      opts.requireSignatures || !gate.policies.empty
        ? await screenLayout(mirror, gate, source, entries, (e) => targetOf(mirror, e, fallback), opts.requireSignatures ?? false)
        : undefined;
    const importer = new Importer(mirror, source, staging);
    const result: ImportResult = { images: [], failures: [], manifests: 0, blobs: 0, bytesCopied: 0, bytesPresent: 0 };
    for (const [i, entry] of entries.entries()) {
      let name = `index.json entry ${i + 1} (${entry.digest})`;
      let outcome: ImportedImage | ImportFailure;
      try {
        const target = targetOf(mirror, entry, fallback);
        name = imageName(target.route, target.tag, entry.digest);
        const refusal = screened?.refused.get(i);
        if (refusal) throw new LayoutError(`refused by the signature policy: ${refusal}`);
        const done = await importer.importImage(entry, target, name);
        const judged = screened?.judged.get(i);
        if (judged) {
          const { status, reason, signer } = judged.verdict;
          mirror.catalogue.verdicts.record({ repo: target.route.key, digest: entry.digest, status, reason, signer: signer ?? null, state: 'import' });
          done.image.signature = { status, reason };
        }
        outcome = done.image;
        result.manifests += done.image.manifests;
        result.blobs += done.image.blobs;
        result.bytesCopied += done.copied;
        result.bytesPresent += done.present;
        result.images.push(done.image);
      } catch (e) {
        outcome = { ok: false, name, error: describe(e) };
        result.failures.push(outcome);
      }
      opts.onImage?.(outcome);
    }
    return result;
  } finally {
    await staging.dispose();
  }
}

function describe(e: unknown): string {
  if (e instanceof LayoutError) return e.message;
  if (e instanceof DigestMismatchError) return `corrupt layout: ${e.message}`;
  if (e instanceof SizeMismatchError) return `corrupt layout: ${e.message}`;
  const code = (e as NodeJS.ErrnoException).code;
  if (code) return (e as Error).message;
  throw e;
}

export function resolveRepo(mirror: Mirror, repo: string): ResolvedRef {
  const lastSlash = repo.lastIndexOf('/');
  if (repo.includes('@') || repo.lastIndexOf(':') > lastSlash) {
    throw new LayoutError(`--repo ${repo}: give a repository without tag or digest, e.g. docker.io/library/alpine`);
  }
  let ref: ResolvedRef;
  try {
    ref = resolveRef(mirror.router, repo);
  } catch (e) {
    throw new LayoutError(`--repo ${(e as Error).message}`);
  }
  return { ...ref, tag: undefined, digest: undefined };
}

/** Where one index.json entry goes: its `io.containerd.image.name`, else ref.name under --repo. */
function targetOf(mirror: Mirror, entry: Descriptor, fallback: ResolvedRef | undefined): ResolvedRef {
  const annotations = entry.annotations ?? {};
  const full = annotations[IMAGE_NAME_ANNOTATION];
  const refName = annotations[REF_NAME_ANNOTATION];
  let target: ResolvedRef | undefined;
  if (full) {
    target = resolveRef(mirror.router, full);
    // A bare name gets no implicit `latest`: the tag is whatever the name says.
    if (!hasExplicitTag(full)) target.tag = undefined;
  } else if (refName && refName.includes('/')) {
    // Some tools put a full reference in ref.name (e.g. `skopeo copy … oci:DIR:docker.io/library/alpine:3.20`).
    target = resolveRef(mirror.router, refName);
    if (!hasExplicitTag(refName)) target.tag = undefined;
  } else if (fallback) {
    if (refName !== undefined && !isValidTag(refName)) {
      throw new LayoutError(`its ${REF_NAME_ANNOTATION} "${refName}" is not a valid tag`);
    }
    target = { ...fallback, input: refName ? `${fallback.route.key}:${refName}` : fallback.route.key, tag: refName };
  } else {
    throw new LayoutError(
      `it names no image (no ${IMAGE_NAME_ANNOTATION} annotation${refName ? `; ${REF_NAME_ANNOTATION} is "${refName}"` : ''}); ` +
        `pass --repo REGISTRY/REPOSITORY to say where it goes`,
    );
  }
  if (target.digest && target.digest !== entry.digest) {
    throw new LayoutError(`its name ${full ?? refName} says digest ${target.digest}, but the entry is ${entry.digest}`);
  }
  return target;
}

function hasExplicitTag(ref: string): boolean {
  const parsed = parseImageReference(ref);
  if (parsed.digest) return parsed.tag !== undefined;
  const at = ref.indexOf('@');
  const base = at >= 0 ? ref.slice(0, at) : ref;
  return base.lastIndexOf(':') > base.lastIndexOf('/');
}

function parseLayoutIndex(src: string, files: Map<string, Buffer>): Descriptor[] {
  const marker = files.get(LAYOUT_FILE);
  if (!marker) throw new LayoutError(`${src} is not an OCI image layout: it has no ${LAYOUT_FILE} file`);
  let version: unknown;
  try {
    version = (JSON.parse(marker.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch {
    throw new LayoutError(`${src}: ${LAYOUT_FILE} is not valid JSON`);
  }
  if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version)) {
    throw new LayoutError(`${src}: unsupported OCI image layout version ${JSON.stringify(version)} (this reads 1.x)`);
  }
  const index = files.get(INDEX_FILE);
  if (!index) throw new LayoutError(`${src} is not an OCI image layout: it has no ${INDEX_FILE}`);
  const parsed = parseManifest(index);
  if (!parsed.ok || parsed.manifest.kind !== 'index') {
    throw new LayoutError(`${src}: ${INDEX_FILE} is not a valid image index${parsed.ok ? '' : ` (${parsed.reason})`}`);
  }
  if (parsed.manifest.children.length === 0) throw new LayoutError(`${src}: ${INDEX_FILE} lists no images`);
  return parsed.manifest.children;
}

/** The content of one image, planned and verified before anything is committed. */
interface Plan {
  manifests: Map<string, { record: NewManifest; bytes: Buffer; digest: Digest }>;
  blobs: Map<string, { digest: Digest; size: number }>;
  platforms: string[];
  absent: string[];
}

class Importer {
  constructor(
    private readonly mirror: Mirror,
    private readonly source: LayoutSource,
    private readonly staging: Staging,
  ) {}

  async importImage(entry: Descriptor, target: ResolvedRef, name: string): Promise<{ image: ImportedImage; copied: number; present: number }> {
    const key = target.route.key;
    const plan: Plan = { manifests: new Map(), blobs: new Map(), platforms: [], absent: [] };
    await this.visit(key, entry, undefined, plan, 0, true);

    // Stage (copy + verify) everything the store lacks; commit only when all of it verified.
    const { store, catalogue } = this.mirror;
    const staged: StagedFile[] = [];
    let copied = 0;
    let present = 0;
    try {
      for (const m of plan.manifests.values()) {
        if ((await store.size(m.digest)) === m.bytes.length) present += m.bytes.length;
        else {
          staged.push(await this.staging.fromBytes(m.digest, m.bytes, true));
          copied += m.bytes.length;
        }
      }
      for (const b of plan.blobs.values()) {
        if ((await store.size(b.digest)) === b.size) present += b.size;
        else {
          staged.push(await this.source.stage(b.digest, b.size));
          copied += b.size;
        }
      }
    } catch (e) {
      for (const f of staged) if (f.owned) await this.staging.discard(f);
      throw e;
    }
    for (const f of staged) await this.staging.commit(f);

    let previous: string | undefined;
    catalogue.db.transaction(() => {
      for (const m of plan.manifests.values()) catalogue.addManifest(m.record);
      for (const b of plan.blobs.values()) catalogue.addBlob(b.digest.value, b.size);
      if (target.tag) {
        const before = catalogue.getTag(key, target.tag)?.digest;
        if (before && before !== entry.digest) previous = before;
        catalogue.setTag(key, target.tag, entry.digest);
      }
    })();
    return {
      image: {
        ok: true,
        name,
        digest: entry.digest,
        tag: target.tag,
        previous,
        platforms: plan.platforms,
        absent: plan.absent,
        manifests: plan.manifests.size,
        blobs: plan.blobs.size,
        repo: key,
        content: {
          manifests: [...plan.manifests.keys()],
          blobs: [...plan.blobs.values()].map((b) => ({ digest: b.digest.value, size: b.size })),
        },
      },
      copied,
      present,
    };
  }

  private async visit(key: string, desc: Descriptor, platform: string | undefined, plan: Plan, depth: number, top: boolean): Promise<void> {
    if (depth > 8) throw new LayoutError('indexes nested too deeply');
    const d = parseOrThrow(desc.digest);
    if (plan.manifests.has(d.value)) return;
    const limit = this.mirror.config.limits.maxManifestBytes;
    if (desc.size > limit) throw new LayoutError(`manifest ${d.value} is ${desc.size} bytes, over this mirror's limit of ${limit}`);
    const bytes = await this.source.readSmall(d, desc.size);
    const parsed = parseManifest(bytes, desc.mediaType);
    if (!parsed.ok) throw new LayoutError(`manifest ${d.value} is invalid: ${parsed.reason}`);
    const manifest = parsed.manifest;
    if (manifest.kind === 'image' && top) {
      platform = await this.imagePlatform(d, manifest);
      if (platform) plan.platforms.push(platform);
    }
    plan.manifests.set(d.value, {
      digest: d,
      bytes,
      record: manifestRecord({ repo: key, digest: d.value, mediaType: desc.mediaType, size: bytes.length, manifest, platform }),
    });
    if (manifest.kind === 'index') {
      for (const child of indexChildren(manifest)) {
        const p = child.platform ? formatPlatform(child.platform) : undefined;
        const listed = child.attestationFor === undefined ? p : undefined;
        const carried = !child.platform || this.mirror.allowList.allows(child.platform);
        // A sparse index: children not in the layout (or not carried here) are simply not imported.
        if (!carried || !(await this.source.has(parseOrThrow(child.descriptor.digest)))) {
          if (listed && !plan.absent.includes(listed)) plan.absent.push(listed);
          continue;
        }
        await this.visit(key, child.descriptor, p, plan, depth + 1, false);
        if (listed && !plan.platforms.includes(listed)) plan.platforms.push(listed);
      }
      return;
    }
    for (const blob of referencedBlobs(manifest)) {
      const b = parseOrThrow(blob.digest);
      const known = plan.blobs.get(b.value);
      if (known && known.size !== blob.size) throw new LayoutError(`blob ${b.value} is listed with sizes ${known.size} and ${blob.size}`);
      if (!(await this.source.has(b))) {
        throw new LayoutError(`incomplete layout: blob ${b.value} of manifest ${d.value}${platform ? ` (${platform})` : ''} is missing`);
      }
      plan.blobs.set(b.value, { digest: b, size: blob.size });
    }
  }

  /** A top-level image manifest: its platform from its config, refused if this mirror does not carry it. */
  private async imagePlatform(d: Digest, manifest: ImageManifest): Promise<string | undefined> {
    if (!isImageConfigType(manifest.config.mediaType)) return undefined; // an artifact
    const c = parseOrThrow(manifest.config.digest);
    if (!(await this.source.has(c))) throw new LayoutError(`incomplete layout: config ${c.value} of manifest ${d.value} is missing`);
    if (manifest.config.size > 4 * 1024 * 1024) throw new LayoutError(`image config ${c.value} is implausibly large`);
    const platform = platformOfImageConfig(await this.source.readSmall(c, manifest.config.size));
    if (!platform) return undefined;
    if (!this.mirror.allowList.allows(platform)) {
      throw new LayoutError(`it is a ${formatPlatform(platform)} image; this mirror carries only ${this.mirror.config.platforms.join(', ')}`);
    }
    return formatPlatform(platform);
  }
}

function parseOrThrow(value: string): Digest {
  const d = parseDigest(value);
  if (!d.ok) throw new LayoutError(d.reason);
  return d.digest;
}

// ---------------------------------------------------------------------------------------------
// Sources

async function readLayoutFiles(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const name of [LAYOUT_FILE, INDEX_FILE]) {
    const path = `${dir}/${name}`;
    let size;
    try {
      size = (await stat(path)).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw e;
    }
    if (size > MAX_LAYOUT_FILE_BYTES) throw new LayoutError(`${path} is implausibly large (${size} bytes)`);
    files.set(name, await readFile(path));
  }
  return files;
}

function dirSource(root: string, staging: Staging, maxSmall: number): LayoutSource {
  const sizeOf = async (d: Digest): Promise<number | undefined> => {
    try {
      const s = await stat(layoutBlobPath(root, d));
      return s.isFile() ? s.size : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  };
  const present = async (d: Digest, size: number): Promise<void> => {
    const actual = await sizeOf(d);
    if (actual === undefined) throw new LayoutError(`incomplete layout: ${d.value} is missing`);
    if (actual !== size) throw new LayoutError(`corrupt layout: ${d.value} is ${actual} bytes, its descriptor says ${size}`);
  };
  return {
    has: async (d) => (await sizeOf(d)) !== undefined,
    async readSmall(d, size) {
      if (size > Math.max(maxSmall, 4 * 1024 * 1024)) throw new LayoutError(`${d.value} is implausibly large for a manifest (${size} bytes)`);
      await present(d, size);
      const bytes = await readFile(layoutBlobPath(root, d));
      verifyBytes(d, size, bytes);
      return bytes;
    },
    async stage(d, size) {
      await present(d, size);
      return staging.fromStream(d, createReadStream(layoutBlobPath(root, d), { highWaterMark: 256 * 1024 }), size, true);
    },
  };
}

function verifyBytes(d: Digest, size: number, bytes: Buffer): void {
  if (bytes.length !== size) throw new SizeMismatchError(size, bytes.length);
  const actual = digestOf(bytes, d.algorithm);
  if (actual !== d.value) throw new DigestMismatchError(d.value, actual, bytes.length);
}

const BLOB_ENTRY = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/;

/**
 * Reads a tar once, in any entry order: index.json and oci-layout into memory, every blob into
 * staging, verified against the digest its name claims (unless the store has it already). A
 * blob that fails is remembered as corrupt (the images that need it fail), never staged. Other
 * entries are skipped.
 */
async function extractTar(file: string, staging: Staging, mirror: Mirror): Promise<{ files: Map<string, Buffer>; source: LayoutSource }> {
  const files = new Map<string, Buffer>();
  const blobs = new Map<string, StagedFile | { error: string }>();
  const extract = tarExtract();
  const feeding = pipeline(createReadStream(file, { highWaterMark: 256 * 1024 }), extract);
  feeding.catch(() => {});
  try {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
      const type = entry.header.type ?? 'file';
      const regular = type === 'file' || type === 'contiguous-file';
      const blob = BLOB_ENTRY.exec(name);
      if (regular && (name === LAYOUT_FILE || name === INDEX_FILE)) {
        files.set(name, await readEntry(entry, `${file}: ${name}`));
      } else if (regular && blob) {
        const parsed = parseDigest(`${blob[1]}:${blob[2]}`);
        const existing = parsed.ok ? blobs.get(parsed.digest.value) : undefined;
        if (!parsed.ok || (existing && !('error' in existing))) {
          await drain(entry);
          continue;
        }
        const d = parsed.digest;
        if ((await mirror.store.size(d)) === entry.header.size) {
          // The store has it already (verified when it was written): nothing to copy.
          await drain(entry);
          blobs.set(d.value, { digest: d, size: entry.header.size, path: mirror.store.pathOf(d), owned: false, committed: true });
          continue;
        }
        try {
          blobs.set(d.value, await staging.fromStream(d, entry, entry.header.size, false));
        } catch (e) {
          if (!(e instanceof DigestMismatchError || e instanceof SizeMismatchError)) throw e;
          blobs.set(d.value, { error: `corrupt layout: ${name} in ${file}: ${e.message}` });
        }
      } else {
        await drain(entry);
      }
    }
    await feeding;
  } catch (e) {
    extract.destroy();
    await feeding.catch(() => {});
    if (e instanceof LayoutError || typeof (e as NodeJS.ErrnoException).code === 'string') throw e;
    throw new LayoutError(`${file} is not a readable tar archive: ${(e as Error).message}`);
  }
  const staged = (d: Digest, size: number): StagedFile => {
    const f = blobs.get(d.value);
    if (!f) throw new LayoutError(`incomplete layout: ${d.value} is missing`);
    if ('error' in f) throw new LayoutError(f.error);
    if (f.size !== size) throw new LayoutError(`corrupt layout: ${d.value} is ${f.size} bytes, its descriptor says ${size}`);
    return f;
  };
  const source: LayoutSource = {
    has: async (d) => blobs.has(d.value),
    async readSmall(d, size) {
      const f = staged(d, size);
      const bytes = await readFile(f.path);
      verifyBytes(d, size, bytes);
      return bytes;
    },
    stage: async (d, size) => staged(d, size),
  };
  return { files, source };
}

async function readEntry(entry: AsyncIterable<unknown>, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of entry) {
    const chunk = c as Uint8Array;
    total += chunk.length;
    if (total <= MAX_LAYOUT_FILE_BYTES) chunks.push(Buffer.from(chunk));
  }
  if (total > MAX_LAYOUT_FILE_BYTES) throw new LayoutError(`${what} is implausibly large (${total} bytes)`);
  return Buffer.concat(chunks);
}

async function drain(entry: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of entry) {
    // skip
  }
}
