/**
 * A response body read straight off its socket into one buffer that every read reuses: no buffer
 * is allocated per read and no stream sits between the socket and the reader. Each piece is lent
 * to the sink for the length of the call, or, when the sink returns false, until it calls
 * resume(); the socket reads nothing meanwhile.
 */
export interface LentBody {
  readonly lent: true;
  /** Starts delivering the body to `sink` (once). */
  start(sink: LentSink): void;
  /** Reading again after the sink returned false. */
  resume(): void;
  /** Stops reading and closes the connection; the sink hears nothing more, but `e` if given. */
  destroy(e?: Error): void;
}

export interface LentSink {
  /** The next piece; valid until this returns, or, if it returns false, until resume(). */
  data(piece: Uint8Array): boolean;
  /** Every byte the response declared has been delivered. */
  end(): void;
  /** The connection failed or went silent before the end. */
  error(e: Error): void;
}

export function isLent(body: unknown): body is LentBody {
  return (body as Partial<LentBody> | undefined)?.lent === true;
}
