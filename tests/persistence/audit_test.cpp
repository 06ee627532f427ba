// The audit chain: the writer (af.audit) on a real node chains records (hashes recomputed here
// independently), continues the chain after a restart; verify_chain names the exact first bad
// seq after tampering through plain SQL on SQLite and, when AF_TEST_PG_URL is set, PostgreSQL.
#include "af/hash.hpp"
#include "af/node.hpp"
#include "af/store/audit.hpp"
#include "af/v1/audit.pb.h"
#include "flaky_backend.hpp"
#include "support/temp_dir.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

using namespace af;
using namespace std::chrono_literals;

namespace {

node::options with_audit(const std::string& db_path) {
  node::options o;
  log_options lo;
  lo.level = log_level::warn;
  lo.format = "json";
  o.log = make_memory_log_backend(lo, std::make_shared<std::vector<std::string>>());
  store::audit_options ao;
  ao.open = [db_path]() { return store::open_url("sqlite:" + db_path); };
  o.system_services.push_back(store::audit_child(std::move(ao)));
  return o;
}

v1::AuditAppend append(const std::string& actor, const std::string& action, int i) {
  v1::AuditAppend a;
  auto* r = a.mutable_record();
  r->set_actor(actor);
  r->set_action(action);
  r->set_subject("exec/" + std::to_string(i));
  (*r->mutable_details())["tool"] = "search";
  (*r->mutable_details())["i"] = std::to_string(i);
  r->set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
  return a;
}

double metric_sum(node& n, const std::string& prefix) {
  std::istringstream in(n.metrics().serialize_text());
  double sum = 0;
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(prefix)) sum += std::stod(line.substr(line.rfind(' ') + 1));
  return sum;
}

/// Recomputes the chain from the rows with nothing but SHA-256: seq 1.., links, hashes.
void check_chain_independently(const std::vector<store::audit_row>& rows) {
  store::sha256_digest prev{};
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    INFO("seq " << r.seq);
    CHECK(r.seq == i + 1);
    CHECK(r.prev_hash == prev);
    std::string buf(prev.begin(), prev.end());
    buf += r.record;
    CHECK(r.hash == sha256(buf));
    v1::AuditRecord rec;
    REQUIRE(rec.ParseFromString(r.record));
    CHECK(rec.seq() == r.seq);
    CHECK(rec.actor() == r.actor);
    CHECK(rec.ts_ns() == r.ts.time_since_epoch().count());
    CHECK(rec.ts_ns() > 0);
    prev = r.hash;
  }
}

std::vector<store::audit_row> read_all(store::backend& db) {
  auto rows = db.audit_read(1, 1'000'000);
  REQUIRE(rows);
  return *rows;
}

} // namespace

TEST_CASE("audit writer: one append of several records chains them in order, replies with the "
          "last",
          "[audit]") {
  test::temp_dir dir;
  const auto path = (dir.path() / "agentflow.db").string();
  auto nd = node::start(with_audit(path));
  REQUIRE(nd);
  auto& n = **nd;
  REQUIRE(n.ask<v1::AuditAppended>(store::k_audit_agent, append("a", "first", 0), 5s));
  auto many = append("b", "one", 1);
  *many.add_more() = append("b", "two", 2).record();
  *many.add_more() = append("b", "three", 3).record();
  auto bad = many;
  bad.add_more(); // no action
  auto refused = n.ask<v1::AuditAppended>(store::k_audit_agent, bad, 5s);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::validation);
  auto r = n.ask<v1::AuditAppended>(store::k_audit_agent, many, 5s);
  REQUIRE(r);
  CHECK(r->seq() == 4);
  n.shutdown();
  auto db = store::open_url("sqlite:" + path);
  REQUIRE(db);
  const auto rows = read_all(**db);
  REQUIRE(rows.size() == 4);
  check_chain_independently(rows);
  std::vector<std::string> actions;
  for (const auto& row : rows) {
    v1::AuditRecord rec;
    REQUIRE(rec.ParseFromString(row.record));
    actions.push_back(rec.action());
  }
  CHECK(actions == std::vector<std::string>{"first", "one", "two", "three"});
  CHECK(to_hex(r->hash()) == to_hex(std::string{rows.back().hash.begin(), rows.back().hash.end()}));
}

TEST_CASE("audit writer: two writers on one store (two nodes) interleave their records on one "
          "chain - a writer whose head moved chains after the other's rows, drops nothing",
          "[audit]") {
  test::temp_dir dir;
  const auto path = (dir.path() / "agentflow.db").string();
  auto lines_a = std::make_shared<std::vector<std::string>>();
  auto lines_b = std::make_shared<std::vector<std::string>>();
  auto with_lines = [&](std::shared_ptr<std::vector<std::string>> lines) {
    auto o = with_audit(path);
    log_options lo;
    lo.level = log_level::debug;
    lo.format = "json";
    o.log = make_memory_log_backend(lo, std::move(lines));
    return o;
  };
  auto a = node::start(with_lines(lines_a));
  REQUIRE(a);
  auto b = node::start(with_lines(lines_b));
  REQUIRE(b);
  // Both writers read the (empty) head when they opened; A's row makes B's head stale.
  auto r1 = (*a)->ask<v1::AuditAppended>(store::k_audit_agent, append("a", "one", 1), 5s);
  REQUIRE(r1);
  CHECK(r1->seq() == 1);
  auto r2 = (*b)->ask<v1::AuditAppended>(store::k_audit_agent, append("b", "two", 2), 5s);
  INFO((r2 ? std::string{} : r2.error().to_string()));
  REQUIRE(r2);
  CHECK(r2->seq() == 2);
  auto r3 = (*a)->ask<v1::AuditAppended>(store::k_audit_agent, append("a", "three", 3), 5s);
  REQUIRE(r3);
  CHECK(r3->seq() == 3);
  // Then both at once, told without waiting (as executors do): 2 x 300 records.
  constexpr int k_each = 300;
  auto wa = (*a)->lookup(store::k_audit_agent);
  auto wb = (*b)->lookup(store::k_audit_agent);
  REQUIRE(wa);
  REQUIRE(wb);
  std::thread ta{[&] {
    for (int i = 0; i < k_each; ++i)
      (*a)->tell(*wa, append("a", "burst", 100 + i));
  }};
  std::thread tb{[&] {
    for (int i = 0; i < k_each; ++i)
      (*b)->tell(*wb, append("b", "burst", 1000 + i));
  }};
  ta.join();
  tb.join();
  (*a)->shutdown(); // a stopping writer commits what it has taken in
  (*b)->shutdown();
  auto db = store::open_url("sqlite:" + path);
  REQUIRE(db);
  const auto rows = read_all(**db);
  CHECK(rows.size() == 3 + 2 * k_each);
  check_chain_independently(rows);
  std::map<std::string, int> per_actor;
  for (const auto& row : rows)
    ++per_actor[row.actor];
  CHECK(per_actor["a"] == 2 + k_each);
  CHECK(per_actor["b"] == 1 + k_each);
  for (const auto* lines : {lines_a.get(), lines_b.get()})
    for (const auto& l : *lines)
      CHECK(l.find("audit_record_dropped") == std::string::npos);
  // B's first append met A's row: it chained after it instead of failing.
  CHECK(std::any_of(lines_b->begin(), lines_b->end(), [](const std::string& l) {
    return l.find("audit_append_conflict") != std::string::npos;
  }));
}

TEST_CASE("audit writer: chains records, replies after commit, continues after a restart",
          "[audit]") {
  test::temp_dir dir;
  const auto path = (dir.path() / "agentflow.db").string();
  std::set<std::uint64_t> seqs;
  {
    auto nd = node::start(with_audit(path));
    REQUIRE(nd);
    auto& n = **nd;
    auto bad = n.ask<v1::AuditAppended>(store::k_audit_agent, v1::AuditAppend{}, 5s);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code() == errc::validation);

    // Concurrent senders: group commit, every seq exactly once.
    std::mutex mu;
    std::vector<std::thread> senders;
    for (int t = 0; t < 4; ++t)
      senders.emplace_back([&, t] {
        for (int i = 0; i < 25; ++i) {
          auto r = n.ask<v1::AuditAppended>(
              store::k_audit_agent, append("agent-" + std::to_string(t), "tool.call", i), 10s);
          REQUIRE(r);
          CHECK(r->hash().size() == 32);
          std::lock_guard lk{mu};
          seqs.insert(r->seq());
        }
      });
    for (auto& s : senders)
      s.join();
    CHECK(seqs.size() == 100);
    CHECK(*seqs.begin() == 1);
    CHECK(*seqs.rbegin() == 100);
    CHECK(metric_sum(n, "af_audit_records_total") == 100);
  }
  {
    auto db = store::open_url("sqlite:" + path);
    REQUIRE(db);
    auto rows = read_all(**db);
    REQUIRE(rows.size() == 100);
    check_chain_independently(rows);
    auto v = store::verify_chain(**db);
    REQUIRE(v);
    CHECK(v->intact());
    CHECK(v->count == 100);
  }
  // A new writer reads the head and continues the chain.
  {
    auto nd = node::start(with_audit(path));
    REQUIRE(nd);
    for (int i = 0; i < 3; ++i) {
      auto r =
          (*nd)->ask<v1::AuditAppended>(store::k_audit_agent, append("agent-x", "decision", i), 5s);
      REQUIRE(r);
      CHECK(r->seq() == 101 + static_cast<std::uint64_t>(i));
    }
  }
  auto db = store::open_url("sqlite:" + path);
  REQUIRE(db);
  check_chain_independently(read_all(**db));
  store::verify_options small_pages;
  small_pages.page_size = 7;
  auto v = store::verify_chain(**db, small_pages);
  REQUIRE(v);
  CHECK(v->intact());
  CHECK(v->count == 103);
}

namespace {

/// Runs SQL on a store behind the backend's back.
using sql_runner = std::function<void(const std::string&)>;
/// A bytea/blob literal.
using blob_literal = std::function<std::string(const std::string&)>;

constexpr std::uint64_t k_rows = 10;

void fill(store::backend& db) {
  store::sha256_digest prev{};
  std::vector<store::audit_row> rows;
  for (std::uint64_t s = 1; s <= k_rows; ++s) {
    auto a = append("agent-" + std::to_string(s % 3), "tool.call", static_cast<int>(s));
    auto rec = a.record();
    rec.set_seq(s);
    rec.set_tenant("acme");
    rec.set_ts_ns(1'700'000'000'000'000'000 + static_cast<std::int64_t>(s));
    rows.push_back(store::make_audit_row(rec, prev));
    prev = rows.back().hash;
  }
  REQUIRE(db.audit_append(rows));
}

struct tamper_case {
  const char* name;
  std::function<std::string(store::backend&, const blob_literal&)> sql;
  std::uint64_t first_bad_seq;
  store::chain_fault fault;
};

std::vector<tamper_case> tamper_cases() {
  return {
      {"edit a byte of record seq 4",
       [](store::backend& db, const blob_literal& lit) {
         auto rows = db.audit_read(4, 1);
         auto rec = (*rows)[0].record;
         rec[rec.size() / 2] = static_cast<char>(rec[rec.size() / 2] ^ 0x01);
         return "UPDATE audit_log SET record = " + lit(rec) + " WHERE seq = 4";
       },
       4, store::chain_fault::hash_mismatch},
      {"delete seq 6",
       [](store::backend&, const blob_literal&) {
         return std::string{"DELETE FROM audit_log WHERE seq = 6"};
       },
       6, store::chain_fault::gap},
      {"delete seq 6 and renumber the rest",
       [](store::backend&, const blob_literal&) {
         return std::string{"DELETE FROM audit_log WHERE seq = 6;"
                            "UPDATE audit_log SET seq = seq + 1000 WHERE seq > 6;"
                            "UPDATE audit_log SET seq = seq - 1001 WHERE seq > 1000"};
       },
       6, store::chain_fault::reordered},
      {"swap rows 3 and 7 (their seq values)",
       [](store::backend&, const blob_literal&) {
         return std::string{"UPDATE audit_log SET seq = 1003 WHERE seq = 3;"
                            "UPDATE audit_log SET seq = 3 WHERE seq = 7;"
                            "UPDATE audit_log SET seq = 7 WHERE seq = 1003"};
       },
       3, store::chain_fault::reordered},
      {"insert a well-formed row after seq 4",
       [](store::backend& db, const blob_literal& lit) {
         // A forged record, correctly linked to seq 4; the rows after it move up one.
         auto four = (*db.audit_read(4, 1))[0];
         v1::AuditRecord rec;
         rec.set_seq(5);
         rec.set_tenant("acme");
         rec.set_ts_ns(1'700'000'000'000'000'005);
         rec.set_actor("mallory");
         rec.set_action("tool.call");
         rec.set_subject("exec/5");
         auto row = store::make_audit_row(rec, four.hash);
         return std::string{"UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 5;"
                            "UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000;"}
                + "INSERT INTO audit_log (seq, tenant, ts, actor, action, subject, record, "
                  "prev_hash, hash) VALUES (5, 'acme', 1700000000000000005, 'mallory', "
                  "'tool.call', 'exec/5', "
                + lit(row.record) + ", " + lit({four.hash.begin(), four.hash.end()}) + ", "
                + lit({row.hash.begin(), row.hash.end()}) + ")";
       },
       6, store::chain_fault::reordered},
      {"append a row that does not link",
       [](store::backend&, const blob_literal& lit) {
         v1::AuditRecord rec;
         rec.set_seq(11);
         rec.set_ts_ns(1);
         rec.set_action("x");
         auto row = store::make_audit_row(rec, store::sha256_digest{});
         return "INSERT INTO audit_log (seq, tenant, ts, actor, action, subject, record, "
                "prev_hash, hash) VALUES (11, '', 1, '', 'x', '', "
                + lit(row.record) + ", " + lit(std::string(32, '\0')) + ", "
                + lit({row.hash.begin(), row.hash.end()}) + ")";
       },
       11, store::chain_fault::broken_link},
      {"edit the actor column of seq 2",
       [](store::backend&, const blob_literal&) {
         return std::string{"UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"};
       },
       2, store::chain_fault::column_mismatch},
      {"edit the hash of seq 8",
       [](store::backend&, const blob_literal& lit) {
         return "UPDATE audit_log SET hash = " + lit(std::string(32, '\x42')) + " WHERE seq = 8";
       },
       8, store::chain_fault::hash_mismatch},
  };
}

using opener = std::function<expected<std::unique_ptr<store::backend>>()>;

/// `reopen`: a second connection to the same store (the two-reader verification).
void run_tamper_cases(const opener& fresh, const opener& reopen, const sql_runner& run_sql,
                      const blob_literal& lit) {
  for (const auto& tc : tamper_cases()) {
    SECTION(tc.name) {
      auto db = fresh();
      REQUIRE(db);
      fill(**db);
      auto before = store::verify_chain(**db);
      REQUIRE(before);
      REQUIRE(before->intact());
      CHECK(before->count == k_rows);
      auto two = store::parallel_verify_options(reopen);
      two.split_min = 1;
      auto both = store::verify_chain(**db, two);
      REQUIRE(both);
      CHECK(both->intact());
      CHECK(both->count == k_rows);
      run_sql(tc.sql(**db, lit));
      for (auto [page, parallel] : {std::pair{std::size_t{16384}, false},
                                    {std::size_t{3}, false},
                                    {std::size_t{16384}, true},
                                    {std::size_t{3}, true}}) {
        // parallel: as `af audit verify` runs (rows on every core, pages read ahead).
        auto vo = parallel ? store::parallel_verify_options() : store::verify_options{};
        vo.page_size = page;
        INFO("page " << page << (parallel ? ", parallel" : ""));
        auto v = store::verify_chain(**db, vo);
        REQUIRE(v);
        INFO(v->why);
        REQUIRE_FALSE(v->intact());
        CHECK(*v->first_bad_seq == tc.first_bad_seq);
        CHECK(v->fault == tc.fault);
        CHECK(v->count == tc.first_bad_seq - 1);
        CHECK(v->why.find("seq " + std::to_string(tc.first_bad_seq)) != std::string::npos);
      }
      // Two readers, as `af audit verify` runs: the halves split at seq 5 (of 10 or 11 rows), so
      // faults land in either half and on the boundary.
      for (std::size_t page : {std::size_t{16384}, std::size_t{3}, std::size_t{1}}) {
        auto vo = store::parallel_verify_options(reopen);
        vo.split_min = 1;
        vo.page_size = page;
        INFO("two readers, page " << page);
        auto v = store::verify_chain(**db, vo);
        REQUIRE(v);
        INFO(v->why);
        REQUIRE_FALSE(v->intact());
        CHECK(*v->first_bad_seq == tc.first_bad_seq);
        CHECK(v->fault == tc.fault);
        CHECK(v->count == tc.first_bad_seq - 1);
        CHECK(v->why.find("seq " + std::to_string(tc.first_bad_seq)) != std::string::npos);
      }
    }
  }
}

std::string hex_of(const std::string& b) { return to_hex(b); }

} // namespace

TEST_CASE("audit verify: tampering through SQL on SQLite names the first bad seq", "[audit]") {
  test::temp_dir dir;
  const auto path = (dir.path() / "agentflow.db").string();
  auto fresh = [&]() {
    std::filesystem::remove(path);
    return store::open_url("sqlite:" + path);
  };
  auto run_sql = [&](const std::string& sql) {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
    char* msg = nullptr;
    int rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &msg);
    INFO(sql << ": " << (msg ? msg : ""));
    sqlite3_free(msg);
    sqlite3_close(h);
    REQUIRE(rc == SQLITE_OK);
  };
  auto reopen = [&]() { return store::open_sqlite({.path = path, .migrate = false}); };
  run_tamper_cases(fresh, reopen, run_sql,
                   [](const std::string& b) { return "X'" + hex_of(b) + "'"; });
}

TEST_CASE("audit verify: tampering through SQL on PostgreSQL names the first bad seq",
          "[audit][postgres]") {
  const char* url = std::getenv("AF_TEST_PG_URL");
  if (url == nullptr || *url == '\0') {
    WARN("AF_TEST_PG_URL is not set: skipped (run tests/persistence/with_postgres.sh "
         "af_persistence_tests \"[audit]\")");
    return;
  }
  test::temp_dir dir;
  auto fresh = [&]() -> expected<std::unique_ptr<store::backend>> {
    auto db = store::open_url(url);
    if (!db) return db;
    if (auto st = (*db)->migrate_to(0); !st) return st.error();
    if (auto st = (*db)->migrate_to((*db)->latest_schema_version()); !st) return st.error();
    return db;
  };
  auto run_sql = [&](const std::string& sql) {
    auto file = dir.path() / "tamper.sql";
    std::ofstream{file} << sql << ";\n";
    auto cmd = "psql -X -q -v ON_ERROR_STOP=1 '" + std::string{url} + "' -f '" + file.string()
               + "' >/dev/null";
    INFO(sql);
    REQUIRE(std::system(cmd.c_str()) == 0);
  };
  auto reopen = [&]() { return store::open_url(url); };
  run_tamper_cases(fresh, reopen, run_sql,
                   [](const std::string& b) { return "'\\x" + hex_of(b) + "'::bytea"; });
}

namespace {

node::options with_flaky_audit(test::flaky_backend::faults f,
                               std::shared_ptr<std::atomic<int>> calls,
                               std::shared_ptr<std::vector<std::string>> lines = nullptr) {
  node::options o;
  log_options lo;
  lo.level = log_level::error;
  lo.format = "json";
  o.log = make_memory_log_backend(lo, lines ? lines : std::make_shared<std::vector<std::string>>());
  store::audit_options ao;
  ao.open = [f, calls]() -> expected<std::unique_ptr<store::backend>> {
    return std::unique_ptr<store::backend>{std::make_unique<test::flaky_backend>(f, calls)};
  };
  ao.retry.base = 1ms;
  ao.retry.cap = 5ms;
  o.system_services.push_back(store::audit_child(std::move(ao)));
  return o;
}

} // namespace

TEST_CASE("audit writer: a transient commit failure is retried", "[audit]") {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto nd = node::start(with_flaky_audit({.audit_failures = 2}, calls));
  REQUIRE(nd);
  auto& n = **nd;
  auto r = n.ask<v1::AuditAppended>(store::k_audit_agent, append("a", "tool.call", 1), 5s);
  INFO((r ? std::string{} : r.error().to_string()));
  REQUIRE(r);
  CHECK(r->seq() == 1);
  CHECK(calls->load() == 3);
  CHECK(metric_sum(n, "af_retry_attempts_total{name=\"audit\",outcome=\"retry\"}") == 2);
  auto next = n.ask<v1::AuditAppended>(store::k_audit_agent, append("a", "tool.call", 2), 5s);
  REQUIRE(next);
  CHECK(next->seq() == 2);
}

TEST_CASE("audit writer: a commit that landed despite an error is not chained twice", "[audit]") {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto nd = node::start(with_flaky_audit({.audit_failures_after_commit = 1}, calls));
  REQUIRE(nd);
  auto& n = **nd;
  auto r = n.ask<v1::AuditAppended>(store::k_audit_agent, append("a", "tool.call", 1), 5s);
  INFO((r ? std::string{} : r.error().to_string()));
  REQUIRE(r);
  CHECK(r->seq() == 1);
  CHECK(calls->load() == 1); // acknowledged from the head, not written again
  auto next = n.ask<v1::AuditAppended>(store::k_audit_agent, append("a", "tool.call", 2), 5s);
  REQUIRE(next);
  CHECK(next->seq() == 2);
  CHECK(metric_sum(n, "af_audit_records_total") == 2);
}

TEST_CASE("audit writer: gives up after the retry policy's attempts", "[audit]") {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto lines = std::make_shared<std::vector<std::string>>();
  auto nd = node::start(with_flaky_audit({.audit_failures = 1000}, calls, lines));
  REQUIRE(nd);
  auto r = (*nd)->ask<v1::AuditAppended>(store::k_audit_agent, append("a", "x", 1), 10s);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == errc::transient);
  CHECK(r.error().message().find("5 attempts") != std::string::npos);
  CHECK(calls->load() == 5);
  // A record sent without waiting (as executors send theirs) is not dropped silently either.
  auto writer = (*nd)->lookup(store::k_audit_agent);
  REQUIRE(writer);
  (*nd)->tell(*writer, append("a", "told.action", 2));
  (*nd)->shutdown(); // the log lines are read once the node's threads are done
  int dropped = 0;
  for (const auto& l : *lines)
    if (l.find("audit_record_dropped") != std::string::npos
        && l.find("told.action") != std::string::npos)
      ++dropped;
  CHECK(dropped == 1);
}

TEST_CASE("audit verify: the parallel row check finds the same first bad row", "[audit]") {
  std::vector<store::audit_row> rows;
  store::sha256_digest prev{};
  for (std::uint64_t s = 1; s <= 3000; ++s) {
    auto rec = append("agent", "tool.call", static_cast<int>(s)).record();
    rec.set_seq(s);
    rec.set_tenant("acme");
    rec.set_ts_ns(1'700'000'000'000'000'000 + static_cast<std::int64_t>(s));
    rows.push_back(store::make_audit_row(rec, prev));
    prev = rows.back().hash;
  }
  for (bool columns : {true, false}) {
    for (unsigned threads : {0U, 1U, 2U, 3U, 7U})
      CHECK(store::first_bad_row_parallel(rows, columns, threads) == rows.size());
  }
  // Bad rows in several parts: the first one counts, whichever thread finds it.
  for (std::size_t first :
       {std::size_t{0}, std::size_t{999}, std::size_t{1000}, std::size_t{2999}}) {
    auto bad = rows;
    bad[first].record.back() ^= 0x01;
    if (first + 1500 < bad.size()) bad[first + 1500].actor = "someone else";
    if (first >= 1) bad[first - 1].actor = "x"; // a column fault, seen only with check_columns
    for (unsigned threads : {0U, 1U, 2U, 3U, 7U}) {
      INFO("first " << first << ", threads " << threads);
      CHECK(store::first_bad_row_parallel(bad, false, threads) == first);
      CHECK(store::first_bad_row_parallel(bad, true, threads) == (first >= 1 ? first - 1 : 0));
    }
  }
}

TEST_CASE("audit verify: the column check agrees with a full Protobuf parse", "[audit]") {
  // Rows whose hash is right, so check_row gets to the columns: the scan must say what a parse
  // and comparison say, for real records, mismatched columns and garbage bytes.
  std::mt19937_64 rng{20261122};
  auto text = [&](std::size_t max) {
    std::string s(rng() % (max + 1), 'x');
    for (auto& c : s)
      c = static_cast<char>('a' + rng() % 26);
    return s;
  };
  auto by_parse = [](const store::audit_row& row) {
    v1::AuditRecord r;
    return r.ParseFromString(row.record) && r.tenant() == row.tenant && r.actor() == row.actor
           && r.action() == row.action && r.subject() == row.subject
           && r.ts_ns() == row.ts.time_since_epoch().count();
  };
  for (int i = 0; i < 2000; ++i) {
    v1::AuditRecord rec;
    rec.set_seq(static_cast<std::uint64_t>(i) + 1);
    rec.set_tenant(text(8));
    rec.set_ts_ns(static_cast<std::int64_t>(rng() >> (rng() % 64)) * (i % 7 == 0 ? -1 : 1));
    rec.set_actor(text(20));
    rec.set_action(text(12));
    rec.set_subject(text(300));
    if (i % 2 == 0) (*rec.mutable_details())[text(5)] = text(10);
    if (i % 3 == 0) rec.set_payload(text(50));
    if (i % 5 == 0) rec.set_trace_id(text(32));
    auto row = store::make_audit_row(rec, {});
    row.tenant = rec.tenant();
    row.actor = rec.actor();
    row.action = rec.action();
    row.subject = rec.subject();
    row.ts = time_point{duration{rec.ts_ns()}};
    INFO("record " << i);
    REQUIRE(by_parse(row));
    CHECK(store::check_row(row) == store::chain_fault::none);
    auto bad = row;
    switch (i % 5) {
    case 0:
      bad.tenant += "x";
      break;
    case 1:
      bad.actor = "someone-else";
      break;
    case 2:
      bad.action.clear();
      break;
    case 3:
      bad.subject += "!";
      break;
    default:
      bad.ts += duration{1};
      break;
    }
    if (bad.action == row.action && bad.tenant == row.tenant && bad.actor == row.actor
        && bad.subject == row.subject && bad.ts == row.ts)
      continue; // an empty action cleared again: no change
    CHECK_FALSE(by_parse(bad));
    CHECK(store::check_row(bad) == store::chain_fault::column_mismatch);
    // Garbage after a valid seq prefix, hashed correctly: never "none" unless a parse agrees.
    auto junk = row;
    junk.record = std::string("\x08", 1) + static_cast<char>(i % 100 + 1) + text(40);
    junk.seq = static_cast<std::uint64_t>(i % 100 + 1);
    junk.hash = store::chain_hash(junk.prev_hash, junk.record);
    const bool parse_ok = by_parse(junk);
    CHECK((store::check_row(junk) == store::chain_fault::none) == parse_ok);
  }
}

TEST_CASE("audit chain: a row made without copying the record equals the row of the filled copy",
          "[audit]") {
  // The writer chains records as the sender sent them, with seq, tenant and ts_ns given apart
  // (written ahead of the record's bytes when the sender left them unset, as deterministic
  // serialization orders fields by number; replaced on a copy when it did not).
  std::mt19937_64 rng{20261208};
  auto text = [&](std::size_t max) {
    std::string s(rng() % (max + 1), 'x');
    for (auto& c : s)
      c = static_cast<char>('a' + rng() % 26);
    return s;
  };
  for (int i = 0; i < 3000; ++i) {
    v1::AuditRecord rec;
    if (i % 10 == 0) rec.set_seq(rng() % 1000 + 1); // a sender that set what the writer sets
    if (i % 15 == 0) rec.set_tenant(text(8));
    if (i % 20 == 0) rec.set_ts_ns(static_cast<std::int64_t>(rng() % 1000 + 1));
    rec.set_actor(text(40));
    rec.set_action(text(16) + "a");
    rec.set_subject(text(i % 50 == 0 ? 5000 : 60));
    const auto entries = rng() % 6;
    for (std::uint64_t k = 0; k < entries; ++k)
      (*rec.mutable_details())[text(6)] = text(24);
    if (i % 3 == 0) rec.set_payload(text(200));
    if (i % 5 == 0) rec.set_trace_id(text(32));
    const std::uint64_t seq = i % 7 == 0 ? 0 : rng() >> (rng() % 64);
    const std::string tenant = i % 9 == 0 ? std::string{} : text(12);
    const auto ns =
        i % 13 == 0 ? 0 : static_cast<std::int64_t>(rng() >> (rng() % 64)) * (i % 4 == 0 ? -1 : 1);
    const time_point ts{std::chrono::nanoseconds{ns}};
    store::sha256_digest prev{};
    prev.fill(static_cast<std::uint8_t>(i));
    v1::AuditRecord filled = rec;
    filled.set_seq(seq);
    filled.set_tenant(tenant);
    filled.set_ts_ns(ns);
    INFO("record " << i);
    const auto want = store::make_audit_row(filled, prev);
    const auto got = store::make_audit_row(rec, seq, tenant, ts, prev);
    REQUIRE(got.record == want.record);
    CHECK(got.hash == want.hash);
    CHECK(got.prev_hash == want.prev_hash);
    CHECK(got.seq == want.seq);
    CHECK(got.tenant == want.tenant);
    CHECK(got.ts == want.ts);
    CHECK(got.actor == want.actor);
    CHECK(got.action == want.action);
    CHECK(got.subject == want.subject);
    if (seq != 0) CHECK(store::check_row(got) == store::chain_fault::none); // chains start at 1
  }
}

TEST_CASE("audit chain: canonical bytes are the deterministic Protobuf serialization", "[audit]") {
  // canonical_bytes writes into a buffer of the exact size; the reference is the serializer
  // docs/storage.md names: a CodedOutputStream with deterministic serialization. Maps of
  // several entries (sorted only when deterministic), empty strings, payloads and big seqs.
  std::mt19937_64 rng{20261207};
  auto text = [&](std::size_t max) {
    std::string s(rng() % (max + 1), 'x');
    for (auto& c : s)
      c = static_cast<char>('a' + rng() % 26);
    return s;
  };
  auto reference = [](const v1::AuditRecord& r) {
    std::string out;
    {
      google::protobuf::io::StringOutputStream stream{&out};
      google::protobuf::io::CodedOutputStream coded{&stream};
      coded.SetSerializationDeterministic(true);
      r.SerializeToCodedStream(&coded);
    }
    return out;
  };
  CHECK(store::canonical_bytes(v1::AuditRecord{}).empty());
  for (int i = 0; i < 3000; ++i) {
    v1::AuditRecord rec;
    rec.set_seq(rng() >> (rng() % 64));
    rec.set_tenant(text(8));
    rec.set_ts_ns(static_cast<std::int64_t>(rng() >> (rng() % 64)) * (i % 7 == 0 ? -1 : 1));
    rec.set_actor(text(40));
    rec.set_action(text(16));
    rec.set_subject(text(i % 50 == 0 ? 5000 : 60));
    const auto entries = rng() % 6;
    for (std::uint64_t k = 0; k < entries; ++k)
      (*rec.mutable_details())[text(6)] = text(k == 0 && i % 11 == 0 ? 20000 : 24);
    if (i % 3 == 0) rec.set_payload(text(200));
    if (i % 4 == 0) rec.set_payload_type(text(30));
    if (i % 5 == 0) rec.set_trace_id(text(32));
    if (i % 6 == 0) rec.set_span_id(text(16));
    INFO("record " << i);
    const auto bytes = store::canonical_bytes(rec);
    REQUIRE(bytes == reference(rec));
    v1::AuditRecord back;
    REQUIRE(back.ParseFromString(bytes));
    CHECK(back.seq() == rec.seq());
    CHECK(back.details_size() == rec.details_size());
  }
}
