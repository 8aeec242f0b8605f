/**
 * The catalogue's tables. `repo` is always the mirror-side key `<registry>/<repository>`
 * (e.g. `docker.io/library/alpine`), so one store serves several upstreams without clashes.
 */
export const SCHEMA_VERSION = 1;

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS manifests (
  repo        TEXT NOT NULL,
  digest      TEXT NOT NULL,
  media_type  TEXT NOT NULL,   -- the Content-Type upstream served it with, served back unchanged
  size        INTEGER NOT NULL,
  kind        TEXT NOT NULL,   -- 'index' | 'image'
  platform    TEXT,            -- os/arch[/variant] of an image manifest, when known
  stored_at   INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifests_by_digest ON manifests (digest);

CREATE TABLE IF NOT EXISTS tags (
  repo       TEXT NOT NULL,
  tag        TEXT NOT NULL,
  digest     TEXT NOT NULL,
  updated_at INTEGER NOT NULL, -- when the tag last moved (or was first seen)
  checked_at INTEGER NOT NULL, -- when upstream last confirmed it
  PRIMARY KEY (repo, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (repo, digest);

-- Every entry of every stored index, mirrored or not, with the platform that decides it.
CREATE TABLE IF NOT EXISTS index_children (
  repo            TEXT NOT NULL,
  index_digest    TEXT NOT NULL,
  child_digest    TEXT NOT NULL,
  media_type      TEXT NOT NULL,
  size            INTEGER NOT NULL,
  platform        TEXT,          -- effective platform (an attestation takes its subject's); NULL = none
  attestation_for TEXT,
  position        INTEGER NOT NULL,
  PRIMARY KEY (repo, index_digest, child_digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS index_children_by_child ON index_children (repo, child_digest);

-- The config and layers each stored image manifest references.
CREATE TABLE IF NOT EXISTS manifest_blobs (
  repo            TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  blob_digest     TEXT NOT NULL,
  media_type      TEXT NOT NULL,
  size            INTEGER NOT NULL,
  position        INTEGER,         -- in the manifest: 0 the config, then the layers (NULL in older stores)
  PRIMARY KEY (repo, manifest_digest, blob_digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_blobs_by_blob ON manifest_blobs (repo, blob_digest);
CREATE INDEX IF NOT EXISTS manifest_blobs_by_digest ON manifest_blobs (blob_digest);

-- Blobs present on disk (layers and configs; manifests are in 'manifests').
CREATE TABLE IF NOT EXISTS blobs (
  digest      TEXT PRIMARY KEY,
  size        INTEGER NOT NULL,
  stored_at   INTEGER NOT NULL,
  last_access INTEGER NOT NULL
) WITHOUT ROWID;

-- The status page's history, aggregated per hour (hour = Unix ms / 3,600,000) and pruned after
-- 30 days. Additive tables: no schema version change, an older build never reads them.
-- Requests refused with the not-mirrored error, by repository and platform.
CREATE TABLE IF NOT EXISTS demand_hourly (
  hour     INTEGER NOT NULL,
  repo     TEXT NOT NULL,
  platform TEXT NOT NULL,
  count    INTEGER NOT NULL,
  PRIMARY KEY (hour, repo, platform)
) WITHOUT ROWID;
-- Manifest and blob lookups by result (hit, miss, stale) with the bytes served, and the bytes
-- fetched upstream (kind 'upstream', result 'fetched').
CREATE TABLE IF NOT EXISTS traffic_hourly (
  hour     INTEGER NOT NULL,
  kind     TEXT NOT NULL,
  result   TEXT NOT NULL,
  requests INTEGER NOT NULL,
  bytes    INTEGER NOT NULL,
  PRIMARY KEY (hour, kind, result)
) WITHOUT ROWID;
`;
