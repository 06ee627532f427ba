// The built-in agents on a real node: std.echo, std.sleep (timer, cancel), std.fail (attempt
// semantics), std.counter, and std.ledger writing a real table in SQLite and, when
// AF_TEST_PG_URL is set (tests/persistence/with_postgres.sh), PostgreSQL.
#include "af/plan/agents.hpp"
#include "af/store/backend.hpp"
#include "step_test_support.hpp"
#include "support/temp_dir.hpp"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <future>
#include <thread>

using namespace af;
using namespace std::chrono_literals;
using af::test::ask_step;
using af::test::step_request;
using nlohmann::json;

namespace {

plan::agent_types std_types(std::string ledger_url = {}) {
  plan::agent_types types;
  REQUIRE(plan::add_std_agents(types, {std::move(ledger_url)}));
  return types;
}

agent_ref spawn_type(node& n, const plan::agent_types& types, const std::string& type,
                     const std::string& name) {
  const auto* t = types.find(type);
  REQUIRE(t != nullptr);
  if (!t->detached) {
    auto ref = n.spawn_agent(t->factory, name);
    REQUIRE(ref);
    return *ref;
  }
  sup::child_spec c;
  c.id = name;
  c.restart = sup::restart_policy::transient;
  c.make_agent = t->factory;
  c.detached = true;
  auto ref = n.start_child(std::move(c));
  REQUIRE(ref);
  return *ref;
}

void require_error(const expected<json>& r, errc code, const std::string& message_part) {
  REQUIRE_FALSE(r);
  INFO(r.error().to_string());
  REQUIRE(r.error().code() == code);
  REQUIRE(r.error().message().find(message_part) != std::string::npos);
}

} // namespace

TEST_CASE("add_std_agents registers the std.* types", "[std]") {
  auto types = std_types();
  REQUIRE(types.names()
          == std::vector<std::string>{"std.counter", "std.echo", "std.fail", "std.sleep"});
  REQUIRE(types.find("std.ledger") == nullptr);
  REQUIRE_FALSE(types.find("std.echo")->description.empty());

  // Registering twice is a conflict.
  auto again = plan::add_std_agents(types, {});
  REQUIRE(again.error().code() == errc::conflict);

  test::temp_dir dir{"af-std"};
  auto with_ledger = std_types("sqlite:" + (dir.path() / "ledger.db").string());
  REQUIRE(with_ledger.find("std.ledger") != nullptr);
  REQUIRE(with_ledger.find("std.ledger")->detached);

  plan::agent_types bad;
  auto mem = plan::add_std_agents(bad, {"memory:"});
  REQUIRE(mem.error().code() == errc::validation);
  REQUIRE(mem.error().message().find("ledger_url 'memory:'") != std::string::npos);
  plan::agent_types bad2;
  auto unknown = plan::add_std_agents(bad2, {"mysql://ledger:hunter22@db/prod"});
  REQUIRE(unknown.error().code() == errc::validation);
  REQUIRE(unknown.error().message().find("hunter22") == std::string::npos);
}

TEST_CASE("std.echo replies with its input", "[std]") {
  auto n = test::quiet_node();
  auto types = std_types();
  auto echo = spawn_type(*n, types, "std.echo", "echo");

  auto r = ask_step(*n, echo, step_request(R"({"a": [1, 2, {"b": "c"}], "d": null})"));
  REQUIRE(r);
  REQUIRE(*r == json::parse(R"({"a": [1, 2, {"b": "c"}], "d": null})"));
  REQUIRE(*ask_step(*n, echo, step_request(R"("just text")")) == "just text");
  REQUIRE(ask_step(*n, echo, step_request(""))->is_null());

  require_error(ask_step(*n, echo, step_request("{not json")), errc::validation,
                "std.echo: input_json: invalid JSON: parse error at line 1");
}

TEST_CASE("std.sleep replies after the delay, on a timer", "[std]") {
  auto n = test::quiet_node();
  auto types = std_types();
  auto sleeper = spawn_type(*n, types, "std.sleep", "sleeper");

  SECTION("ms") {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = ask_step(*n, sleeper, step_request(R"({"ms": 300})"));
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(r);
    REQUIRE(*r == json{{"slept_ms", 300}});
    REQUIRE(took >= 300ms);
    REQUIRE(took < 5s);
  }
  SECTION("a duration string") {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = ask_step(*n, sleeper, step_request(R"({"duration": "0.25s"})"));
    REQUIRE(r);
    REQUIRE(*r == json{{"slept_ms", 250}});
    REQUIRE(std::chrono::steady_clock::now() - t0 >= 250ms);
    REQUIRE(*ask_step(*n, sleeper, step_request(R"({"duration": "20ms"})"))
            == json{{"slept_ms", 20}});
  }
  SECTION("several sleeps overlap: the agent never blocks") {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::future<expected<json>>> all;
    for (int i = 0; i < 4; ++i)
      all.push_back(std::async(std::launch::async, [&, i] {
        return ask_step(*n, sleeper, step_request(R"({"ms": 400})", 1, "s" + std::to_string(i)));
      }));
    for (auto& f : all)
      REQUIRE(f.get());
    REQUIRE(std::chrono::steady_clock::now() - t0 < 1500ms);
  }
  SECTION("bad input names the field") {
    require_error(ask_step(*n, sleeper, step_request(R"({"ms": -1})")), errc::validation,
                  "std.sleep: input.ms: must not be negative");
    require_error(ask_step(*n, sleeper, step_request(R"({"ms": "soon"})")), errc::validation,
                  "std.sleep: input.ms: expected an integer, got \"soon\"");
    require_error(ask_step(*n, sleeper, step_request(R"({"duration": "soon"})")), errc::validation,
                  "std.sleep: input.duration: expected a duration");
    require_error(ask_step(*n, sleeper, step_request(R"({})")), errc::validation,
                  "std.sleep: input.ms: required (or input.duration)");
    require_error(ask_step(*n, sleeper, step_request(R"({"ms": 1, "duration": "1s"})")),
                  errc::validation, "not both");
    require_error(ask_step(*n, sleeper, step_request(R"([1])")), errc::validation,
                  "std.sleep: input: expected an object, got [1]");
  }
}

TEST_CASE("std.sleep: StepCancel with the step's key fails the pending reply", "[std]") {
  auto n = test::quiet_node();
  auto types = std_types();
  auto sleeper = spawn_type(*n, types, "std.sleep", "sleeper");

  const auto req = step_request(R"({"ms": 30000})", 1, "slow");
  const auto other = step_request(R"({"ms": 600})", 1, "other");
  const auto t0 = std::chrono::steady_clock::now();
  auto canceled = std::async(std::launch::async, [&] { return ask_step(*n, sleeper, req); });
  auto untouched = std::async(std::launch::async, [&] { return ask_step(*n, sleeper, other); });
  std::this_thread::sleep_for(200ms);

  v1::StepCancel unrelated;
  unrelated.set_idempotency_key("e1/nobody/1");
  n->tell(sleeper, unrelated);
  v1::StepCancel cancel;
  cancel.set_idempotency_key(req.idempotency_key());
  cancel.set_reason("execution e1 canceled by ada");
  n->tell(sleeper, cancel);

  auto r = canceled.get();
  require_error(r, errc::internal, "canceled: execution e1 canceled by ada");
  REQUIRE(r.error().message() == "canceled: execution e1 canceled by ada");
  REQUIRE(std::chrono::steady_clock::now() - t0 < 5s);
  // Another step's sleep goes on.
  auto o = untouched.get();
  REQUIRE(o);
  REQUIRE(*o == json{{"slept_ms", 600}});
}

TEST_CASE("std.fail fails attempts 1..times, by attempt number", "[std]") {
  auto n = test::quiet_node();
  auto types = std_types();
  auto fail = spawn_type(*n, types, "std.fail", "fail");

  SECTION("transient by default, then success") {
    const std::string in = R"({"times": 2})";
    require_error(ask_step(*n, fail, step_request(in, 1)), errc::transient,
                  "std.fail: attempt 1 of 2 fails");
    require_error(ask_step(*n, fail, step_request(in, 2)), errc::transient,
                  "std.fail: attempt 2 of 2 fails");
    REQUIRE(*ask_step(*n, fail, step_request(in, 3)) == json{{"attempt", 3}});
    // Asking again (as after a restart) changes nothing: it depends on the attempt only.
    require_error(ask_step(*n, fail, step_request(in, 1)), errc::transient, "attempt 1 of 2");
    REQUIRE(*ask_step(*n, fail, step_request(in, 7)) == json{{"attempt", 7}});
  }
  SECTION("a fresh instance agrees (deterministic across restarts)") {
    auto fresh = spawn_type(*n, types, "std.fail", "fail-2");
    REQUIRE(*ask_step(*n, fresh, step_request(R"({"times": 2})", 3)) == json{{"attempt", 3}});
    require_error(ask_step(*n, fresh, step_request(R"({"times": 2})", 2)), errc::transient,
                  "attempt 2 of 2");
  }
  SECTION("kind and message") {
    auto r = ask_step(*n, fail,
                      step_request(R"({"times": 1, "kind": "conflict", "message": "seat taken"})"));
    require_error(r, errc::conflict, "seat taken");
    REQUIRE(r.error().message() == "seat taken");
    REQUIRE(*ask_step(*n, fail, step_request(R"({"times": 1, "kind": "conflict"})", 2))
            == json{{"attempt", 2}});
  }
  SECTION("always, and no fields at all, fail every attempt") {
    require_error(ask_step(*n, fail, step_request(R"({"always": true})", 99)), errc::transient,
                  "std.fail: attempt 99 fails (always)");
    require_error(ask_step(*n, fail, step_request(R"({"kind": "timeout"})", 5)), errc::timeout,
                  "attempt 5 fails");
    require_error(ask_step(*n, fail, step_request("")), errc::transient, "fails");
    REQUIRE(*ask_step(*n, fail, step_request(R"({"times": 0})")) == json{{"attempt", 1}});
  }
  SECTION("bad input names the field") {
    require_error(ask_step(*n, fail, step_request(R"({"times": 1, "kind": "oops"})")),
                  errc::validation, "std.fail: input.kind: expected one of validation");
    require_error(ask_step(*n, fail, step_request(R"({"times": "2"})")), errc::validation,
                  "std.fail: input.times: expected an integer, got \"2\"");
    require_error(ask_step(*n, fail, step_request(R"({"times": -1})")), errc::validation,
                  "std.fail: input.times: must not be negative");
    require_error(ask_step(*n, fail, step_request(R"({"always": "yes"})")), errc::validation,
                  "std.fail: input.always: expected a boolean");
  }
}

TEST_CASE("std.counter counts per name", "[std]") {
  auto n = test::quiet_node();
  auto types = std_types();
  auto c = spawn_type(*n, types, "std.counter", "counter");

  REQUIRE(*ask_step(*n, c, step_request("{}")) == json{{"name", "default"}, {"count", 1}});
  REQUIRE(*ask_step(*n, c, step_request("")) == json{{"name", "default"}, {"count", 2}});
  REQUIRE(*ask_step(*n, c, step_request(R"({"name": "orders", "by": 5})"))
          == json{{"name", "orders"}, {"count", 5}});
  REQUIRE(*ask_step(*n, c, step_request(R"({"name": "orders", "by": -2})"))
          == json{{"name", "orders"}, {"count", 3}});
  REQUIRE(*ask_step(*n, c, step_request(R"({"by": 10})"))
          == json{{"name", "default"}, {"count", 12}});
  require_error(ask_step(*n, c, step_request(R"({"by": 1.5})")), errc::validation,
                "std.counter: input.by: expected an integer, got 1.5");
  require_error(ask_step(*n, c, step_request(R"({"name": 7})")), errc::validation,
                "std.counter: input.name: expected a string, got 7");
}

namespace {

/// Rows of the SQLite ledger: key -> (execution_id, step_id, amount as text, ts).
struct ledger_rows {
  std::int64_t count = 0;
  std::map<std::string, std::vector<std::string>> by_key;
};

ledger_rows sqlite_rows(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  ledger_rows out;
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db,
                             "SELECT key, execution_id, step_id, CAST(amount AS TEXT), ts "
                             "FROM ledger ORDER BY key",
                             -1, &s, nullptr)
          == SQLITE_OK);
  while (sqlite3_step(s) == SQLITE_ROW) {
    ++out.count;
    std::vector<std::string> cols;
    for (int i = 1; i < 5; ++i)
      cols.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(s, i)));
    out.by_key[reinterpret_cast<const char*>(sqlite3_column_text(s, 0))] = cols;
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

ledger_rows postgres_rows(const std::string& url) {
  PGconn* c = PQconnectdb(url.c_str());
  REQUIRE(PQstatus(c) == CONNECTION_OK);
  PGresult* r = PQexec(c, "SELECT key, execution_id, step_id, amount::text, ts::text FROM ledger "
                          "ORDER BY key");
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  ledger_rows out;
  for (int row = 0; row < PQntuples(r); ++row) {
    ++out.count;
    std::vector<std::string> cols;
    for (int i = 1; i < 5; ++i)
      cols.emplace_back(PQgetvalue(r, row, i));
    out.by_key[PQgetvalue(r, row, 0)] = cols;
  }
  PQclear(r);
  PQfinish(c);
  return out;
}

void drop_postgres_ledger(const std::string& url) {
  PGconn* c = PQconnectdb(url.c_str());
  REQUIRE(PQstatus(c) == CONNECTION_OK);
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  PGresult* r = PQexec(c, "DROP TABLE IF EXISTS ledger");
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  PQfinish(c);
}

/// The same script on either database: two keys applied, one duplicate, bad input.
template <class Rows>
void ledger_script(const std::string& url, Rows rows) {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto n = test::quiet_node(lines);
  auto types = std_types(url);
  auto ledger = spawn_type(*n, types, "std.ledger", "ledger");
  const auto before = std::chrono::system_clock::now().time_since_epoch().count();

  const auto first = step_request(R"({"amount": 12.5})", 1, "pay", "exec-1");
  auto r = ask_step(*n, ledger, first);
  REQUIRE(r);
  REQUIRE(*r == json{{"applied", true}, {"key", "exec-1/pay/1"}});

  // The same idempotency key again (a redelivered step): no second row.
  auto dup = ask_step(*n, ledger, first);
  REQUIRE(dup);
  REQUIRE(*dup == json{{"applied", false}, {"duplicate", true}, {"key", "exec-1/pay/1"}});

  auto other = ask_step(*n, ledger, step_request("{}", 2, "pay", "exec-1"));
  REQUIRE(other);
  REQUIRE((*other)["applied"] == true);

  require_error(ask_step(*n, ledger, step_request(R"({"amount": "ten"})", 3, "pay", "exec-1")),
                errc::validation, "std.ledger: input.amount: expected a number, got \"ten\"");
  auto no_key = step_request("{}");
  no_key.clear_idempotency_key();
  require_error(ask_step(*n, ledger, no_key), errc::validation,
                "std.ledger: idempotency_key: must not be empty");

  const auto got = rows();
  REQUIRE(got.count == 2);
  const auto& row = got.by_key.at("exec-1/pay/1");
  REQUIRE(row[0] == "exec-1");
  REQUIRE(row[1] == "pay");
  REQUIRE(std::stod(row[2]) == 12.5);
  const auto ts = std::stoll(row[3]);
  REQUIRE(ts >= before);
  REQUIRE(ts <= std::chrono::system_clock::now().time_since_epoch().count());
  REQUIRE(std::stod(got.by_key.at("exec-1/pay/2")[2]) == 0);

  REQUIRE(test::metric_value(*n, "af_ledger_duplicates_total") == 1);
  n->shutdown();
  bool warned = false;
  for (const auto& l : *lines)
    warned = warned
             || (l.find("\"ledger_duplicate\"") != std::string::npos
                 && l.find("exec-1/pay/1") != std::string::npos);
  REQUIRE(warned);
}

} // namespace

TEST_CASE("std.ledger on SQLite: one row per idempotency key", "[std]") {
  test::temp_dir dir{"af-ledger"};
  SECTION("in the node's store file, beside the journal") {
    const auto file = (dir.path() / "data" / "agentflow.db").string();
    auto store = store::open_url("sqlite:" + file); // creates it, WAL on, migrations applied
    REQUIRE(store);
    ledger_script("sqlite:" + file, [&] { return sqlite_rows(file); });
    REQUIRE((*store)->schema_version());
  }
  SECTION("a data directory URL means its agentflow.db") {
    std::filesystem::create_directories(dir.path() / "data2");
    ledger_script((dir.path() / "data2").string() + "/",
                  [&] { return sqlite_rows((dir.path() / "data2" / "agentflow.db").string()); });
  }
}

TEST_CASE("std.ledger: an unreachable database is a transient error naming it", "[std]") {
  auto n = test::quiet_node();
  SECTION("sqlite") {
    const std::string path = "/nonexistent-af-dir/sub/ledger.db";
    auto types = std_types("sqlite:" + path);
    auto ledger = spawn_type(*n, types, "std.ledger", "ledger");
    require_error(ask_step(*n, ledger, step_request("{}")), errc::transient,
                  "sqlite " + path + ": open");
  }
  SECTION("postgres, without the password") {
    auto types = std_types("postgresql://ledger:s3cret-pw@127.0.0.1:1/books");
    auto ledger = spawn_type(*n, types, "std.ledger", "ledger");
    auto r = ask_step(*n, ledger, step_request("{}"));
    require_error(r, errc::transient, "postgresql://ledger@127.0.0.1:1/books: connect: ");
    REQUIRE(r.error().message().find("s3cret-pw") == std::string::npos);
  }
}

TEST_CASE("std.ledger on PostgreSQL: one row per idempotency key", "[std][integration]") {
  const char* url = std::getenv("AF_TEST_PG_URL");
  if (url == nullptr) {
    WARN("AF_TEST_PG_URL is not set: skipped (run tests/persistence/with_postgres.sh)");
    return;
  }
  drop_postgres_ledger(url);
  ledger_script(url, [&] { return postgres_rows(url); });
  drop_postgres_ledger(url);
}
