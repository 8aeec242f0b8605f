import type Database from 'better-sqlite3';

export const HOUR_MS = 3_600_000;
/** Hourly rows older than this are pruned. */
const KEEP_MS = 30 * 24 * HOUR_MS;
/** Counts gather in memory and are written this often (and on close), off the request path. */
const FLUSH_MS = 5000;

export interface Counted {
  requests: number;
  bytes: number;
}

export interface DemandRow {
  repository: string;
  platform: string;
  count: number;
}

/**
 * The status page's history in SQLite, per hour: requests refused as not mirrored (by repository
 * and platform) and traffic (lookups by kind and result, with bytes). Requests add to maps in
 * memory; a timer writes them in one transaction, so the hot path never waits on SQLite.
 */
export class History {
  private readonly demandPending = new Map<string, DemandRow & { hour: number }>();
  private readonly trafficPending = new Map<string, Counted & { hour: number; kind: string; result: string }>();
  /** Traffic since this process started, by `kind/result`. */
  readonly sinceStart = new Map<string, Counted>();
  private readonly stmts;
  private readonly timer: NodeJS.Timeout;
  private prunedAt = 0;

  constructor(
    private readonly db: Database.Database,
    private readonly onError: (e: Error) => void = () => {},
  ) {
    this.stmts = {
      addDemand: db.prepare(
        `INSERT INTO demand_hourly (hour, repo, platform, count) VALUES (?, ?, ?, ?)
         ON CONFLICT (hour, repo, platform) DO UPDATE SET count = count + excluded.count`,
      ),
      addTraffic: db.prepare(
        `INSERT INTO traffic_hourly (hour, kind, result, requests, bytes) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (hour, kind, result) DO UPDATE SET requests = requests + excluded.requests, bytes = bytes + excluded.bytes`,
      ),
      pruneDemand: db.prepare('DELETE FROM demand_hourly WHERE hour < ?'),
      pruneTraffic: db.prepare('DELETE FROM traffic_hourly WHERE hour < ?'),
      demandBy: db.prepare<[number], DemandRow>(
        `SELECT repo AS repository, platform, SUM(count) AS count FROM demand_hourly WHERE hour >= ?
         GROUP BY repo, platform ORDER BY count DESC, repo, platform`,
      ),
      demandHours: db.prepare<[number], { hour: number; count: number }>(
        'SELECT hour, SUM(count) AS count FROM demand_hourly WHERE hour >= ? GROUP BY hour ORDER BY hour',
      ),
      trafficSince: db.prepare<[number], Counted & { kind: string; result: string }>(
        'SELECT kind, result, SUM(requests) AS requests, SUM(bytes) AS bytes FROM traffic_hourly WHERE hour >= ? GROUP BY kind, result',
      ),
    };
    this.timer = setInterval(() => this.flushSafely(), FLUSH_MS);
    this.timer.unref();
  }

  refused(repository: string, platform: string, at: number): void {
    const hour = hourOf(at);
    const key = `${hour} ${repository} ${platform}`;
    const row = this.demandPending.get(key);
    if (row) row.count++;
    else this.demandPending.set(key, { hour, repository, platform, count: 1 });
  }

  traffic(kind: string, result: string, bytes: number, at: number): void {
    const hour = hourOf(at);
    const key = `${hour} ${kind} ${result}`;
    const row = this.trafficPending.get(key);
    if (row) {
      row.requests++;
      row.bytes += bytes;
    } else this.trafficPending.set(key, { hour, kind, result, requests: 1, bytes });
    const total = this.sinceStart.get(`${kind}/${result}`);
    if (total) {
      total.requests++;
      total.bytes += bytes;
    } else this.sinceStart.set(`${kind}/${result}`, { requests: 1, bytes });
  }

  /** Refusals since `since` (ms), by repository and platform, most first. */
  demand(since: number): DemandRow[] {
    this.flush();
    return this.stmts.demandBy.all(hourOf(since));
  }

  /** Refusals per hour since `since` (hours with none are absent). */
  demandPerHour(since: number): Array<{ hour: number; count: number }> {
    this.flush();
    return this.stmts.demandHours.all(hourOf(since));
  }

  /** Traffic since `since` (ms, whole hours), by `kind/result`. */
  trafficSince(since: number): Map<string, Counted> {
    this.flush();
    return new Map(this.stmts.trafficSince.all(hourOf(since)).map((r) => [`${r.kind}/${r.result}`, { requests: r.requests, bytes: r.bytes }]));
  }

  flush(now = Date.now()): void {
    const demand = [...this.demandPending.values()];
    const traffic = [...this.trafficPending.values()];
    this.demandPending.clear();
    this.trafficPending.clear();
    const prune = now - this.prunedAt > HOUR_MS;
    if (demand.length === 0 && traffic.length === 0 && !prune) return;
    this.db.transaction(() => {
      for (const d of demand) this.stmts.addDemand.run(d.hour, d.repository, d.platform, d.count);
      for (const t of traffic) this.stmts.addTraffic.run(t.hour, t.kind, t.result, t.requests, t.bytes);
      if (prune) {
        this.stmts.pruneDemand.run(hourOf(now - KEEP_MS));
        this.stmts.pruneTraffic.run(hourOf(now - KEEP_MS));
      }
    })();
    if (prune) this.prunedAt = now;
  }

  /** History is advisory: a full disk must not take the process down over it. */
  private flushSafely(): void {
    try {
      this.flush();
    } catch (e) {
      this.onError(e as Error);
    }
  }

  /** Writes what is pending; call before the database closes. */
  close(): void {
    clearInterval(this.timer);
    if (this.db.open) this.flushSafely();
  }
}

export function hourOf(ms: number): number {
  return Math.floor(ms / HOUR_MS);
}
