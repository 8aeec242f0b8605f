import { cosignTag, type ReferrerDescriptor } from '../oci/referrers.js';
import type { Attachments } from '../mirror/referrers.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Route } from '../mirror/routing.js';
import type { SignatureSource } from './verify.js';
import { isSignatureReferrer } from './verify.js';

/**
 * Signatures read through the mirror's own services, as a client verifying them would: pulled
 * through (verified, stored with the image) online, from the store offline.
 */
export class MirrorSignatureSource implements SignatureSource {
  private readonly found = new Map<string, Promise<Attachments>>();

  constructor(
    private readonly mirror: Mirror,
    private readonly route: Route,
  ) {}

  private attachments(subject: string): Promise<Attachments> {
    let a = this.found.get(subject);
    if (!a) this.found.set(subject, (a = this.mirror.referrers.attachments(this.route, subject)));
    return a;
  }

  /**
   * What a verdict on `subject` rests on: its `.sig` tag's digest and its signature referrers.
   * When these change, the verdict is reached again.
   */
  async state(subject: string): Promise<string> {
    const a = await this.attachments(subject);
    const tag = cosignTag(subject, 'sig');
    const sig = a.tags.find((t) => t.tag === tag);
    const bundles = a.descriptors.filter(isSignatureReferrer).map((d) => d.digest).sort();
    return [sig ? `sig=${sig.digest ?? 'present'}` : 'sig=none', ...bundles].join(',');
  }

  async signatureTag(subject: string): Promise<Buffer | undefined> {
    const tag = cosignTag(subject, 'sig');
    if (!(await this.attachments(subject)).tags.some((t) => t.tag === tag)) return undefined;
    return (await this.mirror.manifests.get(this.route, tag, true)).bytes;
  }

  async referrers(subject: string): Promise<ReferrerDescriptor[]> {
    return (await this.attachments(subject)).descriptors;
  }

  async manifest(digest: string): Promise<Buffer> {
    return (await this.mirror.manifests.get(this.route, digest, true)).bytes!;
  }

  async blob(digest: string, size: number): Promise<Buffer> {
    const b = await this.mirror.blobs.get(this.route, digest, { wantBody: true });
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of b.body!) {
      total += (c as Buffer).length;
      if (total > size) {
        b.body!.destroy();
        throw new Error(`blob ${digest} is larger than its descriptor says`);
      }
      chunks.push(c as Buffer);
    }
    // The body ended, so its bytes verified. Not awaiting `stored`: the blob is flushed and recorded
    // once fetching goes quiet (blobs.flushQuietMs), and a pull waiting on this verdict must not wait for that.
    return Buffer.concat(chunks);
  }
}
