/** One manifest request, as the status page lists it. */
export interface Pull {
  at: number;
  repository: string;
  /** The tag or digest asked for. */
  reference: string;
  /** The manifest's platform, `index` for an index, unknown (undefined) when not stored. */
  platform?: string;
  /** hit, miss or stale; for a refused or failed request, its HTTP status (`HTTP 403`). */
  result: string;
  user?: string;
}

/** The last pulls, newest first, in a fixed-size ring: memory stays bounded whatever the traffic. */
export class RecentPulls {
  private readonly ring: Pull[] = [];
  private next = 0;

  constructor(private readonly size = 200) {}

  add(pull: Pull): void {
    if (this.ring.length < this.size) this.ring.push(pull);
    else this.ring[this.next] = pull;
    this.next = (this.next + 1) % this.size;
  }

  list(limit = this.size): Pull[] {
    const out: Pull[] = [];
    for (let i = 1; i <= this.ring.length && out.length < limit; i++) {
      out.push(this.ring[(this.next - i + this.size) % this.size]!);
    }
    return out;
  }
}
