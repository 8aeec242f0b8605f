/**
 * When a fetched blob's flush to disk may run: once blobs have been neither written nor sent to a
 * client for `quietMs`, or `maxDelayMs` after the flush first asked, whichever comes first.
 *
 * Why: every fdatasync writes the file out and then flushes the disk's write cache, and the other
 * writers to that disk (the client's own files among them) wait behind both; on ext4 with a journal
 * (data=ordered) it also commits the journal, which first writes out every file's dirty data. A
 * cold pull of a dozen blobs then forces a dozen synchronous write-outs while the client is still
 * pulling, and the client waits for the disk and the CPU they take (bench/RESULTS.md, 2026-12-04
 * and 2026-12-05). The client never waited for the flush itself (it is served from the temp file
 * once the bytes verify), so flushing after the burst costs it nothing, and the first flush then
 * writes everything at once. Sends count as well as writes: the mirror's downloads end before the
 * client has read their tail, and a flush then stalls the client's own writes to the same disk
 * (A/B, bench/RESULTS.md 2026-12-04).
 * Durability is unchanged in kind: a blob is renamed into place and recorded only once flushed; a
 * crash before that loses only the unrecorded copy, which is fetched again when next asked for.
 */
export class FlushGate {
  private lastWrite = 0;
  private busy = 0;
  private readonly waiting = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private open = false;

  constructor(
    readonly quietMs: number,
    readonly maxDelayMs: number,
  ) {}

  /** Blob bytes moved just now (a hold's end marks it too): flushes wait quietMs from here. */
  wrote(): void {
    this.lastWrite = performance.now();
  }

  /** A blob is being written or sent until the returned function is called (once; later calls do nothing). */
  hold(): () => void {
    this.busy++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.busy--;
      this.wrote();
    };
  }

  /** Resolves when a flush may run (at once with `quietMs` 0, or after `openNow`). */
  async wait(): Promise<void> {
    if (this.open || this.quietMs <= 0) return;
    await new Promise<void>((resolve) => {
      let done = false;
      const release = () => {
        if (done) return;
        done = true;
        clearTimeout(deadline);
        this.waiting.delete(release);
        resolve();
      };
      const deadline = setTimeout(release, this.maxDelayMs);
      this.waiting.add(release);
      this.schedule();
    });
  }

  /** Releases every waiting flush, now and from now on (shutdown: nothing is put off any more). */
  openNow(): void {
    this.open = true;
    clearTimeout(this.timer);
    for (const release of [...this.waiting]) release();
  }

  /** How many flushes wait for quiet now. */
  get pending(): number {
    return this.waiting.size;
  }

  private schedule(): void {
    if (this.timer || this.waiting.size === 0) return;
    const quietFor = performance.now() - this.lastWrite;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.busy === 0 && performance.now() - this.lastWrite >= this.quietMs) {
        for (const release of [...this.waiting]) release();
      } else {
        this.schedule();
      }
    }, this.busy > 0 ? this.quietMs : Math.max(1, Math.ceil(this.quietMs - quietFor)));
    this.timer.unref();
  }
}
