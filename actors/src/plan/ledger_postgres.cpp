// std.ledger on PostgreSQL through libpq: one connection per agent instance, re-opened after it
// breaks; a unique violation on the primary key is the duplicate the ledger reports.
#include "plan/ledger_db.hpp"

#include "af/store/backup.hpp"

#include <libpq-fe.h>

#include <array>
#include <string_view>

namespace af::plan::detail {

namespace {

constexpr const char* k_create = "CREATE TABLE IF NOT EXISTS ledger ("
                                 "key TEXT PRIMARY KEY, "
                                 "execution_id TEXT NOT NULL, "
                                 "step_id TEXT NOT NULL, "
                                 "amount NUMERIC NOT NULL, "
                                 "ts BIGINT NOT NULL)";

constexpr const char* k_insert = "INSERT INTO ledger (key, execution_id, step_id, amount, ts) "
                                 "VALUES ($1, $2, $3, $4::numeric, $5::bigint)";

struct conn_closer {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct result_clearer {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, result_clearer>;

void ignore_notice(void*, const char*) {} // "relation already exists, skipping" and the like

std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

bool is_uri(std::string_view url) {
  return url.starts_with("postgres://") || url.starts_with("postgresql://");
}

/// The password a URL or conninfo string carries, to keep it out of messages.
std::string password_of(const std::string& url) {
  std::string out;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), nullptr);
  for (auto* o = opts; o != nullptr && o->keyword != nullptr; ++o)
    if (std::string_view{o->keyword} == "password" && o->val != nullptr) out = o->val;
  PQconninfoFree(opts);
  return out;
}

/// Transient: connection trouble, resources, shutdown, serialization failures, deadlocks.
errc kind_of_state(std::string_view state) {
  if (state.size() != 5) return errc::internal;
  const auto cls = state.substr(0, 2);
  if (cls == "08" || cls == "53" || cls == "57" || state == "40001" || state == "40P01"
      || state == "55P03")
    return errc::transient;
  return errc::internal;
}

class postgres_ledger final : public ledger_db {
public:
  explicit postgres_ledger(const ledger_target& t)
      : url_(t.where), shown_(t.shown), password_(password_of(t.where)) {}

  status open() {
    const std::array<const char*, 5> keys{"dbname", "connect_timeout", "application_name",
                                          "client_encoding", nullptr};
    const std::array<const char*, 5> values{url_.c_str(), "5", "agentflow-ledger", "UTF8", nullptr};
    conn_.reset(PQconnectdbParams(keys.data(), values.data(), 1));
    if (!conn_) return fail(errc::transient, "connect", "out of memory");
    if (PQstatus(conn_.get()) != CONNECTION_OK)
      return fail(errc::transient, "connect", PQerrorMessage(conn_.get()));
    PQsetNoticeProcessor(conn_.get(), ignore_notice, nullptr);
    result_ptr r{PQexec(conn_.get(), k_create)};
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      const std::string_view state = sqlstate(r.get());
      // Two instances creating the table at once: one of them loses the race harmlessly.
      if (state != "42P07" && state != "23505")
        return fail(connection_lost() ? errc::transient : kind_of_state(state),
                    "CREATE TABLE ledger", PQresultErrorMessage(r.get()));
    }
    return {};
  }

  expected<bool> insert(const ledger_row& row) override {
    const std::string amount = row.amount.dump();
    const std::string ts = std::to_string(row.ts_ns);
    const std::array<const char*, 5> params{row.key.c_str(), row.execution_id.c_str(),
                                            row.step_id.c_str(), amount.c_str(), ts.c_str()};
    result_ptr r{PQexecParams(conn_.get(), k_insert, static_cast<int>(params.size()), nullptr,
                              params.data(), nullptr, nullptr, 0)};
    if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) return true;
    const std::string_view state = sqlstate(r.get());
    if (state == "23505") return false; // unique_violation: the key is there already
    const errc code = connection_lost() ? errc::transient : kind_of_state(state);
    return fail(code, "INSERT INTO ledger",
                r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_.get()));
  }

private:
  static std::string_view sqlstate(const PGresult* r) {
    const char* s = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    return s != nullptr ? std::string_view{s} : std::string_view{};
  }
  [[nodiscard]] bool connection_lost() const { return PQstatus(conn_.get()) == CONNECTION_BAD; }

  error fail(errc code, std::string_view op, std::string_view msg) const {
    std::string text = one_line(std::string{msg});
    // libpq and the server do not echo passwords; this makes sure of it.
    if (password_.size() >= 4)
      for (auto pos = text.find(password_); pos != std::string::npos;
           pos = text.find(password_, pos))
        text.replace(pos, password_.size(), "***");
    return {code, shown_ + ": " + std::string{op} + ": " + text};
  }

  std::string url_;
  std::string shown_;
  std::string password_;
  std::unique_ptr<PGconn, conn_closer> conn_;
};

} // namespace

std::string describe_postgres_url(const std::string& url) {
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), nullptr);
  if (opts == nullptr) {
    // Unparsable: show the scheme only, a password may be anywhere in the rest.
    return is_uri(url) ? url.substr(0, url.find("://") + 3) + "(invalid URL)"
                       : "postgresql (invalid connection string)";
  }
  std::string user, host, port, db;
  for (auto* o = opts; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string_view k = o->keyword;
    if (k == "user") user = o->val;
    if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
    if (k == "port") port = o->val;
    if (k == "dbname") db = o->val;
  }
  PQconninfoFree(opts);
  std::string out = url.starts_with("postgres://") ? "postgres://" : "postgresql://";
  if (!user.empty()) out += user + "@";
  out += host;
  if (!port.empty()) out += ":" + port;
  if (!db.empty()) out += "/" + db;
  return out;
}

expected<ledger_target> resolve_ledger_url(const std::string& url) {
  if (url.empty()) return validation_error("std.ledger: ledger_url: must not be empty");
  // For messages: a URL with user info may carry a password.
  const std::string shown = is_uri(url)                          ? describe_postgres_url(url)
                            : url.find('@') == std::string::npos ? url
                                                                 : "(a URL with credentials)";
  const auto bad = [&](std::string_view why) {
    return validation_error("std.ledger: ledger_url '" + shown + "': " + std::string{why});
  };
  if (url == "memory:") return bad("the ledger needs SQL: use sqlite:PATH or postgresql://...");
  auto t = store::resolve_store_url(url);
  if (!t || (t->kind != "sqlite" && t->kind != "postgres"))
    return bad("expected sqlite:PATH, a path or postgresql://user@host:port/db");
  if (t->kind == "sqlite") return ledger_target{t->kind, t->where, t->where};
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), nullptr);
  if (opts == nullptr) return bad("not a valid PostgreSQL URL");
  PQconninfoFree(opts);
  return ledger_target{t->kind, t->where, shown};
}

expected<std::unique_ptr<ledger_db>> open_postgres_ledger(const ledger_target& t) {
  auto db = std::make_unique<postgres_ledger>(t);
  if (auto ok = db->open(); !ok) return ok.error();
  return std::unique_ptr<ledger_db>{std::move(db)};
}

expected<std::unique_ptr<ledger_db>> open_ledger(const ledger_target& t) {
  if (t.kind == "postgres") return open_postgres_ledger(t);
  return open_sqlite_ledger(t);
}

} // namespace af::plan::detail
