-- Migration 2 (PostgreSQL): the hash-chained audit log (docs/storage.md, "Audit chain").
-- hash = SHA-256(prev_hash || record); the first prev_hash is 32 zero bytes; seq is gap-free
-- from 1. Hashes are not length-checked here: verification must see tampered rows as they are.
CREATE TABLE audit_log (
  seq       bigint NOT NULL PRIMARY KEY CHECK (seq >= 1),
  tenant    text   NOT NULL,
  ts        bigint NOT NULL,
  actor     text   NOT NULL,
  action    text   NOT NULL,
  subject   text   NOT NULL,
  record    bytea  NOT NULL,
  prev_hash bytea  NOT NULL,
  hash      bytea  NOT NULL
);
