import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { prefetchImage, type PrefetchProgress, type PrefetchResult } from '../upkeep/prefetch.js';
import { COMMON_OPTIONS, UsageError, formatBytes, openStore, type Command } from './command.js';

const USAGE = `Usage: sparse-mirror prefetch [--from-file FILE] [--no-referrers] <ref>...

Fetches each image into the store as a pull would: the index byte for byte, the manifests of
the platforms this mirror carries (and their attestations), and all their blobs. Content
already stored is not fetched again. With them go the image's signatures, SBOMs and
attestations: for the index and each carried child, its OCI referrers (upstream's referrers
API, or its sha256-<hex> fallback tag) and cosign's sha256-<hex>.sig/.att/.sbom tags, and
what refers to those in turn (a signed SBOM). Those of platforms not carried are not fetched.
An image of a repository under an enforce signature policy that is not signed by its keys is
skipped and reported (exit 1).

  <ref>              docker.io/library/alpine:3.20, ghcr.io/org/app@sha256:…, alpine:3.20 (default upstream)
  -f, --from-file F  read references from F, one per line (# comments allowed)
      --no-referrers leave signatures, SBOMs and attestations out (config: referrers: false)
  -c, --config FILE  config file (default mirror.config.ts)`;

export const prefetchCommand: Command = {
  name: 'prefetch',
  summary: 'Fetch images (allowed platforms only) into the store',
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { ...COMMON_OPTIONS, 'from-file': { type: 'string', short: 'f' }, 'no-referrers': { type: 'boolean' } },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const refs = [...positionals];
    if (values['from-file']) {
      const file = values['from-file'];
      const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
      });
      refs.push(...parseRefList(text));
    }
    if (refs.length === 0) throw new UsageError('name at least one image reference');

    const ctx = await openStore(values.config);
    if (ctx.config.offline) {
      await ctx.close();
      console.error('sparse-mirror prefetch: the mirror is configured offline (MIRROR_OFFLINE); nothing can be fetched');
      return 1;
    }
    const results: PrefetchResult[] = [];
    let failed = 0;
    let refused = 0;
    try {
      for (const ref of refs) {
        const bar = progressPrinter(ref);
        try {
          const r = await prefetchImage(ctx.mirror, ref, { onProgress: bar.update, ...(values['no-referrers'] ? { referrers: false } : {}) });
          for (const p of r.attachmentProblems) process.stderr.write(`${r.ref}  warning: ${p}\n`);
          if (r.refused) {
            bar.fail(`not signed as the signature policy asks: ${r.refused}`, 'REFUSED');
            refused++;
            continue;
          }
          if (r.signature && r.signature.status !== 'verified') process.stderr.write(`${r.ref}  warning: not signed as the policy asks (warn): ${r.signature.reason}\n`);
          bar.done(r);
          results.push(r);
        } catch (e) {
          bar.fail((e as Error).message);
          failed++;
        }
      }
    } finally {
      await ctx.close();
    }
    const sum = (f: (r: PrefetchResult) => number) => results.reduce((a, r) => a + f(r), 0);
    const fetched = new Set(results.flatMap((r) => r.platformsFetched));
    const skipped = new Set(results.flatMap((r) => r.platformsSkipped));
    console.log(
      [
        `images:            ${results.length} fetched${failed ? `, ${failed} failed` : ''}${refused ? `, ${refused} refused (not signed as the signature policy asks)` : ''}`,
        `platforms fetched: ${[...fetched].sort().join(', ') || '-'}`,
        `platforms skipped: ${[...skipped].sort().join(', ') || '-'} (not allowed)`,
        `signatures:        ${sum((r) => r.attached.signature)}`,
        `SBOMs:             ${sum((r) => r.attached.sbom)}`,
        `attestations:      ${sum((r) => r.attached.attestation)}${sum((r) => r.attached.other) ? ` (and ${sum((r) => r.attached.other)} other referrers)` : ''}`,
        `skipped:           ${sum((r) => r.attachedSkipped)} signatures/attestations of platforms not carried`,
        `bytes fetched:     ${formatBytes(sum((r) => r.bytesFetched))}`,
        `already present:   ${formatBytes(sum((r) => r.bytesPresent))}`,
      ].join('\n'),
    );
    return failed || refused ? 1 : 0;
  },
};

export function parseRefList(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}

/** A progress line per image: redrawn in place on a terminal, plain log lines otherwise. */
function progressPrinter(ref: string) {
  const tty = Boolean(process.stderr.isTTY);
  const started = Date.now();
  let lastDraw = 0;
  const rate = (bytes: number) => `${formatBytes(bytes / Math.max(0.001, (Date.now() - started) / 1000))}/s`;
  return {
    update: (p: PrefetchProgress) => {
      if (!tty || Date.now() - lastDraw < 100) return;
      lastDraw = Date.now();
      process.stderr.write(`\r\x1b[K${ref}  blobs ${p.blobsDone}/${p.blobsTotal}  ${formatBytes(p.fetched)} fetched  ${rate(p.fetched)}`);
    },
    done: (r: PrefetchResult) => {
      const line = `${r.ref}  ${r.digest || '-'}  platforms ${r.platformsFetched.join(',') || '-'}  skipped ${r.platformsSkipped.join(',') || '-'}  fetched ${formatBytes(r.bytesFetched)} (${rate(r.bytesFetched)}), present ${formatBytes(r.bytesPresent)}`;
      process.stderr.write(tty ? `\r\x1b[K${line}\n` : `${line}\n`);
    },
    fail: (message: string, label = 'FAILED') => {
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}${ref}  ${label}: ${message}\n`);
    },
  };
}
