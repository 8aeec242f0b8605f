export { formatBytes } from '../../format-bytes.js';

/** `2026-12-03 07:55:01 UTC`: absolute, unambiguous, the same for every reader. */
export function formatTime(ms: number | undefined): string {
  if (!ms) return '–';
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** `3 min ago`, for a glance. */
export function ago(ms: number | undefined, now: number): string {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} d ago`;
}

export function percent(ratio: number | null): string {
  return ratio === null ? '–' : `${(ratio * 100).toFixed(1)} %`;
}

/** `sha256:0123456789ab…`: enough to tell digests apart in a table. */
export function shortDigest(digest: string): string {
  return digest.length > 19 ? `${digest.slice(0, 19)}…` : digest;
}

/** The page of one repository; each path segment encoded, whatever the name holds. */
export function repositoryHref(repo: string): string {
  return `/ui/images/${repo.split('/').map((s) => encodeURIComponent(s).replace(/%3A/g, ':')).join('/')}`;
}
