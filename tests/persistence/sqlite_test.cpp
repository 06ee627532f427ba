// SQLite-specific behaviour the conformance suite cannot see: where the file goes, the PRAGMAs
// really in force, the schema as plain SQL sees it, and clear errors for bad files and directories.
#include "af/store/backend.hpp"
#include "migrations.hpp"
#include "sqlite_backend.hpp"
#include "sqlite_wal_vfs.hpp"
#include "support/temp_dir.hpp"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <latch>
#include <thread>
#include <vector>

using namespace af;
using namespace af::store;
namespace fs = std::filesystem;

namespace {

const time_point t0{std::chrono::nanoseconds{1'700'000'000'000'000'001}};

/// A plain connection of our own, as an operator's tool would open the file.
class raw_db {
public:
  explicit raw_db(const std::string& path) {
    REQUIRE(sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  }
  ~raw_db() { sqlite3_close_v2(db_); }
  raw_db(const raw_db&) = delete;
  raw_db& operator=(const raw_db&) = delete;

  /// The rows of `sql`, each column as text ("NULL" for NULL).
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    INFO(sql);
    REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    std::vector<std::vector<std::string>> out;
    int rc = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      auto& row = out.emplace_back();
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        const auto* v = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
        row.emplace_back(v != nullptr ? v : "NULL");
      }
    }
    sqlite3_finalize(s);
    REQUIRE(rc == SQLITE_DONE);
    return out;
  }
  std::string one(const std::string& sql) {
    auto r = rows(sql);
    REQUIRE(r.size() == 1);
    return r[0].at(0);
  }
  int exec(const std::string& sql) {
    return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  }

private:
  sqlite3* db_ = nullptr;
};

std::unique_ptr<backend> must_open(sqlite_options opts) {
  auto b = open_sqlite(opts);
  if (!b) FAIL(b.error().to_string());
  return std::move(*b);
}

append_request req(std::string stream, std::uint64_t expected, std::size_t n) {
  append_request r{std::move(stream), "t1", expected, {}};
  for (std::size_t i = 0; i < n; ++i)
    r.events.push_back({"af.v1.T", "p" + std::to_string(i), {}});
  return r;
}

std::vector<std::string> table_names(raw_db& raw) {
  std::vector<std::string> out;
  for (auto& r : raw.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))
    out.push_back(r[0]);
  return out;
}

} // namespace

TEST_CASE("sqlite: the database file goes where asked in WAL mode with its directories",
          "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "node-a" / "data" / "agentflow.db").string();
  auto db = must_open({.path = path});
  CHECK(db->kind() == "sqlite");
  CHECK(db->location() == path);
  CHECK(fs::is_regular_file(path));
  REQUIRE(db->append_batch(std::vector{req("exec/1", 0, 2)}, t0).at(0));
  // WAL mode: committed pages go to the -wal file next to the database first.
  CHECK(fs::exists(path + "-wal"));
  CHECK(sqlite_pragma(*db, "journal_mode").value() == "wal");

  raw_db raw{path};
  CHECK(raw.one("PRAGMA journal_mode") == "wal"); // persistent: stored in the file
  CHECK(table_names(raw)
        == std::vector<std::string>{"audit_log", "events", "schema_migrations", "snapshots",
                                    "streams"});
  auto applied = raw.rows("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1");
  REQUIRE(applied.size() == 5);
  CHECK(applied[0][0] == "1");
  CHECK(applied[0][1] == "journal");
  CHECK(applied[1][0] == "2");
  CHECK(applied[1][1] == "audit_log");
  CHECK(applied[2][0] == "3");
  CHECK(applied[2][1] == "retention");
  CHECK(applied[3][0] == "4");
  CHECK(applied[3][1] == "events_append_order");
  CHECK(applied[4][0] == "5");
  CHECK(applied[4][1] == "stream_ids");
  CHECK_THAT(applied[0][2], Catch::Matches(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"));
}

TEST_CASE("sqlite: synchronous and busy_timeout are really set on the connection", "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  // PRAGMA synchronous reads back 0 = OFF, 1 = NORMAL, 2 = FULL, 3 = EXTRA.
  {
    auto db = must_open({.path = path});
    CHECK(sqlite_pragma(*db, "synchronous").value() == "2"); // FULL by default
    CHECK(sqlite_pragma(*db, "busy_timeout").value() == "5000");
    // Statement journals in memory (2 = MEMORY): no temporary file per group commit.
    CHECK(sqlite_pragma(*db, "temp_store").value() == "2");
  }
  for (auto [setting, value] : std::vector<std::pair<std::string, std::string>>{
           {"NORMAL", "1"}, {"off", "0"}, {"Full", "2"}, {"EXTRA", "3"}}) {
    INFO(setting);
    auto db = must_open({.path = path, .synchronous = setting, .busy_timeout_ms = 1234});
    CHECK(sqlite_pragma(*db, "synchronous").value() == value);
    CHECK(sqlite_pragma(*db, "busy_timeout").value() == "1234");
    CHECK(sqlite_pragma(*db, "journal_mode").value() == "wal");
  }
  auto bad = open_sqlite({.path = path, .synchronous = "sometimes"});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == errc::validation);
  CHECK_THAT(bad.error().message(), Catch::Contains(path) && Catch::Contains("'sometimes'"));
  CHECK_FALSE(open_sqlite({.path = path, .busy_timeout_ms = -1}));
  CHECK_FALSE(open_sqlite({.path = ""}));

  auto mem = make_memory_backend();
  auto not_sqlite = sqlite_pragma(*mem, "synchronous");
  REQUIRE_FALSE(not_sqlite);
  CHECK(not_sqlite.error().code() == errc::validation);
}

TEST_CASE("sqlite: rows are plain SQL an operator can read", "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  auto db = must_open({.path = path});
  append_request r{"exec/7", "acme", 0, {}};
  sha256_digest h{};
  h.fill(0xab);
  r.events.push_back({"af.v1.StepDone", std::string("\0\1\2", 3), h});
  r.events.push_back({"af.v1.StepDone", "", {}});
  REQUIRE(db->append_batch(std::span{&r, 1}, t0).at(0));
  REQUIRE(db->save_snapshot({"exec/7", "acme", 1, "af.v1.S", "snap", t0}));

  raw_db raw{path};
  auto events = raw.rows("SELECT s.stream, e.version, e.tenant, e.type, typeof(e.payload),"
                         " length(e.payload), hex(e.envelope_hash), e.committed_at FROM events AS e"
                         " JOIN streams AS s ON s.id = e.stream_id ORDER BY e.version");
  REQUIRE(events.size() == 2);
  std::string hash_hex;
  for (int i = 0; i < 32; ++i)
    hash_hex += "AB";
  CHECK(events[0]
        == std::vector<std::string>{"exec/7", "1", "acme", "af.v1.StepDone", "blob", "3", hash_hex,
                                    "1700000000000000001"});
  CHECK(events[1][4] == "blob"); // an empty payload is an empty blob, not NULL
  CHECK(events[1][5] == "0");
  CHECK(events[1][6] == std::string(64, '0'));
  CHECK(raw.rows("SELECT stream, tenant, version FROM streams")
        == std::vector<std::vector<std::string>>{{"exec/7", "acme", "2"}});
  CHECK(raw.rows("SELECT stream, tenant, version, type, payload, taken_at FROM snapshots")
        == std::vector<std::vector<std::string>>{
            {"exec/7", "acme", "1", "af.v1.S", "snap", "1700000000000000001"}});
  // A second connection sees an acknowledged append at once: it is committed.
  REQUIRE(db->append_batch(std::vector{req("exec/8", 0, 3)}, t0).at(0));
  CHECK(raw.one("SELECT count(*) FROM events WHERE stream_id ="
                " (SELECT id FROM streams WHERE stream = 'exec/8')")
        == "3");
}

TEST_CASE("sqlite: migrating to 0 leaves only schema_migrations and up again recreates",
          "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  auto db = must_open({.path = path});
  REQUIRE(db->migrate_to(0));
  {
    raw_db raw{path};
    CHECK(table_names(raw) == std::vector<std::string>{"schema_migrations"});
    CHECK(raw.one("SELECT count(*) FROM schema_migrations") == "0");
    CHECK(raw.one("SELECT count(*) FROM sqlite_master WHERE type = 'index'") == "0");
  }
  auto failed = db->version("exec/1");
  REQUIRE_FALSE(failed);
  CHECK_THAT(failed.error().message(), Catch::Contains(path) && Catch::Contains("streams"));
  REQUIRE(db->migrate_to(1));
  {
    raw_db raw{path};
    CHECK(table_names(raw)
          == std::vector<std::string>{"events", "schema_migrations", "snapshots", "streams"});
  }
  // Opening migrates the rest of the way.
  db.reset();
  db = must_open({.path = path});
  CHECK(db->schema_version().value() == 5);
  // Opening with migrate = false leaves the schema alone.
  REQUIRE(db->migrate_to(0));
  db.reset();
  db = must_open({.path = path, .migrate = false});
  CHECK(db->schema_version().value() == 0);
}

TEST_CASE("sqlite: migrations 4 (commit order) and 5 (stream ids) keep what schema 3 wrote",
          "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  auto db = must_open({.path = path});
  REQUIRE(db->migrate_to(3));
  {
    // Rows as a schema-3 build wrote them: events clustered by (stream, version), no seq.
    raw_db raw{path};
    CHECK(raw.one("SELECT count(*) FROM pragma_table_info('events') WHERE name = 'seq'") == "0");
    REQUIRE(raw.exec("INSERT INTO streams (stream, tenant, version) VALUES ('exec/b', 't1', 3),"
                     " ('exec/a', 't2', 3)")
            == SQLITE_OK);
    REQUIRE(raw.exec("INSERT INTO events (stream, version, tenant, type, payload, envelope_hash,"
                     " committed_at) VALUES ('exec/b', 1, 't1', 'T', x'b1', zeroblob(32), 11),"
                     " ('exec/a', 1, 't2', 'T', x'a1', zeroblob(32), 12),"
                     " ('exec/b', 2, 't1', 'T', x'b2', zeroblob(32), 13),"
                     " ('exec/a', 2, 't2', 'T', x'a2', zeroblob(32), 14),"
                     " ('exec/b', 3, 't1', 'T', x'b3', zeroblob(32), 15),"
                     " ('exec/a', 3, 't2', 'U', x'a3', randomblob(32), 16)")
            == SQLITE_OK);
  }
  REQUIRE(db->migrate_to(4));
  {
    raw_db raw{path};
    // Copied in (stream, version) order; the key is a unique index now.
    CHECK(raw.rows("SELECT seq, stream, version FROM events ORDER BY seq")
          == std::vector<std::vector<std::string>>{{"1", "exec/a", "1"},
                                                   {"2", "exec/a", "2"},
                                                   {"3", "exec/a", "3"},
                                                   {"4", "exec/b", "1"},
                                                   {"5", "exec/b", "2"},
                                                   {"6", "exec/b", "3"}});
    CHECK(raw.exec("INSERT INTO events (stream, version, tenant, type, payload, envelope_hash,"
                   " committed_at) VALUES ('exec/a', 2, 't1', 't', x'', zeroblob(32), 0)")
          == SQLITE_CONSTRAINT);
  }
  const auto hash_a3 = [&] {
    raw_db raw{path};
    return raw.one("SELECT hex(envelope_hash) FROM events WHERE stream = 'exec/a' AND version = 3");
  }();
  REQUIRE(db->migrate_to(5));
  {
    raw_db raw{path};
    // Ids in stream order; events keep their seq and name their stream by id.
    CHECK(raw.rows("SELECT stream, id FROM streams ORDER BY stream")
          == std::vector<std::vector<std::string>>{{"exec/a", "1"}, {"exec/b", "2"}});
    CHECK(raw.rows("SELECT seq, stream_id, version, hex(payload), committed_at FROM events"
                   " ORDER BY seq")
          == std::vector<std::vector<std::string>>{{"1", "1", "1", "A1", "12"},
                                                   {"2", "1", "2", "A2", "14"},
                                                   {"3", "1", "3", "A3", "16"},
                                                   {"4", "2", "1", "B1", "11"},
                                                   {"5", "2", "2", "B2", "13"},
                                                   {"6", "2", "3", "B3", "15"}});
    CHECK(raw.one("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name ="
                  " 'events_by_stream' AND sql LIKE '%UNIQUE%(stream_id, version)%'")
          == "1");
    CHECK(raw.exec("INSERT INTO events (stream_id, version, tenant, type, payload, envelope_hash,"
                   " committed_at) VALUES (1, 2, 't1', 't', x'', zeroblob(32), 0)")
          == SQLITE_CONSTRAINT);
    CHECK(raw.exec("UPDATE streams SET id = 1 WHERE stream = 'exec/b'") == SQLITE_CONSTRAINT);
  }
  // Reads by name find the events through the id.
  auto a = db->read("exec/a", 2, 100).value();
  REQUIRE(a.size() == 2);
  CHECK(a[0].stream == "exec/a");
  CHECK(a[0].version == 2);
  CHECK(a[0].tenant == "t2");
  CHECK(a[0].payload == "\xa2");
  CHECK(a[1].type == "U");
  CHECK(a[1].committed_at == af::time_point{std::chrono::nanoseconds{16}});
  std::string hex;
  for (auto byte : a[1].envelope_hash) {
    constexpr const char* digits = "0123456789ABCDEF";
    hex += digits[byte >> 4];
    hex += digits[byte & 15];
  }
  CHECK(hex == hash_a3);
  CHECK(db->read("exec/b", 1, 100).value().size() == 3);
  CHECK(db->version("exec/b").value() == 3);
  // Appends continue the streams; a new stream gets the next id; a stale version still conflicts.
  auto out = db->append_batch(
      std::vector{req("exec/b", 3, 1), req("exec/c", 0, 2), req("exec/b", 3, 1)}, t0);
  REQUIRE(out.size() == 3);
  CHECK(out[0]);
  CHECK(out[1]);
  REQUIRE_FALSE(out[2]);
  CHECK(out[2].error().code() == af::errc::conflict);
  {
    raw_db raw{path};
    CHECK(raw.one("SELECT id FROM streams WHERE stream = 'exec/c'") == "3");
    CHECK(raw.rows("SELECT seq, stream_id, version FROM events WHERE seq > 6 ORDER BY seq")
          == std::vector<std::vector<std::string>>{
              {"7", "2", "4"}, {"8", "3", "1"}, {"9", "3", "2"}});
  }
  // Down to 4: every event under its stream's name again.
  REQUIRE(db->migrate_to(4));
  {
    raw_db raw{path};
    CHECK(raw.rows("SELECT seq, stream, version FROM events WHERE seq > 5 ORDER BY seq")
          == std::vector<std::vector<std::string>>{{"6", "exec/b", "3"},
                                                   {"7", "exec/b", "4"},
                                                   {"8", "exec/c", "1"},
                                                   {"9", "exec/c", "2"}});
    CHECK(raw.one("SELECT count(*) FROM pragma_table_info('streams') WHERE name = 'id'") == "0");
    CHECK(raw.one("SELECT count(*) FROM sqlite_master WHERE name = 'streams_by_id'") == "0");
  }
  // Down to 3: the clustered table with every event; and up again to the latest.
  REQUIRE(db->migrate_to(3));
  {
    raw_db raw{path};
    CHECK(raw.one("SELECT count(*) FROM events") == "9");
    CHECK(raw.one("SELECT count(*) FROM pragma_table_info('events') WHERE name = 'seq'") == "0");
    CHECK(raw.one("SELECT count(*) FROM sqlite_master WHERE name = 'events_by_stream'") == "0");
  }
  REQUIRE(db->migrate_to(5));
  CHECK(db->read("exec/a", 1, 100).value().size() == 3);
  CHECK(db->read("exec/b", 1, 100).value().size() == 4);
  CHECK(db->read("exec/c", 1, 100).value().size() == 2);
  REQUIRE(db->append_batch(std::vector{req("exec/d", 0, 1)}, t0).at(0));
  raw_db raw{path};
  CHECK(raw.one("SELECT id FROM streams WHERE stream = 'exec/d'") == "4");
}

TEST_CASE("sqlite: connections of one process to one file commit through one writer", "[sqlite]") {
  // The journal and the audit writer each have a connection; SQLite admits one writer at a time.
  // With no busy timeout at all, two connections writing at once would get "database is locked";
  // through the process's commit hub they never contend, and whoever commits carries the other's
  // queued writes.
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  auto journal = must_open({.path = path, .busy_timeout_ms = 0});
  auto journal2 = must_open({.path = path, .busy_timeout_ms = 0});
  auto audit = must_open({.path = path, .busy_timeout_ms = 0});
  constexpr int k_rounds = 300;
  std::vector<std::string> errors[3];
  auto appender = [&](backend& db, const std::string& stream, std::vector<std::string>& errs) {
    for (int i = 0; i < k_rounds; ++i) {
      auto out = db.append_batch(std::vector{req(stream, static_cast<std::uint64_t>(i), 1)}, t0);
      if (!out.at(0)) errs.push_back(out[0].error().to_string());
    }
  };
  std::thread a([&] { appender(*journal, "exec/a", errors[0]); });
  std::thread b([&] { appender(*journal2, "exec/b", errors[1]); });
  std::thread c([&] {
    sha256_digest prev{};
    for (int i = 1; i <= k_rounds; ++i) {
      audit_row row{static_cast<std::uint64_t>(i), "t1", t0, "tester", "test.write", "exec/a",
                    "record-" + std::to_string(i), prev, {}};
      row.hash.fill(static_cast<std::uint8_t>(i));
      row.hash[0] = static_cast<std::uint8_t>(i >> 8);
      if (auto st = audit->audit_append(std::span{&row, 1}); !st)
        errors[2].push_back(st.error().to_string());
      prev = row.hash;
    }
  });
  a.join();
  b.join();
  c.join();
  for (const auto& e : errors) {
    INFO((e.empty() ? std::string{} : e.front()));
    CHECK(e.empty());
  }
  CHECK(journal->version("exec/a").value() == k_rounds);
  CHECK(journal->version("exec/b").value() == k_rounds);
  CHECK(audit->audit_last().value().seq == k_rounds);
  raw_db raw{path};
  CHECK(raw.one("SELECT count(*) FROM events") == std::to_string(2 * k_rounds));
  CHECK(raw.one("SELECT count(*) FROM audit_log") == std::to_string(k_rounds));
}

TEST_CASE("sqlite: an audit write between two journal commits rides in the next one", "[sqlite]") {
  // The journal under load commits again soon after each commit (it holds for its appenders'
  // next appends in between): an audit batch arriving in that gap waits for the next journal
  // commit to carry it instead of committing alone, with a sync of its own that the journal's
  // next commit would wait for. A commit alone takes well under a millisecond here
  // (synchronous=OFF); the wait lasts up to 10 ms, so 1 ms after it started the audit write is
  // still waiting, unless this thread overslept its 1 ms by more than 9 (a loaded machine, as
  // a full CI run under ASan: 5 attempts of a 3 ms sleep all overslept once): such an attempt
  // is tried again.
  bool waited = false;
  for (int attempt = 0; attempt < 20 && !waited; ++attempt) {
    af::test::temp_dir dir{"af-sqlite"};
    const auto path = (dir.path() / "agentflow.db").string();
    auto journal = must_open({.path = path, .synchronous = "OFF"});
    auto audit = must_open({.path = path, .synchronous = "OFF"});
    std::thread j(
        [&] { REQUIRE(journal->append_batch(std::vector{req("exec/a", 0, 1)}, t0).at(0)); });
    j.join();
    std::atomic<bool> audit_done{false};
    status audited;
    std::thread a([&] {
      audit_row row{1, "t1", t0, "tester", "test.write", "exec/a", "record-1", {}, {}};
      row.hash.fill(1);
      audited = audit->audit_append(std::span{&row, 1});
      audit_done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    waited = !audit_done.load();
    std::thread j2(
        [&] { REQUIRE(journal->append_batch(std::vector{req("exec/a", 1, 1)}, t0).at(0)); });
    j2.join();
    a.join();
    CHECK(audited);
    CHECK(audit->audit_last().value().seq == 1);
    CHECK(journal->version("exec/a").value() == 2);
  }
  CHECK(waited);
}

TEST_CASE("sqlite: a thread writing the journal and the audit chain in turn never waits",
          "[sqlite]") {
  // One thread alternating the two connections (as a tool or the benchmarks' store replay
  // does): the audit write cannot be carried by a journal commit of its own thread, so it
  // commits at once instead of waiting up to 10 ms for one each time.
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  auto journal = must_open({.path = path, .synchronous = "OFF"});
  auto audit = must_open({.path = path, .synchronous = "OFF"});
  constexpr int k_rounds = 20;
  sha256_digest prev{};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 1; i <= k_rounds; ++i) {
    REQUIRE(
        journal->append_batch(std::vector{req("exec/a", static_cast<std::uint64_t>(i - 1), 1)}, t0)
            .at(0));
    audit_row row{static_cast<std::uint64_t>(i), "t1", t0, "tester", "test.write", "exec/a",
                  "record-" + std::to_string(i), prev, {}};
    row.hash.fill(static_cast<std::uint8_t>(i));
    REQUIRE(audit->audit_append(std::span{&row, 1}));
    prev = row.hash;
  }
  const auto took = std::chrono::steady_clock::now() - start;
  // Waiting for a carrier each time would take 20 x 10 ms.
  CHECK(took < std::chrono::milliseconds(k_rounds * 10 * 3 / 4));
  CHECK(audit->audit_last().value().seq == k_rounds);
}

TEST_CASE("sqlite: the embedded migrations are numbered 1..n with both directions", "[sqlite]") {
  for (std::string_view backend : {"sqlite", "postgres"}) {
    INFO(backend);
    auto all = migrations_for(backend);
    REQUIRE(all.size() >= 2);
    for (std::size_t i = 0; i < all.size(); ++i) {
      CHECK(all[i].number == static_cast<int>(i + 1));
      CHECK_FALSE(all[i].up.empty());
      CHECK_FALSE(all[i].down.empty());
    }
    CHECK(all[0].name == "journal");
    CHECK(all[1].name == "audit_log");
    CHECK(all[0].up.find("CREATE TABLE events") != std::string_view::npos);
    CHECK(all[1].up.find("CREATE TABLE audit_log") != std::string_view::npos);
  }
  CHECK(migrations_for("oracle").empty());
  // The memory backend emulates the same schema levels.
  CHECK(make_memory_backend()->latest_schema_version()
        == static_cast<int>(migrations_for("sqlite").size()));
}

TEST_CASE("sqlite: a file that is not a database is a clear error", "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = dir.write("agentflow.db", std::string(8192, 'x') + "this is not a database");
  auto db = open_sqlite({.path = path});
  REQUIRE_FALSE(db);
  INFO(db.error().to_string());
  CHECK(db.error().code() == errc::internal);
  CHECK_THAT(db.error().message(),
             Catch::Contains(path) && Catch::Contains("file is not a database"));
  // The file is left alone.
  std::ifstream in{path, std::ios::binary};
  std::string text{std::istreambuf_iterator<char>{in}, {}};
  CHECK(text.size() == 8192 + 22);

  // A directory where the file should be.
  fs::create_directories(dir.path() / "dir.db");
  auto d = open_sqlite({.path = (dir.path() / "dir.db").string()});
  REQUIRE_FALSE(d);
  CHECK_THAT(d.error().message(), Catch::Contains("dir.db") && Catch::Contains("directory"));
}

TEST_CASE("sqlite: a damaged database gives errors and no crash", "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  {
    auto db = must_open({.path = path});
    std::vector<append_request> batch;
    for (int i = 0; i < 50; ++i)
      batch.push_back(req("exec/" + std::to_string(i), 0, 20));
    for (auto& r : db->append_batch(batch, t0))
      REQUIRE(r);
  } // the last connection closes: the WAL is checkpointed into the file and removed
  REQUIRE_FALSE(fs::exists(path + "-wal"));
  const auto size = fs::file_size(path);
  REQUIRE(size > 16 * 4096);
  {
    // Keep page 1 (header and schema), scribble over the rest.
    std::fstream f{path, std::ios::binary | std::ios::in | std::ios::out};
    f.seekp(4096);
    std::string junk(size - 4096, '\0');
    for (std::size_t i = 0; i < junk.size(); ++i)
      junk[i] = static_cast<char>(i * 7 + 3);
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto db = open_sqlite({.path = path});
  if (!db) {
    CHECK_THAT(db.error().message(), Catch::Contains(path));
    return;
  }
  bool saw_error = false;
  for (auto& s : {"exec/1", "exec/25", "exec/49"}) {
    auto r = (*db)->read(s, 1, 100);
    if (!r) {
      saw_error = true;
      INFO(r.error().to_string());
      CHECK_THAT(r.error().message(), Catch::Contains(path));
    }
  }
  auto listed = (*db)->list_streams("", "", "", 1000);
  if (!listed) saw_error = true;
  CHECK(saw_error);
}

TEST_CASE("sqlite: unusable directories are clear errors", "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  // A regular file where a directory is needed.
  dir.write("plain-file", "x");
  const auto under_file = (dir.path() / "plain-file" / "data" / "agentflow.db").string();
  auto db = open_sqlite({.path = under_file});
  REQUIRE_FALSE(db);
  CHECK_THAT(db.error().message(),
             Catch::Contains(under_file) && Catch::Contains("cannot create directory"));

  // A read-only directory. Root ignores permissions, so as root a child drops to `nobody`.
  const auto ro = dir.path() / "read-only";
  fs::create_directories(ro);
  ::chmod(dir.path().c_str(), 0755);
  ::chmod(ro.c_str(), 0555);
  const auto path = (ro / "agentflow.db").string();
  auto try_open = [&]() -> std::string {
    auto r = open_sqlite({.path = path});
    return r ? std::string{"opened"} : r.error().to_string();
  };
  std::string message;
  if (::geteuid() != 0) {
    message = try_open();
  } else {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
      const auto m = try_open();
      const auto n = ::write(fds[1], m.data(), m.size());
      ::_exit(n == static_cast<ssize_t>(m.size()) ? 0 : 4);
    }
    ::close(fds[1]);
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0)
      message.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 3) {
      WARN("cannot drop root privileges here: the read-only directory check is skipped");
      return;
    }
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  INFO(message);
  CHECK(message != "opened");
  CHECK_THAT(message, Catch::Contains(path) && Catch::Contains("unable to open database file"));
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("sqlite: a schema newer than the build is refused", "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  must_open({.path = path}).reset();
  {
    raw_db raw{path};
    REQUIRE(raw.exec("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
            == SQLITE_OK);
  }
  auto db = open_sqlite({.path = path});
  REQUIRE_FALSE(db);
  CHECK(db.error().code() == errc::validation);
  CHECK_THAT(db.error().message(), Catch::Contains("99") && Catch::Contains("newer"));
}

// A node's journal agent and audit writer open a fresh store at the same moment (found by the
// crash test): each must find the schema migrated, not fail on "table already exists".
TEST_CASE("sqlite: connections opening a fresh database at once all migrate it", "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  for (int round = 0; round < 10; ++round) {
    const auto path = (dir.path() / ("race-" + std::to_string(round) + ".db")).string();
    constexpr int k_openers = 3;
    std::latch go{k_openers};
    std::vector<expected<std::unique_ptr<backend>>> opened;
    for (int i = 0; i < k_openers; ++i)
      opened.emplace_back(error{errc::internal, "not opened"});
    std::vector<std::thread> ts;
    for (int i = 0; i < k_openers; ++i)
      ts.emplace_back([&, i] {
        go.arrive_and_wait();
        opened[static_cast<std::size_t>(i)] = open_sqlite({.path = path});
      });
    for (auto& t : ts)
      t.join();
    for (auto& db : opened) {
      INFO("round " << round << ": " << (db ? std::string{} : db.error().to_string()));
      REQUIRE(db);
      auto v = (*db)->schema_version();
      REQUIRE(v);
      CHECK(*v == (*db)->latest_schema_version());
    }
  }
}

TEST_CASE("sqlite: a locked database gives every request a transient error and then recovers",
          "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  auto db = must_open({.path = path, .busy_timeout_ms = 50});
  raw_db other{path};
  REQUIRE(other.exec("BEGIN IMMEDIATE") == SQLITE_OK);
  auto out = db->append_batch(std::vector{req("exec/a", 0, 1), req("exec/b", 0, 1)}, t0);
  REQUIRE(out.size() == 2);
  for (auto& r : out) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == errc::transient);
    CHECK_THAT(r.error().message(), Catch::Contains(path) && Catch::Contains("locked"));
  }
  auto snap = db->save_snapshot({"exec/a", "t1", 0, "t", "p", t0});
  REQUIRE_FALSE(snap);
  CHECK(snap.error().code() == errc::transient);
  REQUIRE(other.exec("COMMIT") == SQLITE_OK);

  out = db->append_batch(std::vector{req("exec/a", 0, 1), req("exec/b", 0, 1)}, t0);
  for (auto& r : out)
    CHECK(r);
  CHECK(other.one("SELECT count(*) FROM events") == "2");
}

TEST_CASE("sqlite: a request that fails inside the transaction rolls back only itself",
          "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  auto db = must_open({.path = path});
  {
    // A trigger stands in for a failure half-way through one request's inserts.
    raw_db raw{path};
    REQUIRE(raw.exec("CREATE TRIGGER fail_third BEFORE INSERT ON events"
                     " WHEN NEW.stream_id = (SELECT id FROM streams WHERE stream = 'exec/bad')"
                     " AND NEW.version = 3"
                     " BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
            == SQLITE_OK);
  }
  auto out = db->append_batch(
      std::vector{req("exec/ok1", 0, 2), req("exec/bad", 0, 5), req("exec/ok2", 0, 1)}, t0);
  REQUIRE(out.size() == 3);
  CHECK(out[0]);
  REQUIRE_FALSE(out[1]);
  CHECK_THAT(out[1].error().message(), Catch::Contains("exec/bad") && Catch::Contains("version 3")
                                           && Catch::Contains("injected failure"));
  CHECK(out[2]);
  raw_db raw{path};
  CHECK(raw.one("SELECT count(*) FROM events WHERE stream_id NOT IN (SELECT id FROM streams)")
        == "0");
  CHECK(raw.one("SELECT count(*) FROM streams WHERE stream = 'exec/bad'") == "0");
  CHECK(raw.one("SELECT count(*) FROM events") == "3");
}

TEST_CASE("sqlite: WAL writes are gathered, and a commit is on the file when append returns",
          "[sqlite]") {
  af::test::temp_dir dir{"af-sqlite"};
  const auto path = (dir.path() / "agentflow.db").string();
  REQUIRE(sqlite_wal_vfs_name() != nullptr);
  constexpr std::uint64_t streams = 64;
  constexpr std::uint64_t rounds = 5;
  auto batch = [](std::uint64_t round) {
    std::vector<append_request> b;
    for (std::uint64_t s = 0; s < streams; ++s)
      b.push_back(req("exec/" + std::to_string(s), round, 1));
    return b;
  };

  SECTION("another connection sees every commit at once (synchronous=NORMAL: no sync)") {
    // NORMAL does not sync at commit, so only the commit marker makes the frames leave the
    // buffer before SQLite publishes them to readers.
    auto db = must_open({.path = path, .synchronous = "NORMAL"});
    raw_db raw{path}; // the default VFS, its own file handles
    const auto before = sqlite_wal_writes();
    for (std::uint64_t round = 0; round < rounds; ++round) {
      for (auto& r : db->append_batch(batch(round), t0))
        REQUIRE(r);
      CHECK(raw.one("SELECT count(*) FROM events") == std::to_string(streams * (round + 1)));
      CHECK(raw.one("SELECT min(version) FROM streams") == std::to_string(round + 1));
      CHECK(raw.one("PRAGMA quick_check") == "ok");
    }
    const auto after = sqlite_wal_writes();
    const auto requested = after.requested - before.requested;
    const auto issued = after.issued - before.issued;
    // Each batch dirties several pages (the events table, its index, streams and their index),
    // two writes per WAL frame; gathered, one write per commit of under 64 KiB.
    INFO("requested " << requested << ", issued " << issued);
    CHECK(requested >= rounds * 8);
    CHECK(issued >= rounds);
    CHECK(issued * 4 <= requested);
  }

  SECTION("commits survive a process that exits without closing its connection") {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      auto b = open_sqlite({.path = path, .synchronous = "NORMAL"});
      if (!b) _exit(2);
      for (std::uint64_t round = 0; round < rounds; ++round)
        for (auto& r : (*b)->append_batch(batch(round), t0))
          if (!r) _exit(3);
      _exit(0); // no destructor runs: nothing is flushed at close
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    auto db = must_open({.path = path});
    for (std::uint64_t s = 0; s < streams; ++s) {
      auto events = db->read("exec/" + std::to_string(s), 1, 100);
      REQUIRE(events);
      REQUIRE(events->size() == rounds);
      CHECK(events->back().version == rounds);
    }
    raw_db raw{path};
    CHECK(raw.one("PRAGMA integrity_check") == "ok");
  }
}
