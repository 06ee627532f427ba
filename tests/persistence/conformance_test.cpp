// The storage conformance suite: every backend (memory, SQLite, and PostgreSQL when AF_TEST_PG_URL
// is set) must give the same answers to the same journal, snapshot, audit and schema calls.
#include "af/store/backend.hpp"
#include "support/temp_dir.hpp"

#include <openssl/evp.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>
#include <vector>

using namespace af;
using namespace af::store;

namespace {

const time_point t0{std::chrono::nanoseconds{1'700'000'000'123'456'789}};

// --- the backends under test -----------------------------------------------------------------

struct memory_kind {
  [[nodiscard]] static std::string unavailable() { return {}; }
  expected<std::unique_ptr<backend>> open_fresh() {
    return std::unique_ptr<backend>{make_memory_backend()};
  }
};

struct sqlite_kind {
  af::test::temp_dir dir{"af-conformance"};
  [[nodiscard]] static std::string unavailable() { return {}; }
  [[nodiscard]] std::string path() const { return (dir.path() / "data" / "agentflow.db").string(); }
  expected<std::unique_ptr<backend>> open_fresh() { return open_sqlite({.path = path()}); }
  expected<std::unique_ptr<backend>> reopen() { return open_sqlite({.path = path()}); }
};

struct postgres_kind {
  [[nodiscard]] static std::string url() {
    const char* u = std::getenv("AF_TEST_PG_URL");
    return u != nullptr ? u : "";
  }
  [[nodiscard]] static std::string unavailable() {
    return url().empty() ? "AF_TEST_PG_URL is not set: the postgres variant is skipped (run "
                           "tests/persistence/with_postgres.sh, or ctest -L integration)"
                         : "";
  }
  // The database outlives the test: down to 0 and up again leaves empty tables.
  expected<std::unique_ptr<backend>> open_fresh() {
    auto b = open_postgres({.url = url()});
    if (!b) return b;
    if (auto st = (*b)->migrate_to(0); !st) return st.error();
    if (auto st = (*b)->migrate_to((*b)->latest_schema_version()); !st) return st.error();
    return b;
  }
  expected<std::unique_ptr<backend>> reopen() { return open_postgres({.url = url()}); }
};

/// Opens a fresh, empty backend at the latest schema, or says why the variant is skipped.
template <class Kind>
struct fixture {
  Kind kind;
  std::unique_ptr<backend> db;
  std::string skipped = Kind::unavailable();

  fixture() {
    if (!skipped.empty()) return;
    auto b = kind.open_fresh();
    if (!b) FAIL(b.error().to_string());
    db = std::move(*b);
  }
};

#define CONFORMANCE_SETUP()                                                                        \
  fixture<TestType> fx;                                                                            \
  if (!fx.skipped.empty()) {                                                                       \
    WARN(fx.skipped);                                                                              \
    return;                                                                                        \
  }                                                                                                \
  backend& db = *fx.db;                                                                            \
  INFO("backend " << db.kind() << " at " << db.location())

// --- helpers ---------------------------------------------------------------------------------

sha256_digest digest_of(std::string_view seed) {
  sha256_digest d{};
  for (std::size_t i = 0; i < d.size(); ++i)
    d[i] = static_cast<std::uint8_t>(seed.empty() ? i : seed[i % seed.size()] + i);
  return d;
}

new_event ev(std::string type, std::string payload) {
  return {std::move(type), std::move(payload), digest_of(payload)};
}

append_request req(std::string stream, std::uint64_t expected, std::size_t n,
                   std::string tenant = "t1") {
  append_request r{std::move(stream), std::move(tenant), expected, {}};
  for (std::size_t i = 0; i < n; ++i)
    r.events.push_back(ev("af.v1.Test", r.stream + "#" + std::to_string(i)));
  return r;
}

expected<append_result> append(backend& db, append_request r, time_point now = t0) {
  auto out = db.append_batch(std::span{&r, 1}, now);
  REQUIRE(out.size() == 1);
  return std::move(out.front());
}

std::vector<event_record> read_all(backend& db, std::string_view stream) {
  auto r = db.read(stream, 1, 1'000'000);
  if (!r) FAIL(r.error().to_string());
  return std::move(*r);
}

std::vector<std::uint64_t> versions_of(const std::vector<event_record>& events) {
  std::vector<std::uint64_t> out;
  for (const auto& e : events)
    out.push_back(e.version);
  return out;
}

std::vector<std::string> ids_of(const std::vector<stream_info>& streams) {
  std::vector<std::string> out;
  for (const auto& s : streams)
    out.push_back(s.stream);
  return out;
}

std::vector<std::uint64_t> seqs_of(const std::vector<audit_row>& rows) {
  std::vector<std::uint64_t> out;
  for (const auto& r : rows)
    out.push_back(r.seq);
  return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> out;
  for (auto v = from; v <= to; ++v)
    out.push_back(v);
  return out;
}

sha256_digest sha256(const sha256_digest& prev, std::string_view record) {
  std::string buf(prev.begin(), prev.end());
  buf.append(record);
  sha256_digest out{};
  unsigned int n = 0;
  REQUIRE(EVP_Digest(buf.data(), buf.size(), out.data(), &n, EVP_sha256(), nullptr) == 1);
  return out;
}

/// `n` audit rows continuing the chain after `head`, hashed as docs/storage.md says.
std::vector<audit_row> chain(audit_head head, std::size_t n) {
  std::vector<audit_row> rows;
  for (std::size_t i = 0; i < n; ++i) {
    audit_row r;
    r.seq = head.seq + 1;
    r.tenant = "t1";
    r.ts = t0 + std::chrono::seconds{static_cast<long>(r.seq)};
    r.actor = "agent/" + std::to_string(r.seq);
    r.action = "tool.call";
    r.subject = "tool/search";
    r.record = std::string("record\0\xff", 8) + std::to_string(r.seq);
    r.prev_hash = head.hash;
    r.hash = sha256(r.prev_hash, r.record);
    head = {r.seq, r.hash};
    rows.push_back(std::move(r));
  }
  return rows;
}

void require_error(const auto& result, errc code, std::initializer_list<std::string> mentions) {
  REQUIRE_FALSE(result.has_value());
  INFO(result.error().to_string());
  CHECK(result.error().code() == code);
  for (const auto& m : mentions)
    CHECK_THAT(result.error().message(), Catch::Contains(m));
}

} // namespace

#define BACKENDS memory_kind, sqlite_kind, postgres_kind

// --- journal ---------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("conformance: append to a new stream stores every field", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  append_request r{"exec/01", "acme", 0, {}};
  r.events.push_back(ev("af.v1.StepStarted", "first"));
  r.events.push_back(ev("af.v1.StepDone", "second"));
  r.events.push_back({"af.v1.Note", "third", {}}); // no causing envelope: a zero hash
  auto res = append(db, r);
  REQUIRE(res);
  CHECK(res->first_version == 1);
  CHECK(res->last_version == 3);
  CHECK(res->committed_at == t0);

  auto events = read_all(db, "exec/01");
  REQUIRE(events.size() == 3);
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    CHECK(e.stream == "exec/01");
    CHECK(e.version == i + 1);
    CHECK(e.tenant == "acme");
    CHECK(e.type == r.events[i].type);
    CHECK(e.payload == r.events[i].payload);
    CHECK(e.envelope_hash == r.events[i].envelope_hash);
    CHECK(e.committed_at == t0);
  }
  CHECK(events[2].envelope_hash == sha256_digest{});
  CHECK(db.version("exec/01").value() == 3);
}

TEMPLATE_TEST_CASE("conformance: versions run 1..n without gaps across appends", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  std::uint64_t at = 0;
  for (std::size_t n : {1, 3, 1, 5, 2}) {
    auto res = append(db, req("agent/a", at, n), t0 + std::chrono::seconds{static_cast<long>(at)});
    REQUIRE(res);
    CHECK(res->first_version == at + 1);
    CHECK(res->last_version == at + n);
    at += n;
  }
  auto events = read_all(db, "agent/a");
  CHECK(versions_of(events) == range(1, 12));
  // Each append's events carry that append's commit time.
  CHECK(events[0].committed_at == t0);
  CHECK(events[11].committed_at == t0 + std::chrono::seconds{10});
  CHECK(db.version("agent/a").value() == 12);
}

TEMPLATE_TEST_CASE("conformance: a stale expected version is a conflict and writes nothing",
                   "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  REQUIRE(append(db, req("saga/x", 0, 2)));

  require_error(append(db, req("saga/x", 1, 3)), errc::conflict,
                {"saga/x", "expected version 1", "actual version 2"});
  require_error(append(db, req("saga/x", 0, 1)), errc::conflict,
                {"saga/x", "expected version 0", "actual version 2"});
  require_error(append(db, req("saga/x", 7, 1)), errc::conflict,
                {"expected version 7", "actual version 2"});
  CHECK(db.version("saga/x").value() == 2);
  CHECK(versions_of(read_all(db, "saga/x")) == range(1, 2));

  // A stream that does not exist is at version 0, and a failed append does not create it.
  require_error(append(db, req("saga/none", 3, 1)), errc::conflict,
                {"saga/none", "expected version 3", "actual version 0"});
  CHECK(db.version("saga/none").value() == 0);
  CHECK(db.list_streams("saga/none", "", "", 10).value().empty());
  CHECK(read_all(db, "saga/none").empty());
}

TEMPLATE_TEST_CASE("conformance: k_any_version appends whatever the version", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  auto first = append(db, req("exec/any", k_any_version, 2));
  REQUIRE(first);
  CHECK(first->first_version == 1);
  auto second = append(db, req("exec/any", k_any_version, 3));
  REQUIRE(second);
  CHECK(second->first_version == 3);
  CHECK(second->last_version == 5);
  CHECK(versions_of(read_all(db, "exec/any")) == range(1, 5));
}

TEMPLATE_TEST_CASE("conformance: bad requests are refused", "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  require_error(append(db, req("", 0, 1)), errc::validation, {"stream id is empty"});
  require_error(append(db, req("exec/empty", 0, 0)), errc::validation, {"exec/empty", "no events"});
  CHECK(db.version("exec/empty").value() == 0);

  // A stream keeps the tenant it was created with.
  REQUIRE(append(db, req("exec/t", 0, 1, "t1")));
  require_error(append(db, req("exec/t", 1, 1, "t2")), errc::forbidden, {"exec/t", "'t1'", "'t2'"});
  CHECK(db.version("exec/t").value() == 1);
}

TEMPLATE_TEST_CASE("conformance: a batch commits every request but the conflicting one",
                   "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  REQUIRE(append(db, req("exec/b", 0, 2)));

  std::vector<append_request> batch{req("exec/a", 0, 2), req("exec/b", 1, 4), req("exec/c", 0, 1),
                                    req("exec/d", 0, 0), req("exec/b", 2, 1)};
  auto out = db.append_batch(batch, t0 + std::chrono::seconds{1});
  REQUIRE(out.size() == batch.size());
  REQUIRE(out[0]);
  CHECK(out[0]->first_version == 1);
  CHECK(out[0]->last_version == 2);
  require_error(out[1], errc::conflict, {"exec/b", "expected version 1", "actual version 2"});
  REQUIRE(out[2]);
  CHECK(out[2]->last_version == 1);
  require_error(out[3], errc::validation, {"exec/d"});
  REQUIRE(out[4]);
  CHECK(out[4]->first_version == 3);
  CHECK(out[4]->committed_at == t0 + std::chrono::seconds{1});

  CHECK(versions_of(read_all(db, "exec/a")) == range(1, 2));
  CHECK(versions_of(read_all(db, "exec/b")) == range(1, 3));
  CHECK(versions_of(read_all(db, "exec/c")) == range(1, 1));
  CHECK(read_all(db, "exec/d").empty());
  // exec/b's third event is the last request's, not the conflicting one's.
  CHECK(read_all(db, "exec/b")[2].payload == "exec/b#0");
  CHECK(ids_of(db.list_streams("exec/", "", "", 10).value())
        == std::vector<std::string>{"exec/a", "exec/b", "exec/c"});
  CHECK(db.append_batch({}, t0).empty());
}

TEMPLATE_TEST_CASE("conformance: later requests in a batch see earlier ones on the same stream",
                   "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  std::vector<append_request> batch{req("agent/s", 0, 2), req("agent/s", 2, 1),
                                    req("agent/s", 2, 1), req("agent/s", k_any_version, 2)};
  auto out = db.append_batch(batch, t0);
  REQUIRE(out.size() == 4);
  REQUIRE(out[0]);
  CHECK(out[0]->last_version == 2);
  REQUIRE(out[1]);
  CHECK(out[1]->first_version == 3);
  require_error(out[2], errc::conflict, {"expected version 2", "actual version 3"});
  REQUIRE(out[3]);
  CHECK(out[3]->first_version == 4);
  CHECK(out[3]->last_version == 5);
  CHECK(versions_of(read_all(db, "agent/s")) == range(1, 5));
  CHECK(db.version("agent/s").value() == 5);
}

TEMPLATE_TEST_CASE("conformance: read from a version at most max events", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  REQUIRE(append(db, req("exec/r", 0, 10)));
  CHECK(versions_of(db.read("exec/r", 4, 3).value()) == range(4, 6));
  CHECK(versions_of(db.read("exec/r", 9, 100).value()) == range(9, 10));
  CHECK(db.read("exec/r", 11, 10).value().empty());
  CHECK(versions_of(db.read("exec/r", 0, 2).value()) == range(1, 2));
  CHECK(db.read("exec/r", 1, 0).value().empty());
  CHECK(db.read("exec/missing", 1, 10).value().empty());
  auto e = db.read("exec/r", 7, 1).value();
  REQUIRE(e.size() == 1);
  CHECK(e[0].payload == "exec/r#6");
}

TEMPLATE_TEST_CASE("conformance: version of a stream", "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  CHECK(db.version("exec/v").value() == 0);
  REQUIRE(append(db, req("exec/v", 0, 4)));
  CHECK(db.version("exec/v").value() == 4);
  CHECK(db.version("exec/v2").value() == 0);
  CHECK(db.version("exec/").value() == 0);
}

TEMPLATE_TEST_CASE("conformance: list streams by prefix and tenant with paging", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  // Ordered bytewise: "exec/1" < "exec/10" < "exec/2"; "exec-x" does not have the prefix "exec/".
  REQUIRE(append(db, req("exec/2", 0, 2, "t1")));
  REQUIRE(append(db, req("exec/10", 0, 1, "t2")));
  REQUIRE(append(db, req("exec/1", 0, 3, "t1")));
  REQUIRE(append(db, req("exec-x", 0, 1, "t1")));
  REQUIRE(append(db, req("agent/1", 0, 1, "t2")));
  REQUIRE(append(db, req("exec", 0, 1, "t1")));

  auto all_exec = db.list_streams("exec/", "", "", 100).value();
  REQUIRE(ids_of(all_exec) == std::vector<std::string>{"exec/1", "exec/10", "exec/2"});
  CHECK(all_exec[0].tenant == "t1");
  CHECK(all_exec[0].version == 3);
  CHECK(all_exec[1].tenant == "t2");
  CHECK(all_exec[1].version == 1);
  CHECK(all_exec[2].version == 2);

  CHECK(ids_of(db.list_streams("exec/", "t1", "", 100).value())
        == std::vector<std::string>{"exec/1", "exec/2"});
  CHECK(ids_of(db.list_streams("", "t2", "", 100).value())
        == std::vector<std::string>{"agent/1", "exec/10"});
  CHECK(ids_of(db.list_streams("", "", "", 100).value())
        == std::vector<std::string>{"agent/1", "exec", "exec-x", "exec/1", "exec/10", "exec/2"});
  CHECK(ids_of(db.list_streams("exec", "", "", 100).value())
        == std::vector<std::string>{"exec", "exec-x", "exec/1", "exec/10", "exec/2"});
  CHECK(db.list_streams("nope/", "", "", 100).value().empty());
  CHECK(db.list_streams("exec/", "t3", "", 100).value().empty());
  CHECK(db.list_streams("exec/", "", "", 0).value().empty());

  // Paging: pages of two, each starting after the last id of the previous page.
  auto page1 = db.list_streams("exec/", "", "", 2).value();
  CHECK(ids_of(page1) == std::vector<std::string>{"exec/1", "exec/10"});
  auto page2 = db.list_streams("exec/", "", page1.back().stream, 2).value();
  CHECK(ids_of(page2) == std::vector<std::string>{"exec/2"});
  CHECK(db.list_streams("exec/", "", page2.back().stream, 2).value().empty());
  // `after` need not be a stream id, and may sort before the prefix.
  CHECK(ids_of(db.list_streams("exec/", "", "exec/0", 10).value())
        == std::vector<std::string>{"exec/1", "exec/10", "exec/2"});
  CHECK(ids_of(db.list_streams("exec/", "", "a", 10).value())
        == std::vector<std::string>{"exec/1", "exec/10", "exec/2"});
  CHECK(ids_of(db.list_streams("exec/", "t1", "exec/1", 10).value())
        == std::vector<std::string>{"exec/2"});
}

// --- snapshots -------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("conformance: snapshots are saved and loaded and replaced", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  CHECK_FALSE(db.load_snapshot("exec/s").value().has_value());
  REQUIRE(append(db, req("exec/s", 0, 5, "acme")));

  snapshot_record s{"exec/s",
                    "acme",
                    2,
                    "af.v1.ExecState",
                    std::string("state\0two", 9),
                    t0 + std::chrono::seconds{3}};
  REQUIRE(db.save_snapshot(s));
  auto loaded = db.load_snapshot("exec/s").value();
  REQUIRE(loaded.has_value());
  CHECK(loaded->stream == "exec/s");
  CHECK(loaded->tenant == "acme");
  CHECK(loaded->version == 2);
  CHECK(loaded->type == "af.v1.ExecState");
  CHECK(loaded->payload == s.payload);
  CHECK(loaded->taken_at == s.taken_at);

  // Replacing keeps only the newest; events after it are what a reader replays.
  s.version = 5;
  s.payload = "state five";
  REQUIRE(db.save_snapshot(s));
  loaded = db.load_snapshot("exec/s").value();
  REQUIRE(loaded.has_value());
  CHECK(loaded->version == 5);
  CHECK(loaded->payload == "state five");
  CHECK(db.read("exec/s", loaded->version + 1, 100).value().empty());

  // A snapshot may not get ahead of its stream, nor belong to another tenant.
  auto ahead = s;
  ahead.version = 6;
  require_error(db.save_snapshot(ahead), errc::validation,
                {"exec/s", "version 6", "stream's version 5"});
  auto none = s;
  none.stream = "exec/none";
  none.version = 1;
  require_error(db.save_snapshot(none), errc::validation, {"exec/none", "version 1"});
  auto other = s;
  other.tenant = "evil";
  require_error(db.save_snapshot(other), errc::forbidden, {"exec/s", "'acme'"});
  loaded = db.load_snapshot("exec/s").value();
  REQUIRE(loaded.has_value());
  CHECK(loaded->version == 5);
  CHECK(loaded->tenant == "acme");
  CHECK_FALSE(db.load_snapshot("exec/none").value().has_value());
}

// --- audit chain -------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("conformance: the audit chain appends and reads and reports its head",
                   "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  auto head = db.audit_last().value();
  CHECK(head.seq == 0);
  CHECK(head.hash == sha256_digest{});
  CHECK(db.audit_read(1, 10).value().empty());

  auto rows = chain(head, 3);
  REQUIRE(db.audit_append(rows));
  REQUIRE(db.audit_append({}));
  head = db.audit_last().value();
  CHECK(head.seq == 3);
  CHECK(head.hash == rows[2].hash);

  auto more = chain(head, 2);
  REQUIRE(db.audit_append(more));
  rows.insert(rows.end(), more.begin(), more.end());

  auto read = db.audit_read(1, 100).value();
  REQUIRE(read.size() == 5);
  for (std::size_t i = 0; i < read.size(); ++i) {
    const auto& r = read[i];
    CHECK(r.seq == i + 1);
    CHECK(r.tenant == rows[i].tenant);
    CHECK(r.ts == rows[i].ts);
    CHECK(r.actor == rows[i].actor);
    CHECK(r.action == rows[i].action);
    CHECK(r.subject == rows[i].subject);
    CHECK(r.record == rows[i].record);
    CHECK(r.prev_hash == rows[i].prev_hash);
    CHECK(r.hash == rows[i].hash);
    // The stored chain verifies: hash = SHA-256(prev_hash || record), linked to the row before.
    CHECK(r.hash == sha256(r.prev_hash, r.record));
    CHECK(r.prev_hash == (i == 0 ? sha256_digest{} : read[i - 1].hash));
  }
  CHECK(seqs_of(db.audit_read(2, 2).value()) == range(2, 3));
  CHECK(seqs_of(db.audit_read(0, 1).value()) == range(1, 1));
  CHECK(db.audit_read(6, 10).value().empty());
  CHECK(db.audit_read(1, 0).value().empty());
}

TEMPLATE_TEST_CASE("conformance: the audit chain refuses gaps and repeats and broken links",
                   "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  REQUIRE(db.audit_append(chain({}, 2)));
  const auto head = db.audit_last().value();
  REQUIRE(head.seq == 2);

  // A gap: seq 4 after 2.
  auto gap = chain({3, head.hash}, 1);
  require_error(db.audit_append(gap), errc::conflict, {"seq 4", "expected seq 3"});
  // A repeat: seq 2 again (another writer got there first).
  require_error(db.audit_append(chain({1, head.hash}, 1)), errc::conflict, {"seq 2"});
  // A gap inside the rows: nothing of them is written.
  auto inner = chain(head, 3);
  inner[2].seq = 7;
  require_error(db.audit_append(inner), errc::conflict, {"seq 7", "expected seq 5"});
  // A broken link: prev_hash is not the last row's hash.
  auto unlinked = chain({head.seq, digest_of("wrong")}, 1);
  require_error(db.audit_append(unlinked), errc::validation, {"seq 3", "prev_hash"});
  auto inner_link = chain(head, 2);
  inner_link[1].prev_hash = digest_of("x");
  require_error(db.audit_append(inner_link), errc::validation, {"seq 4", "prev_hash"});

  CHECK(db.audit_last().value().seq == 2);
  CHECK(seqs_of(db.audit_read(1, 100).value()) == range(1, 2));
  REQUIRE(db.audit_append(chain(head, 1)));
  CHECK(db.audit_last().value().seq == 3);
}

// --- schema ------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("conformance: migrate down to 0 drops everything and up again starts empty",
                   "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  const int latest = db.latest_schema_version();
  REQUIRE(latest >= 2);
  CHECK(db.schema_version().value() == latest);
  CHECK(db.migrate_to(latest)); // already there: nothing to do

  REQUIRE(append(db, req("exec/m", 0, 3)));
  REQUIRE(db.save_snapshot({"exec/m", "t1", 3, "af.v1.S", "s", t0}));
  REQUIRE(db.audit_append(chain({}, 2)));

  // Down to 1: the audit log goes, the journal's tables stay (this build's journal calls need
  // the latest schema and say so); back up, the events are there.
  REQUIRE(db.migrate_to(1));
  CHECK(db.schema_version().value() == 1);
  require_error(db.version("exec/m"), errc::internal, {"migrat"});
  CHECK_FALSE(db.audit_last().has_value());
  REQUIRE(db.migrate_to(latest));
  CHECK(db.version("exec/m").value() == 3);
  CHECK(db.load_snapshot("exec/m").value().has_value());
  CHECK(db.audit_last().value().seq == 0);
  REQUIRE(db.migrate_to(1));

  REQUIRE(db.migrate_to(0));
  CHECK(db.schema_version().value() == 0);
  CHECK_FALSE(db.read("exec/m", 1, 10).has_value());
  CHECK_FALSE(db.version("exec/m").has_value());
  for (const auto& r : db.append_batch(std::vector{req("exec/n", 0, 1)}, t0))
    CHECK_FALSE(r);

  REQUIRE(db.migrate_to(latest));
  CHECK(db.schema_version().value() == latest);
  CHECK(db.version("exec/m").value() == 0);
  CHECK(db.read("exec/m", 1, 10).value().empty());
  CHECK_FALSE(db.load_snapshot("exec/m").value().has_value());
  CHECK(db.audit_last().value().seq == 0);
  CHECK(db.list_streams("", "", "", 10).value().empty());
  // And the tables work again.
  REQUIRE(append(db, req("exec/m", 0, 1)));
  REQUIRE(db.audit_append(chain({}, 1)));

  require_error(db.migrate_to(latest + 1), errc::validation, {std::to_string(latest + 1)});
  require_error(db.migrate_to(-1), errc::validation, {"-1"});
  CHECK(db.schema_version().value() == latest);
}

// --- bytes and durability ----------------------------------------------------------------------

TEMPLATE_TEST_CASE("conformance: payload bytes come back exactly as stored", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  // Not valid Protobuf, NULs, high bytes, an empty payload, 1 MiB: the journal stores bytes and
  // decoding (and its errors) is the caller's business.
  std::string binary;
  for (int i = 0; i < 256; ++i)
    binary.push_back(static_cast<char>(i));
  std::string big(1 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>((i * 131) % 251);
  std::string corrupt = "\xff\xff\xff\x0f garbage ";
  corrupt.push_back('\0');
  corrupt += " tail";
  append_request r{"exec/bytes", "t1", 0, {}};
  r.events.push_back({"af.v1.Corrupt", corrupt, digest_of("a")});
  r.events.push_back({"af.v1.Binary", binary, digest_of("b")});
  r.events.push_back({"af.v1.Empty", "", digest_of("c")});
  r.events.push_back({"af.v1.Big", big, digest_of("d")});
  r.events.push_back({"type/ünïcødé", "x", digest_of("e")});
  REQUIRE(append(db, r));

  auto events = read_all(db, "exec/bytes");
  REQUIRE(events.size() == r.events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    INFO("event " << i);
    CHECK(events[i].type == r.events[i].type);
    CHECK(events[i].payload.size() == r.events[i].payload.size());
    CHECK(events[i].payload == r.events[i].payload);
    CHECK(events[i].envelope_hash == r.events[i].envelope_hash);
  }
  std::string snap_bytes = std::string("\0\x01\xfe", 3) + binary;
  REQUIRE(db.save_snapshot({"exec/bytes", "t1", 5, "af.v1.S", snap_bytes, t0}));
  CHECK(db.load_snapshot("exec/bytes").value()->payload == snap_bytes);
}

TEMPLATE_TEST_CASE("conformance: data survives closing and reopening", "[conformance]", sqlite_kind,
                   postgres_kind) {
  CONFORMANCE_SETUP();
  REQUIRE(append(db, req("exec/p", 0, 3, "acme")));
  REQUIRE(db.save_snapshot({"exec/p", "acme", 2, "af.v1.S", "snap", t0}));
  const auto rows = chain({}, 2);
  REQUIRE(db.audit_append(rows));
  fx.db.reset();

  auto reopened = fx.kind.reopen();
  REQUIRE(reopened);
  backend& again = **reopened;
  CHECK(again.schema_version().value() == again.latest_schema_version());
  auto events = read_all(again, "exec/p");
  CHECK(versions_of(events) == range(1, 3));
  CHECK(events[2].payload == "exec/p#2");
  CHECK(events[2].tenant == "acme");
  CHECK(events[2].committed_at == t0);
  CHECK(again.version("exec/p").value() == 3);
  CHECK(again.load_snapshot("exec/p").value()->payload == "snap");
  CHECK(again.audit_last().value().hash == rows[1].hash);
  // Appends continue where they left off.
  auto res = append(again, req("exec/p", 3, 1, "acme"));
  REQUIRE(res);
  CHECK(res->first_version == 4);
}

// --- retention ---------------------------------------------------------------------------------

namespace {

append_request finishing(std::string stream, std::uint64_t expected, std::size_t n) {
  auto r = req(std::move(stream), expected, n);
  r.finish = true;
  return r;
}

compact_result compact_all(backend& db, time_point now, duration retention,
                           std::size_t max_streams = 1000, bool reclaim = false) {
  compact_result total;
  for (int step = 0; step < 100000; ++step) {
    auto r = db.compact({now, retention, max_streams, reclaim});
    if (!r) FAIL(r.error().to_string());
    total.streams_deleted += r->streams_deleted;
    total.streams_pruned += r->streams_pruned;
    total.events_deleted += r->events_deleted;
    if (!r->more) return total;
  }
  FAIL("compact never finished");
  return total;
}

} // namespace

TEMPLATE_TEST_CASE("conformance: a finished stream takes no more events", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  REQUIRE(append(db, req("exec/f", 0, 2)));
  auto info = db.stream("exec/f").value();
  REQUIRE(info.has_value());
  CHECK_FALSE(info->finished_at.has_value());
  CHECK(info->version == 2);
  CHECK(info->pruned_through == 0);

  auto done = append(db, finishing("exec/f", 2, 1), t0 + std::chrono::seconds{3});
  REQUIRE(done);
  CHECK(done->last_version == 3);
  info = db.stream("exec/f").value();
  REQUIRE(info->finished_at.has_value());
  CHECK(*info->finished_at == t0 + std::chrono::seconds{3});
  CHECK(db.list_streams("exec/", "", "", 10).value().at(0).finished_at == info->finished_at);

  require_error(append(db, req("exec/f", 3, 1)), errc::conflict, {"exec/f", "finished"});
  auto any = req("exec/f", k_any_version, 1);
  require_error(append(db, any), errc::conflict, {"finished"});
  CHECK(db.version("exec/f").value() == 3);
  // Snapshots of a finished stream are still allowed (the final state).
  CHECK(db.save_snapshot({"exec/f", "t1", 3, "af.v1.S", "final", t0}));
  CHECK_FALSE(db.stream("exec/none").value().has_value());

  // In one batch: the request after the finishing one is refused, the others commit.
  std::vector batch{finishing("exec/g", 0, 2), req("exec/g", 2, 1), req("exec/h", 0, 1)};
  auto out = db.append_batch(batch, t0);
  REQUIRE(out.size() == 3);
  CHECK(out[0]);
  require_error(out[1], errc::conflict, {"finished"});
  CHECK(out[2]);
  CHECK(db.version("exec/g").value() == 2);
  CHECK(db.stream("exec/g").value()->finished_at.has_value());
  CHECK_FALSE(db.stream("exec/h").value()->finished_at.has_value());
}

TEMPLATE_TEST_CASE("conformance: compaction deletes finished streams after the retention period",
                   "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  using std::chrono::seconds;
  REQUIRE(append(db, finishing("exec/a", 0, 4), t0));
  REQUIRE(db.save_snapshot({"exec/a", "t1", 4, "af.v1.S", "final", t0}));
  REQUIRE(append(db, finishing("exec/b", 0, 2), t0 + seconds{10}));
  REQUIRE(append(db, req("exec/c", 0, 3), t0));
  REQUIRE(db.audit_append(chain({}, 3)));

  // Nothing is old enough yet.
  auto r = db.compact({t0 + seconds{5}, seconds{10}});
  REQUIRE(r);
  CHECK(r->streams_deleted == 0);
  CHECK(r->events_deleted == 0);
  CHECK_FALSE(r->more);

  r = db.compact({t0 + seconds{15}, seconds{10}});
  REQUIRE(r);
  CHECK(r->streams_deleted == 1);
  CHECK(r->streams_pruned == 0);
  CHECK(r->events_deleted == 4);
  CHECK_FALSE(db.stream("exec/a").value().has_value());
  CHECK(db.version("exec/a").value() == 0);
  CHECK(db.read("exec/a", 1, 10).value().empty());
  CHECK_FALSE(db.load_snapshot("exec/a").value().has_value());
  CHECK(ids_of(db.list_streams("exec/", "", "", 10).value())
        == std::vector<std::string>{"exec/b", "exec/c"});

  r = db.compact({t0 + seconds{20}, seconds{10}}); // b finished at +10: exactly 10 s old
  REQUIRE(r);
  CHECK(r->streams_deleted == 1);
  CHECK(r->events_deleted == 2);
  // The open stream and the audit chain are never touched.
  CHECK(versions_of(read_all(db, "exec/c")) == range(1, 3));
  CHECK(db.compact({t0 + seconds{1000}, seconds{0}}).value().streams_deleted == 0);
  CHECK(db.audit_last().value().seq == 3);
  CHECK(db.audit_read(1, 10).value().size() == 3);
}

TEMPLATE_TEST_CASE("conformance: compaction prunes the events a snapshot covers", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  using std::chrono::hours;
  REQUIRE(append(db, req("agent/x", 0, 10)));
  REQUIRE(db.save_snapshot({"agent/x", "t1", 6, "af.v1.S", "at6", t0}));
  REQUIRE(append(db, req("agent/young", 0, 3)));
  REQUIRE(db.save_snapshot({"agent/young", "t1", 3, "af.v1.S", "s", t0 + hours{2}}));

  auto r = db.compact({t0 + hours{1}, hours{1}});
  REQUIRE(r);
  CHECK(r->streams_pruned == 1); // agent/young's snapshot is too recent
  CHECK(r->streams_deleted == 0);
  CHECK(r->events_deleted == 6);
  CHECK(versions_of(read_all(db, "agent/young")) == range(1, 3));

  auto info = db.stream("agent/x").value();
  REQUIRE(info);
  CHECK(info->pruned_through == 6);
  CHECK(info->version == 10);
  CHECK(db.version("agent/x").value() == 10);
  CHECK(versions_of(db.read("agent/x", 7, 100).value()) == range(7, 10));
  CHECK(versions_of(db.read("agent/x", 9, 1).value()) == range(9, 9));
  // Reading pruned events is an error that says what to do, not a silent gap.
  require_error(db.read("agent/x", 1, 100), errc::not_found,
                {"agent/x", "pruned", "snapshot", "version 7"});
  require_error(db.read("agent/x", 6, 100), errc::not_found, {"agent/x", "1..6"});
  CHECK(db.list_streams("agent/x", "", "", 10).value().at(0).pruned_through == 6);

  // Appends go on; a second run finds nothing new; a newer snapshot prunes further.
  auto more = append(db, req("agent/x", 10, 2));
  REQUIRE(more);
  CHECK(more->first_version == 11);
  CHECK(db.compact({t0 + hours{1}, hours{1}}).value().streams_pruned == 0);
  REQUIRE(db.save_snapshot({"agent/x", "t1", 9, "af.v1.S", "at9", t0 + hours{1}}));
  r = db.compact({t0 + hours{3}, hours{1}});
  REQUIRE(r);
  CHECK(r->events_deleted == 3 + 3); // agent/x 7..9 and agent/young 1..3
  CHECK(versions_of(db.read("agent/x", 10, 100).value()) == range(10, 12));
  CHECK(db.stream("agent/x").value()->pruned_through == 9);
  CHECK(db.load_snapshot("agent/x").value()->payload == "at9");
}

TEMPLATE_TEST_CASE("conformance: compaction works in bounded steps", "[conformance]", BACKENDS) {
  CONFORMANCE_SETUP();
  for (int i = 0; i < 5; ++i)
    REQUIRE(append(db, finishing("exec/" + std::to_string(i), 0, 2), t0 + std::chrono::seconds{i}));
  auto r = db.compact({t0 + std::chrono::seconds{100}, std::chrono::seconds{1}, 2});
  REQUIRE(r);
  CHECK(r->streams_deleted == 2);
  CHECK(r->more);
  // Oldest finish first.
  CHECK_FALSE(db.stream("exec/0").value().has_value());
  CHECK_FALSE(db.stream("exec/1").value().has_value());
  CHECK(db.stream("exec/2").value().has_value());
  auto rest = compact_all(db, t0 + std::chrono::seconds{100}, std::chrono::seconds{1}, 2);
  CHECK(rest.streams_deleted == 3);
  CHECK(rest.events_deleted == 6);
  CHECK(db.list_streams("", "", "", 10).value().empty());
  CHECK(db.compact({t0, duration{}, 0}).value().streams_deleted == 0); // max 0: nothing
}

TEMPLATE_TEST_CASE("conformance: migrating below retention keeps the journal", "[conformance]",
                   BACKENDS) {
  CONFORMANCE_SETUP();
  REQUIRE(db.latest_schema_version() >= 3);
  REQUIRE(append(db, finishing("exec/r", 0, 2)));
  REQUIRE(db.migrate_to(2));
  require_error(db.version("exec/r"), errc::internal, {"migrat"});
  REQUIRE(db.migrate_to(db.latest_schema_version()));
  CHECK(versions_of(read_all(db, "exec/r")) == range(1, 2));
  // The finish mark went with the column: the stream is open again.
  CHECK_FALSE(db.stream("exec/r").value()->finished_at.has_value());
  CHECK(append(db, req("exec/r", 2, 1)));
}

TEMPLATE_TEST_CASE("conformance: with retention on, the store stays flat over 10,000 finished "
                   "executions",
                   "[conformance][retention]", BACKENDS) {
  CONFORMANCE_SETUP();
  // Each execution: 8 events of ~200 bytes, the last one finishing the stream; 100 executions
  // per commit, one simulated second apart; retention 5 s, compaction after every commit (what
  // the journal agent does on its interval).
  constexpr int k_executions = 10'000;
  constexpr int k_per_batch = 100;
  constexpr std::size_t k_events = 8;
  const auto retention = std::chrono::seconds{5};
  const std::string payload(200, 'p');
  std::uint64_t written = 0;
  std::uint64_t deleted = 0;
  std::uint64_t size_warm = 0;
  std::uint64_t size_max_after_warm = 0;
  for (int b = 0; b < k_executions / k_per_batch; ++b) {
    const auto now = t0 + std::chrono::seconds{b};
    std::vector<append_request> batch;
    for (int i = 0; i < k_per_batch; ++i) {
      append_request r{"exec/" + std::to_string(b * k_per_batch + i), "t1", 0, {}, true};
      for (std::size_t e = 0; e < k_events; ++e)
        r.events.push_back({"af.v1.Step", payload + std::to_string(e), digest_of("x")});
      written += k_events * (payload.size() + 1);
      batch.push_back(std::move(r));
    }
    for (const auto& res : db.append_batch(batch, now))
      REQUIRE(res);
    deleted += compact_all(db, now, retention, 1000, true).events_deleted;
    auto size = db.storage_bytes();
    REQUIRE(size);
    if (b == 19) size_warm = *size; // after 2,000 executions
    if (b > 19) size_max_after_warm = std::max(size_max_after_warm, *size);
  }
  INFO("payload bytes written " << written << ", size after 2,000 executions " << size_warm
                                << ", largest size after that " << size_max_after_warm);
  // Everything finished at least 5 s before the last commit is gone...
  CHECK(deleted == (k_executions - 5 * k_per_batch) * k_events);
  CHECK(db.list_streams("exec/", "", "", 100000).value().size() == 5 * k_per_batch);
  // ...and the store did not grow after the first 2,000 executions, while the bytes written grew
  // five-fold (SQLite's size includes its WAL, which checkpoints keep at ~4 MiB).
  CHECK(size_max_after_warm <= size_warm + size_warm / 4 + 64 * 1024);
  CHECK(size_max_after_warm < written / 2);
}
