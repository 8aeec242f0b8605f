// The switch that keeps V8's incremental marking off only while blobs stream (src/gc-tuning.ts).
import { describe, expect, it } from 'vitest';
import { MarkingSwitch } from '../../src/gc-tuning.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('MarkingSwitch', () => {
  it('turns marking off while any stream runs and back on once none has run for the idle time', async () => {
    const s = new MarkingSwitch([], 30);
    s.streamsOnly();
    expect(s.markingOff).toBe(false);
    s.streamStarted();
    s.streamStarted();
    expect(s.markingOff).toBe(true);
    s.streamEnded();
    await sleep(60);
    expect(s.markingOff).toBe(true); // one still runs
    s.streamEnded();
    expect(s.markingOff).toBe(true); // a pull has gaps between its blobs
    await sleep(10);
    s.streamStarted(); // the next blob of the pull, within the idle time
    await sleep(60);
    expect(s.markingOff).toBe(true);
    s.streamEnded();
    await sleep(60);
    expect(s.markingOff).toBe(false);
  });

  it('keeps marking off for a command that streams throughout', async () => {
    const s = new MarkingSwitch([], 10);
    s.alwaysOff();
    await sleep(30);
    expect(s.markingOff).toBe(true);
  });

  it('leaves the flag alone when node was started with either marking flag', () => {
    for (const flag of ['--incremental-marking', '--no-incremental-marking']) {
      const s = new MarkingSwitch([flag], 10);
      s.streamStarted();
      expect(s.markingOff).toBe(false);
    }
  });
});
