/** A satisfiable byte range, inclusive at both ends, as in `Content-Range`. */
export interface ByteRange {
  start: number;
  end: number;
}

export type RangeParse =
  | { kind: 'none' }
  | { kind: 'range'; range: ByteRange }
  | { kind: 'unsatisfiable' }
  | { kind: 'ignored' };

/**
 * Parses a `Range` header against a blob of known size. One range only (what registry clients
 * send to resume); multi-range and malformed values are ignored (whole body), as RFC 9110 allows.
 */
export function parseRange(header: string | undefined | null, size: number): RangeParse {
  if (header === undefined || header === null || header === '') return { kind: 'none' };
  const m = /^bytes=(\d{0,16})-(\d{0,16})$/.exec(header.trim());
  if (!m) return { kind: 'ignored' };
  const [, first, last] = m as unknown as [string, string, string];
  if (first === '' && last === '') return { kind: 'ignored' };
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0) return { kind: 'unsatisfiable' };
    // An empty blob has no last bytes to point at: send it (empty) whole.
    if (size === 0) return { kind: 'ignored' };
    return { kind: 'range', range: { start: Math.max(0, size - suffix), end: size - 1 } };
  }
  const start = Number(first);
  if (start >= size) return { kind: 'unsatisfiable' };
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (end < start) return { kind: 'ignored' };
  return { kind: 'range', range: { start, end } };
}

export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`;
}
