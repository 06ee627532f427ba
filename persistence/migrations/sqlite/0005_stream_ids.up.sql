-- Migration 5 (SQLite): integer stream ids (docs/storage.md, "Schema").
-- A group commit of appends to 64 streams writes into the tail of each stream's part of the
-- unique index events_by_stream: one leaf page per stream, every one a WAL frame. Its entries
-- were (stream text, version, seq); with a small integer per stream instead of the text, more
-- streams' tails share a leaf and the index is half the size (a model of the bench's commits:
-- 61 -> 46 WAL frames per commit with 11-character stream names, 83 -> 46 with 30). Streams keep
-- their text key (lookups by name are one B-tree); `id` is theirs for life: compaction deletes a
-- stream's events before the stream, so an id a deleted stream had may be given again.
ALTER TABLE streams ADD COLUMN id INTEGER NOT NULL DEFAULT 0;
CREATE TEMP TABLE stream_ids_v5 AS
  SELECT stream, row_number() OVER (ORDER BY stream) AS id FROM streams;
UPDATE streams SET id = (SELECT i.id FROM stream_ids_v5 AS i WHERE i.stream = streams.stream);
DROP TABLE stream_ids_v5;
CREATE UNIQUE INDEX streams_by_id ON streams (id);
-- Events of a stream without a row in streams cannot be (appends write both in one
-- transaction, compaction deletes both in one): the join keeps only events that have one.
CREATE TABLE events_v5 (
  seq           INTEGER PRIMARY KEY,
  stream_id     INTEGER NOT NULL,
  version       INTEGER NOT NULL CHECK (version >= 1),
  tenant        TEXT    NOT NULL,
  type          TEXT    NOT NULL,
  payload       BLOB    NOT NULL,
  envelope_hash BLOB    NOT NULL CHECK (length(envelope_hash) = 32),
  committed_at  INTEGER NOT NULL
);
INSERT INTO events_v5 (seq, stream_id, version, tenant, type, payload, envelope_hash, committed_at)
  SELECT e.seq, s.id, e.version, e.tenant, e.type, e.payload, e.envelope_hash, e.committed_at
  FROM events AS e JOIN streams AS s ON s.stream = e.stream ORDER BY e.seq;
DROP INDEX events_by_stream;
DROP TABLE events;
ALTER TABLE events_v5 RENAME TO events;
CREATE UNIQUE INDEX events_by_stream ON events (stream_id, version);
