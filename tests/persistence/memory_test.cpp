// The in-memory backend's durability boundary: with sync_on_commit off, a simulated crash forgets
// exactly the writes since the last sync_all() (journal, snapshots, audit chain and schema).
#include "af/store/backend.hpp"

#include <catch2/catch.hpp>

using namespace af;
using namespace af::store;

namespace {

const time_point t0{std::chrono::seconds{1'000}};

append_request req(std::string stream, std::uint64_t expected, std::size_t n) {
  append_request r{std::move(stream), "t1", expected, {}};
  for (std::size_t i = 0; i < n; ++i)
    r.events.push_back({"af.v1.T", std::string{"p"}.append(std::to_string(i)), {}});
  return r;
}

void must_append(backend& db, append_request r) {
  auto out = db.append_batch(std::span{&r, 1}, t0);
  REQUIRE(out.at(0));
}

audit_row row(std::uint64_t seq, sha256_digest prev) {
  audit_row r;
  r.seq = seq;
  r.record = std::string{"r"}.append(std::to_string(seq));
  r.prev_hash = prev;
  r.hash.fill(static_cast<std::uint8_t>(seq));
  return r;
}

} // namespace

TEST_CASE("memory: with sync_on_commit every commit survives a crash", "[memory]") {
  auto db = make_memory_backend();
  CHECK(db->kind() == "memory");
  CHECK(db->location() == "memory:");
  must_append(*db, req("exec/1", 0, 3));
  REQUIRE(db->audit_append(std::vector{row(1, {})}));
  db->crash();
  CHECK(db->version("exec/1").value() == 3);
  CHECK(db->audit_last().value().seq == 1);
}

TEST_CASE("memory: a crash forgets exactly the writes since the last sync", "[memory]") {
  auto db = make_memory_backend({.sync_on_commit = false});
  must_append(*db, req("exec/1", 0, 2));
  REQUIRE(db->save_snapshot({"exec/1", "t1", 1, "af.v1.S", "old", t0}));
  REQUIRE(db->audit_append(std::vector{row(1, {})}));
  db->sync_all();

  must_append(*db, req("exec/1", 2, 3));
  must_append(*db, req("exec/2", 0, 1));
  must_append(*db, req("exec/1", 5, 1));
  REQUIRE(db->save_snapshot({"exec/1", "t1", 4, "af.v1.S", "new", t0}));
  REQUIRE(db->save_snapshot({"exec/2", "t1", 1, "af.v1.S", "two", t0}));
  REQUIRE(db->audit_append(std::vector{row(2, row(1, {}).hash), row(3, row(2, {}).hash)}));
  CHECK(db->version("exec/1").value() == 6);

  db->crash();
  CHECK(db->version("exec/1").value() == 2);
  CHECK(db->read("exec/1", 1, 100).value().size() == 2);
  CHECK(db->version("exec/2").value() == 0);
  auto listed = db->list_streams("", "", "", 10).value();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].stream == "exec/1");
  CHECK(db->load_snapshot("exec/1").value()->payload == "old");
  CHECK_FALSE(db->load_snapshot("exec/2").value().has_value());
  CHECK(db->audit_last().value().seq == 1);

  // Life goes on from the durable state; a second crash with nothing new changes nothing.
  must_append(*db, req("exec/1", 2, 1));
  db->sync_all();
  db->crash();
  CHECK(db->version("exec/1").value() == 3);
}

TEST_CASE("memory: an unsynced migration is undone by a crash with its data", "[memory]") {
  auto db = make_memory_backend({.sync_on_commit = false});
  must_append(*db, req("exec/1", 0, 2));
  db->sync_all();
  REQUIRE(db->migrate_to(0));
  CHECK(db->schema_version().value() == 0);
  CHECK_FALSE(db->version("exec/1"));
  db->crash();
  CHECK(db->schema_version().value() == 5);
  CHECK(db->version("exec/1").value() == 2);
}

TEST_CASE("memory: events read back whole: stream, version, tenant, type, payload, hash, time",
          "[memory]") {
  // The backend keeps an event without its stream and tenant and with an interned type; read()
  // must give back exactly what was appended, across streams, tenants, types and compaction.
  auto db = make_memory_backend();
  const std::vector<std::string> types{"af.v1.ExecutionStarted", "af.v1.StepScheduled",
                                       "af.v1.StepCompleted"};
  constexpr std::size_t n = 5000; // many deque blocks
  for (std::size_t i = 0; i < n; ++i) {
    for (const auto& [stream, tenant] :
         {std::pair{"exec/a-stream-name-longer-than-sso", "tenant-one"}, std::pair{"s/b", "t2"}}) {
      append_request r{stream, tenant, i, {}};
      sha256_digest h{};
      h.fill(static_cast<std::uint8_t>(i));
      r.events.push_back(
          {types[i % types.size()], std::string(i % 40, 'x') + std::to_string(i), h});
      auto out = db->append_batch(std::span{&r, 1}, t0 + std::chrono::nanoseconds{i});
      REQUIRE(out.at(0));
      REQUIRE(out[0]->first_version == i + 1);
    }
  }
  for (const auto& [stream, tenant] :
       {std::pair{"exec/a-stream-name-longer-than-sso", "tenant-one"}, std::pair{"s/b", "t2"}}) {
    auto all = db->read(stream, 1, n + 10).value();
    REQUIRE(all.size() == n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& e = all[i];
      REQUIRE(e.stream == stream);
      REQUIRE(e.version == i + 1);
      REQUIRE(e.tenant == tenant);
      REQUIRE(e.type == types[i % types.size()]);
      REQUIRE(e.payload == std::string(i % 40, 'x') + std::to_string(i));
      REQUIRE(e.envelope_hash[31] == static_cast<std::uint8_t>(i));
      REQUIRE(e.committed_at == t0 + std::chrono::nanoseconds{i});
    }
    auto page = db->read(stream, 4001, 3).value();
    REQUIRE(page.size() == 3);
    CHECK(page[0].version == 4001);
    CHECK(page[2].payload == all[4002].payload);
  }
  // A snapshot at 4000 and compaction prune the stream's first 4000 events; the rest keep their
  // versions and contents.
  const auto stream = std::string{"s/b"};
  REQUIRE(db->save_snapshot({stream, "t2", 4000, "af.v1.S", "snap", t0}));
  auto c = db->compact({.now = t0 + std::chrono::hours{1}, .retention = std::chrono::seconds{1}});
  REQUIRE(c);
  CHECK(c->events_deleted == 4000);
  auto rest = db->read(stream, 4001, n).value();
  REQUIRE(rest.size() == n - 4000);
  CHECK(rest.front().version == 4001);
  CHECK(rest.front().type == types[4000 % types.size()]);
  CHECK(rest.back().payload == std::string((n - 1) % 40, 'x') + std::to_string(n - 1));
}
