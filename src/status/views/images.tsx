import type { ChildRow, ImageDetail, ImagePage, ImageRow } from '../coverage.js';
import { ago, formatBytes, formatTime, repositoryHref, shortDigest } from './format.js';
import { Layout } from './layout.js';

function Platforms({ image }: { image: ImageRow }) {
  return (
    <>
      {image.platforms.map((p) => <span class="tag present" title="mirrored">{p}</span>)}
      {image.notMirrored.map((p) => <span class="tag not-mirrored" title="not mirrored">{p}</span>)}
    </>
  );
}

function attached(image: ImageRow): string {
  const parts = [
    image.signatures ? `${image.signatures} signature${image.signatures > 1 ? 's' : ''}` : '',
    image.sboms ? `${image.sboms} SBOM${image.sboms > 1 ? 's' : ''}` : '',
    image.attestations ? `${image.attestations} attestation${image.attestations > 1 ? 's' : ''}` : '',
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : '–';
}

const VERDICT_CLASS: Record<string, string> = { verified: 'present', unsigned: 'not-mirrored', failed: 'not-mirrored' };

/** The signature policy's verdict on the image, where a policy judged it. */
function Signed({ image }: { image: ImageRow }) {
  return image.signature ? <span class={`tag ${VERDICT_CLASS[image.signature] ?? ''}`}>{image.signature}</span> : <span class="muted">–</span>;
}

function pageHref(filter: string, page: number): string {
  const q = new URLSearchParams();
  if (filter) q.set('q', filter);
  if (page > 1) q.set('page', String(page));
  const s = q.toString();
  return s ? `/ui/images?${s}` : '/ui/images';
}

/** `/ui/images`: every repository and tag, a page at a time, with a filter that works without script. */
export function ImagesPage({ page, now }: { page: ImagePage; now: number }) {
  return (
    <Layout title="Coverage" section="images">
      <h1>Coverage</h1>
      <form class="filter" method="get" action="/ui/images">
        <input type="search" name="q" value={page.filter} placeholder="filter by repository or tag" aria-label="filter by repository or tag" />
        <button type="submit">Filter</button>
      </form>
      <p class="muted" id="image-count">
        {page.filter ? `${page.total} images match “${page.filter}”` : `${page.total} images`}
      </p>
      <table id="images">
        <thead>
          <tr><th>Repository</th><th>Tag</th><th>Platforms (mirrored, not mirrored)</th><th>Signatures, SBOMs</th><th>Signature policy</th><th class="num">Size</th><th>Last pulled</th></tr>
        </thead>
        <tbody>
          {page.images.map((i) => (
            <tr>
              <td><a href={`${repositoryHref(i.repository)}#tag-${encodeURIComponent(i.tag)}`}>{i.repository}</a></td>
              <td>{i.tag}</td>
              <td><Platforms image={i} /></td>
              <td>{attached(i)}</td>
              <td><Signed image={i} /></td>
              <td class="num">{formatBytes(i.bytes)}</td>
              <td title={formatTime(i.lastPulled)}>{ago(i.lastPulled, now)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="pager">
        {page.page > 1 ? <a href={pageHref(page.filter, page.page - 1)} rel="prev">← previous</a> : null}
        <span class="muted">{`page ${page.page} of ${page.pages}`}</span>
        {page.page < page.pages ? <a href={pageHref(page.filter, page.page + 1)} rel="next">next →</a> : null}
      </div>
    </Layout>
  );
}

const STATE_CLASS: Record<ChildRow['state'], string> = { present: 'present', 'not mirrored': 'not-mirrored', 'not yet fetched': 'pending' };

function Entries({ entries }: { entries: ChildRow[] }) {
  if (entries.length === 0) return <p class="muted">A single-platform image: no index entries.</p>;
  return (
    <table class="children">
      <thead>
        <tr><th>Entry</th><th>Platform</th><th>State</th><th>Blobs held</th><th class="num">Manifest size</th></tr>
      </thead>
      <tbody>
        {entries.map((c) => (
          <tr>
            <td><code title={c.digest}>{shortDigest(c.digest)}</code></td>
            <td>{c.attestationFor ? `attestation of ${c.platform ?? shortDigest(c.attestationFor)}` : (c.platform ?? '–')}</td>
            <td><span class={`tag ${STATE_CLASS[c.state]}`}>{c.state}</span></td>
            <td>{c.blobs ? `${c.blobs.stored} of ${c.blobs.total}` : '–'}</td>
            <td class="num">{formatBytes(c.size)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** `/ui/images/{repository}`: each of its images, its index digest and the state of every entry. */
export function RepositoryPage({ repository, images, now }: { repository: string; images: ImageDetail[]; now: number }) {
  return (
    <Layout title={repository} section="images">
      <h1>{repository}</h1>
      {images.map((i) => (
        <section class="image" id={`tag-${i.tag}`}>
          <h2>{`${repository}:${i.tag}`}</h2>
          <table>
            <tbody>
              <tr><th>{i.kind === 'index' ? 'Index digest' : 'Manifest digest'}</th><td><code>{i.digest}</code></td></tr>
              <tr><th>Platforms</th><td><Platforms image={i} /></td></tr>
              <tr><th>Signatures, SBOMs, attestations</th><td>{attached(i)}</td></tr>
              <tr><th>Signature policy</th><td><Signed image={i} /></td></tr>
              <tr><th>Size held</th><td>{formatBytes(i.bytes)}</td></tr>
              <tr><th>Last pulled</th><td>{`${ago(i.lastPulled, now)} (${formatTime(i.lastPulled)})`}</td></tr>
            </tbody>
          </table>
          <Entries entries={i.children} />
        </section>
      ))}
    </Layout>
  );
}
