-- Migration 1 (PostgreSQL): the event journal and snapshots (docs/storage.md, "Schema").
-- Times are nanoseconds since the Unix epoch; hashes are 32-byte SHA-256 digests. Stream ids and
-- tenants use the "C" collation: byte order for listing and paging whatever the server's locale,
-- the same order as SQLite's.

-- One row per stream: its tenant and current version, for listing and the version check (the
-- append path locks these rows FOR UPDATE).
CREATE TABLE streams (
  stream  text COLLATE "C" NOT NULL PRIMARY KEY,
  tenant  text COLLATE "C" NOT NULL,
  version bigint NOT NULL CHECK (version >= 1)
);
CREATE INDEX streams_by_tenant ON streams (tenant, stream);

-- Append-only: versions are 1, 2, ... without gaps within a stream.
CREATE TABLE events (
  stream        text COLLATE "C" NOT NULL,
  version       bigint NOT NULL CHECK (version >= 1),
  tenant        text COLLATE "C" NOT NULL,
  type          text   NOT NULL,
  payload       bytea  NOT NULL,
  envelope_hash bytea  NOT NULL CHECK (octet_length(envelope_hash) = 32),
  committed_at  bigint NOT NULL,
  PRIMARY KEY (stream, version)
);

-- The latest snapshot of a stream: the state after `version`.
CREATE TABLE snapshots (
  stream   text COLLATE "C" NOT NULL PRIMARY KEY,
  tenant   text COLLATE "C" NOT NULL,
  version  bigint NOT NULL CHECK (version >= 0),
  type     text   NOT NULL,
  payload  bytea  NOT NULL,
  taken_at bigint NOT NULL
);
