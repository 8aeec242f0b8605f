import { setFlagsFromString } from 'node:v8';

/**
 * V8's incremental marking, switched off while blob bytes stream through the process and back on
 * when they stop, unless node was started with `--incremental-marking` or
 * `--no-incremental-marking` (which then hold for the whole run).
 *
 * Why off while streaming: a blob passing through the mirror is a stream of 64 KiB socket
 * buffers. With the small heap this server has (15-20 MB), that traffic keeps the young
 * generation at its largest, and V8 starts incremental marking whenever the old generation has
 * less headroom than the young generation's capacity: 5-9 full mark-compacts per 120 MiB cold
 * pull, their concurrent marking and sweeping threads taking CPU from the clients and upstream on
 * the same cores. Without incremental marking, a full collection runs only when the old
 * generation reaches V8's allocation limit (none in such a pull), in one pause. On the benchmark
 * machine the mirror's CPU time per cold 120 MiB pull fell from 630-870 ms to ~410 ms.
 *
 * Why on otherwise: without it, a minute of 64-connection manifest traffic (objects that live
 * for one request, many promoted while 64 are in flight) let the old generation grow to its
 * limit before each full collection: 280 MB peak RSS against 139 MB with marking on (on a slower
 * machine, 2026-12-02: 204 MiB off for good, 148-150 MiB with this switch, at the same request rate).
 *
 * V8 reads the flag each time it would start marking, so switching it at run time is safe: a
 * marking cycle already under way just finishes.
 */
export class MarkingSwitch {
  private readonly fixed: boolean;
  private off = false;
  private streams = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    execArgv: readonly string[] = process.execArgv,
    /** How long streaming must have stopped before marking comes back (a pull has gaps between blobs). */
    private readonly idleMs = 2000,
  ) {
    this.fixed = execArgv.some((a) => /^--(no-)?incremental[-_]marking$/.test(a));
  }

  /** Marking off (a CLI command that streams blobs from start to end). */
  alwaysOff(): void {
    this.set(true);
  }

  /** Marking off only while a blob streams (`serve`): on now, unless one already does. */
  streamsOnly(): void {
    if (this.streams === 0) this.set(false);
  }

  /** A blob stream started. */
  streamStarted(): void {
    this.streams++;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.set(true);
  }

  /** A blob stream ended; marking comes back once none has run for `idleMs`. */
  streamEnded(): void {
    this.streams = Math.max(0, this.streams - 1);
    if (this.streams > 0 || this.idleTimer) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.streams === 0) this.set(false);
    }, this.idleMs);
    this.idleTimer.unref();
  }

  /** Whether this switch has turned marking off (for tests and logs). */
  get markingOff(): boolean {
    return this.off;
  }

  private set(off: boolean): void {
    if (this.fixed || off === this.off) return;
    setFlagsFromString(off ? '--no-incremental-marking' : '--incremental-marking');
    this.off = off;
  }
}

/** The process's switch: cli.ts turns marking off at start-up; `serve` hands it to the blob service. */
export const incrementalMarking = new MarkingSwitch();
