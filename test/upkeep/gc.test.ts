// gc and eviction treat a referrer (signature, SBOM, attestation, the fallback index, a cosign
// tag's manifest) as part of its subject: kept with it, forgotten with it, never before it.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cosignTag, fallbackTag } from '../../src/oci/referrers.js';
import { applyGc, findRoots, planGc, type GcOptions } from '../../src/upkeep/gc.js';
import { Maintenance } from '../../src/upkeep/maintenance.js';
import type { MirrorConfig } from '../../src/config/schema.js';
import type { Logger } from '../../src/log.js';
import type { Mirror } from '../../src/mirror/mirror.js';
import {
  ATTESTATION_TYPE,
  REPO,
  SBOM_TYPE,
  SIGNATURE_TYPE,
  addCosignTagged,
  addFallbackIndex,
  addImage,
  addIndex,
  d,
  openTestStore,
  setLastAccess,
  type TestStore,
} from './store.js';

const DAY = 86_400_000;
let t: TestStore;

beforeEach(async () => {
  t = await openTestStore();
});
afterEach(() => t.close());

/** A plan one week from now with a one-day retention and no grace: what was not touched since is expired. */
function plan(opts: GcOptions = {}) {
  return planGc(t.catalogue, t.store, { now: Date.now() + 7 * DAY, retentionMs: DAY, graceMs: 0, ...opts });
}
/** Keeps `digest` fresh: pulled "now" on the plan's clock. */
function touch(digest: string, repo = REPO) {
  setLastAccess(t.catalogue, digest, Date.now() + 7 * DAY - 1000, repo);
}
const digestsOf = (p: Awaited<ReturnType<typeof plan>>) => p.manifests.map((m) => m.digest).sort();
const rootDigests = () => findRoots(t.catalogue).map((r) => r.digest).sort();

describe('a referrer lives and dies with its subject', () => {
  it('a signature is not a root while its image is stored, and is kept while the image is', async () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    const sig = addImage(t.catalogue, 'sig', { subject: image, artifactType: SIGNATURE_TYPE });
    expect(rootDigests()).toEqual([image]);
    touch(image);
    // The signature itself has not been pulled for a week: it stays all the same.
    const p = await plan();
    expect(p.manifests).toEqual([]);
    expect(p.blobs).toEqual([]);
    expect(p.tags).toEqual([]);
    expect(t.catalogue.getManifest(REPO, sig)).toBeDefined();
  });

  it('an expired image takes its signature, SBOM and attestation (and their blobs) with it', async () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    const refs = [
      addImage(t.catalogue, 'sig', { subject: image, artifactType: SIGNATURE_TYPE }),
      addImage(t.catalogue, 'sbom', { subject: image, artifactType: SBOM_TYPE }),
      addImage(t.catalogue, 'att', { subject: image, artifactType: ATTESTATION_TYPE }),
    ];
    // The referrers were pulled lately; the image was not.
    for (const r of refs) touch(r);
    const p = await plan();
    expect(digestsOf(p)).toEqual([image, ...refs].sort());
    expect(p.blobs.map((b) => b.digest).sort()).toEqual(
      ['image', 'sig', 'sbom', 'att'].flatMap((s) => [d(`${s}/config`), d(`${s}/layer`)]).sort(),
    );
    expect(p.tags).toEqual([{ repo: REPO, tag: '1' }]);
    await applyGc(p, t.catalogue, t.store);
    expect(t.catalogue.allManifests()).toEqual([]);
    expect(t.catalogue.referrers.allStored()).toEqual([]);
  });

  it('evicting an image takes its signatures with it, and another image keeps its own', async () => {
    const a = addImage(t.catalogue, 'a', { tag: 'a' });
    const b = addImage(t.catalogue, 'b', { tag: 'b' });
    const sigA = addImage(t.catalogue, 'sig a', { subject: a, artifactType: SIGNATURE_TYPE });
    const sigB = addImage(t.catalogue, 'sig b', { subject: b, artifactType: SIGNATURE_TYPE });
    const p = await plan({ retentionMs: undefined, evict: new Set([`${REPO}@${a}`]) });
    expect(digestsOf(p)).toEqual([a, sigA].sort());
    expect(digestsOf(p)).not.toContain(sigB);
  });

  it('the fallback index, its entries and a cosign .sig tag go with the image; they stay while it stays', async () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    const sbom = addImage(t.catalogue, 'sbom', { subject: image, artifactType: SBOM_TYPE });
    const fallback = addFallbackIndex(t.catalogue, image, [sbom]);
    const sig = addCosignTagged(t.catalogue, image, 'sig');
    expect(rootDigests()).toEqual([image]);

    touch(image);
    expect((await plan()).manifests).toEqual([]);

    setLastAccess(t.catalogue, image, 0);
    for (const r of [sbom, fallback, sig]) touch(r);
    const p = await plan();
    expect(digestsOf(p)).toEqual([image, sbom, fallback, sig].sort());
    expect(p.tags.map((x) => x.tag).sort()).toEqual(['1', cosignTag(image, 'sig'), fallbackTag(image)].sort());
    await applyGc(p, t.catalogue, t.store);
    expect(t.catalogue.allTags()).toEqual([]);
    expect(t.catalogue.allManifests()).toEqual([]);
  });

  it('signatures of signatures stay and go with the image', async () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    const att = addImage(t.catalogue, 'att', { subject: image, artifactType: ATTESTATION_TYPE });
    const sigOfAtt = addImage(t.catalogue, 'sig of att', { subject: att, artifactType: SIGNATURE_TYPE });
    const cosignOfSig = addCosignTagged(t.catalogue, sigOfAtt, 'sig');
    expect(rootDigests()).toEqual([image]);
    touch(image);
    expect((await plan()).manifests).toEqual([]);
    setLastAccess(t.catalogue, image, 0);
    expect(digestsOf(await plan())).toEqual([image, att, sigOfAtt, cosignOfSig].sort());
  });

  it('a signature of a platform manifest goes with the index that lists it', async () => {
    const amd64 = addImage(t.catalogue, 'amd64', { platform: 'linux/amd64' });
    const index = addIndex(t.catalogue, 'index', [{ digest: amd64, platform: 'linux/amd64' }], { tag: '1' });
    const sig = addImage(t.catalogue, 'sig', { subject: amd64, artifactType: SIGNATURE_TYPE });
    expect(rootDigests()).toEqual([index]);
    touch(index);
    expect((await plan()).manifests).toEqual([]);
    setLastAccess(t.catalogue, index, 0);
    touch(sig);
    expect(digestsOf(await plan())).toEqual([amd64, index, sig].sort());
  });

  it('a referrer whose subject is not stored is a root of its own and expires alone', async () => {
    const image = addImage(t.catalogue, 'image', { tag: '1' });
    const orphan = addImage(t.catalogue, 'orphan', { subject: d('an image the mirror never pulled'), artifactType: SIGNATURE_TYPE });
    const orphanTagged = addCosignTagged(t.catalogue, d('another image not here'), 'sig');
    expect(rootDigests()).toEqual([image, orphan, orphanTagged].sort());
    touch(image);
    touch(orphanTagged);
    const p = await plan();
    expect(digestsOf(p)).toEqual([orphan]);
    // Its subject stored in another repository does not hold it either.
    addImage(t.catalogue, 'an image the mirror never pulled', { repo: 'ghcr.io/org/other' });
    expect(findRoots(t.catalogue).filter((r) => r.repo === REPO).map((r) => r.digest)).toContain(orphan);
    expect(digestsOf(await plan()).filter((x) => x === orphan)).toEqual([orphan]);
  });

  it('a ring of tag-scheme tags is not collected at once: it gets a root of its own', async () => {
    const a = addImage(t.catalogue, 'a');
    const b = addImage(t.catalogue, 'b');
    t.catalogue.setTag(REPO, cosignTag(a, 'sig'), b);
    t.catalogue.setTag(REPO, cosignTag(b, 'sig'), a);
    expect(findRoots(t.catalogue)).toHaveLength(1);
    touch(a);
    touch(b);
    expect((await plan()).manifests).toEqual([]);
    setLastAccess(t.catalogue, a, 0);
    setLastAccess(t.catalogue, b, 0);
    expect(digestsOf(await plan())).toEqual([a, b].sort());
  });
});

describe('eviction', () => {
  function maintenance(maxBytes: number): Maintenance {
    const mirror = { catalogue: t.catalogue, store: t.store, blobs: { inFlight: () => [] } } as unknown as Mirror;
    const config = { storage: { maxBytes }, push: { namespace: 'local' }, sync: { images: [], tagPatterns: [] }, offline: true } as unknown as MirrorConfig;
    const log = { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger;
    return new Maintenance(mirror, config, log);
  }
  const old = Date.now() - 3_600_000;
  const stored = (digest: string) => t.catalogue.getManifest(REPO, digest) !== undefined;

  it('never evicts a signature before its image: the least recently pulled image goes, with its signature', async () => {
    // Stored an hour ago, past eviction's grace.
    const a = addImage(t.catalogue, 'a', { tag: 'a' });
    const b = addImage(t.catalogue, 'b', { tag: 'b' });
    const sigA = addImage(t.catalogue, 'sig a', { subject: a, artifactType: SIGNATURE_TYPE });
    const sigB = addCosignTagged(t.catalogue, b, 'sig');
    t.catalogue.db.prepare('UPDATE manifests SET stored_at = ?').run(old);
    t.catalogue.db.prepare('UPDATE blobs SET stored_at = ?').run(old);
    // b's signature is the least recently used manifest of all; a is the least recently pulled image.
    setLastAccess(t.catalogue, sigB, old);
    setLastAccess(t.catalogue, a, old + 1000);
    setLastAccess(t.catalogue, b, old + 2000);
    setLastAccess(t.catalogue, sigA, old + 3000);
    const total = t.catalogue.storeBytes();
    // Evicting one image (with its signature) is enough.
    const freed = await maintenance(total - 1).evictIfNeeded();
    expect(freed).toBe(0); // no files were written: rows only
    expect([a, sigA].map(stored)).toEqual([false, false]);
    expect([b, sigB].map(stored)).toEqual([true, true]);
    expect(t.catalogue.getTag(REPO, cosignTag(b, 'sig'))).toBeDefined();
    expect(t.catalogue.getTag(REPO, 'a')).toBeUndefined();
  });
});
