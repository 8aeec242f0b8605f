import { HOUR_MS } from '../history.js';
import type { Demand, DemandWindow } from '../status.js';
import { repositoryHref } from './format.js';
import { Layout } from './layout.js';

/** Refusals per platform with a bar each: the evidence for adding a platform. */
export function PlatformDemand({ rows }: { rows: DemandWindow['byPlatform'] }) {
  if (rows.length === 0) return <p class="muted">No request was refused for a platform this mirror does not carry.</p>;
  const max = Math.max(...rows.map((r) => r.count));
  return (
    <table class="demand-platforms">
      <thead>
        <tr><th>Platform</th><th class="num">Refused</th><th style="width: 50%"></th></tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr>
            <td>{r.platform}</td>
            <td class="num">{String(r.count)}</td>
            <td><div class="bar"><span style={`width: ${((r.count / max) * 100).toFixed(1)}%; background: var(--bad)`} /></div></td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Refusals per hour as columns, in inline SVG (no script, no library). */
function HourlyChart({ hours }: { hours: Demand['perHour'] }) {
  const width = 840;
  const height = 120;
  const top = 8;
  const bottom = 18;
  const max = Math.max(1, ...hours.map((h) => h.count));
  const step = width / hours.length;
  const days = hours.filter((h) => new Date(h.hour).getUTCHours() === 0);
  return (
    <svg viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img" aria-label={`refused requests per hour over the last 7 days (most in one hour: ${max})`}>
      <line class="axis" x1={0} y1={height - bottom} x2={width} y2={height - bottom} />
      {hours.map((h, i) => {
        if (h.count === 0) return null;
        const barHeight = ((height - top - bottom) * h.count) / max;
        return (
          <rect class="col" x={(i * step).toFixed(1)} y={(height - bottom - barHeight).toFixed(1)} width={Math.max(1, step - 1).toFixed(1)} height={barHeight.toFixed(1)}>
            <title>{`${new Date(h.hour).toISOString().slice(0, 13).replace('T', ' ')}:00 UTC: ${h.count}`}</title>
          </rect>
        );
      })}
      {days.map((d) => {
        const x = ((d.hour - hours[0]!.hour) / HOUR_MS) * step;
        return <text x={x.toFixed(1)} y={height - 4}>{new Date(d.hour).toISOString().slice(5, 10)}</text>;
      })}
      <text x={width - 2} y={top + 2} text-anchor="end">{`max ${max}/h`}</text>
    </svg>
  );
}

function RepositoryDemand({ rows }: { rows: DemandWindow['byRepository'] }) {
  if (rows.length === 0) return <p class="muted">None.</p>;
  return (
    <table class="demand-repositories">
      <thead>
        <tr><th>Repository</th><th>Platform</th><th class="num">Refused</th></tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr>
            <td><a href={repositoryHref(r.repository)}>{r.repository}</a></td>
            <td>{r.platform}</td>
            <td class="num">{String(r.count)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** `/ui/demand`: requests refused as not mirrored, by platform and repository, 24 h and 7 days. */
export function DemandPage({ demand }: { demand: Demand }) {
  return (
    <Layout title="Demand" section="demand">
      <h1>Demand for platforms not mirrored</h1>
      <p class="muted">Requests this mirror refused with its not-mirrored error, kept per hour for 30 days.</p>
      <h2>Per hour, last 7 days</h2>
      <HourlyChart hours={demand.perHour} />
      <section id="demand-24h">
        <h2>{`Last 24 h: ${demand.last24h.total} refused`}</h2>
        <PlatformDemand rows={demand.last24h.byPlatform} />
        <RepositoryDemand rows={demand.last24h.byRepository} />
      </section>
      <section id="demand-7d">
        <h2>{`Last 7 days: ${demand.last7d.total} refused`}</h2>
        <PlatformDemand rows={demand.last7d.byPlatform} />
        <RepositoryDemand rows={demand.last7d.byRepository} />
      </section>
    </Layout>
  );
}
