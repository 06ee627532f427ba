-- Migration 4 (SQLite): events stored in commit order (docs/storage.md, "Schema").
-- Migration 1 clustered events by (stream, version): a group commit of appends to 64 streams
-- dirtied 64 leaf pages of ~170 B rows, and every dirty page is a WAL frame (two writes) plus its
-- share of the checkpoint's writes. Rows now go in commit order (rowid `seq`), so one commit's
-- events share a few pages; the (stream, version) key becomes a unique index of small entries,
-- which reads by stream use. The columns are those of before plus `seq`; existing rows are
-- copied in (stream, version) order.
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
INSERT INTO events_v4 (stream, version, tenant, type, payload, envelope_hash, committed_at)
  SELECT stream, version, tenant, type, payload, envelope_hash, committed_at FROM events
  ORDER BY stream, version;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE UNIQUE INDEX events_by_stream ON events (stream, version);
