import type { Child } from 'hono/jsx';

const STYLE = `
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #59636e; --line: #d1d9e0; --bg: #fff; --card: #f6f8fa; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --bg: #0d1117; --card: #151b23; --ok: #3fb950; --bad: #f85149; --warn: #d29922; --accent: #4493f8; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1.5rem; align-items: baseline; padding: .8rem 1.5rem; border-bottom: 1px solid var(--line); }
header strong { font-size: 1.05rem; }
nav a { margin-right: 1rem; color: var(--muted); text-decoration: none; }
nav a[aria-current] { color: var(--fg); font-weight: 600; border-bottom: 2px solid var(--accent); }
main { padding: 1rem 1.5rem 2rem; max-width: 1200px; }
h1 { font-size: 1.3rem; margin: .2rem 0 1rem; } h2 { font-size: 1.05rem; margin: 1.6rem 0 .6rem; }
a { color: var(--accent); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .8rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .7rem .9rem; }
.card .label { color: var(--muted); font-size: .8rem; } .card .value { font-size: 1.35rem; font-weight: 600; }
.card .sub { color: var(--muted); font-size: .8rem; }
.bar { height: 10px; background: var(--line); border-radius: 5px; overflow: hidden; margin: .4rem 0; }
.bar > span { display: block; height: 100%; background: var(--accent); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 500; font-size: .8rem; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, monospace; }
.tag { display: inline-block; padding: 0 .45rem; margin: 0 .25rem .2rem 0; border-radius: 9px; font-size: .8rem; border: 1px solid var(--line); }
.tag.present { color: var(--ok); border-color: var(--ok); }
.tag.not-mirrored { color: var(--bad); border-color: var(--bad); }
.tag.pending { color: var(--warn); border-color: var(--warn); }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); } .muted { color: var(--muted); }
form.filter { margin: 0 0 .8rem; display: flex; gap: .5rem; }
form.filter input { flex: 1; max-width: 420px; padding: .35rem .5rem; font: inherit; color: inherit; background: var(--bg); border: 1px solid var(--line); border-radius: 5px; }
button { font: inherit; padding: .35rem .8rem; border: 1px solid var(--line); border-radius: 5px; background: var(--card); color: inherit; }
.pager { margin-top: .8rem; display: flex; gap: 1rem; align-items: baseline; }
svg { max-width: 100%; } svg .col { fill: var(--bad); } svg .axis { stroke: var(--line); } svg text { fill: var(--muted); font-size: 10px; }
`;

export type Section = 'overview' | 'images' | 'demand' | 'activity';

const NAV: Array<[Section, string, string]> = [
  ['overview', '/', 'Overview'],
  ['images', '/ui/images', 'Coverage'],
  ['demand', '/ui/demand', 'Demand'],
  ['activity', '/ui/activity', 'Recent activity'],
];

/** The frame of every page: no script, no external resource, styles inline. */
export function Layout(props: { title: string; section: Section; children?: Child }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{`${props.title} · sparse-mirror`}</title>
        <link rel="icon" href="data:," />
        <style dangerouslySetInnerHTML={{ __html: STYLE }} />
      </head>
      <body>
        <header>
          <strong>sparse-mirror</strong>
          <nav>
            {NAV.map(([id, href, label]) => (
              <a href={href} aria-current={id === props.section ? 'page' : undefined}>
                {label}
              </a>
            ))}
          </nav>
        </header>
        <main>{props.children}</main>
      </body>
    </html>
  );
}
