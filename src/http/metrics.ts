type Labels = Record<string, string>;

/** A counter family: one value per label set. */
class Counter {
  private readonly values = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = JSON.stringify(labels);
    const entry = this.values.get(key);
    if (entry) entry.value += by;
    else this.values.set(key, { labels, value: by });
  }

  get(labels: Labels = {}): number {
    return this.values.get(JSON.stringify(labels))?.value ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const { labels, value } of this.values.values()) lines.push(`${this.name}${formatLabels(labels)} ${value}`);
    return lines.join('\n');
  }
}

/**
 * The mirror's Prometheus metrics. Counters live here; gauges (store size) are read when scraped.
 * Label values come from a small fixed set (route kinds, statuses, configured upstreams,
 * platforms named in stored indexes), so cardinality stays bounded.
 */
export class Metrics {
  readonly requests = new Counter('sparse_mirror_http_requests_total', 'HTTP requests by route kind, method and status.');
  readonly cache = new Counter('sparse_mirror_cache_requests_total', 'Manifest and blob lookups by result (hit, miss, stale).');
  readonly servedBytes = new Counter('sparse_mirror_served_bytes_total', 'Bytes of manifest and blob bodies sent to clients.');
  readonly upstreamBytes = new Counter('sparse_mirror_upstream_fetched_bytes_total', 'Bytes fetched from upstream registries and stored.');
  readonly upstreamErrors = new Counter('sparse_mirror_upstream_errors_total', 'Upstream failures by upstream and kind.');
  readonly notMirrored = new Counter(
    'sparse_mirror_not_mirrored_requests_total',
    'Requests refused because the platform is not mirrored, by platform.',
  );

  readonly signatureRefusals = new Counter(
    'sparse_mirror_signature_refusals_total',
    'Manifest requests refused by an enforce signature policy (unsigned or not verifying), by repository.',
  );

  render(gauges: Array<{ name: string; help: string; value: number }>): string {
    const counters = [this.requests, this.cache, this.servedBytes, this.upstreamBytes, this.upstreamErrors, this.notMirrored, this.signatureRefusals];
    const parts = counters.map((c) => c.render());
    for (const g of gauges) parts.push(`# HELP ${g.name} ${g.help}\n# TYPE ${g.name} gauge\n${g.name} ${g.value}`);
    return `${parts.join('\n')}\n`;
  }
}

function formatLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

/** The cache label of a response: hit (local store), miss (upstream), stale, or with replicas bucket or peer (the owner). */
export function cacheResult(source: 'store' | 'upstream' | 'stale' | 'bucket' | 'peer'): string {
  return source === 'store' ? 'hit' : source === 'upstream' ? 'miss' : source;
}
