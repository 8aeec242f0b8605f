import type { Demand, HitRatio, Overview, Replicas } from '../status.js';
import { ActivityTable } from './activity.js';
import { PlatformDemand } from './demand.js';
import { ago, formatBytes, formatTime, percent } from './format.js';
import { Layout } from './layout.js';

function Card(props: { label: string; value: string; sub?: string; id?: string }) {
  return (
    <div class="card" id={props.id}>
      <div class="label">{props.label}</div>
      <div class="value">{props.value}</div>
      {props.sub ? <div class="sub">{props.sub}</div> : null}
    </div>
  );
}

function ratioLine(r: HitRatio): string {
  return `${percent(r.ratio)} (${r.hits} hits, ${r.misses} misses)`;
}

/** The shared bucket and, in a cluster, every replica and whether it answers. */
function ReplicasSection({ r }: { r: Replicas }) {
  return (
    <>
      <h2>Replicas</h2>
      <p id="bucket">
        {`Shared bucket ${r.bucket.name}${r.bucket.prefix ? ` (prefix ${r.bucket.prefix})` : ''} at ${r.bucket.endpoint}: `}
        <span class={r.bucket.pendingUploads ? 'warn' : 'ok'}>{`${r.bucket.pendingUploads} object${r.bucket.pendingUploads === 1 ? '' : 's'} waiting to be uploaded`}</span>
      </p>
      {r.members.length ? (
        <table id="replicas">
          <thead>
            <tr><th>Replica</th><th>State</th></tr>
          </thead>
          <tbody>
            {r.members.map((m) => (
              <tr>
                <td>{m.self ? `${m.url} (this one)` : m.url}</td>
                <td><span class={`tag ${m.alive ? 'present' : 'not-mirrored'}`}>{m.alive ? 'answering' : 'not answering'}</span></td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </>
  );
}

/** `/`: the store, the cache, what was saved, the upstreams, then a glance at demand and the last pulls. */
export function OverviewPage({ o, demand }: { o: Overview; demand: Demand }) {
  const max = o.store.maxBytes;
  const fill = max ? Math.min(100, (o.store.bytes / max) * 100) : undefined;
  const saved = (t: { served: number; fetched: number }) => `${formatBytes(t.served)} served · ${formatBytes(t.fetched)} fetched`;
  return (
    <Layout title="Overview" section="overview">
      <h1>Overview</h1>
      <div class="cards" title={`store counted at ${formatTime(o.countedAt)}`}>
        <div class="card" id="store">
          <div class="label">Store</div>
          <div class="value">{formatBytes(o.store.bytes)}</div>
          {fill !== undefined ? (
            <>
              <div class="bar" role="meter" aria-valuenow={o.store.bytes} aria-valuemin={0} aria-valuemax={max} aria-label="store bytes against storage.maxBytes">
                <span style={`width: ${fill.toFixed(1)}%`} />
              </div>
              <div class="sub">{`of ${formatBytes(max!)} (storage.maxBytes), ${fill.toFixed(1)} %`}</div>
            </>
          ) : (
            <div class="sub">no storage.maxBytes: no limit</div>
          )}
        </div>
        <Card id="images" label="Images (tags)" value={String(o.counts.images)} sub={`in ${o.counts.repositories} repositories`} />
        <Card id="manifests" label="Manifests" value={String(o.counts.manifests)} />
        <Card id="blobs" label="Blobs" value={String(o.counts.blobs)} />
        <Card id="refused" label="Refused, last 24 h" value={String(demand.last24h.total)} sub={`${demand.last7d.total} over 7 days`} />
      </div>

      <h2>Cache</h2>
      <table id="cache">
        <thead>
          <tr><th></th><th>Manifest hit ratio</th><th>Blob hit ratio</th><th>Bytes served against fetched upstream</th></tr>
        </thead>
        <tbody>
          <tr>
            <th>{`Since start (${formatTime(o.startedAt)})`}</th>
            <td>{ratioLine(o.cache.sinceStart.manifest)}</td>
            <td>{ratioLine(o.cache.sinceStart.blob)}</td>
            <td>{saved(o.transfer.sinceStart)}</td>
          </tr>
          <tr>
            <th>Last 24 h</th>
            <td>{ratioLine(o.cache.last24h.manifest)}</td>
            <td>{ratioLine(o.cache.last24h.blob)}</td>
            <td>{saved(o.transfer.last24h)}</td>
          </tr>
        </tbody>
      </table>

      <h2>Upstreams</h2>
      <table id="upstreams">
        <thead>
          <tr><th>Upstream</th><th>Last success</th><th>Last failure</th><th class="num">Rate limit remaining</th></tr>
        </thead>
        <tbody>
          {o.upstreams.map((u) => (
            <tr>
              <td>{u.name}</td>
              <td class={u.lastSuccess ? 'ok' : 'muted'} title={formatTime(u.lastSuccess)}>{ago(u.lastSuccess, o.generatedAt)}</td>
              <td>
                {u.lastFailure ? (
                  <span class="bad" title={formatTime(u.lastFailure.at)}>{`${ago(u.lastFailure.at, o.generatedAt)}: ${u.lastFailure.failure}, ${u.lastFailure.reason}`}</span>
                ) : (
                  <span class="muted">none</span>
                )}
              </td>
              <td class="num">{u.rateLimit ? `${u.rateLimit.remaining}${u.rateLimit.windowSeconds ? ` per ${u.rateLimit.windowSeconds / 3600} h` : ''}` : '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>

      {o.replicas ? <ReplicasSection r={o.replicas} /> : null}

      <h2>Refused platforms, last 24 h</h2>
      <PlatformDemand rows={demand.last24h.byPlatform} />
      <p><a href="/ui/demand">By repository, and over 7 days</a></p>

      <h2>Recent activity</h2>
      <ActivityTable pulls={o.recent.slice(0, 10)} now={o.generatedAt} />
      <p><a href="/ui/activity">All recent pulls</a></p>
    </Layout>
  );
}
