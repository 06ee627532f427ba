-- Reverts migration 2 (PostgreSQL): drops the audit log, with its data.
DROP TABLE audit_log;
