-- Reverts migration 4 (SQLite): events clustered by (stream, version) again, with their data.
CREATE TABLE events_v1 (
  stream        TEXT    NOT NULL,
  version       INTEGER NOT NULL CHECK (version >= 1),
  tenant        TEXT    NOT NULL,
  type          TEXT    NOT NULL,
  payload       BLOB    NOT NULL,
  envelope_hash BLOB    NOT NULL CHECK (length(envelope_hash) = 32),
  committed_at  INTEGER NOT NULL,
  PRIMARY KEY (stream, version)
) WITHOUT ROWID;
INSERT INTO events_v1 (stream, version, tenant, type, payload, envelope_hash, committed_at)
  SELECT stream, version, tenant, type, payload, envelope_hash, committed_at FROM events;
DROP INDEX events_by_stream;
DROP TABLE events;
ALTER TABLE events_v1 RENAME TO events;
