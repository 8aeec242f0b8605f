import { setFlagsFromString } from 'node:v8';

/**
 * Turns off V8's incremental marking for this process, unless node was started with
 * `--incremental-marking` (which keeps it on).
 *
 * Why: a blob passing through the mirror is a stream of 64 KiB socket buffers. With the small
 * heap this server has (15-20 MB), that traffic keeps the young generation at its largest, and
 * V8 starts incremental marking whenever the old generation has less headroom than the young
 * generation's capacity: 5-9 full mark-compacts per 120 MiB cold pull, their concurrent marking
 * and sweeping threads taking CPU from the clients and upstream on the same cores. Without
 * incremental marking, a full collection runs only when the old generation reaches V8's
 * allocation limit (none in such a pull), in one pause: with ~15 MB live, after a minute of
 * 64-connection manifest traffic it ran at 79-148 MB of heap and paused 11-16 ms. On the
 * benchmark machine the mirror's CPU time per cold 120 MiB pull fell from 630-870 ms to ~410 ms.
 *
 * V8 reads the flag each time it would start marking, so setting it at run time is safe: a
 * marking cycle already under way (loading the modules can start one) just finishes.
 */
export function tuneGarbageCollection(execArgv: readonly string[] = process.execArgv): void {
  if (execArgv.some((a) => /^--(no-)?incremental[-_]marking$/.test(a))) return;
  setFlagsFromString('--no-incremental-marking');
}
