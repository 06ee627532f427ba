-- Migration 2 (SQLite): the hash-chained audit log (docs/storage.md, "Audit chain").
-- hash = SHA-256(prev_hash || record); the first prev_hash is 32 zero bytes; seq is gap-free from 1.
CREATE TABLE audit_log (
  seq       INTEGER NOT NULL PRIMARY KEY,
  tenant    TEXT    NOT NULL,
  ts        INTEGER NOT NULL,
  actor     TEXT    NOT NULL,
  action    TEXT    NOT NULL,
  subject   TEXT    NOT NULL,
  record    BLOB    NOT NULL,
  prev_hash BLOB    NOT NULL CHECK (length(prev_hash) = 32),
  hash      BLOB    NOT NULL CHECK (length(hash) = 32)
);
