-- Reverts migration 3 (PostgreSQL): streams forget whether they are finished and how far they
-- were pruned (events already deleted by compaction stay deleted).
DROP INDEX snapshots_by_age;
DROP INDEX streams_by_finish;
ALTER TABLE streams DROP COLUMN pruned_through;
ALTER TABLE streams DROP COLUMN finished_at;
