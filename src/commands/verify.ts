import { parseArgs } from 'node:util';
import { manifestRecord } from '../mirror/records.js';
import { verifyBucket } from '../upkeep/bucket-verify.js';
import { verifyStore } from '../upkeep/verify.js';
import { COMMON_OPTIONS, formatBytes, openStore, type Command } from './command.js';

const USAGE = `Usage: sparse-mirror verify [--repair]

Re-hashes every stored blob and manifest and checks the catalogue against the disk both ways.
With storage.s3, also reads the whole shared bucket: every blob must hash to its key and have
its listed size, every manifest must hash to its key and parse, every tag record and
referrers list must be one.
Exits 1 when it finds a problem (unless --repair fixed it).

  --repair           move corrupt files to <data>/quarantine/ and forget catalogue rows
                     whose content is missing or corrupt (the next pull fetches it again);
                     delete damaged objects from the bucket (keys no replica writes are
                     only reported)
  -c, --config FILE  config file (default mirror.config.ts)`;

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'Re-hash the store and check the catalogue',
  usage: USAGE,
  async run(args) {
    const { values } = parseArgs({ args, options: { ...COMMON_OPTIONS, repair: { type: 'boolean' } } });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const ctx = await openStore(values.config, { offline: true, mustExist: true });
    try {
      const r = await verifyStore(ctx.mirror.store, ctx.mirror.catalogue, { repair: values.repair });
      for (const p of r.problems) console.log(`${p.kind.padEnd(12)} ${p.digest}  ${p.detail}`);
      console.log(
        `checked ${r.filesChecked} files (${formatBytes(r.bytesChecked)}) and ${r.rowsChecked} catalogue rows: ` +
          `${r.problems.length} problem(s)${r.problems.length && r.repaired ? ', repaired' : ''}, ` +
          `${r.unreferencedFiles.length} unreferenced file(s) (gc removes them)`,
      );
      let ok = r.problems.length === 0 || r.repaired;
      if (ctx.bucket) {
        const b = await verifyBucket(ctx.bucket, manifestRecord, { repair: values.repair });
        for (const p of b.problems) console.log(`bucket ${p.kind.padEnd(12)} ${p.key}  ${p.detail}${b.deleted.includes(p.key) ? ' (deleted)' : ''}`);
        console.log(
          `bucket: checked ${b.objectsChecked} objects (${formatBytes(b.bytesChecked)}): ${b.problems.length} problem(s)` +
            `${b.deleted.length ? `, ${b.deleted.length} damaged object(s) deleted` : ''}`,
        );
        ok &&= b.problems.every((p) => b.deleted.includes(p.key));
      }
      return ok ? 0 : 1;
    } finally {
      await ctx.close();
    }
  },
};
