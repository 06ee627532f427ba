// The SQLite backend, the embedded default: one file (DATA_DIR/agentflow.db) in WAL mode, group
// commit as one BEGIN IMMEDIATE transaction (a savepoint per request only when a write failed
// half-way), events stored in commit order (migration 4), statements prepared once.
//
// Thread-safety: a backend object is used by one store actor at a time (the connection is opened
// with SQLITE_OPEN_NOMUTEX); several processes may share the file (SQLite's locks and
// busy_timeout arbitrate), though only the node's store actors should write it.
#include "af/store/backend.hpp"

#include "sqlite_backend.hpp"

#include "migrations.hpp"
#include "sqlite_wal_vfs.hpp"
#include "store_checks.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

namespace af::store {

namespace {

std::int64_t ns_of(time_point t) { return t.time_since_epoch().count(); }
time_point time_of(std::int64_t ns) { return time_point{duration{ns}}; }

/// SQLite and its INTEGER columns count in int64; larger values mean "no limit".
std::int64_t clamp_i64(std::uint64_t v) {
  return static_cast<std::int64_t>(
      std::min<std::uint64_t>(v, static_cast<std::uint64_t>(INT64_MAX)));
}

errc errc_of(int rc) {
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return errc::transient;
  case SQLITE_FULL:
    return errc::quota;
  case SQLITE_CONSTRAINT:
    return errc::conflict;
  default:
    return errc::internal;
  }
}

// Every statement the backend runs, prepared on first use and kept (the ids index k_sql).
enum class sql : std::size_t {
  begin,
  commit,
  rollback,
  savepoint,
  release,
  rollback_to,
  job_savepoint,
  job_release,
  job_rollback_to,
  stream_get,
  event_insert,
  stream_insert,
  stream_update,
  read,
  list_all,
  list_all_bounded,
  list_tenant,
  list_tenant_bounded,
  snapshot_upsert,
  snapshot_get,
  finished_due,
  events_delete_all,
  snapshot_delete,
  stream_delete,
  snapshotted_due,
  events_prune,
  stream_set_pruned,
  audit_last,
  audit_insert,
  audit_read,
  schema_version,
  migration_insert,
  migration_delete,
  count_,
};

#define AF_LIST_SQL(tenant_cond, upper_cond)                                                       \
  "SELECT stream, tenant, version, pruned_through, finished_at FROM streams"                       \
  " WHERE stream >= ?1 AND stream <> ?2" tenant_cond upper_cond " ORDER BY stream LIMIT ?5"

constexpr std::array<const char*, static_cast<std::size_t>(sql::count_)> k_sql = {
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT af_request",
    "RELEASE af_request",
    "ROLLBACK TO af_request",
    "SAVEPOINT af_job",
    "RELEASE af_job",
    "ROLLBACK TO af_job",
    "SELECT version, tenant, finished_at, pruned_through, id FROM streams WHERE stream = ?1",
    "INSERT INTO events (stream_id, version, tenant, type, payload, envelope_hash, committed_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "INSERT INTO streams (stream, tenant, version, finished_at, id) VALUES (?1, ?2, ?3, ?4,"
    " (SELECT coalesce(max(id), 0) + 1 FROM streams)) RETURNING id",
    "UPDATE streams SET version = ?2, finished_at = ?3 WHERE stream = ?1",
    "SELECT version, tenant, type, payload, envelope_hash, committed_at FROM events"
    " WHERE stream_id = (SELECT id FROM streams WHERE stream = ?1) AND version >= ?2"
    " ORDER BY version LIMIT ?3",
    AF_LIST_SQL("", ""),
    AF_LIST_SQL("", " AND stream < ?3"),
    AF_LIST_SQL(" AND tenant = ?4", ""),
    AF_LIST_SQL(" AND tenant = ?4", " AND stream < ?3"),
    "INSERT INTO snapshots (stream, tenant, version, type, payload, taken_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (stream) DO UPDATE SET"
    " tenant = excluded.tenant, version = excluded.version, type = excluded.type,"
    " payload = excluded.payload, taken_at = excluded.taken_at",
    "SELECT tenant, version, type, payload, taken_at FROM snapshots WHERE stream = ?1",
    "SELECT stream FROM streams WHERE finished_at IS NOT NULL AND finished_at <= ?1"
    " ORDER BY finished_at LIMIT ?2",
    "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE stream = ?1)",
    "DELETE FROM snapshots WHERE stream = ?1",
    "DELETE FROM streams WHERE stream = ?1",
    "SELECT s.stream, s.version FROM snapshots AS s JOIN streams AS t ON t.stream = s.stream"
    " WHERE s.taken_at <= ?1 AND s.version > t.pruned_through ORDER BY s.taken_at LIMIT ?2",
    "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE stream = ?1)"
    " AND version <= ?2",
    "UPDATE streams SET pruned_through = ?2 WHERE stream = ?1",
    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
    "INSERT INTO audit_log (seq, tenant, ts, actor, action, subject, record, prev_hash, hash)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "SELECT seq, tenant, ts, actor, action, subject, record, prev_hash, hash FROM audit_log"
    " WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    "SELECT coalesce(max(version), 0) FROM schema_migrations",
    "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
    "DELETE FROM schema_migrations WHERE version = ?1",
};
#undef AF_LIST_SQL

// Kept outside migrations: it records which migrations are applied.
constexpr const char* k_schema_migrations_ddl =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER NOT NULL PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))";

struct stmt_deleter {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_deleter>;

struct db_deleter {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using db_ptr = std::unique_ptr<sqlite3, db_deleter>;

/// One use of a cached statement: binds (remembering the first failure), steps, and resets the
/// statement when it goes out of scope so it holds no locks and no references to bound data.
class stmt_use {
public:
  explicit stmt_use(sqlite3_stmt* s) noexcept : s_(s) {}
  ~stmt_use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  stmt_use(const stmt_use&) = delete;
  stmt_use& operator=(const stmt_use&) = delete;

  stmt_use& text(int i, std::string_view v) {
    note(
        sqlite3_bind_text64(s_, i, v.data() ? v.data() : "", v.size(), SQLITE_STATIC, SQLITE_UTF8));
    return *this;
  }
  // A non-null pointer even for empty values: a null one would bind NULL, not an empty blob.
  stmt_use& blob(int i, std::string_view v) {
    note(sqlite3_bind_blob64(s_, i, v.data() ? v.data() : "", v.size(), SQLITE_STATIC));
    return *this;
  }
  stmt_use& blob(int i, const sha256_digest& d) {
    note(sqlite3_bind_blob64(s_, i, d.data(), d.size(), SQLITE_STATIC));
    return *this;
  }
  stmt_use& integer(int i, std::int64_t v) {
    note(sqlite3_bind_int64(s_, i, v));
    return *this;
  }
  stmt_use& null(int i) {
    note(sqlite3_bind_null(s_, i));
    return *this;
  }
  /// SQLITE_ROW, SQLITE_DONE or an error code (a failed bind included).
  int step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : sqlite3_step(s_); }

  [[nodiscard]] std::int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
  [[nodiscard]] std::uint64_t u64(int col) const {
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, i64(col)));
  }
  [[nodiscard]] bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  /// Views of a column's bytes, valid until the next step or reset.
  [[nodiscard]] std::string_view text_view(int col) const {
    const auto* p = sqlite3_column_text(s_, col);
    const auto n = static_cast<std::size_t>(sqlite3_column_bytes(s_, col));
    return p != nullptr ? std::string_view(reinterpret_cast<const char*>(p), n)
                        : std::string_view{};
  }
  [[nodiscard]] std::string_view blob_view(int col) const {
    const auto* p = sqlite3_column_blob(s_, col);
    const auto n = static_cast<std::size_t>(sqlite3_column_bytes(s_, col));
    return p != nullptr ? std::string_view(static_cast<const char*>(p), n) : std::string_view{};
  }
  [[nodiscard]] std::string str(int col) const {
    const auto* p = sqlite3_column_text(s_, col);
    const auto n = static_cast<std::size_t>(sqlite3_column_bytes(s_, col));
    return p != nullptr ? std::string(reinterpret_cast<const char*>(p), n) : std::string{};
  }
  [[nodiscard]] std::string bytes(int col) const {
    const auto* p = sqlite3_column_blob(s_, col);
    const auto n = static_cast<std::size_t>(sqlite3_column_bytes(s_, col));
    return p != nullptr ? std::string(static_cast<const char*>(p), n) : std::string{};
  }
  /// False when the column is not exactly 32 bytes (a schema CHECK makes that impossible unless
  /// the file was edited by hand).
  [[nodiscard]] bool digest(int col, sha256_digest& out) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, col));
    if (sqlite3_column_bytes(s_, col) != static_cast<int>(out.size()) || p == nullptr) return false;
    std::copy(p, p + out.size(), out.begin());
    return true;
  }

private:
  void note(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3_stmt* s_;
  int bind_rc_ = SQLITE_OK;
};

/// The smallest string greater than every string starting with `prefix`, if there is one.
std::optional<std::string> prefix_upper_bound(std::string_view prefix) {
  std::string upper{prefix};
  while (!upper.empty() && static_cast<unsigned char>(upper.back()) == 0xff)
    upper.pop_back();
  if (upper.empty()) return std::nullopt;
  upper.back() = static_cast<char>(static_cast<unsigned char>(upper.back()) + 1);
  return upper;
}

class sqlite_backend;

/// One write of a backend call (an append_batch, an audit_append), run inside a transaction that
/// may carry other connections' writes too (commit_hub).
struct hub_job {
  /// Writes on `conn` (the committing connection, maybe not the caller's) inside the job's own
  /// savepoint and records its outcome; false: undo this job's writes (its outcome says why).
  std::function<bool(sqlite_backend& conn)> run;
  /// The transaction failed as a whole: nothing of the job was written.
  std::function<void(const error&)> fail;
  /// Set by `run` when the transaction was lost during it: the error that lost it.
  std::optional<error> lost;
  /// May wait (up to k_piggyback_wait) for another connection's next commit to carry it.
  bool piggyback = false;
  bool done = false;
  std::thread::id from; ///< the submitting thread
};

/// Group commit across the connections of one process to one database file (with the same
/// `synchronous`): af.journal and af.audit each have a connection, and SQLite admits one writer
/// at a time. Instead of contending for the lock (the loser sleeps in the busy handler, 1 ms and
/// up) and paying one sync each, a writer queues its job here; whoever finds no commit in
/// progress commits every queued job in one transaction, with one sync, and wakes the others.
/// Audit jobs piggyback: arriving during a journal commit, or between two (the journal's last
/// commit carried appends), they wait (briefly) for the next one.
struct commit_hub {
  std::mutex m;
  std::condition_variable cv;
  std::vector<hub_job*> queue;
  bool busy = false;
  /// The last commit carried a job that does not piggyback (a journal append), submitted by
  /// `carrier`: more are likely to follow from that thread, also while no commit is in progress
  /// (the journal holding its next batch).
  bool carrier_active = false;
  std::thread::id carrier;

  /// The hub of a file and setting, shared by every connection of this process to it.
  static std::shared_ptr<commit_hub> of(const std::string& path, const std::string& synchronous) {
    static std::mutex registry_m;
    static std::map<std::string, std::weak_ptr<commit_hub>> registry;
    std::error_code ec;
    auto key = std::filesystem::weakly_canonical(path, ec).string();
    if (ec) key = path;
    key += '|' + synchronous;
    std::lock_guard g{registry_m};
    for (auto it = registry.begin(); it != registry.end();) // forget hubs nobody uses
      it = it->second.expired() ? registry.erase(it) : std::next(it);
    auto& slot = registry[key];
    auto hub = slot.lock();
    if (!hub) slot = hub = std::make_shared<commit_hub>();
    return hub;
  }
};

/// How long an audit job that arrived during another connection's commit waits for a later one
/// to carry it before committing itself: a few syncs' worth.
constexpr auto k_piggyback_wait = std::chrono::milliseconds(10);

class sqlite_backend final : public backend {
public:
  explicit sqlite_backend(std::string path) : path_(std::move(path)) {}

  static expected<std::unique_ptr<backend>> open(const sqlite_options& opts);

  [[nodiscard]] std::string_view kind() const noexcept override { return "sqlite"; }
  [[nodiscard]] const std::string& location() const noexcept override { return path_; }

  std::vector<expected<append_result>> append_batch(std::span<const append_request> batch,
                                                    time_point now) override;
  expected<std::vector<event_record>> read(std::string_view stream, std::uint64_t from_version,
                                           std::size_t max) override;
  expected<std::uint64_t> version(std::string_view stream) override;
  expected<std::optional<stream_info>> stream(std::string_view stream) override;
  expected<compact_result> compact(const compact_options& opts) override;
  expected<std::uint64_t> storage_bytes() override;
  expected<std::vector<stream_info>> list_streams(std::string_view prefix, std::string_view tenant,
                                                  std::string_view after, std::size_t max) override;
  status save_snapshot(const snapshot_record& s) override;
  expected<std::optional<snapshot_record>> load_snapshot(std::string_view stream) override;
  expected<audit_head> audit_last() override;
  status audit_append(std::span<const audit_row> rows) override;
  expected<std::vector<audit_row>> audit_read(std::uint64_t from_seq, std::size_t max) override;
  status audit_scan(std::uint64_t from_seq, std::size_t max,
                    const std::function<bool(const audit_row_view&)>& fn) override;
  expected<int> schema_version() override;
  [[nodiscard]] int latest_schema_version() const noexcept override {
    return static_cast<int>(migrations_for("sqlite").size());
  }
  status migrate_to(int target) override;

  expected<std::string> pragma(std::string_view name);

private:
  struct stream_state {
    bool exists = false;
    std::uint64_t version = 0;
    std::string tenant;
    std::optional<time_point> finished_at;
    std::uint64_t pruned_through = 0;
    std::int64_t id = 0; ///< the stream's integer id (events.stream_id), when it exists
  };

  [[nodiscard]] error fail(std::string_view op, int rc) const {
    std::string msg = db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
    return make_error(errc_of(rc), "sqlite " + path_ + ": " + std::string{op} + ": " + msg);
  }
  [[nodiscard]] error corrupt(std::string_view what) const {
    return internal_error("sqlite " + path_ + ": " + std::string{what});
  }

  expected<sqlite3_stmt*> prepared(sql id, std::string_view op);
  status exec(sql id, std::string_view op);
  status exec_script(const char* text, std::string_view op);
  /// Ends a failed transaction, if SQLite has not already rolled it back.
  void rollback() {
    if (sqlite3_get_autocommit(db_.get()) == 0) (void)exec(sql::rollback, "ROLLBACK");
  }
  [[nodiscard]] bool in_transaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }

  status configure(const sqlite_options& opts);
  expected<stream_state> stream_get(std::string_view stream);
  /// `isolate`: a savepoint around the request's writes, so that a write failing half-way
  /// takes back only this request's rows. Without it, `partial` is set when a write failed
  /// after an earlier one of the request succeeded (the caller must roll the batch back).
  expected<append_result> append_one(const append_request& r, time_point now, bool isolate,
                                     bool& partial);
  /// The requests in the current transaction. nullopt: a write failed after an earlier one of
  /// the same request succeeded without `isolate` (roll back and call again with it).
  std::optional<std::vector<expected<append_result>>>
  append_requests(std::span<const append_request> batch, time_point now, bool isolate);
  status audit_rows(std::span<const audit_row> rows);
  /// Queues `job` on the hub and returns once it is committed or failed, committing it (and any
  /// other queued job) on this connection when no other connection is committing.
  void submit(hub_job& job);
  void commit_group(std::vector<hub_job*>& jobs);
  status insert_events(const append_request& r, const stream_state& cur, time_point now);
  status apply_migration(const migration& m, bool up);

  std::string path_;
  std::shared_ptr<commit_hub> hub_;
  db_ptr db_;
  std::array<stmt_ptr, static_cast<std::size_t>(sql::count_)> stmts_;
};

expected<sqlite3_stmt*> sqlite_backend::prepared(sql id, std::string_view op) {
  auto& slot = stmts_[static_cast<std::size_t>(id)];
  if (!slot) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), k_sql[static_cast<std::size_t>(id)], -1,
                                SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(s);
      auto e = fail(op, rc);
      // A missing table or column: most likely a schema behind this build.
      if (id != sql::schema_version) {
        if (auto v = schema_version(); v && *v < latest_schema_version())
          return make_error(e.code(), e.message() + " (the schema is at version "
                                          + std::to_string(*v) + ", this build needs "
                                          + std::to_string(latest_schema_version())
                                          + ": af db migrate)");
      }
      return e;
    }
    slot.reset(s);
  }
  return slot.get();
}

status sqlite_backend::exec(sql id, std::string_view op) {
  auto s = prepared(id, op);
  if (!s) return s.error();
  stmt_use q{*s};
  if (int rc = q.step(); rc != SQLITE_DONE && rc != SQLITE_ROW) return fail(op, rc);
  return {};
}

status sqlite_backend::exec_script(const char* text, std::string_view op) {
  if (int rc = sqlite3_exec(db_.get(), text, nullptr, nullptr, nullptr); rc != SQLITE_OK)
    return fail(op, rc);
  return {};
}

status sqlite_backend::configure(const sqlite_options& opts) {
  sqlite3_extended_result_codes(db_.get(), 1);
  if (int rc = sqlite3_busy_timeout(db_.get(), opts.busy_timeout_ms); rc != SQLITE_OK)
    return fail("open: busy_timeout", rc);
  // Switching a fresh file to WAL and creating schema_migrations upgrade a read lock to a write
  // lock; when another connection is doing the same, SQLite returns SQLITE_BUSY at once instead of
  // calling the busy handler (it would deadlock). Several store actors open the same fresh file
  // at node start, so these statements retry on BUSY until busy_timeout_ms has passed.
  // The pauses are counted, not clocked (sqlite3_sleep), so this file reads no clock.
  auto retry_busy = [&](auto&& attempt) {
    int waited_ms = 0;
    for (int pause_ms = 1;; pause_ms = std::min(pause_ms * 2, 20)) {
      int rc = attempt();
      if ((rc & 0xff) != SQLITE_BUSY || waited_ms >= opts.busy_timeout_ms) return rc;
      sqlite3_sleep(pause_ms);
      waited_ms += pause_ms;
    }
  };
  // The first statement reads the file header: a file that is not a database fails here.
  std::string mode;
  int rc = retry_busy([&] {
    sqlite3_stmt* raw = nullptr;
    int r = sqlite3_prepare_v2(db_.get(), "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
    stmt_ptr wal{raw};
    if (r != SQLITE_OK) return r;
    r = sqlite3_step(wal.get());
    if (r != SQLITE_ROW) return r;
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(wal.get(), 0));
    mode = text != nullptr ? text : "unknown";
    return SQLITE_OK;
  });
  if (rc != SQLITE_OK) return fail("open: PRAGMA journal_mode=WAL", rc);
  if (mode != "wal")
    return internal_error("sqlite " + path_ + ": open: cannot switch to WAL mode (journal_mode is "
                          + mode + ")");
  const std::string sync = "PRAGMA synchronous=" + opts.synchronous;
  if (auto st = exec_script(sync.c_str(), "open: " + sync); !st) return st;
  // Statement journals in memory. Inside a transaction every INSERT that may fail a constraint
  // (CHECK, UNIQUE) opens a statement savepoint, and each page it changes is copied to the
  // statement journal first; past 64 KiB SQLite spills that journal to a temporary file. A group
  // commit of 64 appends copies ~150 pages: one temporary file per commit (create, ~150 writes,
  // unlink), measured at ~40% of the writes of journal.append.sqlite. The journal is scratch
  // (never synced, dropped at commit) and holds at most the pages one transaction changes.
  if (auto st = exec_script("PRAGMA temp_store=MEMORY", "open: PRAGMA temp_store=MEMORY"); !st)
    return st;
  rc = retry_busy(
      [&] { return sqlite3_exec(db_.get(), k_schema_migrations_ddl, nullptr, nullptr, nullptr); });
  if (rc != SQLITE_OK) return fail("open: create schema_migrations", rc);
  return {};
}

expected<std::unique_ptr<backend>> sqlite_backend::open(const sqlite_options& in) {
  sqlite_options opts = in;
  if (opts.path.empty()) return validation_error("sqlite: the database path is empty");
  std::transform(opts.synchronous.begin(), opts.synchronous.end(), opts.synchronous.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (opts.synchronous != "FULL" && opts.synchronous != "NORMAL" && opts.synchronous != "OFF"
      && opts.synchronous != "EXTRA")
    return validation_error("sqlite " + opts.path + ": synchronous = '" + in.synchronous
                            + "': expected FULL, NORMAL, EXTRA or OFF");
  if (opts.busy_timeout_ms < 0)
    return validation_error("sqlite " + opts.path + ": busy_timeout_ms must not be negative");

  namespace fs = std::filesystem;
  const fs::path file{opts.path};
  std::error_code ec;
  if (auto dir = file.parent_path(); !dir.empty()) {
    fs::create_directories(dir, ec);
    if (ec)
      return internal_error("sqlite " + opts.path + ": cannot create directory " + dir.string()
                            + ": " + ec.message());
  }
  if (fs::is_directory(file, ec))
    return validation_error("sqlite " + opts.path + ": is a directory, not a database file");

  auto b = std::make_unique<sqlite_backend>(opts.path);
  b->hub_ = commit_hub::of(opts.path, opts.synchronous);
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(opts.path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           sqlite_wal_vfs_name()); // WAL writes gathered (sqlite_wal_vfs.cpp)
  b->db_.reset(raw);
  if (rc != SQLITE_OK) {
    std::string msg = raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    return make_error(errc_of(rc),
                      "sqlite " + opts.path + ": open: " + msg + " (is the directory writable?)");
  }
  if (auto st = b->configure(opts); !st) return st.error();

  auto current = b->schema_version();
  if (!current) return std::move(current).error();
  if (*current > b->latest_schema_version())
    return validation_error("sqlite " + opts.path + ": schema version " + std::to_string(*current)
                            + " is newer than this build's "
                            + std::to_string(b->latest_schema_version())
                            + " (opened by a newer AgentFlow?)");
  if (opts.migrate) {
    if (auto st = b->migrate_to(b->latest_schema_version()); !st) return st.error();
  }
  return std::unique_ptr<backend>{std::move(b)};
}

// --- journal ---------------------------------------------------------------------------------

expected<sqlite_backend::stream_state> sqlite_backend::stream_get(std::string_view stream) {
  auto s = prepared(sql::stream_get, "read a stream's version");
  if (!s) return s.error();
  stmt_use q{*s};
  q.text(1, stream);
  stream_state st;
  switch (int rc = q.step()) {
  case SQLITE_ROW:
    st.exists = true;
    st.version = q.u64(0);
    st.tenant = q.str(1);
    if (!q.is_null(2)) st.finished_at = time_of(q.i64(2));
    st.pruned_through = q.u64(3);
    st.id = q.i64(4);
    return st;
  case SQLITE_DONE:
    return st;
  default:
    return fail("read the version of stream " + std::string{stream}, rc);
  }
}

status sqlite_backend::insert_events(const append_request& r, const stream_state& cur,
                                     time_point now) {
  const auto first = cur.version + 1;
  const auto last = clamp_i64(first + r.events.size() - 1);
  auto id = cur.id;
  if (!cur.exists) {
    // A new stream: its row first, for the id its events carry.
    auto add = prepared(sql::stream_insert, "append: add stream");
    if (!add) return add.error();
    stmt_use q{*add};
    q.text(1, r.stream).text(2, r.tenant).integer(3, last);
    if (r.finish)
      q.integer(4, ns_of(now));
    else
      q.null(4);
    if (int rc = q.step(); rc != SQLITE_ROW)
      return fail("append to stream " + r.stream + ": add stream", rc);
    id = q.i64(0);
    if (int rc = q.step(); rc != SQLITE_DONE)
      return fail("append to stream " + r.stream + ": add stream", rc);
  }
  auto ins = prepared(sql::event_insert, "append: insert event");
  if (!ins) return ins.error();
  for (std::size_t i = 0; i < r.events.size(); ++i) {
    const auto& e = r.events[i];
    const auto v = first + i;
    stmt_use q{*ins};
    q.integer(1, id)
        .integer(2, clamp_i64(v))
        .text(3, r.tenant)
        .text(4, e.type)
        .blob(5, e.payload)
        .blob(6, e.envelope_hash)
        .integer(7, ns_of(now));
    if (int rc = q.step(); rc != SQLITE_DONE)
      return fail("append to stream " + r.stream + " version " + std::to_string(v), rc);
  }
  if (!cur.exists) return {};
  auto up = prepared(sql::stream_update, "append: update stream");
  if (!up) return up.error();
  stmt_use q{*up};
  q.text(1, r.stream).integer(2, last);
  if (r.finish)
    q.integer(3, ns_of(now));
  else
    q.null(3);
  if (int rc = q.step(); rc != SQLITE_DONE)
    return fail("append to stream " + r.stream + ": update stream version", rc);
  return {};
}

expected<append_result> sqlite_backend::append_one(const append_request& r, time_point now,
                                                   bool isolate, bool& partial) {
  if (auto st = check_append(r); !st) return st.error();
  auto cur = stream_get(r.stream);
  if (!cur) return cur.error();
  if (auto st =
          check_expected(r, cur->exists, cur->tenant, cur->version, cur->finished_at.has_value());
      !st)
    return st.error();
  if (isolate) {
    if (auto st = exec(sql::savepoint, "append: SAVEPOINT"); !st) return st.error();
  }
  if (auto st = insert_events(r, *cur, now); !st) {
    if (isolate) {
      // Only this request's rows go, unless SQLite already rolled the whole transaction back.
      if (in_transaction()) {
        (void)exec(sql::rollback_to, "append: ROLLBACK TO");
        (void)exec(sql::release, "append: RELEASE");
      }
    } else {
      // A failed statement takes back only its own changes: the request's earlier rows may
      // stay, and the caller starts the batch over with savepoints.
      partial = true;
    }
    return st.error();
  }
  if (isolate) {
    if (auto st = exec(sql::release, "append: RELEASE"); !st) return st.error();
  }
  return append_result{cur->version + 1, cur->version + r.events.size(), now};
}

std::optional<std::vector<expected<append_result>>>
sqlite_backend::append_requests(std::span<const append_request> batch, time_point now,
                                bool isolate) {
  std::vector<expected<append_result>> out;
  out.reserve(batch.size());
  for (const auto& r : batch) {
    bool partial = false;
    out.push_back(append_one(r, now, isolate, partial));
    if (!in_transaction()) return out; // the caller fails the whole transaction
    if (partial) return std::nullopt;
  }
  return out;
}

std::vector<expected<append_result>>
sqlite_backend::append_batch(std::span<const append_request> batch, time_point now) {
  if (batch.empty()) return {};
  std::vector<expected<append_result>> out;
  hub_job job;
  job.run = [&](sqlite_backend& c) {
    // The requests were checked (versions, tenants) before anything is written, so a write
    // rarely fails; the fast path therefore takes no savepoint per request (two statements
    // each) and falls back to savepoints only when a write did fail half-way through one.
    auto r = c.append_requests(batch, now, false);
    if (!r && c.in_transaction()) {
      (void)c.exec(sql::job_rollback_to, "append_batch: ROLLBACK TO");
      r = c.append_requests(batch, now, true);
    }
    if (!r || r->size() != batch.size()) {
      if (!c.in_transaction())
        job.lost = r && !r->empty() && !r->back() ? r->back().error()
                                                  : c.corrupt("append_batch: transaction lost");
      else
        job.lost = c.corrupt("append_batch: a request left rows half-written");
      return false;
    }
    out = std::move(*r);
    return true; // each request's error is its own; the others commit
  };
  job.fail = [&](const error& e) { out.assign(batch.size(), expected<append_result>{e}); };
  submit(job);
  return out;
}

expected<std::vector<event_record>>
sqlite_backend::read(std::string_view stream, std::uint64_t from_version, std::size_t max) {
  std::vector<event_record> out;
  if (max == 0) return out;
  auto s = prepared(sql::read, "read");
  if (!s) return s.error();
  stmt_use q{*s};
  q.text(1, stream).integer(2, clamp_i64(from_version)).integer(3, clamp_i64(max));
  int rc = SQLITE_OK;
  while ((rc = q.step()) == SQLITE_ROW) {
    event_record e;
    e.stream = std::string{stream};
    e.version = q.u64(0);
    e.tenant = q.str(1);
    e.type = q.str(2);
    e.payload = q.bytes(3);
    if (!q.digest(4, e.envelope_hash))
      return corrupt("stream " + e.stream + " version " + std::to_string(e.version)
                     + ": envelope_hash is not 32 bytes");
    e.committed_at = time_of(q.i64(5));
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return fail("read stream " + std::string{stream}, rc);
  // Compaction removes a prefix: events starting at from_version cannot have lost any. Otherwise
  // look at the stream (after the read, so a compaction in between shows).
  if (out.empty() || out.front().version != std::max<std::uint64_t>(from_version, 1)) {
    auto st = stream_get(stream);
    if (!st) return st.error();
    if (auto ok = check_not_pruned(stream, from_version, st->pruned_through); !ok)
      return ok.error();
  }
  return out;
}

expected<std::uint64_t> sqlite_backend::version(std::string_view stream) {
  auto st = stream_get(stream);
  if (!st) return st.error();
  return st->version;
}

expected<std::optional<stream_info>> sqlite_backend::stream(std::string_view stream) {
  auto st = stream_get(stream);
  if (!st) return st.error();
  if (!st->exists) return std::optional<stream_info>{};
  return std::optional<stream_info>{stream_info{std::string{stream}, st->tenant, st->version,
                                                st->pruned_through, st->finished_at}};
}

expected<compact_result> sqlite_backend::compact(const compact_options& opts) {
  compact_result out;
  if (opts.max_streams == 0) return out;
  const auto cutoff = ns_of(opts.now - opts.retention);
  const auto limit = clamp_i64(opts.max_streams);
  auto abort = [&](error e) -> error {
    rollback();
    return e;
  };
  if (auto st = exec(sql::begin, "compact: BEGIN IMMEDIATE"); !st) return st.error();

  // Whole finished streams past the retention period.
  std::vector<std::string> due;
  {
    auto s = prepared(sql::finished_due, "compact: find finished streams");
    if (!s) return abort(s.error());
    stmt_use q{*s};
    q.integer(1, cutoff).integer(2, limit);
    int rc = SQLITE_OK;
    while ((rc = q.step()) == SQLITE_ROW)
      due.push_back(q.str(0));
    if (rc != SQLITE_DONE) return abort(fail("compact: find finished streams", rc));
  }
  for (const auto& stream : due) {
    for (sql id : {sql::events_delete_all, sql::snapshot_delete, sql::stream_delete}) {
      const auto op = "compact: delete finished stream " + stream;
      auto s = prepared(id, op);
      if (!s) return abort(s.error());
      stmt_use q{*s};
      q.text(1, stream);
      if (int rc = q.step(); rc != SQLITE_DONE) return abort(fail(op, rc));
      if (id == sql::events_delete_all)
        out.events_deleted += static_cast<std::uint64_t>(sqlite3_changes64(db_.get()));
    }
    ++out.streams_deleted;
  }

  // Events covered by a snapshot past the retention period.
  std::vector<std::pair<std::string, std::int64_t>> covered;
  {
    auto s = prepared(sql::snapshotted_due, "compact: find snapshotted streams");
    if (!s) return abort(s.error());
    stmt_use q{*s};
    q.integer(1, cutoff).integer(2, limit);
    int rc = SQLITE_OK;
    while ((rc = q.step()) == SQLITE_ROW)
      covered.emplace_back(q.str(0), q.i64(1));
    if (rc != SQLITE_DONE) return abort(fail("compact: find snapshotted streams", rc));
  }
  for (const auto& [stream, through] : covered) {
    for (sql id : {sql::events_prune, sql::stream_set_pruned}) {
      const auto op =
          "compact: prune stream " + stream + " through version " + std::to_string(through);
      auto s = prepared(id, op);
      if (!s) return abort(s.error());
      stmt_use q{*s};
      q.text(1, stream).integer(2, through);
      if (int rc = q.step(); rc != SQLITE_DONE) return abort(fail(op, rc));
      if (id == sql::events_prune)
        out.events_deleted += static_cast<std::uint64_t>(sqlite3_changes64(db_.get()));
    }
    ++out.streams_pruned;
  }
  if (auto st = exec(sql::commit, "compact: COMMIT"); !st) return abort(st.error());
  out.more = due.size() == opts.max_streams || covered.size() == opts.max_streams;
  return out;
}

expected<std::uint64_t> sqlite_backend::storage_bytes() {
  std::uint64_t total = 0;
  for (const auto& file : {path_, path_ + "-wal"}) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(file, ec);
    if (!ec)
      total += n;
    else if (file == path_)
      return internal_error("sqlite " + path_ + ": storage size: " + ec.message());
  }
  return total;
}

expected<std::vector<stream_info>> sqlite_backend::list_streams(std::string_view prefix,
                                                                std::string_view tenant,
                                                                std::string_view after,
                                                                std::size_t max) {
  std::vector<stream_info> out;
  if (max == 0) return out;
  const auto upper = prefix_upper_bound(prefix);
  const bool by_tenant = !tenant.empty();
  const sql id = by_tenant ? (upper ? sql::list_tenant_bounded : sql::list_tenant)
                           : (upper ? sql::list_all_bounded : sql::list_all);
  auto s = prepared(id, "list streams");
  if (!s) return s.error();
  stmt_use q{*s};
  // stream >= max(prefix, after) AND stream <> after: one range for the index to seek.
  q.text(1, std::max(prefix, after)).text(2, after).integer(5, clamp_i64(max));
  if (upper) q.text(3, *upper);
  if (by_tenant) q.text(4, tenant);
  int rc = SQLITE_OK;
  while ((rc = q.step()) == SQLITE_ROW) {
    stream_info info{q.str(0), q.str(1), q.u64(2), q.u64(3), std::nullopt};
    if (!q.is_null(4)) info.finished_at = time_of(q.i64(4));
    out.push_back(std::move(info));
  }
  if (rc != SQLITE_DONE) return fail("list streams", rc);
  return out;
}

// --- snapshots -------------------------------------------------------------------------------

status sqlite_backend::save_snapshot(const snapshot_record& s) {
  const std::string op = "save snapshot of stream " + s.stream;
  if (auto st = exec(sql::begin, op + ": BEGIN IMMEDIATE"); !st) return st;
  auto cur = stream_get(s.stream);
  status result =
      cur ? check_snapshot(s, cur->exists, cur->tenant, cur->version) : status{cur.error()};
  if (result) {
    if (auto up = prepared(sql::snapshot_upsert, op); !up) {
      result = up.error();
    } else {
      stmt_use q{*up};
      q.text(1, s.stream)
          .text(2, s.tenant)
          .integer(3, clamp_i64(s.version))
          .text(4, s.type)
          .blob(5, s.payload)
          .integer(6, ns_of(s.taken_at));
      if (int rc = q.step(); rc != SQLITE_DONE) result = fail(op, rc);
    }
  }
  if (result) result = exec(sql::commit, op + ": COMMIT");
  if (!result) rollback();
  return result;
}

expected<std::optional<snapshot_record>> sqlite_backend::load_snapshot(std::string_view stream) {
  const std::string op = "load snapshot of stream " + std::string{stream};
  auto s = prepared(sql::snapshot_get, op);
  if (!s) return s.error();
  stmt_use q{*s};
  q.text(1, stream);
  switch (int rc = q.step()) {
  case SQLITE_ROW: {
    snapshot_record r;
    r.stream = std::string{stream};
    r.tenant = q.str(0);
    r.version = q.u64(1);
    r.type = q.str(2);
    r.payload = q.bytes(3);
    r.taken_at = time_of(q.i64(4));
    return std::optional<snapshot_record>{std::move(r)};
  }
  case SQLITE_DONE:
    return std::optional<snapshot_record>{};
  default:
    return fail(op, rc);
  }
}

// --- audit chain -------------------------------------------------------------------------------

expected<audit_head> sqlite_backend::audit_last() {
  auto s = prepared(sql::audit_last, "audit_last");
  if (!s) return s.error();
  stmt_use q{*s};
  audit_head head;
  switch (int rc = q.step()) {
  case SQLITE_ROW:
    head.seq = q.u64(0);
    if (!q.digest(1, head.hash))
      return corrupt("audit_log seq " + std::to_string(head.seq) + ": hash is not 32 bytes");
    return head;
  case SQLITE_DONE:
    return head;
  default:
    return fail("audit_last", rc);
  }
}

status sqlite_backend::audit_rows(std::span<const audit_row> rows) {
  auto head = audit_last();
  if (!head) return head.error();
  if (auto st = check_audit_rows(*head, rows); !st) return st;
  auto ins = prepared(sql::audit_insert, "audit_append");
  if (!ins) return ins.error();
  for (const auto& r : rows) {
    stmt_use q{*ins};
    q.integer(1, clamp_i64(r.seq))
        .text(2, r.tenant)
        .integer(3, ns_of(r.ts))
        .text(4, r.actor)
        .text(5, r.action)
        .text(6, r.subject)
        .blob(7, r.record)
        .blob(8, r.prev_hash)
        .blob(9, r.hash);
    if (int rc = q.step(); rc != SQLITE_DONE)
      return fail("audit_append seq " + std::to_string(r.seq), rc);
  }
  return {};
}

status sqlite_backend::audit_append(std::span<const audit_row> rows) {
  if (rows.empty()) return {};
  status result;
  hub_job job;
  job.piggyback = true;
  job.run = [&](sqlite_backend& c) {
    result = c.audit_rows(rows);
    if (!result && !c.in_transaction()) job.lost = result.error();
    return result.has_value();
  };
  job.fail = [&](const error& e) { result = e; };
  submit(job);
  return result;
}

// --- group commit across connections -----------------------------------------------------------

void sqlite_backend::submit(hub_job& job) {
  std::unique_lock lock{hub_->m};
  hub_->queue.push_back(&job);
  job.from = std::this_thread::get_id();
  // A carrier on this very thread cannot commit while this one waits (one thread writing the
  // journal and the audit chain in turn, as the benchmarks' store replay does).
  if (job.piggyback && (hub_->busy || (hub_->carrier_active && hub_->carrier != job.from))) {
    // Another connection is committing, or committed appends last and is likely to commit
    // again soon (the journal under load commits back to back, and between two commits holds
    // for its appenders' next appends): let one of its commits carry this job rather than
    // commit it alone, with a sync of its own that the journal's next commit would wait for.
    // The audit writer's callers do not wait for its acknowledgement; appenders wait for the
    // journal's. When nothing else has committed since the last job that waited in vain (a
    // quiet node, a single thread), the job is committed at once.
    hub_->cv.wait_for(lock, k_piggyback_wait, [&] { return job.done; });
  }
  while (!job.done) {
    if (hub_->busy) {
      hub_->cv.wait(lock, [&] { return job.done || !hub_->busy; });
      continue;
    }
    hub_->busy = true;
    std::vector<hub_job*> jobs;
    jobs.swap(hub_->queue);
    lock.unlock();
    commit_group(jobs);
    lock.lock();
    hub_->carrier_active = false;
    for (const auto* j : jobs)
      if (!j->piggyback) {
        hub_->carrier_active = true;
        hub_->carrier = j->from;
      }
    for (auto* j : jobs)
      j->done = true;
    hub_->busy = false;
    hub_->cv.notify_all();
  }
}

void sqlite_backend::commit_group(std::vector<hub_job*>& jobs) {
  auto fail_all = [&](const error& e) {
    for (auto* j : jobs)
      j->fail(e);
  };
  if (auto st = exec(sql::begin, "group commit: BEGIN IMMEDIATE"); !st) return fail_all(st.error());
  for (auto* j : jobs) {
    if (auto st = exec(sql::job_savepoint, "group commit: SAVEPOINT"); !st) {
      rollback();
      return fail_all(st.error());
    }
    const bool keep = j->run(*this);
    if (!in_transaction()) {
      // An I/O error, a full disk or similar: SQLite rolled back everything, other jobs too.
      return fail_all(j->lost ? *j->lost
                              : corrupt("group commit: the transaction was rolled back"));
    }
    if (j->lost) { // the job could not keep its own writes apart: nothing of the batch stays
      rollback();
      return fail_all(*j->lost);
    }
    if (!keep) (void)exec(sql::job_rollback_to, "group commit: ROLLBACK TO");
    if (auto st = exec(sql::job_release, "group commit: RELEASE"); !st) {
      rollback();
      return fail_all(st.error());
    }
  }
  if (auto st = exec(sql::commit, "group commit: COMMIT"); !st) {
    rollback();
    fail_all(st.error());
  }
}

expected<std::vector<audit_row>> sqlite_backend::audit_read(std::uint64_t from_seq,
                                                            std::size_t max) {
  std::vector<audit_row> out;
  // Verification reads the chain in pages of thousands of rows: fewer regrowths (each moves
  // every row read so far).
  out.reserve(std::min<std::size_t>(max, 4096));
  auto st = audit_scan(from_seq, max, [&out](const audit_row_view& r) {
    out.push_back({r.seq, std::string{r.tenant}, r.ts, std::string{r.actor}, std::string{r.action},
                   std::string{r.subject}, std::string{r.record}, r.prev_hash, r.hash});
    return true;
  });
  if (!st) return st.error();
  return out;
}

status sqlite_backend::audit_scan(std::uint64_t from_seq, std::size_t max,
                                  const std::function<bool(const audit_row_view&)>& fn) {
  if (max == 0) return {};
  auto s = prepared(sql::audit_read, "audit_scan");
  if (!s) return s.error();
  stmt_use q{*s};
  q.integer(1, clamp_i64(from_seq)).integer(2, clamp_i64(max));
  int rc = SQLITE_OK;
  audit_row_view r;
  while ((rc = q.step()) == SQLITE_ROW) {
    r.seq = q.u64(0);
    r.tenant = q.text_view(1);
    r.ts = time_of(q.i64(2));
    r.actor = q.text_view(3);
    r.action = q.text_view(4);
    r.subject = q.text_view(5);
    r.record = q.blob_view(6);
    if (!q.digest(7, r.prev_hash) || !q.digest(8, r.hash))
      return corrupt("audit_log seq " + std::to_string(r.seq) + ": a hash is not 32 bytes");
    if (!fn(r)) return {};
  }
  if (rc != SQLITE_DONE) return fail("audit_scan", rc);
  return {};
}

// --- schema ------------------------------------------------------------------------------------

expected<int> sqlite_backend::schema_version() {
  auto s = prepared(sql::schema_version, "schema_version");
  if (!s) return s.error();
  stmt_use q{*s};
  if (int rc = q.step(); rc != SQLITE_ROW) return fail("schema_version", rc);
  return static_cast<int>(q.i64(0));
}

status sqlite_backend::apply_migration(const migration& m, bool up) {
  const std::string op =
      "migration " + std::to_string(m.number) + " (" + m.name + ") " + (up ? "up" : "down");
  if (auto st = exec(sql::begin, op + ": BEGIN IMMEDIATE"); !st) return st;
  // Another connection may have taken this step since migrate_to read the version (a node's
  // journal and audit writer open a fresh store at the same moment): re-read it under the lock.
  auto now = schema_version();
  if (!now || (up ? *now >= m.number : *now < m.number)) {
    rollback();
    return now ? status{} : status{now.error()};
  }
  const std::string script{up ? m.up : m.down};
  status result = exec_script(script.c_str(), op);
  if (result) {
    auto s = prepared(up ? sql::migration_insert : sql::migration_delete, op);
    if (!s) {
      result = s.error();
    } else {
      stmt_use q{*s};
      q.integer(1, m.number);
      if (up) q.text(2, m.name);
      if (int rc = q.step(); rc != SQLITE_DONE) result = fail(op + ": schema_migrations", rc);
    }
  }
  if (result) result = exec(sql::commit, op + ": COMMIT");
  if (!result) rollback();
  return result;
}

status sqlite_backend::migrate_to(int target) {
  const auto all = migrations_for("sqlite");
  const int latest = static_cast<int>(all.size());
  if (target < 0 || target > latest)
    return validation_error("sqlite " + path_ + ": migrate to " + std::to_string(target)
                            + ": this build knows schema versions 0.." + std::to_string(latest));
  auto current = schema_version();
  if (!current) return std::move(current).error();
  if (*current > latest)
    return validation_error("sqlite " + path_ + ": schema version " + std::to_string(*current)
                            + " is newer than this build's " + std::to_string(latest));
  // Cached statements may name tables a migration drops or alters.
  for (auto& s : stmts_)
    s.reset();
  for (int v = *current; v < target; ++v) {
    if (auto st = apply_migration(all[static_cast<std::size_t>(v)], true); !st) return st;
  }
  for (int v = *current; v > target; --v) {
    if (auto st = apply_migration(all[static_cast<std::size_t>(v - 1)], false); !st) return st;
  }
  return {};
}

expected<std::string> sqlite_backend::pragma(std::string_view name) {
  const std::string text = "PRAGMA " + std::string{name};
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_.get(), text.c_str(), -1, &raw, nullptr);
  stmt_ptr s{raw};
  if (rc != SQLITE_OK) return fail(text, rc);
  rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE) return std::string{};
  if (rc != SQLITE_ROW) return fail(text, rc);
  const auto* v = reinterpret_cast<const char*>(sqlite3_column_text(s.get(), 0));
  return std::string{v != nullptr ? v : ""};
}

} // namespace

expected<std::unique_ptr<backend>> open_sqlite(const sqlite_options& opts) {
  return sqlite_backend::open(opts);
}

expected<std::string> sqlite_pragma(backend& b, std::string_view name) {
  auto* s = dynamic_cast<sqlite_backend*>(&b);
  if (s == nullptr)
    return validation_error("sqlite_pragma: " + b.location() + " is a " + std::string{b.kind()}
                            + " backend, not sqlite");
  return s->pragma(name);
}

} // namespace af::store
