// Tests af::store backup/restore: a SQLite backup taken while another thread appends restores
// elsewhere with the journal and audit chain identical up to the backup point; restores refuse
// to overwrite without force; bad inputs give clear errors. PostgreSQL when AF_TEST_PG_URL is set.
#include "af/hash.hpp"
#include "af/store/backend.hpp"
#include "af/store/backup.hpp"

#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace af::store;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

const af::time_point t0 = af::time_point{} + std::chrono::hours{24 * 365 * 50};

/// One event on `stream` and one audit row continuing `head`, as a writer would add them.
/// Returns the error text, empty on success (no Catch2 assertions: the writer thread calls it).
std::string append_one(backend& b, const std::string& stream, std::uint64_t i, audit_head& head) {
  append_request req{stream, "t1", k_any_version, {}};
  req.events.push_back({"af.test.Event", "payload-" + std::to_string(i), {}});
  req.events.back().envelope_hash[0] = static_cast<std::uint8_t>(i);
  auto r = b.append_batch(std::span{&req, 1}, t0 + std::chrono::milliseconds{i});
  if (r.size() != 1) return "append_batch: " + std::to_string(r.size()) + " results";
  if (!r[0]) return r[0].error().to_string();
  audit_row row;
  row.seq = head.seq + 1;
  row.tenant = "t1";
  row.ts = t0 + std::chrono::milliseconds{i};
  row.actor = "agent/a";
  row.action = "tool.call";
  row.subject = stream;
  row.record = std::string("rec\0", 4) + std::to_string(i);
  row.prev_hash = head.hash;
  std::string buf(row.prev_hash.begin(), row.prev_hash.end());
  buf += row.record;
  row.hash = af::sha256(buf);
  if (auto st = b.audit_append(std::span{&row, 1}); !st) return st.error().to_string();
  head = {row.seq, row.hash};
  return {};
}

std::vector<event_record> read_all(backend& b, const std::string& stream) {
  auto r = b.read(stream, 1, 1'000'000);
  REQUIRE(r.has_value());
  return *r;
}

std::vector<audit_row> audit_all(backend& b) {
  auto r = b.audit_read(1, 1'000'000);
  REQUIRE(r.has_value());
  return *r;
}

void require_same_events(const std::vector<event_record>& a, const std::vector<event_record>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].version == b[i].version);
    CHECK(a[i].tenant == b[i].tenant);
    CHECK(a[i].type == b[i].type);
    CHECK(a[i].payload == b[i].payload);
    CHECK(a[i].envelope_hash == b[i].envelope_hash);
    CHECK(a[i].committed_at == b[i].committed_at);
  }
}

void require_prefix_chain(const std::vector<audit_row>& restored,
                          const std::vector<audit_row>& source) {
  REQUIRE(restored.size() <= source.size());
  sha256_digest prev{};
  for (std::size_t i = 0; i < restored.size(); ++i) {
    const auto& r = restored[i];
    CHECK(r.seq == i + 1);
    CHECK(r.prev_hash == prev);
    std::string buf(r.prev_hash.begin(), r.prev_hash.end());
    buf += r.record;
    CHECK(r.hash == af::sha256(buf));
    CHECK(r.hash == source[i].hash);
    CHECK(r.record == source[i].record);
    CHECK(r.ts == source[i].ts);
    prev = r.hash;
  }
}

} // namespace

TEST_CASE("backup: a SQLite backup of a live store restores the journal and audit chain",
          "[backup]") {
  af::test::temp_dir dir{"af-backup"};
  const auto src_path = (dir.path() / "src" / "agentflow.db").string();
  fs::create_directories(dir.path() / "src");
  {
    auto b = open_sqlite({.path = src_path, .synchronous = "NORMAL"});
    REQUIRE(b.has_value());
  }
  std::atomic<std::uint64_t> appended{0};
  std::atomic<bool> stop{false};
  std::string writer_error;
  std::thread writer{[&] {
    auto b = open_sqlite({.path = src_path, .synchronous = "NORMAL"});
    if (!b) {
      writer_error = b.error().to_string();
      stop.store(true);
      return;
    }
    audit_head head{};
    for (std::uint64_t i = 1; !stop.load() && i <= 5000; ++i) {
      writer_error = append_one(**b, "exec/" + std::to_string(i % 3), i, head);
      if (!writer_error.empty()) break;
      appended.store(i);
    }
    stop.store(true);
  }};
  while (appended.load() < 100 && !stop.load())
    std::this_thread::yield();
  const auto backup_file = (dir.path() / "backup.db").string();
  auto r = backup_store({"sqlite", src_path}, backup_file);
  const auto at_backup = appended.load();
  // Keep writing after the backup for a while, so the source moves past it.
  while (appended.load() < at_backup + 50 && !stop.load())
    std::this_thread::yield();
  stop.store(true);
  writer.join();
  REQUIRE(writer_error.empty());
  REQUIRE(r.has_value());
  CHECK(r->schema_version == 5);
  CHECK(r->bytes > 0);

  const auto restored_path = (dir.path() / "restored" / "agentflow.db").string();
  auto rr = restore_store(backup_file, data_dir_target((dir.path() / "restored").string()), false);
  REQUIRE(rr.has_value());
  CHECK(rr->schema_version == 5);
  CHECK(rr->location == restored_path);

  auto src = open_sqlite({.path = src_path});
  auto dst = open_sqlite({.path = restored_path, .migrate = false});
  REQUIRE(src.has_value());
  REQUIRE(dst.has_value());
  std::size_t restored_events = 0;
  for (const char* stream : {"exec/0", "exec/1", "exec/2"}) {
    auto s = read_all(**src, stream);
    auto d = read_all(**dst, stream);
    REQUIRE(d.size() <= s.size());
    s.resize(d.size());
    require_same_events(d, s);
    restored_events += d.size();
  }
  // The backup holds at least what was appended before it started and not all that came after.
  CHECK(restored_events >= 100);
  CHECK(restored_events < appended.load());
  const auto restored_audit = audit_all(**dst);
  CHECK(restored_audit.size() >= 100);
  require_prefix_chain(restored_audit, audit_all(**src));

  SECTION("a restore does not overwrite without force") {
    dst->reset();
    auto again = restore_store(backup_file, {"sqlite", restored_path}, false);
    REQUIRE_FALSE(again.has_value());
    CHECK(again.error().code() == af::errc::conflict);
    CHECK_THAT(again.error().message(), Contains("--force") && Contains(restored_path));
    auto forced = restore_store(backup_file, {"sqlite", restored_path}, true);
    REQUIRE(forced.has_value());
    auto b = open_sqlite({.path = restored_path});
    REQUIRE(b.has_value());
    CHECK(audit_all(**b).size() == restored_audit.size());
  }
}

TEST_CASE("backup: bad inputs give clear errors", "[backup]") {
  af::test::temp_dir dir{"af-backup-bad"};
  const auto garbage = dir.write("garbage.db", std::string(4096, 'x'));
  const auto target = (dir.path() / "t" / "agentflow.db").string();

  auto missing_backup = restore_store((dir.path() / "nope.db").string(), {"sqlite", target}, false);
  REQUIRE_FALSE(missing_backup.has_value());
  CHECK(missing_backup.error().code() == af::errc::not_found);
  CHECK_THAT(missing_backup.error().message(), Contains("nope.db"));

  auto bad_backup = restore_store(garbage, {"sqlite", target}, false);
  REQUIRE_FALSE(bad_backup.has_value());
  CHECK(bad_backup.error().code() == af::errc::validation);
  CHECK_THAT(bad_backup.error().message(), Contains("garbage.db"));
  CHECK_FALSE(fs::exists(target));

  auto pg_archive = dir.write("dump.pg", "PGDMP garbage");
  auto wrong_kind = restore_store(pg_archive, {"sqlite", target}, false);
  REQUIRE_FALSE(wrong_kind.has_value());
  CHECK_THAT(wrong_kind.error().message(), Contains("pg_dump"));

  auto missing_src =
      backup_store({"sqlite", (dir.path() / "none.db").string()}, (dir.path() / "out.db").string());
  REQUIRE_FALSE(missing_src.has_value());
  CHECK(missing_src.error().code() == af::errc::not_found);
  CHECK_FALSE(fs::exists(dir.path() / "out.db"));

  auto garbage_src = backup_store({"sqlite", garbage}, (dir.path() / "out.db").string());
  REQUIRE_FALSE(garbage_src.has_value());
  CHECK_THAT(garbage_src.error().message(), Contains("garbage.db"));

  for (const char* url : {"memory:", "bogus://x", "", "sqlite:"}) {
    auto t = resolve_store_url(url);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().code() == af::errc::validation);
  }
  auto dir_url = resolve_store_url(dir.path().string());
  REQUIRE(dir_url.has_value());
  CHECK(dir_url->where == (dir.path() / "agentflow.db").string());
  CHECK(resolve_store_url("postgres://u@h/db")->kind == "postgres");
}

TEST_CASE("backup: PostgreSQL backup and restore with pg_dump", "[backup][postgres]") {
  const char* url = std::getenv("AF_TEST_PG_URL");
  if (url == nullptr) {
    WARN("AF_TEST_PG_URL not set: run under tests/persistence/with_postgres.sh");
    return;
  }
  af::test::temp_dir dir{"af-backup-pg"};
  const store_target pg{"postgres", url};
  {
    auto b = open_postgres({.url = url, .migrate = false});
    REQUIRE(b.has_value());
    REQUIRE((*b)->migrate_to(0).has_value());
    REQUIRE((*b)->migrate_to((*b)->latest_schema_version()).has_value());
    audit_head head{};
    for (std::uint64_t i = 1; i <= 20; ++i)
      REQUIRE(append_one(**b, "exec/pg", i, head).empty());
  }
  const auto file = (dir.path() / "af.pgdump").string();
  auto r = backup_store(pg, file);
  REQUIRE(r.has_value());
  CHECK(r->schema_version == 3);
  CHECK_THAT(r->location, !Contains("secret"));
  {
    auto b = open_postgres({.url = url});
    REQUIRE(b.has_value());
    audit_head head{20, audit_all(**b).back().hash};
    for (std::uint64_t i = 21; i <= 30; ++i)
      REQUIRE(append_one(**b, "exec/pg", i, head).empty());
  }
  auto refused = restore_store(file, pg, false);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code() == af::errc::conflict);

  auto garbage = dir.write("garbage.pgdump", "not a dump");
  auto bad = restore_store(garbage, pg, true);
  REQUIRE_FALSE(bad.has_value());
  CHECK_THAT(bad.error().message(), Contains("garbage.pgdump"));

  auto forced = restore_store(file, pg, true);
  REQUIRE(forced.has_value());
  CHECK(forced->schema_version == 3);
  auto b = open_postgres({.url = url});
  REQUIRE(b.has_value());
  CHECK(read_all(**b, "exec/pg").size() == 20);
  const auto rows = audit_all(**b);
  CHECK(rows.size() == 20);
  require_prefix_chain(rows, rows);
}
