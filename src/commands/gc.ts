import { parseArgs } from 'node:util';
import { manifestRecord } from '../mirror/records.js';
import type { Bucket } from '../store/bucket.js';
import { BucketSnapshot } from '../store/bucket-snapshot.js';
import type { Catalogue } from '../store/catalogue.js';
import { UploadQueueTable } from '../store/upload-queue.js';
import { pendingUploads, planBucketGc, sweepBucket, type BucketGcOptions } from '../upkeep/bucket-gc.js';
import { applyGc, planGc, pushedRepositories } from '../upkeep/gc.js';
import { COMMON_OPTIONS, UsageError, formatBytes, openStore, type Command } from './command.js';

const USAGE = `Usage: sparse-mirror gc [--dry-run] [--grace-minutes N]

Deletes what nothing references: child manifests whose index is gone, blobs no stored
manifest uses, files the catalogue does not name, and images not pulled for
storage.tagRetentionDays (when set). Content stored in the last N minutes (default 10) is
kept, so a pull in progress is never cut short. Safe while 'serve' runs. Blobs this replica
has not uploaded to the shared bucket yet are kept.

With storage.s3, also sweeps the shared bucket. Its roots are the tag records, and images no
tag names written in the last storage.s3.untaggedRetentionDays (default 7; an image pulled by
digest). A manifest no root reaches (through index entries, or as a signature, SBOM or
attestation of one that is reached), a blob no reached manifest names, a tag record whose
manifest is gone and a referrers list about a manifest not reached are deleted once older
than storage.s3.gcGraceSeconds (default 3600), as is nothing a manifest written within that
time names: replicas may be writing. Run it from one replica at a time.

  --dry-run          show what would be freed, delete nothing
  -c, --config FILE  config file (default mirror.config.ts)`;

export const gcCommand: Command = {
  name: 'gc',
  summary: 'Delete unreferenced content (and expired images)',
  usage: USAGE,
  async run(args) {
    const { values } = parseArgs({
      args,
      options: { ...COMMON_OPTIONS, 'dry-run': { type: 'boolean' }, 'grace-minutes': { type: 'string' } },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const graceMinutes = values['grace-minutes'] === undefined ? 10 : Number(values['grace-minutes']);
    if (!Number.isFinite(graceMinutes) || graceMinutes < 0) {
      throw new UsageError('--grace-minutes takes a number of minutes');
    }
    const ctx = await openStore(values.config, { offline: true, mustExist: true });
    try {
      const retentionDays = ctx.config.storage.tagRetentionDays;
      const plan = await planGc(ctx.mirror.catalogue, ctx.mirror.store, {
        graceMs: graceMinutes * 60_000,
        inFlight: new UploadQueueTable(ctx.mirror.catalogue.db).pendingBlobs(),
        retentionMs: retentionDays === undefined ? undefined : retentionDays * 86_400_000,
        keepsImages: pushedRepositories(ctx.config.push.namespace),
      });
      const what = `${plan.tags.length} tags, ${plan.manifests.length} manifests, ${plan.blobs.length} blobs, ${plan.strayFiles.length} stray files`;
      if (values['dry-run']) {
        for (const t of plan.tags) console.log(`would forget tag   ${t.repo}:${t.tag}`);
        for (const m of plan.manifests) console.log(`would delete manifest ${m.repo}@${m.digest}`);
        for (const b of plan.blobs) console.log(`would delete blob  ${b.digest} (${formatBytes(b.size)})`);
        for (const f of plan.strayFiles) console.log(`would delete file  ${f.digest} (${formatBytes(f.size)})`);
        console.log(`dry run: ${what}; would free ${formatBytes(plan.bytes)} (${plan.bytes} bytes)`);
      } else {
        const freed = await applyGc(plan, ctx.mirror.catalogue, ctx.mirror.store);
        console.log(`removed ${what}; freed ${formatBytes(freed)} (${freed} bytes)`);
      }
      if (ctx.bucket) {
        await gcBucket(ctx.bucket, ctx.mirror.catalogue, Boolean(values['dry-run']), {
          graceMs: (ctx.config.storage.s3?.gcGraceSeconds ?? 3600) * 1000,
          untaggedMs: (ctx.config.storage.s3?.untaggedRetentionDays ?? 7) * 86_400_000,
          keepsImages: pushedRepositories(ctx.config.push.namespace),
        });
      }
      return 0;
    } finally {
      await ctx.close();
    }
  },
};

async function gcBucket(bucket: Bucket, catalogue: Catalogue, dryRun: boolean, opts: BucketGcOptions): Promise<void> {
  const snap = await BucketSnapshot.read(bucket, { record: manifestRecord, blobs: true });
  try {
    const options = { ...opts, protect: pendingUploads(catalogue) };
    const plan = dryRun ? planBucketGc(snap, options) : await sweepBucket(bucket, snap, options);
    const what = `${plan.tags.length} tag records, ${plan.referrerLists.length} referrers lists, ${plan.manifests.length} manifests, ${plan.blobs.length} blobs`;
    if (dryRun) {
      for (const t of plan.tags) console.log(`bucket: would delete tag record ${t.repo}:${t.tag}`);
      for (const l of plan.referrerLists) console.log(`bucket: would delete referrers list of ${l.repo}@${l.subject}`);
      for (const m of plan.manifests) console.log(`bucket: would delete manifest ${m.repo}@${m.digest}`);
      for (const b of plan.blobs) console.log(`bucket: would delete blob ${b.digest} (${formatBytes(b.size)})`);
      console.log(`bucket dry run: ${what}; would free ${formatBytes(plan.bytes)} (${plan.bytes} bytes)`);
    } else {
      console.log(`bucket: deleted ${what}; freed ${formatBytes(plan.bytes)} (${plan.bytes} bytes)`);
    }
  } finally {
    snap.close();
  }
}
