// Private: the SQL side of std.ledger: one `ledger` table (docs/planning.md, "The `ledger`
// table") in SQLite (sqlite3) or PostgreSQL (libpq). Calls block: only the detached std.ledger
// agent uses them.
#pragma once

#include "af/error.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace af::plan::detail {

/// Where the ledger lives, resolved from std_agent_options::ledger_url.
struct ledger_target {
  std::string kind;  ///< "sqlite" or "postgres"
  std::string where; ///< SQLite: the database file; PostgreSQL: the URL as given (secret)
  std::string shown; ///< for messages: the file, or the URL without its password
};

/// "sqlite:PATH", a plain path or "postgres[ql]://..." (store::resolve_store_url's rules);
/// anything else is a `validation` error naming the URL (without password).
[[nodiscard]] expected<ledger_target> resolve_ledger_url(const std::string& url);

/// A PostgreSQL URL or conninfo string for messages: "postgresql://user@host:port/db".
[[nodiscard]] std::string describe_postgres_url(const std::string& url);

struct ledger_row {
  std::string key; ///< the step's idempotency key: the primary key
  std::string execution_id;
  std::string step_id;
  nlohmann::json amount; ///< a JSON number
  std::int64_t ts_ns = 0;
};

/// One open connection with the table created.
class ledger_db {
public:
  virtual ~ledger_db() = default;
  /// true: the row was inserted; false: a row with that key exists (nothing was written).
  /// Errors: `transient` for lost connections, busy databases and the like, else `internal`.
  [[nodiscard]] virtual expected<bool> insert(const ledger_row& row) = 0;
};

/// Connects and creates the table if missing; failures to connect are `transient` errors
/// naming target.shown.
[[nodiscard]] expected<std::unique_ptr<ledger_db>> open_ledger(const ledger_target& target);

[[nodiscard]] expected<std::unique_ptr<ledger_db>> open_sqlite_ledger(const ledger_target& t);
[[nodiscard]] expected<std::unique_ptr<ledger_db>> open_postgres_ledger(const ledger_target& t);

} // namespace af::plan::detail
