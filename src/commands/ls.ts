import { parseArgs } from 'node:util';
import { inventory } from '../store/inventory.js';
import { bucketInventory, mergeTiers, type TieredEntry } from '../upkeep/bucket-inventory.js';
import { COMMON_OPTIONS, formatBytes, openStore, type Command } from './command.js';

const USAGE = `Usage: sparse-mirror ls [repo] [--json]

Lists what the mirror holds: repository, tag, index digest, platforms present, platforms the
index lists that are not mirrored, how many signatures, SBOMs and attestations of the image it
holds (referrers and cosign's tags; those tags are not listed as images), whether the signature
policy found it verified, unsigned or failed (- when no policy judged it), size on disk. [repo]
filters by repository or prefix (docker.io/library/alpine, docker.io).

With storage.s3, the shared bucket's images (its tag records and manifests) are listed too, and
a TIER column says which tiers hold each: local (this replica's disk), bucket, or local+bucket.

  --json             one JSON array, for scripts
  -c, --config FILE  config file (default mirror.config.ts)`;

export const lsCommand: Command = {
  name: 'ls',
  summary: 'List mirrored images and their platforms',
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...COMMON_OPTIONS, json: { type: 'boolean' } } });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const ctx = await openStore(values.config, { offline: true, mustExist: true });
    try {
      const local = inventory(ctx.mirror.catalogue, positionals[0]);
      const entries: Array<TieredEntry | (typeof local)[number]> = ctx.bucket
        ? mergeTiers(local, await bucketInventory(ctx.bucket, positionals[0]))
        : local;
      if (values.json) {
        console.log(JSON.stringify(entries, null, 2));
        return 0;
      }
      const rows = entries.map((e) => [
        e.repository,
        e.tag,
        e.digest.slice(0, 19),
        e.platforms.join(',') || '-',
        e.notMirrored.join(',') || '-',
        count(e.signatures),
        count(e.sboms),
        count(e.attestations),
        e.signature ?? '-',
        formatBytes(e.bytes),
        ...('tiers' in e ? [e.tiers.join('+')] : []),
      ]);
      const header = ['REPOSITORY', 'TAG', 'DIGEST', 'PLATFORMS', 'NOT MIRRORED', 'SIGNATURES', 'SBOMS', 'ATTESTATIONS', 'SIGNED', 'SIZE'];
      printTable(ctx.bucket ? [...header, 'TIER'] : header, rows);
      return 0;
    } finally {
      await ctx.close();
    }
  },
};

/** A count cell: `-` for none, as the other columns say it. */
function count(n: number): string {
  return n === 0 ? '-' : String(n);
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  console.log([line(header), ...rows.map(line)].join('\n'));
}
