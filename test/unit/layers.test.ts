import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// The folders of src/ are layers; an import may only point down (or stay in its folder).
// A wing's routes.ts is its HTTP face: it plugs into http/'s seams, so it may import http/,
// while http/ itself never imports a wing.
const SRC = path.resolve(import.meta.dirname, '../../src');

const RANK: Record<string, number> = {
  'oci': 0,
  'log.ts': 0,
  'store': 1,
  'upstream': 1,
  'config': 1,
  'cluster': 1,
  'mirror': 2,
  'signatures': 2.5, // the signature policy: verifies through mirror/, used by http/ and the wings
  'push': 3,
  'airgap': 3,
  'upkeep': 3,
  'status': 3,
  'http': 4,
  'commands': 5,
  'serve.ts': 4.5, // composes the server from http/ and the wings; commands/ start it
  'cli.ts': 6,
  'gc-tuning.ts': 0,
  'format-bytes.ts': 0,
};
const WINGS = new Set(['push', 'airgap', 'upkeep', 'status']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(path.join(dir, e.name)) : /\.tsx?$/.test(e.name) ? [path.join(dir, e.name)] : [],
  );
}

/** The top-level folder (or root file) of src/ that a file belongs to. */
function unit(file: string): string {
  return path.relative(SRC, file).split(path.sep)[0]!;
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) =>
    path.resolve(path.dirname(file), m[1]!.replace(/\.js$/, '.ts')),
  );
}

function allowed(from: string, to: string): boolean {
  const a = unit(from);
  const b = unit(to);
  if (a === b) return true;
  const isWingRoutes = WINGS.has(a) && path.basename(from) === 'routes.ts';
  if (isWingRoutes && b === 'http') return true;
  // http/ sees a wing only through the seams it defines (PushHandler), wired by serve.ts.
  if (a === 'http' && WINGS.has(b)) return false;
  return RANK[b]! < RANK[a]!;
}

describe('source layers', () => {
  const files = sourceFiles(SRC);

  it('knows the layer of every folder and root file in src/', () => {
    const unknown = [...new Set(files.map(unit))].filter((u) => !(u in RANK));
    expect(unknown).toEqual([]);
  });

  it('imports only point down the layers (a wing never imports another wing; mirror/ never imports a wing)', () => {
    const upward = files.flatMap((f) =>
      imports(f)
        .filter((t) => !allowed(f, t))
        .map((t) => `${path.relative(SRC, f)} -> ${path.relative(SRC, t)}`),
    );
    expect(upward).toEqual([]);
  });

  it('the check catches an upward import', () => {
    expect(allowed(path.join(SRC, 'mirror/blobs.ts'), path.join(SRC, 'upkeep/gc.ts'))).toBe(false);
    expect(allowed(path.join(SRC, 'airgap/export.ts'), path.join(SRC, 'upkeep/gc.ts'))).toBe(false);
    expect(allowed(path.join(SRC, 'http/app.ts'), path.join(SRC, 'push/routes.ts'))).toBe(false);
    expect(allowed(path.join(SRC, 'push/push.ts'), path.join(SRC, 'http/app.ts'))).toBe(false);
    expect(allowed(path.join(SRC, 'push/routes.ts'), path.join(SRC, 'http/app.ts'))).toBe(true);
    expect(allowed(path.join(SRC, 'http/app.ts'), path.join(SRC, 'status/routes.ts'))).toBe(false);
    expect(allowed(path.join(SRC, 'status/views/page.tsx'), path.join(SRC, 'upkeep/gc.ts'))).toBe(false);
  });
});
