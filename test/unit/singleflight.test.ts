import { describe, expect, it, vi } from 'vitest';
import { SingleFlight } from '../../src/mirror/singleflight.js';

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('SingleFlight', () => {
  it('runs fn once for concurrent calls with the same key; all get its result', async () => {
    const sf = new SingleFlight<string>();
    const gate = deferred<string>();
    const fn = vi.fn(() => gate.promise);
    const calls = Array.from({ length: 25 }, () => sf.run('blob', fn));
    expect(fn).toHaveBeenCalledTimes(1);
    expect(sf.size).toBe(1);
    gate.resolve('bytes');
    expect(await Promise.all(calls)).toEqual(Array(25).fill('bytes'));
    expect(fn).toHaveBeenCalledTimes(1);
  });

  it('later callers do not run their own fn while one is in flight', async () => {
    const sf = new SingleFlight<number>();
    const gate = deferred<number>();
    const first = vi.fn(() => gate.promise);
    const second = vi.fn(async () => 2);
    const a = sf.run('k', first);
    const b = sf.run('k', second);
    gate.resolve(1);
    expect(await a).toBe(1);
    expect(await b).toBe(1);
    expect(second).not.toHaveBeenCalled();
  });

  it('different keys run independently', async () => {
    const sf = new SingleFlight<string>();
    const ga = deferred<string>();
    const gb = deferred<string>();
    const a = sf.run('a', () => ga.promise);
    const b = sf.run('b', () => gb.promise);
    expect(sf.size).toBe(2);
    gb.resolve('B');
    expect(await b).toBe('B');
    expect(sf.size).toBe(1);
    ga.resolve('A');
    expect(await a).toBe('A');
    expect(sf.size).toBe(0);
  });

  it('shares a rejection with every waiter', async () => {
    const sf = new SingleFlight<string>();
    const gate = deferred<string>();
    const calls = [sf.run('k', () => gate.promise), sf.run('k', () => gate.promise), sf.run('k', () => gate.promise)];
    const boom = new Error('upstream failed');
    gate.reject(boom);
    const results = await Promise.allSettled(calls);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      if (r.status === 'rejected') expect(r.reason).toBe(boom);
    }
  });

  it('forgets the key once settled: the next call runs again (success)', async () => {
    const sf = new SingleFlight<number>();
    let n = 0;
    const fn = vi.fn(async () => ++n);
    expect(await sf.run('k', fn)).toBe(1);
    expect(sf.size).toBe(0);
    expect(await sf.run('k', fn)).toBe(2);
    expect(fn).toHaveBeenCalledTimes(2);
  });

  it('forgets the key once settled: the next call runs again (failure is not cached)', async () => {
    const sf = new SingleFlight<string>();
    await expect(sf.run('k', async () => Promise.reject(new Error('first')))).rejects.toThrow('first');
    expect(sf.size).toBe(0);
    expect(await sf.run('k', async () => 'second')).toBe('second');
  });

  it('by the time a caller sees the result, a new call starts a fresh flight', async () => {
    const sf = new SingleFlight<string>();
    const fn = vi.fn(async () => 'v');
    await sf.run('k', fn);
    const g = deferred<string>();
    const again = sf.run('k', () => g.promise);
    expect(sf.size).toBe(1);
    g.resolve('fresh');
    expect(await again).toBe('fresh');
  });

  it('a call made while the flight is being joined still gets that flight', async () => {
    const sf = new SingleFlight<string>();
    const gate = deferred<string>();
    const fn = vi.fn(() => gate.promise);
    const a = sf.run('k', fn);
    await Promise.resolve();
    const b = sf.run('k', fn);
    gate.resolve('x');
    expect(await Promise.all([a, b])).toEqual(['x', 'x']);
    expect(fn).toHaveBeenCalledTimes(1);
  });
});
