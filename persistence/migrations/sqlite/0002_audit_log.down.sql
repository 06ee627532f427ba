-- Reverts migration 2 (SQLite): drops the audit log, with its data.
DROP TABLE audit_log;
