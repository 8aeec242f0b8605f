import { lookup } from 'node:dns/promises';
import { rankMembers } from './ranking.js';

export interface MembershipOptions {
  /** This replica's URL as the others know it. */
  self: string;
  /** The replicas' URLs from config (self may be among them). */
  peers: readonly string[];
  /** A name resolving to every replica's address; members are advertise's scheme and port at each. */
  dns?: string;
  /** Whether a peer answers (a signed health request); only live peers own anything. */
  probe: (member: string) => Promise<boolean>;
  probeIntervalMs: number;
  resolve?: (name: string) => Promise<string[]>;
}

/**
 * The replicas this one knows and which of them are alive. Ownership is ranked over the live
 * ones, so a replica that dies hands its keys to the next in each key's ranking until it answers
 * again. A peer counts as alive until a probe or a forwarded request says otherwise.
 */
export class Membership {
  private readonly self: string;
  private known: string[];
  private readonly down = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;

  constructor(private readonly opts: MembershipOptions) {
    this.self = normalise(opts.self);
    this.known = unique([this.self, ...opts.peers.map(normalise)]);
  }

  get selfUrl(): string {
    return this.self;
  }

  /** Every replica known, alive or not. */
  members(): string[] {
    return [...this.known];
  }

  /** The replicas believed alive, this one always among them. */
  live(): string[] {
    return this.known.filter((m) => m === this.self || !this.down.has(m));
  }

  /** The live replicas in the order they own `key`: the first fetches, the next takes over. */
  ranking(key: string): string[] {
    return rankMembers(key, this.live());
  }

  isSelf(member: string): boolean {
    return normalise(member) === this.self;
  }

  /** A request to `member` failed to connect: rank without it until a probe finds it back. */
  markDown(member: string): void {
    if (!this.isSelf(member)) this.down.add(normalise(member));
  }

  start(): void {
    if (this.timer) return;
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.probeIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.round;
  }

  /** Re-resolves the DNS name (if any) and probes every peer once. */
  refresh(): Promise<void> {
    return (this.round ??= this.refreshOnce().finally(() => (this.round = undefined)));
  }

  private async refreshOnce(): Promise<void> {
    if (this.opts.dns) {
      const addresses = await (this.opts.resolve ?? resolveAll)(this.opts.dns).catch(() => undefined);
      // A failed lookup keeps the members we had: DNS hiccups must not split the cluster.
      if (addresses?.length) {
        const base = new URL(this.self);
        const fromDns = addresses.map((a) => normalise(`${base.protocol}//${a.includes(':') ? `[${a}]` : a}:${portOf(base)}`));
        this.known = unique([this.self, ...this.opts.peers.map(normalise), ...fromDns]);
      }
    }
    await Promise.all(
      this.known
        .filter((m) => m !== this.self)
        .map(async (m) => {
          const alive = await this.opts.probe(m).catch(() => false);
          if (alive) this.down.delete(m);
          else this.down.add(m);
        }),
    );
  }
}

async function resolveAll(name: string): Promise<string[]> {
  return (await lookup(name, { all: true })).map((a) => a.address);
}

/** One spelling per replica: origin only, default ports explicit, so rankings agree everywhere. */
function normalise(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.hostname}:${portOf(u)}`; // an IPv6 hostname keeps its brackets
}

function portOf(u: URL): string {
  return u.port || (u.protocol === 'https:' ? '443' : '80');
}

function unique(xs: string[]): string[] {
  return [...new Set(xs)];
}
