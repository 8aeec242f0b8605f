import { describe, expect, it } from 'vitest';
import { contentRange, parseRange } from '../../src/oci/range.js';

// RFC 9110 §14: `Range: bytes=first-last` is inclusive; `bytes=-n` is the last n bytes; a range
// whose first byte is at or past the end is unsatisfiable (416); a last byte past the end is
// clamped; a server may ignore a Range it does not understand and send the whole body.

describe('parseRange', () => {
  const size = 100;

  it('no header → none', () => {
    expect(parseRange(undefined, size)).toEqual({ kind: 'none' });
    expect(parseRange(null, size)).toEqual({ kind: 'none' });
    expect(parseRange('', size)).toEqual({ kind: 'none' });
  });

  it('bytes=0- → the whole body as a range', () => {
    expect(parseRange('bytes=0-', size)).toEqual({ kind: 'range', range: { start: 0, end: size - 1 } });
  });

  it('bytes=10-19 → bytes 10 to 19 inclusive', () => {
    expect(parseRange('bytes=10-19', size)).toEqual({ kind: 'range', range: { start: 10, end: 19 } });
  });

  it('bytes=N- → from N to the end (resuming a download)', () => {
    expect(parseRange('bytes=42-', size)).toEqual({ kind: 'range', range: { start: 42, end: 99 } });
    expect(parseRange('bytes=99-', size)).toEqual({ kind: 'range', range: { start: 99, end: 99 } });
  });

  it('a single byte', () => {
    expect(parseRange('bytes=5-5', size)).toEqual({ kind: 'range', range: { start: 5, end: 5 } });
  });

  it('suffix bytes=-5 → the last five bytes', () => {
    expect(parseRange('bytes=-5', size)).toEqual({ kind: 'range', range: { start: 95, end: 99 } });
  });

  it('a suffix longer than the body → the whole body', () => {
    expect(parseRange('bytes=-500', size)).toEqual({ kind: 'range', range: { start: 0, end: 99 } });
    expect(parseRange('bytes=-100', size)).toEqual({ kind: 'range', range: { start: 0, end: 99 } });
  });

  it('a zero-length suffix is unsatisfiable', () => {
    expect(parseRange('bytes=-0', size)).toEqual({ kind: 'unsatisfiable' });
  });

  it('start at or beyond the size → unsatisfiable', () => {
    expect(parseRange(`bytes=${size}-`, size)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange(`bytes=${size}-${size + 10}`, size)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=1000-2000', size)).toEqual({ kind: 'unsatisfiable' });
  });

  it('end beyond the size → clamped to the last byte', () => {
    expect(parseRange('bytes=10-1000', size)).toEqual({ kind: 'range', range: { start: 10, end: 99 } });
    expect(parseRange(`bytes=0-${size}`, size)).toEqual({ kind: 'range', range: { start: 0, end: 99 } });
  });

  it('end before start → ignored (an invalid range-spec)', () => {
    expect(parseRange('bytes=20-10', size)).toEqual({ kind: 'ignored' });
  });

  it.each([
    'bytes=',
    'bytes=-',
    'bytes',
    'bytes=a-b',
    'bytes=1-b',
    'bytes=0x10-',
    'bytes=1.5-2',
    'bytes=+1-2',
    'bytes=-1-2',
    'bytes=1--2',
    'items=0-10',
    'bits=0-10',
    '0-10',
    'bytes 0-10',
    'bytes=0-10;',
    'bytes=0-10 junk',
  ])('malformed %j → ignored', (header) => {
    expect(parseRange(header, size)).toEqual({ kind: 'ignored' });
  });

  it.each(['bytes=0-1,5-6', 'bytes=0-1, 5-6', 'bytes=-5,0-1', 'bytes=0-,0-'])('multi-range %j → ignored (whole body)', (header) => {
    expect(parseRange(header, size)).toEqual({ kind: 'ignored' });
  });

  it('tolerates white space around the header value', () => {
    expect(parseRange('  bytes=10-19  ', size)).toEqual({ kind: 'range', range: { start: 10, end: 19 } });
  });

  it('huge numbers do not crash or produce an unsafe range', () => {
    const big = 10 * 1024 ** 3; // a 10 GiB layer
    expect(parseRange(`bytes=${big - 1}-`, big)).toEqual({ kind: 'range', range: { start: big - 1, end: big - 1 } });
    expect(parseRange('bytes=9999999999999999-', big)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=0-9999999999999999', big)).toEqual({ kind: 'range', range: { start: 0, end: big - 1 } });
    expect(parseRange('bytes=-9999999999999999', big)).toEqual({ kind: 'range', range: { start: 0, end: big - 1 } });
    for (const header of ['bytes=99999999999999999999-', 'bytes=0-99999999999999999999', 'bytes=-99999999999999999999', `bytes=${'9'.repeat(10_000)}-`]) {
      const r = parseRange(header, big);
      // Too long to be a sane offset: never a range outside the blob.
      if (r.kind === 'range') {
        expect(Number.isSafeInteger(r.range.start) && Number.isSafeInteger(r.range.end)).toBe(true);
        expect(r.range.start).toBeGreaterThanOrEqual(0);
        expect(r.range.end).toBeLessThan(big);
      } else {
        expect(['ignored', 'unsatisfiable']).toContain(r.kind);
      }
    }
  });

  it('any range it returns lies within the body (property over small sizes)', () => {
    for (let n = 1; n <= 8; n++) {
      for (const header of ['bytes=0-', 'bytes=3-', 'bytes=-1', 'bytes=-3', 'bytes=-20', 'bytes=2-4', 'bytes=1-100', 'bytes=7-7']) {
        const r = parseRange(header, n);
        if (r.kind === 'range') {
          expect(r.range.start).toBeGreaterThanOrEqual(0);
          expect(r.range.end).toBeGreaterThanOrEqual(r.range.start);
          expect(r.range.end).toBeLessThanOrEqual(n - 1);
        }
      }
    }
  });

  it('on an empty body, an explicit first byte is unsatisfiable', () => {
    expect(parseRange('bytes=0-', 0)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=0-10', 0)).toEqual({ kind: 'unsatisfiable' });
  });

  // Regression (fixed): for size 0, a suffix range yields { start: 0, end: -1 }, i.e. `Content-Range: bytes 0--1/0`
  //. A zero-length blob (e.g. the empty layer) must not give an inverted range.
  it('on an empty body, a suffix range never yields an inverted range', () => {
    const r = parseRange('bytes=-5', 0);
    expect(r.kind).not.toBe('range');
  });
});

describe('contentRange', () => {
  it('formats `bytes start-end/size`', () => {
    expect(contentRange({ start: 0, end: 99 }, 100)).toBe('bytes 0-99/100');
    expect(contentRange({ start: 10, end: 19 }, 100)).toBe('bytes 10-19/100');
  });

  it('agrees with parseRange on the length of the part', () => {
    const r = parseRange('bytes=-5', 100);
    if (r.kind !== 'range') throw new Error('expected a range');
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(contentRange(r.range, 100));
    expect(m).not.toBeNull();
    expect(Number(m![2]) - Number(m![1]) + 1).toBe(5);
    expect(Number(m![3])).toBe(100);
  });

  it('handles sizes beyond 32 bits', () => {
    const size = 5 * 1024 ** 3;
    expect(contentRange({ start: size - 10, end: size - 1 }, size)).toBe(`bytes ${size - 10}-${size - 1}/${size}`);
  });
});
