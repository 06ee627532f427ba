-- Reverts migration 5 (SQLite): events name their stream by its text again, with their data.
CREATE TABLE events_v4 (
  seq           INTEGER PRIMARY KEY,
  stream        TEXT    NOT NULL,
  version       INTEGER NOT NULL CHECK (version >= 1),
  tenant        TEXT    NOT NULL,
  type          TEXT    NOT NULL,
  payload       BLOB    NOT NULL,
  envelope_hash BLOB    NOT NULL CHECK (length(envelope_hash) = 32),
  committed_at  INTEGER NOT NULL
);
INSERT INTO events_v4 (seq, stream, version, tenant, type, payload, envelope_hash, committed_at)
  SELECT e.seq, s.stream, e.version, e.tenant, e.type, e.payload, e.envelope_hash, e.committed_at
  FROM events AS e JOIN streams AS s ON s.id = e.stream_id ORDER BY e.seq;
DROP INDEX events_by_stream;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE UNIQUE INDEX events_by_stream ON events (stream, version);
DROP INDEX streams_by_id;
ALTER TABLE streams DROP COLUMN id;
