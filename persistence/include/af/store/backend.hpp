// The storage backends behind the journal, snapshots and the audit chain: one interface, three
// implementations (SQLite, the embedded default; PostgreSQL; in-memory for tests and the
// simulator), one conformance suite (tests/persistence/). Calls BLOCK: only store actors call
// them, never agent handlers (ARCHITECTURE.md invariant 1).
//
// Thread-safety: a backend object is not thread-safe; one store actor uses it at a time. Errors
// are af::error values naming the stream/version or the path/URL at fault, never exceptions.
#pragma once

#include "af/error.hpp"
#include "af/services.hpp"

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace af::store {

/// `expected_version` meaning "append whatever the stream's version is".
inline constexpr std::uint64_t k_any_version = std::numeric_limits<std::uint64_t>::max();

using sha256_digest = std::array<std::uint8_t, 32>;

/// An event to append: a Protobuf message (type = its full name, payload = its bytes) and the
/// hash of the envelope that caused it (all zero when none).
struct new_event {
  std::string type;
  std::string payload;
  sha256_digest envelope_hash{};
};

/// One atomic append to one stream: all events or none, and only if the stream is at
/// `expected_version` (0 = the stream must not exist yet; k_any_version = no check).
/// An empty stream id or no events is `validation`; a stream keeps the tenant of its first
/// append, and a request naming another tenant is `forbidden`.
struct append_request {
  std::string stream; ///< "exec/<id>", "agent/<id>", "saga/<id>", ...
  std::string tenant;
  std::uint64_t expected_version = 0;
  std::vector<new_event> events;
  /// Marks the stream finished with these events (an execution that completed, failed or was
  /// cancelled): later appends get `conflict`, and compaction deletes the stream once the
  /// retention period has passed (see compact()).
  bool finish = false;
};

struct append_result {
  std::uint64_t first_version = 0; ///< the version of the first event appended (1-based)
  std::uint64_t last_version = 0;
  time_point committed_at{};
};

/// An event as stored.
struct event_record {
  std::string stream;
  std::uint64_t version = 0;
  std::string tenant;
  std::string type;
  std::string payload;
  sha256_digest envelope_hash{};
  time_point committed_at{};
};

struct stream_info {
  std::string stream;
  std::string tenant;
  std::uint64_t version = 0; ///< the last event's version
  /// Events 1..pruned_through were removed by compaction (the snapshot covers them).
  std::uint64_t pruned_through = 0;
  /// When the append that finished the stream committed (unset: the stream is open).
  std::optional<time_point> finished_at;
};

/// What compact() removes (docs/storage.md, "Retention"). Nothing younger than `retention`
/// is touched, and the audit chain never is.
struct compact_options {
  time_point now{};
  /// Finished streams whose finish is at least this old are deleted with their events and
  /// snapshot; open streams whose snapshot is at least this old lose the events it covers.
  duration retention{};
  /// Streams handled in one call (one transaction); compact_result::more says whether to call
  /// again.
  std::size_t max_streams = 1000;
  /// Also make the freed space reusable now (PostgreSQL: VACUUM the journal tables after the
  /// commit; SQLite reuses freed pages by itself). `af db compact` sets it; the journal agent's
  /// periodic compaction leaves it to autovacuum.
  bool reclaim = false;
};

struct compact_result {
  std::uint64_t streams_deleted = 0; ///< finished streams removed whole
  std::uint64_t streams_pruned = 0;  ///< open streams whose snapshotted events were removed
  std::uint64_t events_deleted = 0;  ///< events removed, of both kinds
  bool more = false;                 ///< the limit was hit: more may be due
};

/// The latest snapshot of a stream: the state after `version` (events after it are replayed).
struct snapshot_record {
  std::string stream;
  std::string tenant;
  std::uint64_t version = 0;
  std::string type;
  std::string payload;
  time_point taken_at{};
};

/// One row of the audit chain (docs/storage.md): hash = SHA-256(prev_hash || record), the first
/// prev_hash is 32 zero bytes, seq is gap-free from 1.
struct audit_row {
  std::uint64_t seq = 0;
  std::string tenant;
  time_point ts{};
  std::string actor;
  std::string action;
  std::string subject;
  std::string record; ///< canonical Protobuf bytes of the full af.v1.AuditRecord
  sha256_digest prev_hash{};
  sha256_digest hash{};
};

/// An audit row as the store holds it, for scans: the views point into the backend's buffers
/// and are valid only during the callback.
struct audit_row_view {
  std::uint64_t seq = 0;
  std::string_view tenant;
  time_point ts{};
  std::string_view actor;
  std::string_view action;
  std::string_view subject;
  std::string_view record;
  sha256_digest prev_hash{};
  sha256_digest hash{};
};

/// The last row of the chain (seq 0 and a zero hash when the chain is empty).
struct audit_head {
  std::uint64_t seq = 0;
  sha256_digest hash{};
};

class backend {
public:
  virtual ~backend() = default;

  /// "sqlite", "postgres" or "memory".
  [[nodiscard]] virtual std::string_view kind() const noexcept = 0;
  /// Where the data is, for messages ("data/agentflow.db", "postgres://u@127.0.0.1:5432/db").
  [[nodiscard]] virtual const std::string& location() const noexcept = 0;

  // --- journal -------------------------------------------------------------------------------
  /// Group commit: checks and appends every request in one transaction and one sync, in order
  /// (a later request on the same stream sees the earlier one's events). A request whose
  /// expected version is stale gets `conflict` (naming the stream, expected and actual version)
  /// and writes nothing; the others commit. Returns one result per request, only once the
  /// batch is durable (committed and synced per the backend's durability setting). If the
  /// transaction itself fails, every request gets that error and nothing is written.
  [[nodiscard]] virtual std::vector<expected<append_result>>
  append_batch(std::span<const append_request> batch, time_point now) = 0;

  /// Events of `stream` with version >= from_version, in order, at most `max` (0: none).
  /// A stream that does not exist has no events (an empty vector, not an error). Reading from
  /// a version that compaction pruned is `not_found` (naming the stream and the snapshot's
  /// version to read after): the events are gone, and a silent gap would be worse.
  [[nodiscard]] virtual expected<std::vector<event_record>>
  read(std::string_view stream, std::uint64_t from_version, std::size_t max) = 0;

  /// The stream's current version (0: no such stream).
  [[nodiscard]] virtual expected<std::uint64_t> version(std::string_view stream) = 0;

  /// Streams whose id starts with `prefix` (all when empty), of `tenant` (all when empty),
  /// ordered by id bytewise (memcmp order, "exec/10" < "exec/2"), at most `max`, with ids
  /// greater than `after` (for paging: pass the last id of the previous page).
  [[nodiscard]] virtual expected<std::vector<stream_info>> list_streams(std::string_view prefix,
                                                                        std::string_view tenant,
                                                                        std::string_view after,
                                                                        std::size_t max) = 0;

  /// The stream's row (nullopt: no such stream).
  [[nodiscard]] virtual expected<std::optional<stream_info>> stream(std::string_view stream) = 0;

  /// One step of retention (compact_options): deletes finished streams past the retention
  /// period and prunes the snapshotted events of open streams, in one transaction.
  [[nodiscard]] virtual expected<compact_result> compact(const compact_options& opts) = 0;

  /// Bytes the store occupies (SQLite: the database file and its WAL; PostgreSQL: the
  /// journal and audit tables with their indexes and TOAST; memory: the payload bytes held).
  [[nodiscard]] virtual expected<std::uint64_t> storage_bytes() = 0;

  // --- snapshots -------------------------------------------------------------------------------
  /// Replaces the stream's snapshot; `version` must not exceed the stream's version
  /// (`validation`), and the tenant must be the stream's (`forbidden`).
  [[nodiscard]] virtual status save_snapshot(const snapshot_record& s) = 0;
  [[nodiscard]] virtual expected<std::optional<snapshot_record>>
  load_snapshot(std::string_view stream) = 0;

  // --- audit chain -----------------------------------------------------------------------------
  [[nodiscard]] virtual expected<audit_head> audit_last() = 0;
  /// Appends rows (already chained by the audit writer) in one durable transaction; the first
  /// row's seq must be audit_last().seq + 1 and the rest follow without gaps (else `conflict`,
  /// nothing written); each prev_hash must be the previous row's hash (else `validation`). The
  /// backend checks the links, not the SHA-256 (that is `af audit verify`'s job).
  [[nodiscard]] virtual status audit_append(std::span<const audit_row> rows) = 0;
  [[nodiscard]] virtual expected<std::vector<audit_row>> audit_read(std::uint64_t from_seq,
                                                                    std::size_t max) = 0;
  /// Calls `fn` for the rows with seq >= from_seq in seq order, at most `max`, until it returns
  /// false: what verification uses, without building a row object per row. The default reads
  /// pages with audit_read; SQLite streams one statement's rows.
  [[nodiscard]] virtual status audit_scan(std::uint64_t from_seq, std::size_t max,
                                          const std::function<bool(const audit_row_view&)>& fn);

  // --- schema ----------------------------------------------------------------------------------
  /// The applied migration number (0: empty database).
  [[nodiscard]] virtual expected<int> schema_version() = 0;
  /// The newest migration this build knows.
  [[nodiscard]] virtual int latest_schema_version() const noexcept = 0;
  /// Applies migrations up or down to `target` (each in its own transaction); 0 drops every
  /// table and its data. While the schema is behind, calls that need a missing table fail.
  [[nodiscard]] virtual status migrate_to(int target) = 0;
};

struct sqlite_options {
  std::string path;                 ///< DATA_DIR/agentflow.db
  std::string synchronous = "FULL"; ///< FULL | NORMAL | EXTRA | OFF (OFF: not durable; tests)
  int busy_timeout_ms = 5000;
  bool migrate = true; ///< apply pending migrations on open
};

struct postgres_options {
  std::string url; ///< postgres://user@host:port/db (libpq conninfo URI)
  std::size_t pool_size = 4;
  int connect_timeout_s = 5;
  /// The server's statement_timeout for the store's connections (0: none): a statement that
  /// runs longer fails with `timeout`. Migrations and `af db compact`'s VACUUM are exempt.
  int statement_timeout_ms = 30000;
  bool migrate = true;
};

struct memory_options {
  /// When false, appends are durable only after `sync_all()`: the simulator drops the rest
  /// when a simulated node crashes (crash()).
  bool sync_on_commit = true;
};

[[nodiscard]] expected<std::unique_ptr<backend>> open_sqlite(const sqlite_options& opts);
[[nodiscard]] expected<std::unique_ptr<backend>> open_postgres(const postgres_options& opts);

/// The in-memory backend, with the crash hooks the simulator needs.
class memory_backend : public backend {
public:
  /// Makes every write so far durable.
  virtual void sync_all() = 0;
  /// Forgets every write since the last sync (a simulated crash).
  virtual void crash() = 0;
};
[[nodiscard]] std::unique_ptr<memory_backend> make_memory_backend(memory_options opts = {});

/// Opens "sqlite:PATH", a plain path (SQLite), "postgres://..." / "postgresql://..." or
/// "memory:"; errors name the URL. A SQLite PATH names the database file, or a data directory
/// (existing, or written with a trailing slash) holding agentflow.db.
[[nodiscard]] expected<std::unique_ptr<backend>> open_url(const std::string& url);

} // namespace af::store
