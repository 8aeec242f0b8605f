import type Database from 'better-sqlite3';

/**
 * The signature policy's verdicts, per repository and digest, in the catalogue's database. Its
 * own `CREATE TABLE IF NOT EXISTS` (no schema version change). `state` says what the verdict was
 * reached on (the policy's keys, the signatures found): a verdict whose state no longer matches
 * is checked again, so new signatures or reloaded keys are seen at once.
 */
const VERDICTS_SCHEMA = `
CREATE TABLE IF NOT EXISTS signature_verdicts (
  repo       TEXT NOT NULL,
  digest     TEXT NOT NULL,
  status     TEXT NOT NULL,   -- 'verified' | 'unsigned' | 'failed'
  reason     TEXT NOT NULL,   -- for a person: what verified it, or why not
  signer     TEXT,            -- the key file that verified it
  state      TEXT NOT NULL,
  checked_at INTEGER NOT NULL,
  PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
`;

export type VerdictStatus = 'verified' | 'unsigned' | 'failed';

export interface VerdictRow {
  repo: string;
  digest: string;
  status: VerdictStatus;
  reason: string;
  signer: string | null;
  state: string;
  checked_at: number;
}

export class SignatureVerdicts {
  private readonly stmts;

  constructor(db: Database.Database) {
    db.exec(VERDICTS_SCHEMA);
    this.stmts = {
      get: db.prepare<[string, string], VerdictRow>('SELECT * FROM signature_verdicts WHERE repo = ? AND digest = ?'),
      put: db.prepare(
        `INSERT INTO signature_verdicts (repo, digest, status, reason, signer, state, checked_at)
         VALUES (@repo, @digest, @status, @reason, @signer, @state, @checked_at)
         ON CONFLICT (repo, digest) DO UPDATE SET status = excluded.status, reason = excluded.reason,
           signer = excluded.signer, state = excluded.state, checked_at = excluded.checked_at`,
      ),
      all: db.prepare<[], VerdictRow>('SELECT * FROM signature_verdicts ORDER BY repo, digest'),
    };
  }

  get(repo: string, digest: string): VerdictRow | undefined {
    return this.stmts.get.get(repo, digest);
  }

  record(row: Omit<VerdictRow, 'checked_at'>): void {
    this.stmts.put.run({ ...row, checked_at: Date.now() });
  }

  /** Every verdict reached, for `ls` and the status page. */
  all(): VerdictRow[] {
    return this.stmts.all.all();
  }
}
