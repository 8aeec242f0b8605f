// The status page's bookkeeping on its own: hourly demand and traffic in SQLite (aggregated,
// pruned after 30 days, read back after a reopen), the ring of recent pulls, upstream health.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Catalogue } from '../../src/store/catalogue.js';
import { RecentPulls } from '../../src/status/activity.js';
import { History, HOUR_MS } from '../../src/status/history.js';
import { parseRateLimit, UpstreamHealth } from '../../src/status/upstreams.js';

const DAY = 24 * HOUR_MS;
const dirs: string[] = [];
afterAll(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

describe('status history', () => {
  it('aggregates refusals per hour, prunes those over 30 days old, and reads them back after a reopen', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'status-history-'));
    dirs.push(dir);
    const now = Date.now();
    let catalogue = new Catalogue(join(dir, 'mirror.db'));
    let history = new History(catalogue.db);
    history.refused('docker.io/library/alpine', 'linux/s390x', now);
    history.refused('docker.io/library/alpine', 'linux/s390x', now);
    history.refused('docker.io/library/redis', 'linux/386', now - 2 * DAY);
    history.refused('docker.io/library/redis', 'linux/386', now - 31 * DAY);
    history.traffic('blob', 'hit', 100, now);
    history.traffic('blob', 'miss', 50, now - 2 * DAY);
    history.close();
    catalogue.close();

    catalogue = new Catalogue(join(dir, 'mirror.db'));
    history = new History(catalogue.db);
    expect(history.demand(now - DAY + HOUR_MS)).toEqual([{ repository: 'docker.io/library/alpine', platform: 'linux/s390x', count: 2 }]);
    expect(history.demand(now - 40 * DAY)).toEqual([
      { repository: 'docker.io/library/alpine', platform: 'linux/s390x', count: 2 },
      { repository: 'docker.io/library/redis', platform: 'linux/386', count: 1 },
    ]);
    expect(history.demandPerHour(now - 7 * DAY).map((h) => h.count)).toEqual([1, 2]);
    expect(Object.fromEntries(history.trafficSince(now - DAY + HOUR_MS))).toEqual({ 'blob/hit': { requests: 1, bytes: 100 } });
    expect(history.sinceStart.size).toBe(0); // since this process started: nothing yet
    history.close();
    catalogue.close();
  });

  it('keeps the last pulls in a bounded ring, newest first', () => {
    const ring = new RecentPulls(3);
    for (let i = 1; i <= 5; i++) ring.add({ at: i, repository: 'r', reference: `t${i}`, result: 'hit' });
    expect(ring.list().map((p) => p.reference)).toEqual(['t5', 't4', 't3']);
    expect(ring.list(2).map((p) => p.reference)).toEqual(['t5', 't4']);
  });

  it("notes an upstream's last success, last failure (not a 404) and Docker Hub's ratelimit-remaining", () => {
    expect(parseRateLimit('76;w=21600')).toEqual({ remaining: 76, windowSeconds: 21600 });
    expect(parseRateLimit('12')).toEqual({ remaining: 12 });
    expect(parseRateLimit('soon')).toBeUndefined();
    const health = new UpstreamHealth(['docker.io']);
    health.answered('docker.io', { status: 200, rateLimitRemaining: '99;w=21600' }, 1000);
    health.failed('docker.io', 'not_found', 'manifest x: not found upstream', 2000);
    health.failed('docker.io', 'unavailable', 'registry-1.docker.io is unreachable: ECONNREFUSED', 3000);
    expect(health.list()).toEqual([
      {
        name: 'docker.io',
        lastSuccess: 1000,
        lastFailure: { at: 3000, failure: 'unavailable', reason: 'registry-1.docker.io is unreachable: ECONNREFUSED' },
        rateLimit: { remaining: 99, windowSeconds: 21600, at: 1000 },
      },
    ]);
  });
});
