// std.ledger on SQLite: the node's store file (WAL, set by the store), opened with sqlite3
// directly, busy_timeout so the journal's writers and ours take turns, synchronous=FULL so an
// applied side effect survives a power loss.
#include "plan/ledger_db.hpp"

#include <sqlite3.h>

#include <cstdint>

namespace af::plan::detail {

namespace {

constexpr int k_busy_timeout_ms = 5000;

constexpr const char* k_create = "CREATE TABLE IF NOT EXISTS ledger ("
                                 "key TEXT PRIMARY KEY, "
                                 "execution_id TEXT NOT NULL, "
                                 "step_id TEXT NOT NULL, "
                                 "amount NUMERIC NOT NULL, "
                                 "ts INTEGER NOT NULL)";

constexpr const char* k_insert =
    "INSERT INTO ledger (key, execution_id, step_id, amount, ts) VALUES (?1, ?2, ?3, ?4, ?5)";

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};

/// Busy, locked and I/O trouble may pass; the rest is a bug or a broken file.
errc kind_of(int rc) {
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
  case SQLITE_IOERR:
  case SQLITE_CANTOPEN:
  case SQLITE_FULL:
  case SQLITE_PROTOCOL:
    return errc::transient;
  default:
    return errc::internal;
  }
}

class sqlite_ledger final : public ledger_db {
public:
  explicit sqlite_ledger(std::string path) : path_(std::move(path)) {}

  status open() {
    sqlite3* raw = nullptr;
    const int rc =
        sqlite3_open_v2(path_.c_str(), &raw,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    db_.reset(raw);
    // Whatever goes wrong while connecting may pass (a missing directory gets created, a lock
    // is released): transient.
    if (rc != SQLITE_OK) return fail("open", rc, errc::transient);
    sqlite3_extended_result_codes(db_.get(), 1);
    if (int r = sqlite3_busy_timeout(db_.get(), k_busy_timeout_ms); r != SQLITE_OK)
      return fail("busy_timeout", r, errc::transient);
    if (int r = sqlite3_exec(db_.get(), "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr);
        r != SQLITE_OK)
      return fail("PRAGMA synchronous=FULL", r, errc::transient);
    if (int r = sqlite3_exec(db_.get(), k_create, nullptr, nullptr, nullptr); r != SQLITE_OK)
      return fail("CREATE TABLE ledger", r, errc::transient);
    sqlite3_stmt* s = nullptr;
    if (int r = sqlite3_prepare_v2(db_.get(), k_insert, -1, &s, nullptr); r != SQLITE_OK)
      return fail("prepare INSERT", r, kind_of(r));
    insert_.reset(s);
    return {};
  }

  expected<bool> insert(const ledger_row& row) override {
    sqlite3_stmt* s = insert_.get();
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    sqlite3_bind_text(s, 1, row.key.data(), static_cast<int>(row.key.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 2, row.execution_id.data(), static_cast<int>(row.execution_id.size()),
                      SQLITE_STATIC);
    sqlite3_bind_text(s, 3, row.step_id.data(), static_cast<int>(row.step_id.size()),
                      SQLITE_STATIC);
    if (row.amount.is_number_integer() && !row.amount.is_number_unsigned())
      sqlite3_bind_int64(s, 4, row.amount.get<std::int64_t>());
    else if (row.amount.is_number_unsigned()
             && row.amount.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX))
      sqlite3_bind_int64(s, 4, static_cast<sqlite3_int64>(row.amount.get<std::uint64_t>()));
    else
      sqlite3_bind_double(s, 4, row.amount.get<double>());
    sqlite3_bind_int64(s, 5, row.ts_ns);
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) return true;
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) return false;
    return fail("INSERT INTO ledger", rc, kind_of(rc));
  }

private:
  error fail(const char* op, int rc, errc code) const {
    std::string msg = db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
    return {code, "sqlite " + path_ + ": " + op + ": " + msg};
  }

  std::string path_;
  std::unique_ptr<sqlite3, db_closer> db_;
  std::unique_ptr<sqlite3_stmt, stmt_finalizer> insert_;
};

} // namespace

expected<std::unique_ptr<ledger_db>> open_sqlite_ledger(const ledger_target& t) {
  auto db = std::make_unique<sqlite_ledger>(t.where);
  if (auto ok = db->open(); !ok) return ok.error();
  return std::unique_ptr<ledger_db>{std::move(db)};
}

} // namespace af::plan::detail
