import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { exportImages } from '../airgap/export.js';
import { copyFromBucket } from '../airgap/from-bucket.js';
import { isReportable } from '../airgap/oci-layout.js';
import { parseImageReference } from '../oci/reference.js';
import { BucketUnavailableError } from '../store/bucket.js';
import { COMMON_OPTIONS, formatBytes, openStore, UsageError, type Command } from './command.js';

const USAGE = `Usage: sparse-mirror export [--config FILE] [--from-file FILE] <dir|file.tar> <ref>...

Writes mirrored images to an OCI image layout, to carry them into an air-gapped network and
'sparse-mirror import' them there. A path ending in .tar becomes a tar archive; any other path a
directory (new, or empty). skopeo reads either (oci:DIR:TAG, oci-archive:FILE.tar:TAG), as do oras
and containerd.

The layout holds exactly what the mirror holds: each index with its stored bytes (so its digest is
the upstream's), the child manifests of the platforms this mirror carries that it has, and their
blobs. Nothing is fetched from upstream: a ref the mirror does not hold, or holds only in part, is
an error and nothing is written.

References: docker.io/library/alpine:3.20, ghcr.io/org/app@sha256:..., or alpine:3.20 (the
default upstream). Each gets an index.json entry named io.containerd.image.name=<full name> and
org.opencontainers.image.ref.name=<tag>. (skopeo finds a tag only among entries with OCI media
types; for an image with Docker media types, export it alone and use oci:DIR without a tag.)

Each image's signatures, SBOMs and attestations that the mirror holds go with it (its OCI
referrers, one entry each, and cosign's sha256-<hex>.sig/.att/.sbom tags and the referrers
fallback tag, as entries with that tag as ref.name), unless --no-referrers or referrers: false.

With storage.s3, what the shared bucket holds counts as held: an image (or part of one, or a
newer tag) this replica's disk lacks is copied from the bucket into the local tier, verified,
and exported from there. Still nothing is fetched from upstream. If the bucket does not answer,
what this replica's disk holds is exported.

Options:
  -c, --config FILE      config file (default mirror.config.ts, or $MIRROR_CONFIG)
  -f, --from-file FILE   also export the references in FILE, one per line (# starts a comment)
      --no-referrers     leave signatures, SBOMs and attestations out
  -h, --help             show this help

Exit codes: 0 exported, 1 failed (nothing written), 2 bad usage.`;

export const exportCommand: Command = {
  name: 'export',
  summary: 'Write mirrored images to an OCI image layout (directory or .tar) for an air gap',
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseArgs({
      args,
      options: { ...COMMON_OPTIONS, 'from-file': { type: 'string', short: 'f' }, 'no-referrers': { type: 'boolean' } },
      allowPositionals: true,
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const [dest, ...refs] = positionals;
    if (!dest) throw new UsageError('missing the destination: a directory or a file.tar');
    if (values['from-file']) {
      let text: string;
      try {
        text = await readFile(values['from-file'], 'utf8');
      } catch (e) {
        throw new UsageError(`cannot read --from-file ${values['from-file']}: ${(e as Error).message}`);
      }
      refs.push(...parseRefList(text));
    }
    if (refs.length === 0) throw new UsageError('name at least one image reference to export');
    for (const ref of refs) {
      try {
        parseImageReference(ref);
      } catch (e) {
        throw new UsageError(`"${ref}" is not an image reference (${(e as Error).message})`);
      }
    }

    const ctx = await openStore(values.config, { offline: true, mustExist: true });
    try {
      const withReferrers = !values['no-referrers'] && ctx.config.referrers;
      if (ctx.bucket) {
        try {
          const c = await copyFromBucket(ctx.mirror, ctx.bucket, refs, { referrers: withReferrers });
          if (c.manifests + c.blobs > 0) {
            console.log(`copied from the shared bucket: ${c.manifests} manifests, ${c.blobs} blobs, ${formatBytes(c.bytes)}`);
          }
        } catch (e) {
          // What this replica's disk holds can still be exported; export says what it lacks.
          if (!(e instanceof BucketUnavailableError)) throw e;
          console.error(`sparse-mirror export: ${e.message}; exporting from this replica's disk only`);
        }
      }
      const result = await exportImages(ctx.mirror, refs, dest, { referrers: withReferrers });
      for (const image of result.images) {
        const platforms = image.platforms.length ? image.platforms.join(', ') : 'no platform-specific manifests';
        const absent = image.absent.length ? `; not in the layout: ${image.absent.join(', ')}` : '';
        const a = image.attached;
        const attached = a.signature + a.sbom + a.attestation + a.other > 0
          ? `; with ${a.signature} signature(s), ${a.sbom} SBOM(s), ${a.attestation} attestation(s)${a.other ? `, ${a.other} other referrer(s)` : ''}`
          : '';
        console.log(`exported ${image.name}  ${image.digest}  (${platforms}${absent}${attached})`);
      }
      const n = result.images.length;
      console.log(
        `Exported ${n} image${n === 1 ? '' : 's'} to ${result.path} (OCI image layout, ${result.format}): ` +
          `${result.manifests} manifests, ${result.blobs} blobs, ${formatBytes(result.bytes)}`,
      );
      return 0;
    } catch (e) {
      if (!isReportable(e)) throw e;
      console.error(`sparse-mirror export: ${e.message}`);
      return 1;
    } finally {
      await ctx.close();
    }
  },
};

/** One reference per line; blank lines and `#` comments are skipped. */
export function parseRefList(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean);
}
