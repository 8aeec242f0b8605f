import { describe, expect, it } from 'vitest';
import { FlushGate } from '../../src/store/flush-gate.js';

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** Milliseconds until `p` settles. */
async function timeOf(p: Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await p;
  return performance.now() - t0;
}

describe('FlushGate', () => {
  it('lets a flush run at once when quietMs is 0', async () => {
    const gate = new FlushGate(0, 5_000);
    gate.wrote();
    expect(await timeOf(gate.wait())).toBeLessThan(20);
    expect(gate.pending).toBe(0);
  });

  it('holds flushes while writes go on, and releases them all once writes pause for quietMs', async () => {
    const gate = new FlushGate(60, 5_000);
    let released = 0;
    const waits = [gate.wait(), gate.wait()].map((p) => p.then(() => released++));
    for (let i = 0; i < 8; i++) {
      gate.wrote();
      await sleep(20);
    }
    expect(released).toBe(0); // 160 ms of writes every 20 ms: never quiet for 60
    expect(gate.pending).toBe(2);
    const t = await timeOf(Promise.all(waits));
    expect(released).toBe(2);
    expect(t).toBeGreaterThanOrEqual(35); // 60 ms after the last write, 20 of them already gone
    expect(t).toBeLessThan(1_000);
    expect(gate.pending).toBe(0);
  });

  it('holds flushes while a blob is being sent, however long since the last write, then waits quietMs', async () => {
    const gate = new FlushGate(40, 5_000);
    const unhold = gate.hold(); // a client reading a blob
    let released = false;
    const waiting = gate.wait().then(() => (released = true));
    await sleep(150); // no writes at all, but the send goes on
    expect(released).toBe(false);
    unhold();
    unhold(); // a second call does nothing (the count stays right)
    const t = await timeOf(waiting);
    expect(t).toBeGreaterThanOrEqual(35);
    expect(t).toBeLessThan(1_000);
    expect(await timeOf(gate.wait())).toBeLessThan(100); // nothing held: quiet since the send ended
  });

  it('releases a flush after maxDelayMs even while writes never pause', async () => {
    const gate = new FlushGate(50, 120);
    gate.wrote();
    const writing = setInterval(() => gate.wrote(), 10);
    try {
      const t = await timeOf(gate.wait());
      expect(t).toBeGreaterThanOrEqual(110);
      expect(t).toBeLessThan(1_000);
    } finally {
      clearInterval(writing);
    }
  });

  it('openNow releases waiting flushes and lets later ones through at once (shutdown)', async () => {
    const gate = new FlushGate(10_000, 60_000);
    gate.wrote();
    const waiting = gate.wait();
    await sleep(10);
    expect(gate.pending).toBe(1);
    gate.openNow();
    expect(await timeOf(waiting)).toBeLessThan(20);
    expect(await timeOf(gate.wait())).toBeLessThan(20);
  });
});
