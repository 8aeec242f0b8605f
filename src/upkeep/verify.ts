import { createReadStream } from 'node:fs';
import { mkdir, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { newHasher, parseDigest } from '../oci/digest.js';
import type { BlobStore } from '../store/blob-store.js';
import type { Catalogue } from '../store/catalogue.js';

export interface VerifyProblem {
  kind: 'corrupt' | 'missing-file' | 'wrong-size' | 'bad-name';
  digest: string;
  detail: string;
}

export interface VerifyReport {
  filesChecked: number;
  bytesChecked: number;
  rowsChecked: number;
  problems: VerifyProblem[];
  /** Intact files that no catalogue row names (gc removes them; not an error). */
  unreferencedFiles: string[];
  repaired: boolean;
}

/**
 * Re-hashes every stored file and checks the catalogue against the disk both ways. With
 * `repair`, corrupt files move to `<store>/quarantine/` and rows whose content is gone are
 * forgotten, so the next pull fetches them again.
 */
export async function verifyStore(store: BlobStore, catalogue: Catalogue, opts: { repair?: boolean } = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  let filesChecked = 0;
  let bytesChecked = 0;
  const intact = new Map<string, number>();
  // Rows first, files after: a running server renames a blob into place before it records it, so
  // every row read now has its file by the time the files are listed. Read the other way round, a
  // blob committed while the files were being hashed (a put-off flush lands a second or more after
  // a pull) would look like a row whose file is missing.
  const rows = [
    ...catalogue.allBlobs().map((b) => ({ digest: b.digest, size: b.size, what: 'blob' })),
    ...catalogue.allManifests().map((m) => ({ digest: m.digest, size: m.size, what: `manifest of ${m.repo}` })),
  ];

  const badNames = new Map<string, string>();
  for await (const { name, path } of store.entries()) {
    const parsed = parseDigest(name);
    if (!parsed.ok || path !== store.pathOf(parsed.digest)) {
      problems.push({ kind: 'bad-name', digest: name, detail: `${path} is not where a digest's file goes` });
      badNames.set(name, path);
      continue;
    }
    const hasher = newHasher(parsed.digest.algorithm);
    let size = 0;
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
      hasher.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    filesChecked++;
    bytesChecked += size;
    const actual = `${parsed.digest.algorithm}:${hasher.digest('hex')}`;
    if (actual !== name) problems.push({ kind: 'corrupt', digest: name, detail: `content hashes to ${actual}` });
    else intact.set(name, size);
  }

  const named = new Set<string>();
  const corrupt = new Set(problems.map((p) => p.digest));
  for (const r of rows) {
    named.add(r.digest);
    if (corrupt.has(r.digest)) continue;
    const size = intact.get(r.digest);
    if (size === undefined) problems.push({ kind: 'missing-file', digest: r.digest, detail: `${r.what} is in the catalogue but not on disk` });
    else if (size !== r.size) problems.push({ kind: 'wrong-size', digest: r.digest, detail: `${r.what}: catalogue says ${r.size} bytes, file has ${size}` });
  }
  const unreferencedFiles = [...intact.keys()].filter((d) => !named.has(d));

  if (opts.repair && problems.length > 0) await repair(store, catalogue, problems, badNames);
  return { filesChecked, bytesChecked, rowsChecked: rows.length, problems, unreferencedFiles, repaired: Boolean(opts.repair) };
}

async function repair(store: BlobStore, catalogue: Catalogue, problems: VerifyProblem[], badNames: Map<string, string>): Promise<void> {
  const quarantine = join(store.root, 'quarantine');
  await mkdir(quarantine, { recursive: true });
  const badDigests = new Set<string>();
  for (const p of problems) {
    const parsed = parseDigest(p.digest);
    if ((p.kind === 'corrupt' || p.kind === 'wrong-size') && parsed.ok) {
      const from = store.pathOf(parsed.digest);
      if (await stat(from).catch(() => undefined)) await rename(from, join(quarantine, `${parsed.digest.algorithm}-${parsed.digest.hex}-${Date.now()}`));
    }
    const strayPath = badNames.get(p.digest);
    if (p.kind === 'bad-name' && strayPath) {
      // Not content at all (a stray file under blobs/): out of the store, kept for a person to look at.
      await rename(strayPath, join(quarantine, `bad-name-${p.digest.replace(/[^A-Za-z0-9._-]/g, '_')}-${Date.now()}`));
    }
    if (p.kind !== 'bad-name') badDigests.add(p.digest);
  }
  const manifests = catalogue.allManifests().filter((m) => badDigests.has(m.digest));
  catalogue.forget(manifests, [...badDigests].filter((d) => catalogue.getBlob(d)));
}
