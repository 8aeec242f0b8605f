// `sparse-mirror export`: images from the store to an OCI image layout (a directory or a tar),
// exactly as stored: the index bytes unchanged (so its digest is the upstream's), the child
// manifests the mirror holds for the platforms it carries, and their blobs. Nothing is fetched.
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack, type Pack } from 'tar-stream';
import { parseDigest, type Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { parsePlatform } from '../oci/platform.js';
import { classifyArtifact, subjectOfTag, type ArtifactKind } from '../oci/referrers.js';
import { DigestMismatchError, SizeMismatchError } from '../store/blob-store.js';
import type { ManifestRow } from '../store/catalogue.js';
import type { Mirror } from '../mirror/mirror.js';
import { refusalMessage, signatureGate } from '../signatures/gate.js';
import { silentLogger } from '../log.js';
import {
  hashCheck,
  IMAGE_NAME_ANNOTATION,
  imageName,
  INDEX_FILE,
  LAYOUT_FILE,
  LAYOUT_VERSION,
  layoutBlobName,
  layoutBlobPath,
  LayoutError,
  REF_NAME_ANNOTATION,
  resolveRef,
  type ResolvedRef,
} from './oci-layout.js';

export interface ExportedImage {
  /** `<mirror key>:<tag>` or `<mirror key>@<digest>`, as written to `io.containerd.image.name`. */
  name: string;
  tag?: string;
  digest: string;
  mediaType: string;
  /** Platforms whose image manifests are in the layout. */
  platforms: string[];
  /** Platforms listed in the index that are not in the layout (not mirrored, or not carried). */
  absent: string[];
  /** Signatures, SBOMs and attestations of the image (and of its carried children) in the layout. */
  attached: Record<ArtifactKind, number>;
}

export interface ExportOptions {
  /** Carry each image's referrers and cosign tags (default true; `--no-referrers` turns it off). */
  referrers?: boolean;
}

/** Signatures of signatures (a signed SBOM) are carried too, this deep. */
const MAX_ATTACHMENT_DEPTH = 3;

export interface ExportResult {
  path: string;
  format: 'directory' | 'tar';
  images: ExportedImage[];
  manifests: number;
  blobs: number;
  bytes: number;
}

interface Content {
  digest: Digest;
  size: number;
  kind: 'manifest' | 'blob';
}

/** A `.tar` path is written as a tar archive; anything else as a directory. */
export function isTarPath(path: string): boolean {
  return /\.tar$/i.test(path);
}

export async function exportImages(mirror: Mirror, refs: string[], dest: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const path = resolve(dest);
  const format = isTarPath(path) ? 'tar' : 'directory';
  // Plan everything first: a missing ref or an incomplete image fails before anything is written.
  const planner = new Planner(mirror, opts.referrers ?? mirror.config.referrers);
  const images: ExportedImage[] = [];
  const problems: string[] = [];
  for (const input of refs) {
    try {
      const image = await planner.add(resolveRef(mirror.router, input));
      if (image) images.push(image);
    } catch (e) {
      if (!(e instanceof LayoutError)) throw e;
      problems.push(e.message);
    }
  }
  if (problems.length) throw new LayoutError(`nothing exported:\n  ${problems.join('\n  ')}`);
  await checkDestination(path, format);

  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: planner.descriptors,
    }),
  );
  const layout = Buffer.from(JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }));
  const content = [...planner.content.values()];
  const temp = join(dirname(path), `.${basename(path)}.partial-${process.pid}`);
  await rm(temp, { recursive: true, force: true });
  try {
    if (format === 'tar') await writeTar(mirror, temp, layout, index, content);
    else await writeDirectory(mirror, temp, layout, index, content);
    await rename(temp, path); // onto a missing path or an empty directory: atomic
  } catch (e) {
    await rm(temp, { recursive: true, force: true });
    throw e;
  }
  return {
    path,
    format,
    images,
    manifests: content.filter((c) => c.kind === 'manifest').length,
    blobs: content.filter((c) => c.kind === 'blob').length,
    bytes: content.reduce((n, c) => n + c.size, 0),
  };
}

/** Works out, from the catalogue, what each image brings into the layout. */
class Planner {
  /** Every manifest and blob to write, once, in the order first needed. */
  readonly content = new Map<string, Content>();
  readonly descriptors: Array<Record<string, unknown>> = [];
  private readonly names = new Set<string>();

  constructor(
    private readonly mirror: Mirror,
    private readonly withReferrers: boolean,
  ) {}

  /** Plans one image; undefined if the same image was already asked for. */
  async add(ref: ResolvedRef): Promise<ExportedImage | undefined> {
    const { catalogue } = this.mirror;
    const key = ref.route.key;
    const digest = ref.digest ?? catalogue.getTag(key, ref.tag!)?.digest;
    const asked = ref.digest ? `${key}@${ref.digest}` : `${key}:${ref.tag}`;
    const row = digest ? catalogue.getManifest(key, digest) : undefined;
    if (!digest || !row || !(await this.stored(row.digest, row.size))) {
      throw new LayoutError(`${ref.input}: ${asked} is not in this mirror (pull it through the mirror first; export fetches nothing)`);
    }
    // What an enforce policy would refuse to serve does not leave either.
    const judged = await signatureGate(this.mirror, silentLogger).check(ref.route, row.digest);
    if (judged && judged.policy.mode === 'enforce' && judged.verdict.status !== 'verified') {
      throw new LayoutError(`${ref.input}: refused by the signature policy: ${refusalMessage(ref.route, ref.tag ?? row.digest, row.digest, judged)}`);
    }
    const name = imageName(ref.route, ref.tag, row.digest);
    if (this.names.has(name)) return undefined;
    this.names.add(name);
    const image: ExportedImage = {
      name,
      tag: ref.tag,
      digest: row.digest,
      mediaType: row.media_type,
      platforms: [],
      absent: [],
      attached: { signature: 0, sbom: 0, attestation: 0, other: 0 },
    };
    if (row.kind === 'image' && row.platform) image.platforms.push(row.platform);
    const incomplete: string[] = [];
    const planned = new Map<string, Content>();
    await this.walk(key, row, image, incomplete, planned, 0);
    if (incomplete.length) {
      throw new LayoutError(
        `${ref.input}: the mirror holds only part of ${name}: ${incomplete.join('; ')}. ` +
          'Pull those platforms through the mirror completely (or remove them), then export again',
      );
    }
    for (const [k, c] of planned) if (!this.content.has(k)) this.content.set(k, c);
    this.entry(row, name, ref.tag);
    if (this.withReferrers) {
      const manifests = [...planned.values()].filter((c) => c.kind === 'manifest').map((c) => c.digest.value);
      await this.addAttachments(ref.route, manifests, image, new Set(manifests), 1);
    }
    return image;
  }

  /** An index.json entry, named as containerd and `sparse-mirror import` read it. */
  private entry(row: ManifestRow, name: string, tag: string | undefined): void {
    const annotations: Record<string, string> = { [IMAGE_NAME_ANNOTATION]: name };
    if (tag) annotations[REF_NAME_ANNOTATION] = tag;
    const descriptor: Record<string, unknown> = { mediaType: row.media_type, digest: row.digest, size: row.size };
    const platform = row.kind === 'image' && row.platform ? parsePlatform(row.platform) : undefined;
    if (platform) descriptor.platform = platform;
    descriptor.annotations = annotations;
    this.descriptors.push(descriptor);
  }

  /**
   * The signatures, SBOMs and attestations of `subjects`, as `oras copy -r --to-oci-layout` and
   * `cosign save` lay them out: each stored referrer an index.json entry of its own (named by
   * digest), each cosign tag (`sha256-<hex>.sig`, `.att`, `.sbom`) and fallback tag an entry with
   * its tag as ref.name. One whose content the store lacks in part is left out.
   */
  private async addAttachments(route: ResolvedRef['route'], subjects: string[], image: ExportedImage, seen: Set<string>, depth: number): Promise<void> {
    if (depth > MAX_ATTACHMENT_DEPTH) return;
    const { catalogue } = this.mirror;
    const key = route.key;
    const next: string[] = [];
    const take = async (digest: string, tag: string | undefined, kind: ArtifactKind | undefined): Promise<void> => {
      const row = catalogue.getManifest(key, digest);
      if (!row || !(await this.stored(row.digest, row.size))) return;
      const planned = new Map<string, Content>();
      const incomplete: string[] = [];
      await this.walk(key, row, image, incomplete, planned, 0);
      if (incomplete.length) return;
      for (const [k, c] of planned) if (!this.content.has(k)) this.content.set(k, c);
      const name = imageName(route, tag, digest);
      if (!this.names.has(name)) {
        this.names.add(name);
        this.entry(row, name, tag);
      }
      if (!seen.has(digest)) {
        seen.add(digest);
        if (kind) image.attached[kind]++;
        next.push(digest);
      }
    };
    for (const subject of subjects) {
      for (const r of catalogue.referrers.list(key, subject)) await take(r.digest, undefined, classifyArtifact(r.artifact_type ?? undefined));
      for (const t of catalogue.schemeTagsFor(key, subject)) {
        const suffix = subjectOfTag(t.tag)?.suffix;
        await take(t.digest, t.tag, suffix ? classifyArtifact(undefined, suffix) : undefined);
      }
    }
    if (next.length) await this.addAttachments(route, next, image, seen, depth + 1);
  }

  private async walk(
    key: string,
    row: ManifestRow,
    image: ExportedImage,
    incomplete: string[],
    planned: Map<string, Content>,
    depth: number,
  ): Promise<void> {
    const { catalogue, allowList } = this.mirror;
    if (depth > 8) throw new LayoutError(`${image.name}: indexes nested too deeply`);
    planned.set(row.digest, { digest: digestOf(row.digest), size: row.size, kind: 'manifest' });
    if (row.kind === 'index') {
      for (const child of catalogue.childrenOf(key, row.digest)) {
        const platform = child.platform ? parsePlatform(child.platform) : undefined;
        const listed = child.attestation_for === null ? child.platform : null;
        // Only what this mirror carries: content of other platforms never leaves, even if present.
        const carried = !platform || allowList.allows(platform);
        const stored = carried ? catalogue.getManifest(key, child.child_digest) : undefined;
        if (!stored || !(await this.stored(stored.digest, stored.size))) {
          if (listed && !image.absent.includes(listed)) image.absent.push(listed);
          continue;
        }
        if (listed && !image.platforms.includes(listed)) image.platforms.push(listed);
        await this.walk(key, stored, image, incomplete, planned, depth + 1);
      }
      return;
    }
    const missing: string[] = [];
    for (const blob of catalogue.blobsOf(key, row.digest)) {
      const d = digestOf(blob.blob_digest);
      if ((await this.mirror.store.size(d)) !== blob.size) missing.push(blob.blob_digest);
      else planned.set(d.value, { digest: d, size: blob.size, kind: 'blob' });
    }
    if (missing.length) {
      const what = row.platform ? `${row.platform} (${row.digest})` : row.digest;
      incomplete.push(`${what} lacks ${missing.length} blob${missing.length === 1 ? '' : 's'} (${missing.join(', ')})`);
    }
  }

  private async stored(digest: string, size: number): Promise<boolean> {
    return (await this.mirror.store.size(digestOf(digest))) === size;
  }
}

function digestOf(value: string): Digest {
  const d = parseDigest(value);
  if (!d.ok) throw new LayoutError(`the catalogue holds an invalid digest: ${d.reason}`);
  return d.digest;
}

async function checkDestination(path: string, format: 'directory' | 'tar'): Promise<void> {
  let info;
  try {
    info = await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    await mkdir(dirname(path), { recursive: true });
    return;
  }
  if (format === 'tar') throw new LayoutError(`${path} already exists; export to a new file`);
  if (!info.isDirectory() || (await readdir(path)).length > 0) {
    throw new LayoutError(`${path} already exists and is not an empty directory; export to a new or empty directory`);
  }
}

/** Copies stored content out, re-hashing it: a file damaged in the store never leaves it. */
async function copyOut(mirror: Mirror, c: Content, sink: (chunk: Uint8Array) => Promise<void>): Promise<void> {
  try {
    await hashCheck(c.digest, c.size, mirror.store.createReadStream(c.digest), sink);
  } catch (e) {
    if (e instanceof DigestMismatchError || e instanceof SizeMismatchError) {
      throw new LayoutError(`the store's copy of ${c.digest.value} is damaged (${e.message}); run 'sparse-mirror verify --repair' and pull it again`);
    }
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' && err.path === mirror.store.pathOf(c.digest)) {
      throw new LayoutError(`${c.digest.value} vanished from the store while exporting (evicted or collected?); export again`);
    }
    throw e;
  }
}

async function writeDirectory(mirror: Mirror, dir: string, layout: Buffer, index: Buffer, content: Content[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const c of content) {
    const target = layoutBlobPath(dir, c.digest);
    await mkdir(dirname(target), { recursive: true });
    const handle = await open(target, 'wx');
    try {
      let position = 0;
      await copyOut(mirror, c, async (chunk) => {
        let offset = 0;
        while (offset < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, position + offset);
          offset += bytesWritten;
        }
        position += chunk.length;
      });
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
  await writeFile(join(dir, INDEX_FILE), index);
  await writeFile(join(dir, LAYOUT_FILE), layout);
}

async function writeTar(mirror: Mirror, file: string, layout: Buffer, index: Buffer, content: Content[]): Promise<void> {
  const pack = tarPack();
  const out = createWriteStream(file, { flags: 'wx' });
  const done = pipeline(pack, out);
  // If writing the file fails, stop waiting on the pack at once.
  const failed = done.then(
    () => new Promise<never>(() => {}),
    (e: unknown) => {
      throw e;
    },
  );
  failed.catch(() => {});
  const mtime = new Date();
  const addBuffer = (name: string, bytes: Buffer) =>
    Promise.race([
      new Promise<void>((ok, fail) => pack.entry({ name, size: bytes.length, mode: 0o644, mtime }, bytes, (e) => (e ? fail(e) : ok()))),
      failed,
    ]);
  try {
    await addBuffer(LAYOUT_FILE, layout);
    await addBuffer(INDEX_FILE, index);
    const dirs = new Set(content.map((c) => `blobs/${c.digest.algorithm}/`));
    for (const dir of ['blobs/', ...dirs]) {
      await Promise.race([
        new Promise<void>((ok, fail) => pack.entry({ name: dir, type: 'directory', mode: 0o755, mtime }, (e) => (e ? fail(e) : ok()))),
        failed,
      ]);
    }
    for (const c of content) await addStream(pack, c, mtime, failed, mirror);
    pack.finalize();
    await done;
  } catch (e) {
    pack.destroy();
    out.destroy();
    await done.catch(() => {});
    throw e;
  }
}

async function addStream(pack: Pack, c: Content, mtime: Date, failed: Promise<never>, mirror: Mirror): Promise<void> {
  let settle: (e?: Error | null) => void = () => {};
  const written = new Promise<void>((ok, fail) => (settle = (e) => (e ? fail(e) : ok())));
  written.catch(() => {});
  const entry = pack.entry({ name: layoutBlobName(c.digest), size: c.size, mode: 0o644, mtime }, (e) => settle(e));
  entry.on('error', () => {}); // reported through the callback, or by copyOut
  await Promise.race([
    copyOut(mirror, c, async (chunk) => {
      if (!entry.write(chunk)) await Promise.race([new Promise<void>((r) => entry.once('drain', () => r())), failed]);
    }),
    failed,
  ]);
  entry.end(undefined);
  await Promise.race([written, failed]);
}
