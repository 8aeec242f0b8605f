import type { Pull } from '../activity.js';
import { ago, formatTime, repositoryHref, shortDigest } from './format.js';
import { Layout } from './layout.js';

export function ActivityTable({ pulls, now }: { pulls: Pull[]; now: number }) {
  if (pulls.length === 0) return <p class="muted">No pulls since the mirror started.</p>;
  return (
    <table class="activity">
      <thead>
        <tr><th>Time</th><th>Repository</th><th>Reference</th><th>Platform</th><th>Result</th><th>User</th></tr>
      </thead>
      <tbody>
        {pulls.map((p) => (
          <tr>
            <td title={formatTime(p.at)}>{ago(p.at, now)}</td>
            <td><a href={repositoryHref(p.repository)}>{p.repository}</a></td>
            <td><code title={p.reference}>{p.reference.includes(':') ? shortDigest(p.reference) : p.reference}</code></td>
            <td>{p.platform ?? '–'}</td>
            <td class={p.result === 'hit' || p.result === 'stale' ? 'ok' : p.result === 'miss' ? undefined : 'bad'}>{p.result}</td>
            <td>{p.user ?? '–'}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** `/ui/activity`: the last pulls (manifest requests), newest first, kept in memory since start. */
export function ActivityPage({ pulls, now }: { pulls: Pull[]; now: number }) {
  return (
    <Layout title="Recent activity" section="activity">
      <h1>Recent activity</h1>
      <ActivityTable pulls={pulls} now={now} />
    </Layout>
  );
}
