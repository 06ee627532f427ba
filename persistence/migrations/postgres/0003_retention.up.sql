-- Migration 3 (PostgreSQL): retention (docs/storage.md, "Retention"). A stream can be finished (an
-- execution that ended) and compaction deletes it once the retention period has passed; events a
-- snapshot covers can be pruned, and pruned_through remembers how far so reads can say so.
ALTER TABLE streams ADD COLUMN finished_at bigint;
ALTER TABLE streams ADD COLUMN pruned_through bigint NOT NULL DEFAULT 0 CHECK (pruned_through >= 0);
CREATE INDEX streams_by_finish ON streams (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX snapshots_by_age ON snapshots (taken_at);
