-- Reverts migration 1 (SQLite): drops the journal and snapshots, with their data.
DROP TABLE snapshots;
DROP TABLE events;
DROP INDEX streams_by_tenant;
DROP TABLE streams;
