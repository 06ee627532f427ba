-- Migration 1 (SQLite): the event journal and snapshots (docs/storage.md, "Schema").
-- Times are nanoseconds since the Unix epoch; hashes are 32-byte SHA-256 digests.

-- One row per stream: its tenant and current version, for listing and fast version checks.
CREATE TABLE streams (
  stream  TEXT    NOT NULL PRIMARY KEY,
  tenant  TEXT    NOT NULL,
  version INTEGER NOT NULL CHECK (version >= 1)
) WITHOUT ROWID;
CREATE INDEX streams_by_tenant ON streams (tenant, stream);

-- Append-only: versions are 1, 2, ... without gaps within a stream.
CREATE TABLE events (
  stream        TEXT    NOT NULL,
  version       INTEGER NOT NULL CHECK (version >= 1),
  tenant        TEXT    NOT NULL,
  type          TEXT    NOT NULL,
  payload       BLOB    NOT NULL,
  envelope_hash BLOB    NOT NULL CHECK (length(envelope_hash) = 32),
  committed_at  INTEGER NOT NULL,
  PRIMARY KEY (stream, version)
) WITHOUT ROWID;

-- The latest snapshot of a stream: the state after `version`.
CREATE TABLE snapshots (
  stream   TEXT    NOT NULL PRIMARY KEY,
  tenant   TEXT    NOT NULL,
  version  INTEGER NOT NULL CHECK (version >= 0),
  type     TEXT    NOT NULL,
  payload  BLOB    NOT NULL,
  taken_at INTEGER NOT NULL
);
