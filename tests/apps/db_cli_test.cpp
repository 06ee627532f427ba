// Tests `af db status|migrate`, `af backup` and `af restore` in-process through af::cli::run:
// migrations up, down to 0 and up again (SQLite; PostgreSQL when AF_TEST_PG_URL is set), backup
// and restore round trips, and the exit codes and messages of bad input.
#include "af/cli.hpp"

#include "af/store/backend.hpp"
#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

struct db_result {
  int code = -1;
  std::string out;
  std::string err;
};

db_result af_cmd(std::vector<std::string> args) {
  std::vector<const char*> argv{"af"};
  for (const auto& a : args)
    argv.push_back(a.c_str());
  argv.push_back(nullptr);
  std::ostringstream out, err;
  db_result r;
  r.code = af::cli::run(static_cast<int>(argv.size() - 1), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

/// `af db status --json` on the store named by `where` ("--data-dir", dir or "--store", url).
nlohmann::json status_of(const std::string& flag, const std::string& where) {
  auto r = af_cmd({"db", "status", flag, where, "--json"});
  INFO(r.err);
  REQUIRE(r.code == af::cli::k_exit_ok);
  return nlohmann::json::parse(r.out);
}

bool has_table(const nlohmann::json& status, const std::string& name) {
  const auto& t = status.at("tables");
  return std::find(t.begin(), t.end(), name) != t.end();
}

/// Up to the latest, down to 0 (the tables are gone), and up again.
void migrate_round_trip(const std::string& flag, const std::string& where, int latest) {
  const auto top = std::to_string(latest);
  auto up = af_cmd({"db", "migrate", "--to", top, flag, where});
  INFO(up.err);
  REQUIRE(up.code == af::cli::k_exit_ok);
  auto s = status_of(flag, where);
  CHECK(s.at("schema_version") == latest);
  CHECK(s.at("latest_schema_version") == latest);
  CHECK(s.at("bytes").get<std::uint64_t>() > 0);
  CHECK(has_table(s, "events"));
  CHECK(has_table(s, "audit_log"));

  auto one = af_cmd({"db", "migrate", "--to", "1", flag, where});
  REQUIRE(one.code == af::cli::k_exit_ok);
  CHECK_THAT(one.out, Contains("from version " + top + " to 1"));
  s = status_of(flag, where);
  CHECK(s.at("schema_version") == 1);
  CHECK(has_table(s, "events"));
  CHECK_FALSE(has_table(s, "audit_log"));

  auto zero = af_cmd({"db", "migrate", "--to", "0", flag, where});
  REQUIRE(zero.code == af::cli::k_exit_ok);
  s = status_of(flag, where);
  CHECK(s.at("schema_version") == 0);
  CHECK(s.at("up_to_date") == false);
  for (const char* table : {"streams", "events", "snapshots", "audit_log"})
    CHECK_FALSE(has_table(s, table));

  auto again = af_cmd({"db", "migrate", "--to", top, flag, where, "--json"});
  REQUIRE(again.code == af::cli::k_exit_ok);
  auto j = nlohmann::json::parse(again.out);
  CHECK(j.at("from") == 0);
  CHECK(j.at("to") == latest);
  s = status_of(flag, where);
  CHECK(s.at("schema_version") == latest);
  CHECK(has_table(s, "events"));
  CHECK(has_table(s, "audit_log"));

  auto bad = af_cmd({"db", "migrate", "--to", "99", flag, where});
  CHECK(bad.code == af::cli::k_exit_usage);
  CHECK_THAT(bad.err, StartsWith("af: ") && Contains("--to 99") && Contains("out of range"));
  CHECK(status_of(flag, where).at("schema_version") == latest);
}

} // namespace

TEST_CASE("af db migrate: up, down to 0 and up again on SQLite", "[cli][db]") {
  af::test::temp_dir dir{"af-db-cli"};
  const auto data = (dir.path() / "data").string();
  // SQLite's migrations 4 and 5 store events in commit order and give streams integer ids
  // (PostgreSQL has no such steps).
  migrate_round_trip("--data-dir", data, 5);
  // The same store through --store (a data directory path).
  CHECK(status_of("--store", data).at("schema_version") == 5);
  auto text = af_cmd({"db", "status", "--data-dir", data});
  CHECK_THAT(text.out, Contains("backend:  sqlite") && Contains("schema:   5 (latest 5)")
                           && Contains(" bytes"));
}

TEST_CASE("af db migrate: up, down to 0 and up again on PostgreSQL", "[cli][db][postgres]") {
  const char* url = std::getenv("AF_TEST_PG_URL");
  if (url == nullptr) {
    WARN("AF_TEST_PG_URL not set: run under tests/persistence/with_postgres.sh");
    return;
  }
  migrate_round_trip("--store", url, 3);
  auto s = status_of("--store", url);
  CHECK(s.at("backend") == "postgres");
  if (const char* pw_url = std::getenv("AF_TEST_PG_PW_URL")) {
    auto r = af_cmd({"db", "status", "--store", pw_url});
    CHECK(r.code == af::cli::k_exit_ok);
    CHECK_THAT(r.out + r.err, !Contains("af_pw_secret"));
  }
}

TEST_CASE("af db and af backup/restore: bad input", "[cli][db]") {
  af::test::temp_dir dir{"af-db-cli-bad"};
  const auto missing = (dir.path() / "missing").string();

  auto no_db = af_cmd({"db", "status", "--data-dir", missing});
  CHECK(no_db.code == af::cli::k_exit_usage);
  CHECK_THAT(no_db.err,
             StartsWith("af: ") && Contains("no such database file") && Contains("missing"));
  CHECK_FALSE(fs::exists(missing));

  auto range = af_cmd({"db", "migrate", "--to=-1", "--data-dir", missing});
  CHECK(range.code == af::cli::k_exit_usage);
  CHECK_THAT(range.err, Contains("out of range"));
  CHECK_FALSE(fs::exists(missing));

  auto no_target = af_cmd({"db", "status"});
  CHECK(no_target.code == af::cli::k_exit_usage);
  CHECK_THAT(no_target.err, Contains("--data-dir") && Contains("--store"));

  auto both = af_cmd({"db", "status", "--data-dir", missing, "--store", missing});
  CHECK(both.code == af::cli::k_exit_usage);

  auto scheme = af_cmd({"db", "status", "--store", "bogus://x"});
  CHECK(scheme.code == af::cli::k_exit_usage);
  CHECK_THAT(scheme.err, Contains("bogus://x") && Contains("unknown scheme"));

  auto memory = af_cmd({"backup", "--store", "memory:", "--out", (dir.path() / "b").string()});
  CHECK(memory.code == af::cli::k_exit_usage);

  auto unreachable = af_cmd({"db", "status", "--store", "postgres://nobody@127.0.0.1:1/none"});
  CHECK(unreachable.code == af::cli::k_exit_failure);
  CHECK_THAT(unreachable.err, Contains("127.0.0.1:1"));

  auto no_backup = af_cmd({"backup", "--data-dir", missing, "--out", (dir.path() / "b").string()});
  CHECK(no_backup.code == af::cli::k_exit_usage);
  CHECK_THAT(no_backup.err, Contains("no such database file"));

  auto no_in = af_cmd({"restore", "--in", (dir.path() / "none.db").string(), "--data-dir",
                       (dir.path() / "r").string()});
  CHECK(no_in.code == af::cli::k_exit_usage);
  CHECK_THAT(no_in.err, Contains("none.db") && Contains("does not exist"));

  const auto garbage = dir.write("garbage.db", "this is not a database");
  auto bad_in = af_cmd({"restore", "--in", garbage, "--data-dir", (dir.path() / "r").string()});
  CHECK(bad_in.code == af::cli::k_exit_usage);
  CHECK_THAT(bad_in.err, Contains("garbage.db"));
  CHECK_FALSE(fs::exists(dir.path() / "r" / "agentflow.db"));

  auto no_out = af_cmd({"backup", "--data-dir", missing});
  CHECK(no_out.code == af::cli::k_exit_usage);

  for (auto cmd : {std::vector<std::string>{"db", "status", "--help"},
                   std::vector<std::string>{"db", "migrate", "--help"},
                   std::vector<std::string>{"backup", "--help"},
                   std::vector<std::string>{"restore", "--help"}}) {
    auto h = af_cmd(cmd);
    CHECK(h.code == af::cli::k_exit_ok);
    CHECK_THAT(h.out, Contains("Example:"));
  }
}

TEST_CASE("af backup and af restore: a SQLite round trip", "[cli][db]") {
  af::test::temp_dir dir{"af-db-cli-backup"};
  const auto data = (dir.path() / "data").string();
  REQUIRE(af_cmd({"db", "migrate", "--to", "3", "--data-dir", data}).code == 0);
  const auto file = (dir.path() / "af.backup").string();
  auto b = af_cmd({"backup", "--data-dir", data, "--out", file, "--json"});
  INFO(b.err);
  REQUIRE(b.code == af::cli::k_exit_ok);
  auto j = nlohmann::json::parse(b.out);
  CHECK(j.at("schema_version") == 3);
  CHECK(j.at("bytes").get<std::uint64_t>() == fs::file_size(file));

  const auto data2 = (dir.path() / "data2").string();
  auto r = af_cmd({"restore", "--in", file, "--data-dir", data2});
  INFO(r.err);
  REQUIRE(r.code == af::cli::k_exit_ok);
  CHECK_THAT(r.out, Contains("schema version 3"));
  CHECK(status_of("--data-dir", data2).at("schema_version") == 3);

  auto refused = af_cmd({"restore", "--in", file, "--data-dir", data2});
  CHECK(refused.code == af::cli::k_exit_failure);
  CHECK_THAT(refused.err, Contains("--force") && Contains("data2"));
  auto forced = af_cmd({"restore", "--in", file, "--data-dir", data2, "--force"});
  CHECK(forced.code == af::cli::k_exit_ok);
}

TEST_CASE("af db compact: deletes finished streams past the retention period", "[cli][db]") {
  af::test::temp_dir dir{"af-db-compact"};
  const auto data = (dir.path() / "data").string();
  const auto now = std::chrono::time_point_cast<af::duration>(std::chrono::system_clock::now());
  {
    auto db = af::store::open_url(data + "/");
    REQUIRE(db);
    auto finished = [](std::string stream) {
      af::store::append_request r{std::move(stream), "t1", 0, {}, true};
      r.events.push_back({"af.v1.Done", "payload", {}});
      return r;
    };
    std::vector batch{finished("exec/old-1"), finished("exec/old-2")};
    for (const auto& r : (*db)->append_batch(batch, now - std::chrono::hours{24 * 10}))
      REQUIRE(r);
    std::vector recent{finished("exec/recent")};
    REQUIRE((*db)->append_batch(recent, now - std::chrono::hours{1}).front());
    std::vector open{af::store::append_request{"exec/open", "t1", 0, {{"af.v1.Step", "x", {}}}}};
    REQUIRE((*db)->append_batch(open, now - std::chrono::hours{24 * 30}).front());
  }
  auto r = af_cmd({"db", "compact", "--retention", "7d", "--data-dir", data, "--json"});
  INFO(r.err);
  REQUIRE(r.code == af::cli::k_exit_ok);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("streams_deleted") == 2);
  CHECK(j.at("streams_pruned") == 0);
  CHECK(j.at("events_deleted") == 2);
  CHECK(j.at("retention_ms") == 7LL * 24 * 3600 * 1000);
  {
    auto db = af::store::open_url(data + "/");
    REQUIRE(db);
    std::vector<std::string> left;
    auto streams = (*db)->list_streams("", "", "", 10);
    REQUIRE(streams);
    for (const auto& s : *streams)
      left.push_back(s.stream);
    CHECK(left == std::vector<std::string>{"exec/open", "exec/recent"});
  }
  auto text = af_cmd({"db", "compact", "--retention", "30m", "--data-dir", data});
  REQUIRE(text.code == af::cli::k_exit_ok);
  CHECK_THAT(text.out, Contains("deleted 1 finished streams"));

  for (const char* bad : {"7w", "", "d", "-1d", "99999999999d"}) {
    INFO(bad);
    auto b = af_cmd({"db", "compact", "--retention", bad, "--data-dir", data});
    CHECK(b.code == af::cli::k_exit_usage);
    CHECK_THAT(b.err, Contains("--retention"));
  }
  auto missing =
      af_cmd({"db", "compact", "--retention", "1d", "--data-dir", (dir.path() / "nope").string()});
  CHECK(missing.code == af::cli::k_exit_usage);
  CHECK_THAT(missing.err, Contains("no such database file"));
}

TEST_CASE("store tools: without --data-dir or --store they use the node's configuration",
          "[cli][db]") {
  af::test::temp_dir dir{"af-db-config"};
  const auto data = (dir.path() / "node-data").string();
  REQUIRE(af_cmd({"db", "migrate", "--to", "3", "--data-dir", data}).code == 0);
  const auto yaml = (dir.path() / "node.yaml").string();
  {
    std::ofstream f{yaml};
    f << "node:\n  data_dir: " << data << "\n";
  }
  auto s = af_cmd({"db", "status", "--config", yaml, "--json"});
  INFO(s.err);
  REQUIRE(s.code == af::cli::k_exit_ok);
  CHECK(nlohmann::json::parse(s.out).at("location") == data + "/agentflow.db");
  auto v = af_cmd({"audit", "verify", "--config", yaml});
  INFO(v.err);
  CHECK(v.code == 0);
  CHECK_THAT(v.out, Contains("intact: 0 records"));

  // A configuration whose store does not exist: the message says where the path came from.
  const auto other = (dir.path() / "other.yaml").string();
  {
    std::ofstream f{other};
    f << "node:\n  data_dir: " << (dir.path() / "nothing-here").string() << "\n";
  }
  auto missing = af_cmd({"db", "status", "--config", other});
  CHECK(missing.code == af::cli::k_exit_usage);
  CHECK_THAT(missing.err, Contains("no such database file") && Contains("--config " + other));
  auto both = af_cmd({"db", "status", "--config", yaml, "--data-dir", data});
  CHECK(both.code == af::cli::k_exit_usage);
}
