-- Reverts migration 1 (PostgreSQL): drops the journal and snapshots, with their data.
DROP TABLE snapshots;
DROP TABLE events;
DROP TABLE streams;
