// The PostgreSQL backend (libpq): a bounded connection pool, prepared statements with binary
// parameters, and group commit as one transaction per batch with set-based inserts.
#include "af/store/backend.hpp"

#include "migrations.hpp"
#include "store_checks.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <utility>

namespace af::store {

namespace {

// Type OIDs from pg_type.dat; fixed since PostgreSQL 7.
constexpr Oid k_int8 = 20;
constexpr Oid k_text = 25;
constexpr Oid k_bytea = 17;
constexpr Oid k_int8_array = 1016;
constexpr Oid k_text_array = 1009;
constexpr Oid k_bytea_array = 1001;

constexpr std::int64_t k_int8_max = std::numeric_limits<std::int64_t>::max();

// Serializes migrations of concurrent nodes (pg_advisory_xact_lock key: "agentflo" in ASCII).
constexpr const char* k_migration_lock = "SELECT pg_advisory_xact_lock(7018986764651259759)";

constexpr const char* k_create_schema_migrations =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer NOT NULL PRIMARY KEY CHECK (version >= 1),"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

// --- prepared statements ---------------------------------------------------------------------

enum stmt : std::size_t {
  s_lock_streams,
  s_insert_events,
  s_upsert_streams,
  s_read_events,
  s_stream_get,
  s_list_streams,
  s_save_snapshot,
  s_load_snapshot,
  s_delete_finished,
  s_prune_snapshotted,
  s_storage_bytes,
  s_audit_last,
  s_audit_insert,
  s_audit_read,
  s_count,
};

struct stmt_def {
  const char* name;
  const char* sql;
  int nparams;
  std::array<Oid, 10> types;
};

constexpr std::array<stmt_def, s_count> k_stmts{{
    {"af_lock_streams",
     "SELECT stream, version, tenant, finished_at FROM streams "
     "WHERE stream = ANY($1) ORDER BY stream FOR UPDATE",
     1,
     {k_text_array}},
    {"af_insert_events",
     "INSERT INTO events (stream, version, tenant, type, payload, envelope_hash, committed_at) "
     "SELECT s, v, t, ty, p, h, $7 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], "
     "$5::bytea[], $6::bytea[]) AS u(s, v, t, ty, p, h)",
     7,
     {k_text_array, k_int8_array, k_text_array, k_text_array, k_bytea_array, k_bytea_array,
      k_int8}},
    {"af_upsert_streams",
     "INSERT INTO streams (stream, tenant, version, finished_at) SELECT s, t, v, NULLIF(f, 0) "
     "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(s, t, v, f) "
     "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
     "finished_at = excluded.finished_at",
     4,
     {k_text_array, k_text_array, k_int8_array, k_int8_array}},
    {"af_read_events",
     "SELECT version, tenant, type, payload, envelope_hash, committed_at FROM events "
     "WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3",
     3,
     {k_text, k_int8, k_int8}},
    {"af_stream_get",
     "SELECT version, tenant, finished_at, pruned_through FROM streams WHERE stream = $1",
     1,
     {k_text}},
    {"af_list_streams",
     "SELECT stream, tenant, version, pruned_through, finished_at FROM streams "
     "WHERE stream >= $1 AND starts_with(stream, $1) "
     "AND stream > $3 AND ($2 = '' OR tenant = $2) ORDER BY stream LIMIT $4",
     4,
     {k_text, k_text, k_text, k_int8}},
    {"af_save_snapshot",
     "INSERT INTO snapshots (stream, tenant, version, type, payload, taken_at) "
     "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream) DO UPDATE SET "
     "tenant = excluded.tenant, version = excluded.version, "
     "type = excluded.type, payload = excluded.payload, taken_at = excluded.taken_at",
     6,
     {k_text, k_text, k_int8, k_text, k_bytea, k_int8}},
    {"af_load_snapshot",
     "SELECT tenant, version, type, payload, taken_at FROM snapshots WHERE stream = $1",
     1,
     {k_text}},
    // Retention: one statement deletes up to $2 finished streams whole, another prunes up to $2
    // streams' snapshotted events; each returns (streams, events).
    {"af_delete_finished",
     "WITH due AS (SELECT stream FROM streams WHERE finished_at <= $1 ORDER BY finished_at "
     "LIMIT $2 FOR UPDATE), "
     "ev AS (DELETE FROM events WHERE stream IN (SELECT stream FROM due) RETURNING 1), "
     "sn AS (DELETE FROM snapshots WHERE stream IN (SELECT stream FROM due)), "
     "st AS (DELETE FROM streams WHERE stream IN (SELECT stream FROM due) RETURNING 1) "
     "SELECT (SELECT count(*) FROM st), (SELECT count(*) FROM ev)",
     2,
     {k_int8, k_int8}},
    {"af_prune_snapshotted",
     "WITH due AS (SELECT s.stream, s.version FROM snapshots AS s JOIN streams AS t "
     "ON t.stream = s.stream WHERE s.taken_at <= $1 AND s.version > t.pruned_through "
     "ORDER BY s.taken_at LIMIT $2 FOR UPDATE OF t), "
     "ev AS (DELETE FROM events AS e USING due WHERE e.stream = due.stream "
     "AND e.version <= due.version RETURNING 1), "
     "up AS (UPDATE streams AS t SET pruned_through = due.version FROM due "
     "WHERE t.stream = due.stream RETURNING 1) "
     "SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM ev)",
     2,
     {k_int8, k_int8}},
    {"af_storage_bytes",
     "SELECT coalesce(sum(pg_total_relation_size(c)), 0)::bigint FROM unnest(ARRAY['streams', "
     "'events', 'snapshots', 'audit_log']) AS n, to_regclass(n) AS c WHERE c IS NOT NULL",
     0,
     {}},
    {"af_audit_last", "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", 0, {}},
    {"af_audit_insert",
     "INSERT INTO audit_log (seq, tenant, ts, actor, action, subject, record, prev_hash, hash) "
     "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], "
     "$6::text[], $7::bytea[], $8::bytea[], $9::bytea[])",
     9,
     {k_int8_array, k_text_array, k_int8_array, k_text_array, k_text_array, k_text_array,
      k_bytea_array, k_bytea_array, k_bytea_array}},
    {"af_audit_read",
     "SELECT seq, tenant, ts, actor, action, subject, record, prev_hash, hash FROM audit_log "
     "WHERE seq >= $1 ORDER BY seq LIMIT $2",
     2,
     {k_int8, k_int8}},
}};
static_assert(s_count <= 32, "prepared-statement flags are a 32-bit mask");

// --- small helpers ---------------------------------------------------------------------------

struct conn_closer {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_closer>;

struct result_clearer {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, result_clearer>;

std::int64_t ns_of(time_point t) { return t.time_since_epoch().count(); }
time_point time_of(std::int64_t ns) { return time_point{duration{ns}}; }

std::int64_t clamp_i64(std::uint64_t v) {
  return v > static_cast<std::uint64_t>(k_int8_max) ? k_int8_max : static_cast<std::int64_t>(v);
}

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

void replace_all(std::string& s, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + with.size()))
    s.replace(at, what.size(), with);
}

// libpq messages end in newlines and may span lines ("\tIs the server running ..."): one line.
std::string one_line(std::string_view msg) {
  std::string out;
  bool space = false;
  for (char ch : msg) {
    if (ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += ch;
  }
  return out;
}

// PostgreSQL text must be valid UTF-8 without NUL bytes (client_encoding is UTF8): checked here so
// one bad request fails alone instead of failing the batch's transaction.
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  const auto n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F; // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F; // nothing above U+10FFFF
    } else {
      return false;
    }
    if (i + len > n) return false;
    const auto c1 = static_cast<unsigned char>(s[i + 1]);
    if (c1 < lo || c1 > hi) return false;
    for (std::size_t k = 2; k < len; ++k) {
      const auto ck = static_cast<unsigned char>(s[i + k]);
      if (ck < 0x80 || ck > 0xBF) return false;
    }
    i += len;
  }
  return true;
}

std::optional<error> check_text(std::string_view what, std::string_view field,
                                std::string_view value) {
  if (valid_utf8(value)) return std::nullopt;
  return validation_error(std::string{what} + ": " + std::string{field}
                          + " is not valid UTF-8 text (or contains a NUL byte)");
}

void put_be32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out += static_cast<char>((v >> shift) & 0xFF);
}

void put_be64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out += static_cast<char>((v >> shift) & 0xFF);
}

std::uint64_t get_be64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string_view as_view(const sha256_digest& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

/// A one-dimensional array in PostgreSQL's binary format (array_recv): header, then each element
/// as a 4-byte length and its bytes.
class binary_array {
public:
  explicit binary_array(Oid elem) : elem_(elem) {}
  void add(std::string_view bytes) {
    put_be32(body_, static_cast<std::uint32_t>(bytes.size()));
    body_.append(bytes);
    ++count_;
  }
  void add_int8(std::int64_t v) {
    put_be32(body_, 8);
    put_be64(body_, static_cast<std::uint64_t>(v));
    ++count_;
  }
  [[nodiscard]] std::string finish() const {
    std::string out;
    out.reserve(20 + body_.size());
    put_be32(out, count_ == 0 ? 0 : 1); // dimensions (an empty array has none)
    put_be32(out, 0);                   // no NULLs
    put_be32(out, elem_);
    if (count_ > 0) {
      put_be32(out, count_);
      put_be32(out, 1); // lower bound
    }
    out += body_;
    return out;
  }

private:
  Oid elem_;
  std::string body_;
  std::uint32_t count_ = 0;
};

/// Binary parameters of one statement; views must outlive the call, owned values live here.
class params {
public:
  void add(std::string_view bytes) { views_.push_back(bytes); }
  void add_int8(std::int64_t v) {
    auto& s = owned_.emplace_back();
    put_be64(s, static_cast<std::uint64_t>(v));
    views_.push_back(s);
  }
  void add_owned(std::string bytes) { views_.push_back(owned_.emplace_back(std::move(bytes))); }

  [[nodiscard]] int size() const { return static_cast<int>(views_.size()); }
  void fill(std::vector<const char*>& values, std::vector<int>& lengths,
            std::vector<int>& formats) const {
    for (auto v : views_) {
      values.push_back(v.data() != nullptr ? v.data() : ""); // NULL would mean SQL NULL
      lengths.push_back(static_cast<int>(v.size()));
      formats.push_back(1);
    }
  }

private:
  std::vector<std::string_view> views_;
  std::deque<std::string> owned_; // stable addresses
};

/// Typed access to a binary-format result.
struct rows {
  const PGresult* r;
  [[nodiscard]] int count() const { return PQntuples(r); }
  [[nodiscard]] std::string_view bytes(int row, int col) const {
    return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
  }
  [[nodiscard]] std::string text(int row, int col) const { return std::string{bytes(row, col)}; }
  [[nodiscard]] bool null(int row, int col) const { return PQgetisnull(r, row, col) != 0; }
  [[nodiscard]] std::int64_t int8(int row, int col) const {
    auto b = bytes(row, col);
    return b.size() == 8 ? static_cast<std::int64_t>(get_be64(b.data())) : 0;
  }
  /// A stored hash; false (and a zero digest) when the column is not 32 bytes.
  bool digest(int row, int col, sha256_digest& out) const {
    auto b = bytes(row, col);
    out = {};
    std::memcpy(out.data(), b.data(), std::min(b.size(), out.size()));
    return b.size() == out.size();
  }
};

// --- errors ----------------------------------------------------------------------------------

errc kind_of_sqlstate(std::string_view state) {
  if (state.size() != 5) return errc::internal;
  const auto cls = state.substr(0, 2);
  if (state == "57014") return errc::timeout;   // query_canceled (statement_timeout)
  if (state == "23505") return errc::conflict;  // unique_violation
  if (state == "42501") return errc::forbidden; // insufficient_privilege
  if (state == "3D000") return errc::not_found; // invalid_catalog_name (no database)
  if (state == "40001" || state == "40P01") return errc::transient; // serialization, deadlock
  if (state == "55P03") return errc::transient;                     // lock_not_available
  // Connection exceptions, insufficient resources, operator intervention (shutdown, restart).
  if (cls == "08" || cls == "53" || cls == "57") return errc::transient;
  if (cls == "28") return errc::unauthorized;
  if (cls == "22" || cls == "54" || state == "23514") return errc::validation; // bad data, limits
  return errc::internal;
}

// A failed connection attempt carries no SQLSTATE: classify its message (libpq's and the
// server's FATAL text, English in the C locale the server and libpq default to).
errc kind_of_connect_failure(std::string_view msg) {
  if (contains(msg, "password authentication failed") || contains(msg, "authentication failed")
      || contains(msg, "no password supplied") || contains(msg, "pg_hba.conf")
      || (contains(msg, "role \"") && contains(msg, "does not exist"))
      || contains(msg, "password is required"))
    return errc::unauthorized;
  if (contains(msg, "database \"") && contains(msg, "does not exist")) return errc::not_found;
  if (contains(msg, "permission denied")) return errc::forbidden;
  if (contains(msg, "invalid connection option") || contains(msg, "invalid integer value")
      || contains(msg, "invalid port number") || contains(msg, "invalid URI")
      || contains(msg, "invalid sslmode value") || contains(msg, "invalid value for parameter"))
    return errc::validation;
  return errc::transient; // refused, unreachable, DNS, timeout, starting up, shutting down
}

// --- URLs ------------------------------------------------------------------------------------

bool is_uri(std::string_view url) {
  return url.starts_with("postgres://") || url.starts_with("postgresql://");
}

// The URL for messages and location(): the password removed (userinfo and ?password=).
std::string redact_uri(std::string_view url) {
  const auto scheme_end = url.find("://") + 3;
  auto authority_end = url.find_first_of("/?", scheme_end);
  if (authority_end == std::string_view::npos) authority_end = url.size();
  std::string out{url.substr(0, scheme_end)};
  auto authority = url.substr(scheme_end, authority_end - scheme_end);
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    auto userinfo = authority.substr(0, at);
    out += userinfo.substr(0, userinfo.find(':'));
    out += authority.substr(at);
  } else {
    out += authority;
  }
  auto rest = url.substr(authority_end);
  auto q = rest.find('?');
  out += rest.substr(0, q);
  if (q == std::string_view::npos) return out;
  auto query = rest.substr(q + 1);
  char sep = '?';
  while (!query.empty()) {
    auto amp = query.find('&');
    auto item = query.substr(0, amp);
    if (!item.starts_with("password=")) {
      out += sep;
      out += item;
      sep = '&';
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

// For "key=value" conninfo strings: a URL-like description from the parsed options.
std::string describe_conninfo(PQconninfoOption* opts) {
  std::string user, host, port, db;
  for (auto* o = opts; o != nullptr && o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    std::string_view k = o->keyword;
    if (k == "user") user = o->val;
    if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
    if (k == "port") port = o->val;
    if (k == "dbname") db = o->val;
  }
  std::string out = "postgres://";
  if (!user.empty()) out += user + "@";
  out += host;
  if (!port.empty()) out += ":" + port;
  if (!db.empty()) out += "/" + db;
  return out;
}

// --- the backend -----------------------------------------------------------------------------

struct connection {
  conn_ptr pg;
  std::uint32_t prepared = 0; // bit i: k_stmts[i] is prepared on this connection
};

/// What an operation did before it failed: a broken connection is retried on a fresh one only
/// when nothing can have been committed.
struct attempt {
  bool commit_sent = false;
};

void ignore_notice(void*, const char*) {}

class postgres_backend final : public backend {
public:
  postgres_backend(postgres_options opts, std::string location, std::string password)
      : opts_(std::move(opts)), location_(std::move(location)), password_(std::move(password)),
        migrations_(migrations_for("postgres")) {}

  ~postgres_backend() override = default;

  [[nodiscard]] std::string_view kind() const noexcept override { return "postgres"; }
  [[nodiscard]] const std::string& location() const noexcept override { return location_; }

  /// Connects once (so a bad URL, refused login or unreachable server shows at open) and
  /// applies pending migrations when asked.
  status open() {
    if (auto st = run("open", [](connection&, attempt&) -> status { return {}; }); !st) return st;
    auto current = schema_version();
    if (!current) return current.error();
    if (*current > latest_schema_version())
      return fail(errc::validation, "open",
                  "schema version " + std::to_string(*current) + " is newer than this build's "
                      + std::to_string(latest_schema_version())
                      + " (opened by a newer AgentFlow?)");
    if (!opts_.migrate || *current == latest_schema_version()) return {};
    return migrate_to(latest_schema_version());
  }

  // --- journal -------------------------------------------------------------------------------

  std::vector<expected<append_result>> append_batch(std::span<const append_request> batch,
                                                    time_point now) override {
    std::vector<std::optional<error>> invalid(batch.size());
    bool any_valid = false;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      invalid[i] = check_request(batch[i]);
      any_valid = any_valid || !invalid[i];
    }
    std::vector<expected<append_result>> out;
    out.reserve(batch.size());
    if (!any_valid) {
      for (auto& e : invalid)
        out.emplace_back(std::move(*e));
      return out;
    }
    auto done = run("append_batch", [&](connection& c, attempt& a) {
      // A concurrent writer creating the same new stream, or a deadlock, aborts the transaction:
      // run it again, when the stream's row exists and its lock serializes the writers.
      for (int tries = 1;; ++tries) {
        bool race = false;
        auto r = try_append(c, a, batch, invalid, now, race);
        if (r || !race || tries == 5 || PQstatus(c.pg.get()) == CONNECTION_BAD) return r;
      }
    });
    if (!done) {
      for (auto& e : invalid) {
        if (e)
          out.emplace_back(std::move(*e));
        else
          out.emplace_back(done.error());
      }
      return out;
    }
    return std::move(*done);
  }

  expected<std::vector<event_record>> read(std::string_view stream, std::uint64_t from_version,
                                           std::size_t max) override {
    if (auto e = check_text("read", "stream", stream)) return *e;
    if (max == 0) return std::vector<event_record>{};
    const std::string op = "read stream " + std::string{stream};
    return run(op, [&](connection& c, attempt&) -> expected<std::vector<event_record>> {
      params p;
      p.add(stream);
      p.add_int8(clamp_i64(std::max<std::uint64_t>(from_version, 1)));
      p.add_int8(clamp_i64(max));
      auto res = exec(c, s_read_events, p, op);
      if (!res) return res.error();
      rows r{res->get()};
      std::vector<event_record> out;
      out.reserve(static_cast<std::size_t>(r.count()));
      for (int i = 0; i < r.count(); ++i) {
        auto& e = out.emplace_back();
        e.stream = std::string{stream};
        e.version = static_cast<std::uint64_t>(r.int8(i, 0));
        e.tenant = r.text(i, 1);
        e.type = r.text(i, 2);
        e.payload = r.text(i, 3);
        if (!r.digest(i, 4, e.envelope_hash))
          return fail(errc::internal, op,
                      "stream " + std::string{stream} + " version " + std::to_string(e.version)
                          + ": envelope_hash is not 32 bytes");
        e.committed_at = time_of(r.int8(i, 5));
      }
      // Compaction removes a prefix: events starting at from_version cannot have lost any.
      // Otherwise look at the stream (after the read, so a compaction in between shows).
      if (out.empty() || out.front().version != std::max<std::uint64_t>(from_version, 1)) {
        auto st = stream_get(c, stream, op);
        if (!st) return st.error();
        if (auto ok = check_not_pruned(stream, from_version, st->pruned_through); !ok)
          return ok.error();
      }
      return out;
    });
  }

  expected<std::uint64_t> version(std::string_view stream) override {
    if (auto e = check_text("version", "stream", stream)) return *e;
    return run("version", [&](connection& c, attempt&) -> expected<std::uint64_t> {
      auto st = stream_get(c, stream, "version of stream " + std::string{stream});
      if (!st) return st.error();
      return st->version;
    });
  }

  expected<std::optional<stream_info>> stream(std::string_view stream) override {
    if (auto e = check_text("stream", "stream", stream)) return *e;
    const std::string op = "stream " + std::string{stream};
    return run(op, [&](connection& c, attempt&) -> expected<std::optional<stream_info>> {
      auto st = stream_get(c, stream, op);
      if (!st) return st.error();
      if (!st->exists) return std::optional<stream_info>{};
      return std::optional<stream_info>{stream_info{std::string{stream}, st->tenant, st->version,
                                                    st->pruned_through, st->finished_at}};
    });
  }

  expected<compact_result> compact(const compact_options& opts) override {
    compact_result out;
    if (opts.max_streams == 0) return out;
    auto done = run("compact", [&](connection& c, attempt& a) -> expected<compact_result> {
      compact_result res;
      auto abort = [&](error e) -> error {
        rollback(c);
        return e;
      };
      params p;
      p.add_int8(ns_of(opts.now - opts.retention));
      p.add_int8(clamp_i64(opts.max_streams));
      if (auto st = exec_sql(c, "BEGIN", "compact: begin"); !st) return abort(st.error());
      auto del = exec(c, s_delete_finished, p, "compact: delete finished streams");
      if (!del) return abort(del.error());
      auto prune = exec(c, s_prune_snapshotted, p, "compact: prune snapshotted events");
      if (!prune) return abort(prune.error());
      rows d{del->get()};
      rows q{prune->get()};
      res.streams_deleted = static_cast<std::uint64_t>(d.int8(0, 0));
      res.streams_pruned = static_cast<std::uint64_t>(q.int8(0, 0));
      res.events_deleted =
          static_cast<std::uint64_t>(d.int8(0, 1)) + static_cast<std::uint64_t>(q.int8(0, 1));
      res.more = res.streams_deleted == opts.max_streams || res.streams_pruned == opts.max_streams;
      a.commit_sent = true;
      if (auto st = exec_sql(c, "COMMIT", "compact: commit"); !st) return abort(st.error());
      return res;
    });
    if (!done) return done.error();
    out = *done;
    if (opts.reclaim && out.streams_deleted + out.streams_pruned > 0) {
      // VACUUM cannot run inside a transaction block: on its own, after the commit.
      auto vac = run("compact: vacuum", [&](connection& c, attempt&) -> status {
        // VACUUM may take longer than statement_timeout allows ordinary statements.
        if (auto st = exec_sql(c, "SET statement_timeout = 0", "compact: VACUUM"); !st) return st;
        auto st = exec_sql(c, "VACUUM streams, events, snapshots", "compact: VACUUM");
        (void)exec_sql(c, "RESET statement_timeout", "compact: VACUUM");
        return st;
      });
      if (!vac) return vac.error();
    }
    return out;
  }

  expected<std::uint64_t> storage_bytes() override {
    return run("storage_bytes", [&](connection& c, attempt&) -> expected<std::uint64_t> {
      auto res = exec(c, s_storage_bytes, params{}, "storage_bytes");
      if (!res) return res.error();
      return static_cast<std::uint64_t>(rows{res->get()}.int8(0, 0));
    });
  }

  expected<std::vector<stream_info>> list_streams(std::string_view prefix, std::string_view tenant,
                                                  std::string_view after,
                                                  std::size_t max) override {
    for (auto [field, value] : {std::pair<const char*, std::string_view>{"prefix", prefix},
                                {"tenant", tenant},
                                {"after", after}})
      if (auto e = check_text("list_streams", field, value)) return *e;
    if (max == 0) return std::vector<stream_info>{};
    return run("list_streams", [&](connection& c, attempt&) -> expected<std::vector<stream_info>> {
      params p;
      p.add(prefix);
      p.add(tenant);
      p.add(after);
      p.add_int8(clamp_i64(max));
      auto res = exec(c, s_list_streams, p, "list_streams");
      if (!res) return res.error();
      rows r{res->get()};
      std::vector<stream_info> out;
      out.reserve(static_cast<std::size_t>(r.count()));
      for (int i = 0; i < r.count(); ++i) {
        stream_info info{r.text(i, 0), r.text(i, 1), static_cast<std::uint64_t>(r.int8(i, 2)),
                         static_cast<std::uint64_t>(r.int8(i, 3)), std::nullopt};
        if (!r.null(i, 4)) info.finished_at = time_of(r.int8(i, 4));
        out.push_back(std::move(info));
      }
      return out;
    });
  }

  // --- snapshots -----------------------------------------------------------------------------

  status save_snapshot(const snapshot_record& s) override {
    if (s.stream.empty()) return check_snapshot(s, false, {}, 0);
    const std::string op = "save snapshot of stream " + s.stream;
    for (auto [field, value] : {std::pair<const char*, std::string_view>{"stream", s.stream},
                                {"tenant", s.tenant},
                                {"type", s.type}})
      if (auto e = check_text(op, field, value)) return *e;
    // The stream's version only grows and its tenant never changes, so checking first and
    // writing after (two autocommit statements) cannot admit a snapshot the checks refuse.
    return run(op, [&](connection& c, attempt&) -> status {
      auto cur = stream_get(c, s.stream, op);
      if (!cur) return cur.error();
      if (auto st = check_snapshot(s, cur->exists, cur->tenant, cur->version); !st) return st;
      params p;
      p.add(s.stream);
      p.add(s.tenant);
      p.add_int8(clamp_i64(s.version));
      p.add(s.type);
      p.add(s.payload);
      p.add_int8(ns_of(s.taken_at));
      auto res = exec(c, s_save_snapshot, p, op);
      if (!res) return res.error();
      return {};
    });
  }

  expected<std::optional<snapshot_record>> load_snapshot(std::string_view stream) override {
    if (auto e = check_text("load_snapshot", "stream", stream)) return *e;
    const std::string op = "load snapshot of stream " + std::string{stream};
    return run(op, [&](connection& c, attempt&) -> expected<std::optional<snapshot_record>> {
      params p;
      p.add(stream);
      auto res = exec(c, s_load_snapshot, p, op);
      if (!res) return res.error();
      rows r{res->get()};
      if (r.count() == 0) return std::optional<snapshot_record>{};
      snapshot_record s;
      s.stream = std::string{stream};
      s.tenant = r.text(0, 0);
      s.version = static_cast<std::uint64_t>(r.int8(0, 1));
      s.type = r.text(0, 2);
      s.payload = r.text(0, 3);
      s.taken_at = time_of(r.int8(0, 4));
      return std::optional<snapshot_record>{std::move(s)};
    });
  }

  // --- audit chain ---------------------------------------------------------------------------

  expected<audit_head> audit_last() override {
    return run("audit_last", [&](connection& c, attempt&) { return last_audit(c); });
  }

  status audit_append(std::span<const audit_row> batch) override {
    if (batch.empty()) return {};
    for (const auto& row : batch) {
      const auto what = "audit_append: row seq " + std::to_string(row.seq);
      for (auto [field, value] : {std::pair<const char*, std::string_view>{"tenant", row.tenant},
                                  {"actor", row.actor},
                                  {"action", row.action},
                                  {"subject", row.subject}})
        if (auto e = check_text(what, field, value)) return *e;
    }
    binary_array seq(k_int8), tenant(k_text), ts(k_int8), actor(k_text), action(k_text),
        subject(k_text), record(k_bytea), prev(k_bytea), hash(k_bytea);
    for (const auto& row : batch) {
      seq.add_int8(clamp_i64(row.seq));
      tenant.add(row.tenant);
      ts.add_int8(ns_of(row.ts));
      actor.add(row.actor);
      action.add(row.action);
      subject.add(row.subject);
      record.add(row.record);
      prev.add(as_view(row.prev_hash));
      hash.add(as_view(row.hash));
    }
    params p;
    for (auto* a : {&seq, &tenant, &ts, &actor, &action, &subject, &record, &prev, &hash})
      p.add_owned(a->finish());
    return run("audit_append", [&](connection& c, attempt& a) -> status {
      auto abort = [&](error e) -> status {
        rollback(c);
        return e;
      };
      if (auto st = exec_sql(c, "BEGIN", "audit_append: begin"); !st) return abort(st.error());
      auto head = last_audit(c);
      if (!head) return abort(head.error());
      if (auto st = check_audit_rows(*head, batch); !st) return abort(st.error());
      if (auto res = exec(c, s_audit_insert, p, "audit_append"); !res) {
        // Another writer committed the same seq after our read of the head.
        if (res.error().code() == errc::conflict)
          return abort(make_error(errc::conflict,
                                  "audit_append: row seq " + std::to_string(batch.front().seq)
                                      + " was appended by another writer meanwhile ("
                                      + res.error().message() + ")"));
        return abort(res.error());
      }
      a.commit_sent = true;
      return exec_sql(c, "COMMIT", "audit_append: commit");
    });
  }

  expected<std::vector<audit_row>> audit_read(std::uint64_t from_seq, std::size_t max) override {
    if (max == 0) return std::vector<audit_row>{};
    return run("audit_read", [&](connection& c, attempt&) -> expected<std::vector<audit_row>> {
      params p;
      p.add_int8(clamp_i64(from_seq));
      p.add_int8(clamp_i64(max));
      auto res = exec(c, s_audit_read, p, "audit_read");
      if (!res) return res.error();
      rows r{res->get()};
      std::vector<audit_row> out;
      out.reserve(static_cast<std::size_t>(r.count()));
      for (int i = 0; i < r.count(); ++i) {
        auto& a = out.emplace_back();
        a.seq = static_cast<std::uint64_t>(r.int8(i, 0));
        a.tenant = r.text(i, 1);
        a.ts = time_of(r.int8(i, 2));
        a.actor = r.text(i, 3);
        a.action = r.text(i, 4);
        a.subject = r.text(i, 5);
        a.record = r.text(i, 6);
        if (!r.digest(i, 7, a.prev_hash) || !r.digest(i, 8, a.hash))
          return fail(errc::internal, "audit_read",
                      "audit_log seq " + std::to_string(a.seq) + ": a hash is not 32 bytes");
      }
      return out;
    });
  }

  // --- schema --------------------------------------------------------------------------------

  expected<int> schema_version() override {
    return run("schema_version", [&](connection& c, attempt&) { return current_schema(c); });
  }

  [[nodiscard]] int latest_schema_version() const noexcept override {
    return migrations_.empty() ? 0 : migrations_.back().number;
  }

  status migrate_to(int target) override {
    if (target < 0 || target > latest_schema_version())
      return validation_error(location_ + ": migrate_to: target " + std::to_string(target)
                              + " is outside 0.." + std::to_string(latest_schema_version()));
    auto st = run("migrate_to " + std::to_string(target),
                  [&](connection& c, attempt& a) { return migrate(c, a, target); });
    // Cached plans of the old schema must not outlive it: start every connection afresh.
    std::lock_guard lock{mtx_};
    open_ -= idle_.size();
    idle_.clear();
    cv_.notify_all();
    return st;
  }

private:
  // --- pool ----------------------------------------------------------------------------------

  /// A connection taken from the pool; returns it (or drops it when broken) on destruction.
  class lease {
  public:
    lease(postgres_backend& b, std::unique_ptr<connection> c, bool reused)
        : b_(&b), c_(std::move(c)), reused_(reused) {}
    lease(lease&& o) noexcept
        : b_(std::exchange(o.b_, nullptr)), c_(std::move(o.c_)), reused_(o.reused_) {}
    lease& operator=(lease&&) = delete;
    ~lease() {
      if (b_ != nullptr) b_->give_back(std::move(c_));
    }
    connection& operator*() { return *c_; }
    [[nodiscard]] bool reused() const { return reused_; }
    /// Closes a broken connection now rather than returning it.
    void drop() { c_.reset(); }

  private:
    postgres_backend* b_;
    std::unique_ptr<connection> c_;
    bool reused_;
  };

  expected<lease> acquire(bool fresh) {
    std::unique_lock lock{mtx_};
    if (fresh) { // a pooled connection was broken: the others probably are too
      open_ -= idle_.size();
      idle_.clear();
    }
    cv_.wait(lock, [&] { return !idle_.empty() || open_ < opts_.pool_size; });
    while (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      // An idle connection has nothing to read unless the server closed it (restart, idle
      // timeout, pg_terminate_backend): PQconsumeInput notices that without blocking.
      auto* pg = c->pg.get();
      if (PQconsumeInput(pg) != 0 && PQstatus(pg) == CONNECTION_OK)
        return lease{*this, std::move(c), true};
      --open_;
    }
    ++open_;
    lock.unlock();
    auto c = connect();
    if (!c) {
      lock.lock();
      --open_;
      cv_.notify_one();
      return c.error();
    }
    return lease{*this, std::move(*c), false};
  }

  void give_back(std::unique_ptr<connection> c) {
    std::lock_guard lock{mtx_};
    if (c && PQstatus(c->pg.get()) == CONNECTION_OK
        && PQtransactionStatus(c->pg.get()) == PQTRANS_IDLE)
      idle_.push_back(std::move(c));
    else
      --open_;
    cv_.notify_one();
  }

  expected<std::unique_ptr<connection>> connect() {
    const auto timeout = std::to_string(opts_.connect_timeout_s);
    const auto server_options =
        "-c statement_timeout=" + std::to_string(opts_.statement_timeout_ms);
    // Entries before dbname may be overridden by the URL, entries after it override the URL.
    // statement_timeout bounds every statement (a lock wait, a stuck server): it fails with
    // `timeout`, which the store agents retry.
    // Keepalives and tcp_user_timeout turn a vanished server host (no RST ever comes) into an
    // error within about 30 s instead of a call blocked for the kernel's default of ~15 minutes.
    const std::pair<const char*, const char*> settings[] = {
        {"application_name", "agentflow"}, {"keepalives_idle", "10"},
        {"keepalives_interval", "5"},      {"keepalives_count", "3"},
        {"tcp_user_timeout", "30000"},     {"options", server_options.c_str()},
        {"dbname", opts_.url.c_str()},     {"connect_timeout", timeout.c_str()},
        {"client_encoding", "UTF8"},
    };
    std::vector<const char*> keys, values;
    for (const auto& [k, v] : settings) {
      keys.push_back(k);
      values.push_back(v);
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    conn_ptr pg{PQconnectdbParams(keys.data(), values.data(), 1)};
    if (!pg) return fail(errc::internal, "connect", "out of memory");
    if (PQstatus(pg.get()) != CONNECTION_OK) {
      auto msg = one_line(PQerrorMessage(pg.get()));
      return fail(kind_of_connect_failure(msg), "connect", msg);
    }
    PQsetNoticeProcessor(pg.get(), ignore_notice, nullptr);
    auto c = std::make_unique<connection>();
    c->pg = std::move(pg);
    return c;
  }

  /// Runs `fn` on a pooled connection; when a connection taken from the pool turns out broken
  /// (the server restarted, an idle connection was cut) and nothing can have been committed,
  /// runs it once more on a new connection.
  template <class F>
  auto run(std::string_view op, F&& fn)
      -> decltype(fn(std::declval<connection&>(), std::declval<attempt&>())) {
    bool fresh = false;
    for (;;) {
      auto l = acquire(fresh);
      if (!l) return with_op(l.error(), op);
      attempt a;
      auto r = fn(**l, a);
      if (r) return r;
      if (PQstatus((**l).pg.get()) != CONNECTION_BAD) return r;
      l->drop();
      if (fresh || !l->reused() || a.commit_sent) return r;
      fresh = true;
    }
  }

  // Connection errors come out of acquire() without the operation: add it.
  error with_op(const error& e, std::string_view op) const {
    auto msg = e.message();
    const auto head = location_ + ": connect";
    if (msg.starts_with(head))
      msg = location_ + ": " + std::string{op} + msg.substr(location_.size());
    return {e.code(), msg};
  }

  // --- statements ----------------------------------------------------------------------------

  error fail(errc code, std::string_view op, std::string_view msg) const {
    std::string text{msg};
    // libpq and the server do not echo passwords; this makes sure of it.
    if (password_.size() >= 4) replace_all(text, password_, "***");
    return {code, location_ + ": " + std::string{op} + ": " + text};
  }

  // The error of a failed command: its SQLSTATE decides the kind; a lost connection is transient.
  error failure(connection& c, const PGresult* res, std::string_view op) const {
    std::string msg;
    errc code = errc::internal;
    if (res != nullptr) {
      const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
      const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
      const char* detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
      code = kind_of_sqlstate(state != nullptr ? state : "");
      msg = one_line(primary != nullptr ? primary : PQresultErrorMessage(res));
      if (detail != nullptr) msg += " (" + one_line(detail) + ")";
      if (state != nullptr) msg += " [SQLSTATE " + std::string{state} + "]";
      // A missing table or column: most likely a schema behind this build (af db migrate --to).
      if (state != nullptr
          && (std::string_view{state} == "42P01" || std::string_view{state} == "42703"))
        msg += "; this build needs schema version " + std::to_string(latest_schema_version())
               + ": is the schema behind? (af db status, af db migrate)";
    }
    if (msg.empty()) msg = one_line(PQerrorMessage(c.pg.get()));
    if (msg.empty()) msg = "no result from the server";
    if (PQstatus(c.pg.get()) == CONNECTION_BAD || res == nullptr) {
      code = errc::transient;
      msg = "connection lost: " + msg;
    }
    return fail(code, op, msg);
  }

  bool prepare(connection& c, stmt id, std::string_view op, error& err) {
    if ((c.prepared & (1U << id)) != 0) return true;
    const auto& d = k_stmts[id];
    result_ptr res{PQprepare(c.pg.get(), d.name, d.sql, d.nparams, d.types.data())};
    if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
      err = failure(c, res.get(), op);
      return false;
    }
    c.prepared |= 1U << id;
    return true;
  }

  expected<result_ptr> exec(connection& c, stmt id, const params& p, std::string_view op) {
    error err{errc::internal, {}};
    if (!prepare(c, id, op, err)) return err;
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    p.fill(values, lengths, formats);
    result_ptr res{PQexecPrepared(c.pg.get(), k_stmts[id].name, p.size(), values.data(),
                                  lengths.data(), formats.data(), 1)};
    const auto st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) return failure(c, res.get(), op);
    return res;
  }

  status exec_sql(connection& c, const char* sql, std::string_view op) {
    result_ptr res{PQexec(c.pg.get(), sql)};
    const auto st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) return failure(c, res.get(), op);
    return {};
  }

  /// One step of a pipeline: a prepared statement with its parameters, or plain SQL.
  struct pipe_step {
    std::optional<stmt> id;
    const char* sql = nullptr;
    const params* p = nullptr;
    std::string_view op;
  };

  /// Sends every step at once (libpq pipeline mode: one round trip instead of one per step) and
  /// returns their results, or the first failing step's error (the steps after it do not run).
  expected<std::vector<result_ptr>> pipeline(connection& c, std::span<const pipe_step> steps) {
    error err{errc::internal, {}};
    for (const auto& st : steps)
      if (st.id && !prepare(c, *st.id, st.op, err)) return err;
    PGconn* pg = c.pg.get();
    if (PQenterPipelineMode(pg) != 1) return failure(c, nullptr, steps.front().op);
    for (const auto& st : steps) {
      int ok = 0;
      if (st.id) {
        std::vector<const char*> values;
        std::vector<int> lengths, formats;
        st.p->fill(values, lengths, formats);
        ok = PQsendQueryPrepared(pg, k_stmts[*st.id].name, st.p->size(), values.data(),
                                 lengths.data(), formats.data(), 1);
      } else {
        ok = PQsendQueryParams(pg, st.sql, 0, nullptr, nullptr, nullptr, nullptr, 1);
      }
      // A send fails only when the connection does: run() drops it (it is not idle).
      if (ok != 1) return failure(c, nullptr, st.op);
    }
    if (PQpipelineSync(pg) != 1) return failure(c, nullptr, steps.back().op);
    std::vector<result_ptr> out;
    std::optional<error> first;
    for (const auto& st : steps) {
      result_ptr r{PQgetResult(pg)};
      if (!r) return failure(c, nullptr, st.op); // connection lost
      while (PGresult* end = PQgetResult(pg))    // the NULL that ends this step's results
        PQclear(end);
      const auto status = PQresultStatus(r.get());
      if (!first && status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)
        first = status == PGRES_PIPELINE_ABORTED
                    ? fail(errc::internal, st.op, "not run: an earlier statement failed")
                    : failure(c, r.get(), st.op);
      out.push_back(std::move(r));
    }
    result_ptr sync{PQgetResult(pg)}; // PGRES_PIPELINE_SYNC, not followed by a NULL
    if (PQexitPipelineMode(pg) != 1 && !first) first = failure(c, nullptr, steps.back().op);
    if (first) return *first;
    return out;
  }

  void rollback(connection& c) {
    if (PQstatus(c.pg.get()) == CONNECTION_OK && PQtransactionStatus(c.pg.get()) != PQTRANS_IDLE)
      result_ptr{PQexec(c.pg.get(), "ROLLBACK")};
  }

  // --- append --------------------------------------------------------------------------------

  static std::optional<error> check_request(const append_request& r) {
    if (auto st = check_append(r); !st) return st.error();
    const auto what = "append to stream " + r.stream;
    if (auto e = check_text("append", "the stream id", r.stream)) return e;
    if (auto e = check_text(what, "tenant", r.tenant)) return e;
    for (const auto& e : r.events)
      if (auto err = check_text(what, "event type", e.type)) return err;
    return std::nullopt;
  }

  struct stream_state {
    bool exists = false;
    std::string tenant;
    std::uint64_t version = 0;
    std::optional<time_point> finished_at;
    std::uint64_t pruned_through = 0;
  };

  expected<stream_state> stream_get(connection& c, std::string_view stream, std::string_view op) {
    params p;
    p.add(stream);
    auto res = exec(c, s_stream_get, p, op);
    if (!res) return res.error();
    rows r{res->get()};
    stream_state st;
    if (r.count() == 0) return st;
    st.exists = true;
    st.version = static_cast<std::uint64_t>(r.int8(0, 0));
    st.tenant = r.text(0, 1);
    if (!r.null(0, 2)) st.finished_at = time_of(r.int8(0, 2));
    st.pruned_through = static_cast<std::uint64_t>(r.int8(0, 3));
    return st;
  }

  /// One transaction: lock the batch's existing streams (in id order, so concurrent writers
  /// cannot deadlock), check each request against the stream as the batch has left it, insert
  /// every accepted event with one statement and every touched stream's new version with
  /// another, commit. A refused request writes nothing, so it needs no savepoint of its own.
  /// `race`: the failure is worth another try (a concurrent writer created the same stream).
  expected<std::vector<expected<append_result>>>
  try_append(connection& c, attempt& a, std::span<const append_request> batch,
             const std::vector<std::optional<error>>& invalid, time_point now, bool& race) {
    auto abort = [&](error e) -> error {
      race = e.code() == errc::conflict || e.code() == errc::transient;
      rollback(c);
      return e;
    };
    std::map<std::string_view, stream_state> streams; // as the batch leaves them
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (!invalid[i]) streams.emplace(batch[i].stream, stream_state{});
    binary_array names(k_text);
    for (const auto& [s, st] : streams)
      names.add(s);
    params lock_params;
    lock_params.add_owned(names.finish());
    // Round trip 1: BEGIN and the lock; round trip 2: the writes and COMMIT.
    const pipe_step start[] = {
        {std::nullopt, "BEGIN", nullptr, "append_batch: begin"},
        {s_lock_streams, nullptr, &lock_params, "append_batch: lock streams"}};
    auto started = pipeline(c, start);
    if (!started) return abort(started.error());
    rows lr{(*started)[1].get()};
    for (int i = 0; i < lr.count(); ++i) {
      if (auto it = streams.find(lr.bytes(i, 0)); it != streams.end()) {
        it->second = {true, lr.text(i, 2), static_cast<std::uint64_t>(lr.int8(i, 1)), std::nullopt,
                      0};
        if (!lr.null(i, 3)) it->second.finished_at = time_of(lr.int8(i, 3));
      }
    }

    struct new_row {
      const append_request* req;
      const new_event* ev;
      std::uint64_t version;
    };
    std::vector<new_row> new_rows;
    std::vector<expected<append_result>> out;
    out.reserve(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (invalid[i]) {
        out.emplace_back(*invalid[i]);
        continue;
      }
      const auto& r = batch[i];
      auto& cur = streams[r.stream];
      if (auto st =
              check_expected(r, cur.exists, cur.tenant, cur.version, cur.finished_at.has_value());
          !st) {
        out.emplace_back(st.error());
        continue;
      }
      if (cur.version + r.events.size() > static_cast<std::uint64_t>(k_int8_max)) {
        out.emplace_back(validation_error("append to stream " + r.stream + ": version overflow"));
        continue;
      }
      if (!cur.exists) cur = {true, r.tenant, 0, std::nullopt, 0};
      if (r.finish) cur.finished_at = now;
      out.emplace_back(append_result{cur.version + 1, cur.version + r.events.size(), now});
      for (const auto& e : r.events)
        new_rows.push_back({&r, &e, ++cur.version});
    }

    std::optional<params> ins, up; // the writes, when any
    if (!new_rows.empty()) {
      // Index order (stream, version): concurrent writers of new streams wait for each other
      // instead of deadlocking on each other's unique-index entries.
      std::stable_sort(new_rows.begin(), new_rows.end(), [](const new_row& x, const new_row& y) {
        return x.req->stream < y.req->stream;
      });
      binary_array st(k_text), ver(k_int8), ten(k_text), ty(k_text), pay(k_bytea), eh(k_bytea);
      binary_array us(k_text), ut(k_text), uv(k_int8), uf(k_int8);
      for (std::size_t i = 0; i < new_rows.size(); ++i) {
        const auto& nr = new_rows[i];
        st.add(nr.req->stream);
        ver.add_int8(static_cast<std::int64_t>(nr.version));
        ten.add(nr.req->tenant);
        ty.add(nr.ev->type);
        pay.add(nr.ev->payload);
        eh.add(as_view(nr.ev->envelope_hash));
        if (i + 1 == new_rows.size() || new_rows[i + 1].req->stream != nr.req->stream) {
          const auto& s = streams[nr.req->stream];
          us.add(nr.req->stream);
          ut.add(s.tenant);
          uv.add_int8(static_cast<std::int64_t>(s.version));
          uf.add_int8(s.finished_at ? ns_of(*s.finished_at) : 0);
        }
      }
      ins.emplace();
      for (auto* arr : {&st, &ver, &ten, &ty, &pay, &eh})
        ins->add_owned(arr->finish());
      ins->add_int8(ns_of(now));
      up.emplace();
      for (auto* arr : {&us, &ut, &uv, &uf})
        up->add_owned(arr->finish());
    }

    std::vector<pipe_step> finish;
    if (ins) {
      finish.push_back({s_insert_events, nullptr, &*ins, "append_batch: insert events"});
      finish.push_back({s_upsert_streams, nullptr, &*up, "append_batch: update streams"});
    }
    finish.push_back({std::nullopt, "COMMIT", nullptr, "append_batch: commit"});
    a.commit_sent = true;
    if (auto done = pipeline(c, finish); !done) {
      if (PQstatus(c.pg.get()) == CONNECTION_BAD)
        return make_error(errc::transient,
                          done.error().message() + " (the batch may or may not be committed)");
      return abort(done.error());
    }
    return out;
  }

  // --- audit and schema ----------------------------------------------------------------------

  expected<audit_head> last_audit(connection& c) {
    auto res = exec(c, s_audit_last, params{}, "audit_last");
    if (!res) return res.error();
    rows r{res->get()};
    audit_head h;
    if (r.count() == 0) return h;
    h.seq = static_cast<std::uint64_t>(r.int8(0, 0));
    if (!r.digest(0, 1, h.hash))
      return fail(errc::internal, "audit_last",
                  "audit_log seq " + std::to_string(h.seq) + ": hash is not 32 bytes");
    return h;
  }

  expected<int> current_schema(connection& c) {
    result_ptr res{PQexec(c.pg.get(), "SELECT COALESCE(max(version), 0) FROM schema_migrations")};
    if (res && PQresultStatus(res.get()) == PGRES_TUPLES_OK && PQntuples(res.get()) == 1)
      return std::atoi(PQgetvalue(res.get(), 0, 0));
    const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
    if (state != nullptr && std::string_view{state} == "42P01") return 0; // no table: empty
    return failure(c, res.get(), "schema_version");
  }

  /// One transaction per step, each under an advisory lock so two nodes starting at once take
  /// turns; the current version is re-read under the lock.
  status migrate(connection& c, attempt& a, int target) {
    const std::string op = "migrate_to " + std::to_string(target);
    auto step_failed = [&](const error& e) -> status {
      rollback(c);
      return e;
    };
    for (;;) {
      if (auto st = exec_sql(c, "BEGIN", op); !st) return step_failed(st.error());
      // A migration of a large table may take longer than statement_timeout allows.
      if (auto st = exec_sql(c, "SET LOCAL statement_timeout = 0", op); !st)
        return step_failed(st.error());
      if (auto st = exec_sql(c, k_migration_lock, op); !st) return step_failed(st.error());
      if (auto st = exec_sql(c, k_create_schema_migrations, op); !st)
        return step_failed(st.error());
      auto cur = current_schema(c);
      if (!cur) return step_failed(cur.error());
      if (*cur == target) return exec_sql(c, "COMMIT", op);
      if (*cur > latest_schema_version())
        return step_failed(fail(errc::validation, op,
                                "schema version " + std::to_string(*cur)
                                    + " is newer than this build's "
                                    + std::to_string(latest_schema_version())));
      const bool up = *cur < target;
      const auto& m = migrations_[static_cast<std::size_t>(up ? *cur : *cur - 1)];
      const auto step =
          op + ": " + (up ? "up " : "down ") + std::to_string(m.number) + "_" + m.name;
      const std::string sql{up ? m.up : m.down};
      if (auto st = exec_sql(c, sql.c_str(), step); !st) return step_failed(st.error());
      const auto number = std::to_string(m.number);
      const char* values[] = {number.c_str(), m.name.c_str()};
      result_ptr res{PQexecParams(
          c.pg.get(),
          up ? "INSERT INTO schema_migrations (version, name) VALUES ($1::integer, $2::text)"
             : "DELETE FROM schema_migrations WHERE version = $1::integer",
          up ? 2 : 1, nullptr, values, nullptr, nullptr, 0)};
      if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK)
        return step_failed(failure(c, res.get(), step));
      a.commit_sent = true;
      if (auto st = exec_sql(c, "COMMIT", step); !st) return step_failed(st.error());
      a.commit_sent = false;
    }
  }

  postgres_options opts_;
  std::string location_;
  std::string password_; // only to keep it out of messages
  std::span<const migration> migrations_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<connection>> idle_;
  std::size_t open_ = 0; // connections in existence: idle or leased
};

} // namespace

expected<std::unique_ptr<backend>> open_postgres(const postgres_options& opts) {
  if (opts.url.empty()) return validation_error("postgres: the URL is empty");
  if (opts.pool_size == 0) return validation_error("postgres: pool_size must be at least 1");
  if (opts.connect_timeout_s < 0)
    return validation_error("postgres: connect_timeout_s must not be negative");
  if (opts.statement_timeout_ms < 0)
    return validation_error("postgres: statement_timeout_ms must not be negative");
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(opts.url.c_str(), &err);
  if (parsed == nullptr) {
    std::string msg = err != nullptr ? one_line(err) : "out of memory";
    PQfreemem(err);
    // libpq quotes the URL, or pieces of a key=value string: never echo a password.
    if (is_uri(opts.url)) {
      const auto shown = redact_uri(opts.url);
      replace_all(msg, opts.url, shown);
      return validation_error("postgres: " + shown + ": invalid URL: " + msg);
    }
    if (contains(opts.url, "password")) msg = "not a valid connection string";
    return validation_error("postgres: invalid URL (expected postgres://user@host:port/db): "
                            + msg);
  }
  const auto location = is_uri(opts.url) ? redact_uri(opts.url) : describe_conninfo(parsed);
  std::string password;
  for (auto* o = parsed; o->keyword != nullptr; ++o)
    if (std::string_view{o->keyword} == "password" && o->val != nullptr) password = o->val;
  PQconninfoFree(parsed);
  auto b = std::make_unique<postgres_backend>(opts, location, std::move(password));
  if (auto st = b->open(); !st) return st.error();
  return std::unique_ptr<backend>{std::move(b)};
}

} // namespace af::store
