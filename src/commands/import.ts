import { parseArgs } from 'node:util';
import { importLayout, resolveRepo } from '../airgap/import.js';
import { isReportable } from '../airgap/oci-layout.js';
import { writeImportedToBucket } from '../airgap/to-bucket.js';
import { COMMON_OPTIONS, formatBytes, openStore, UsageError, type Command } from './command.js';

const USAGE = `Usage: sparse-mirror import [--config FILE] [--repo REGISTRY/REPOSITORY] <dir|file.tar>

Adds the images of an OCI image layout (a directory, or a tar of one; e.g. written by
'sparse-mirror export') to this mirror's store, so that a mirror with offline: true serves them.
Safe while 'serve' runs on the same store.

Every manifest and blob is checked against its digest as it is copied; an image is recorded only
when all of it verified. A corrupt or incomplete image is reported and leaves nothing behind (the
other images still import). Children of an index that are not in the layout, or of platforms this
mirror does not carry, are left out: the index is kept byte for byte, as a sparse index.

Each index.json entry goes where its io.containerd.image.name annotation says (e.g.
docker.io/library/alpine:3.20; that registry must be one of this mirror's upstreams). Entries
without it (skopeo, oras) need --repo: they go to that repository, tagged with their
org.opencontainers.image.ref.name.

With storage.s3, the imported images are written to the shared bucket too (blobs, manifests,
tag records), so every replica serves them. If the bucket fails, what is left waits in the
store's upload queue and 'serve' sends it when the bucket is back.

An image of a repository under an enforce signature policy (config signatures.policies) is
imported only if the layout holds its signature by the policy's keys (a sha256-<hex>.sig entry
or a Sigstore bundle referrer); else it is refused with its signatures and SBOMs, and nothing
of it is kept.

Options:
  -c, --config FILE          config file (default mirror.config.ts, or $MIRROR_CONFIG)
  -r, --repo REGISTRY/REPO   repository for entries that name no image, e.g. docker.io/library/alpine
      --require-signatures   admit only images signed by the keys of the policy covering them:
                             warn policies count as enforce, and images no policy covers are refused
  -h, --help                 show this help

Exit codes: 0 all imported, 1 something failed (see the messages), 2 bad usage.`;

export const importCommand: Command = {
  name: 'import',
  summary: 'Add the images of an OCI image layout (directory or .tar) to the store',
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseArgs({
      args,
      options: { ...COMMON_OPTIONS, repo: { type: 'string', short: 'r' }, 'require-signatures': { type: 'boolean' } },
      allowPositionals: true,
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new UsageError(positionals.length === 0 ? 'missing the layout to import: a directory or a file.tar' : 'import takes one layout at a time');
    }
    const src = positionals[0]!;

    const ctx = await openStore(values.config, { offline: true });
    try {
      if (values.repo) {
        try {
          resolveRepo(ctx.mirror, values.repo);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
      }
      const result = await importLayout(ctx.mirror, src, {
        repo: values.repo,
        requireSignatures: values['require-signatures'] ?? false,
        onImage: (o) => {
          if (o.ok) {
            const platforms = o.platforms.length ? o.platforms.join(', ') : 'no platform-specific manifests';
            const absent = o.absent.length ? `; left out: ${o.absent.join(', ')}` : '';
            const moved = o.previous ? `; the tag moved from ${o.previous}` : '';
            console.log(`imported ${o.name}  ${o.digest}  (${platforms}${absent}${moved})`);
            if (o.signature && o.signature.status !== 'verified') console.error(`warning  ${o.name}: not signed as the signature policy asks (warn): ${o.signature.reason}`);
          } else {
            console.error(`failed   ${o.name}: ${o.error}`);
          }
        },
      });
      const n = result.images.length;
      const failed = result.failures.length ? `, ${result.failures.length} failed (nothing of those was recorded)` : '';
      console.log(
        `Imported ${n} image${n === 1 ? '' : 's'}${failed} from ${src}: ${result.manifests} manifests, ${result.blobs} blobs, ` +
          `${formatBytes(result.bytesCopied)} copied, ${formatBytes(result.bytesPresent)} already present`,
      );
      if (ctx.mirror.shared && result.images.length > 0) {
        const w = await writeImportedToBucket(ctx.mirror, result.images);
        console.log(`Wrote ${w.written} objects to the shared bucket${w.queued ? `; ${w.queued} queued` : ''}`);
        if (w.error) {
          console.error(`sparse-mirror import: ${w.error}\n${w.queued} objects wait in the upload queue: 'serve' sends them when the bucket is back`);
        }
      }
      return result.failures.length ? 1 : 0;
    } catch (e) {
      if (!isReportable(e)) throw e;
      console.error(`sparse-mirror import: ${e.message}`);
      return 1;
    } finally {
      await ctx.close();
    }
  },
};
