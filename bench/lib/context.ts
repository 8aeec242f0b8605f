// What every scenario gets: the settings, the shared servers, and where to report.
import { DEFAULT_LEAVE_FREE } from './page-cache.js';
import type { Distribution } from './registry.js';
import type { SparseMirror } from './mirror.js';

const MIB = 1024 * 1024;

/** One kind of image for the cold pull: its pulled platform's layer sizes, in bytes. */
export interface ImageShape {
  name: string;
  layers: number[];
}

/**
 * The shapes scenario 3 pulls, spanning what registries hold (sizes in MiB; BENCH_QUICK divides
 * them by 8; BENCH_S3_SHAPES picks them by number, from 1). The first is the benchmark's original image.
 */
export const SHAPES: Array<{ name: string; mib: number[] }> = [
  { name: 'four layers, 64 MiB first', mib: [64, 32, 16, 8] },
  { name: 'a dozen small layers', mib: [3, 1, 4, 2, 1.5, 3.5, 1, 2.5, 4, 1, 2, 3] },
  { name: 'four layers of 16–40 MiB', mib: [40, 32, 24, 16] },
  { name: 'one 200 MiB layer', mib: [200] },
  // Like a language runtime image: a distribution base, packages, the runtime, then small layers.
  { name: 'a language image, 7 mixed layers', mib: [29, 24, 64, 6, 2, 0.25, 0.004] },
];

/** A shape's layer sizes in bytes, divided by `scale` (a quick run), at least 1 KiB each. */
export function shapeLayers(shape: { mib: number[] }, scale = 1): number[] {
  return shape.mib.map((m) => Math.max(1024, Math.round((m * MIB) / scale)));
}

export interface Settings {
  quick: boolean;
  /** Fill the page cache before each scenario (and every pull of scenario 3): see lib/page-cache.ts. */
  fillPageCache: boolean;
  /** Bytes of memory the fill leaves free (BENCH_FILL_LEAVE_FREE_MIB). */
  fillLeaveFree: number;
  /** Rounds of the alternating scenarios (1–4). */
  rounds: number;
  s1: { blobBytes: number; clients: number; repeat: number };
  s2: { seconds: number; connections: number; rounds: number };
  s3: { shapes: ImageShape[]; smallLayer: number; rounds: number };
  s4: { blobBytes: number; clients: number };
  s5: { images: number; layersPerPlatform: number; layerBytes: number };
  s6: { blobs: number; blobBytes: number; anchor: boolean; floodSeconds: number };
  s7: { blobs: number; tags: number; latencySeconds: number; starts: number };
  s8: { layers: number[]; rounds: number; clients: number; rateMbit: number };
  s9: { blobBytes: number; clients: number; herdBytes: number; herdClients: number; herdRounds: number; anchor: boolean };
}

function envNumber(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${v} is not a positive number`);
  return n;
}

export function settingsFromEnv(): Settings {
  const quick = /^(1|true|yes)$/i.test(process.env.BENCH_QUICK ?? '');
  const rounds = envNumber('BENCH_ROUNDS', quick ? 2 : 5);
  return {
    quick,
    fillPageCache: !/^(0|false|no)$/i.test(process.env.BENCH_FILL_PAGE_CACHE ?? ''),
    fillLeaveFree: envNumber('BENCH_FILL_LEAVE_FREE_MIB', DEFAULT_LEAVE_FREE / MIB) * MIB,
    rounds,
    s1: {
      blobBytes: envNumber('BENCH_S1_MIB', quick ? 64 : 256) * MIB,
      clients: envNumber('BENCH_S1_CLIENTS', 16),
      repeat: envNumber('BENCH_S1_REPEAT', 1),
    },
    s2: {
      seconds: envNumber('BENCH_S2_SECONDS', quick ? 3 : 10),
      connections: envNumber('BENCH_S2_CONNECTIONS', 64),
      rounds: envNumber('BENCH_S2_ROUNDS', quick ? 1 : 3),
    },
    s3: {
      shapes: SHAPES.filter((_, i) => !process.env.BENCH_S3_SHAPES || process.env.BENCH_S3_SHAPES.split(',').map(Number).includes(i + 1)).map((s) => ({
        name: s.name,
        layers: shapeLayers(s, quick ? 8 : 1),
      })),
      smallLayer: 256 * 1024,
      // Single pulls move by ±15% on a shared 2-core machine: 12 rounds (each order of the three
      // twice) rather than 5 keep one slow minute from deciding the median.
      rounds: envNumber('BENCH_S3_ROUNDS', quick ? 3 : process.env.BENCH_ROUNDS ? rounds : 12),
    },
    s4: { blobBytes: envNumber('BENCH_S4_MIB', quick ? 32 : 128) * MIB, clients: envNumber('BENCH_S4_CLIENTS', 50) },
    s5: { images: envNumber('BENCH_S5_IMAGES', 20), layersPerPlatform: 2, layerBytes: envNumber('BENCH_S5_LAYER_KIB', quick ? 128 : 2048) * 1024 },
    s6: {
      blobs: envNumber('BENCH_S6_BLOBS', quick ? 8 : 32),
      blobBytes: envNumber('BENCH_S6_MIB', quick ? 64 : 512) * MIB,
      anchor: !/^(0|false|no)$/i.test(process.env.BENCH_S6_ANCHOR ?? ''),
      floodSeconds: envNumber('BENCH_S6_FLOOD_SECONDS', quick ? 5 : 60),
    },
    s7: {
      blobs: envNumber('BENCH_S7_BLOBS', quick ? 10_000 : 100_000),
      tags: envNumber('BENCH_S7_TAGS', quick ? 1_000 : 10_000),
      latencySeconds: envNumber('BENCH_S7_SECONDS', quick ? 1 : 3),
      starts: envNumber('BENCH_S7_STARTS', quick ? 2 : 5),
    },
    s8: {
      // 64, 48, 24, 10 and 4 MiB at the default 150 MiB; BENCH_S8_MIB scales them.
      layers: [64, 48, 24, 10, 4].map((m) => Math.max(1024, Math.round(((m / 150) * envNumber('BENCH_S8_MIB', quick ? 24 : 150) * MIB)))),
      rounds: envNumber('BENCH_S8_ROUNDS', quick ? 2 : 3),
      clients: envNumber('BENCH_S8_CLIENTS', 10),
      rateMbit: envNumber('BENCH_S8_MBIT', 200),
    },
    s9: {
      // The warm blob and its clients as in scenario 1; the herd as in the replicas test, at 128 MiB.
      blobBytes: envNumber('BENCH_S9_MIB', quick ? 64 : 256) * MIB,
      clients: envNumber('BENCH_S9_CLIENTS', 16),
      herdBytes: envNumber('BENCH_S9_HERD_MIB', quick ? 32 : 128) * MIB,
      herdClients: envNumber('BENCH_S9_HERD_CLIENTS', 30),
      herdRounds: envNumber('BENCH_S9_HERD_ROUNDS', quick ? 1 : 3),
      anchor: !/^(0|false|no)$/i.test(process.env.BENCH_S9_ANCHOR ?? ''),
    },
  };
}

export interface Shared {
  upstream: Distribution;
  anchor: Distribution;
  mirror: SparseMirror;
}

export interface Ctx {
  settings: Settings;
  shared: () => Promise<Shared>;
  log(msg: string): void;
  /** Brings free memory back down before a measurement (a no-op with BENCH_FILL_PAGE_CACHE=0). */
  fillPageCache(): void;
}

export interface Row {
  measure: string;
  /** e.g. "anchor 2.01 GB/s" */
  baseline: string;
  sparse: string;
  ratio: string;
  target: string;
  /** undefined: informational, no target */
  met?: boolean;
}

export interface ScenarioResult {
  id: number;
  title: string;
  rows: Row[];
  /** Markdown lines: per-round figures, counts, checks. */
  details: string[];
  /** Problems seen during the run (failed requests, wrong bytes). */
  problems: string[];
  raw: unknown;
  seconds?: number;
  error?: string;
}

export function rotate<T>(xs: T[], by: number): T[] {
  const k = ((by % xs.length) + xs.length) % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/**
 * The order of round `round` when every order of `xs` is used in turn: over each
 * `xs.length!` rounds every system runs equally often first, middle and last, and right after
 * each of the others. Plain rotation always puts the same system after the same one (in
 * scenario 3, sparse-mirror after the anchor in four of five rounds), so whatever one leaves
 * behind (writeback, a busy cache) always lands on the same next one.
 */
export function permutation<T>(xs: readonly T[], round: number): T[] {
  const all = permutations(xs);
  return all[((round % all.length) + all.length) % all.length]!;
}

function permutations<T>(xs: readonly T[]): T[][] {
  if (xs.length <= 1) return [[...xs]];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((rest) => [x, ...rest]));
}

export const MiB = MIB;
