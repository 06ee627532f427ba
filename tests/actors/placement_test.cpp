// Virtual agents on a real node (af/cluster/placement.hpp, counter.hpp): rendezvous ownership,
// name parsing, activation on first message, idle deactivation and reload from the SQLite
// journal, refusals, and the journal's fencing of a stale duplicate activation.
#include "af/cluster/counter.hpp"
#include "af/cluster/placement.hpp"
#include "af/metrics.hpp"
#include "af/node.hpp"
#include "af/store/backend.hpp"
#include "af/store/journal.hpp"
#include "af/v1/placement.pb.h"
#include "af/v1/store.pb.h"
#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <sstream>
#include <thread>

using namespace af;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> members(std::size_t n) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i)
    out.push_back("node-" + std::to_string(i));
  return out;
}

/// The value of one series in the node's exposition text ("name{labels} value" or "name value").
double metric(node& n, const std::string& series) {
  std::istringstream text{n.metrics().serialize_text()};
  double sum = 0;
  for (std::string line; std::getline(text, line);)
    if (line.starts_with(series + " ") || line.starts_with(series + "{"))
      sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  return sum;
}

struct placement_node {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<node> n;
  std::string db;

  placement_node(const std::string& db_path, duration idle, std::size_t max_activations = 1000)
      : db(db_path) {
    node::options o;
    log_options lo;
    lo.level = log_level::info;
    lo.format = "json";
    o.log = make_memory_log_backend(lo, lines);
    store::journal_options jo;
    jo.open = [db_path] { return store::open_url("sqlite:" + db_path); };
    o.system_services.push_back(store::journal_child(std::move(jo)));
    cluster::placement_options po;
    po.kinds["counter"] = cluster::counter_kind();
    po.idle_timeout = idle;
    po.tick = 50ms;
    po.max_activations = max_activations;
    o.system_services.push_back(cluster::placement_child(std::move(po)));
    auto r = node::start(std::move(o));
    REQUIRE(r);
    n = std::move(r).value();
  }
  ~placement_node() {
    if (n) n->shutdown();
  }

  expected<v1::CounterValue> add(const std::string& name, const std::string& op) {
    v1::CounterAdd a;
    a.set_op_id(op);
    a.set_amount(1);
    return n->ask<v1::CounterValue>(name, a, 10s);
  }
  v1::PlacementStatus status() {
    auto s =
        n->ask<v1::PlacementStatus>(cluster::k_placement_agent, v1::PlacementStatusRequest{}, 10s);
    REQUIRE(s);
    return *s;
  }
  std::vector<store::event_record> events(const std::string& stream) {
    auto b = store::open_url("sqlite:" + db);
    REQUIRE(b);
    auto evs = (*b)->read(stream, 1, 1000);
    REQUIRE(evs);
    return *evs;
  }
};

std::vector<std::string> op_ids(const std::vector<store::event_record>& evs) {
  std::vector<std::string> out;
  for (const auto& e : evs) {
    v1::CounterEvent ce;
    REQUIRE(ce.ParseFromString(e.payload));
    out.push_back(ce.op_id());
  }
  return out;
}

} // namespace

TEST_CASE("owner_of: rendezvous scores are SHA-256 based and identical everywhere", "[placement]") {
  // Expected values computed independently: python3 hashlib.sha256(member + b"\0" + key),
  // first 8 bytes big-endian.
  CHECK(cluster::placement_score("n1", "counter/42") == 0x2ca9b9c841c47c1aULL);
  CHECK(cluster::placement_score("node-b", "researcher/7") == 0x49f481589c2ed5c5ULL);
  const std::vector<std::string> m{"a", "b", "c"};
  auto o = cluster::owner_of("researcher/42", m);
  std::string best;
  std::uint64_t best_score = 0;
  for (const auto& x : m)
    if (cluster::placement_score(x, "researcher/42") > best_score) {
      best_score = cluster::placement_score(x, "researcher/42");
      best = x;
    }
  CHECK(o == best);
  // The order of the member list does not matter.
  CHECK(cluster::owner_of("researcher/42", {"c", "a", "b"}) == o);
  CHECK(cluster::owner_of("x/1", {}).empty());
  CHECK(cluster::owner_of("x/1", {"only"}) == "only");
}

TEST_CASE("owner_of: balanced, and a leaving member moves only its own ids", "[placement]") {
  const auto five = members(5);
  auto four = five;
  four.erase(four.begin() + 2); // node-2 leaves
  constexpr int k_ids = 10000;
  std::map<std::string, int> load;
  int moved = 0, moved_elsewhere = 0;
  for (int i = 0; i < k_ids; ++i) {
    const auto key = "counter/" + std::to_string(i);
    const auto before = cluster::owner_of(key, five);
    const auto after = cluster::owner_of(key, four);
    ++load[before];
    if (before != after) {
      ++moved;
      if (before != "node-2") ++moved_elsewhere;
    }
  }
  CHECK(moved_elsewhere == 0);       // only node-2's ids moved
  CHECK(moved == load["node-2"]);    // and all of them
  CHECK(moved > k_ids / 5 * 8 / 10); // ~1/n of the ids (within 20%)
  CHECK(moved < k_ids / 5 * 12 / 10);
  for (const auto& [m, n] : load) {
    INFO(m);
    CHECK(n > k_ids / 5 * 8 / 10);
    CHECK(n < k_ids / 5 * 12 / 10);
  }
}

TEST_CASE("parse_virtual_name checks both parts", "[placement]") {
  auto ok = cluster::parse_virtual_name("researcher/42");
  REQUIRE(ok);
  CHECK(ok->kind == "researcher");
  CHECK(ok->id == "42");
  CHECK(cluster::parse_virtual_name("a.b-c/x/y")->id == "x/y");
  for (const char* bad :
       {"noslash", "/42", "kind/", "af.kind/1", "bad kind/1", "k/has space", "k/tab\tid"}) {
    INFO(bad);
    auto r = cluster::parse_virtual_name(bad);
    REQUIRE(!r);
    CHECK(r.error().code() == errc::validation);
  }
}

TEST_CASE("placement on one node: activation, refusals, idle deactivation, reload", "[placement]") {
  test::temp_dir dir;
  placement_node pn{(dir.path() / "af.db").string(), 300ms};
  auto& n = *pn.n;

  // The first message activates counter/a; later ones reach the same activation.
  auto v1r = pn.add("counter/a", "op-1");
  REQUIRE(v1r);
  CHECK(v1r->value() == 1);
  CHECK(v1r->node() == n.name());
  auto v2r = pn.add("counter/a", "op-2");
  REQUIRE(v2r);
  CHECK(v2r->value() == 2);
  CHECK(v2r->version() == 2);
  // An op applied before is not applied again.
  auto dup = pn.add("counter/a", "op-1");
  REQUIRE(dup);
  CHECK(dup->duplicate());
  CHECK(dup->value() == 2);
  CHECK(metric(n, "af_placement_activations_total") == 1);
  auto st = pn.status();
  REQUIRE(st.activations_size() == 1);
  CHECK(st.activations(0) == "counter/a");
  CHECK(st.members_size() == 1); // no membership agent: this node alone

  // Unknown kind: not_found naming the kind. Malformed id: validation.
  auto unknown = pn.add("researcher/42", "op-x");
  REQUIRE(!unknown);
  CHECK(unknown.error().code() == errc::not_found);
  CHECK(unknown.error().message().find("kind 'researcher'") != std::string::npos);
  auto bad = pn.add("counter/has space", "op-y");
  REQUIRE(!bad);
  CHECK(bad.error().code() == errc::validation);
  CHECK(metric(n, "af_placement_refused_total{reason=\"validation\"}") == 1);

  // Idle: stopped after 300 ms without messages.
  auto stopped = [&] {
    auto s = pn.status();
    return s.activations_size() == 0 && s.stopping_size() == 0;
  };
  for (int i = 0; i < 500 && !stopped(); ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(stopped());
  CHECK(metric(n, "af_placement_deactivations_total{reason=\"idle\"}") == 1);
  // The next message activates it again, with its state reloaded from the journal.
  auto v3r = pn.add("counter/a", "op-3");
  REQUIRE(v3r);
  CHECK(v3r->value() == 3);
  CHECK(v3r->version() == 3);
  CHECK(metric(n, "af_placement_activations_total") == 2);
  CHECK(op_ids(pn.events("agent/counter/a")) == std::vector<std::string>{"op-1", "op-2", "op-3"});

  bool logged_activation = false, logged_refusal = false, logged_idle = false;
  for (const auto& l : *pn.lines) {
    logged_activation |= l.find("\"event\":\"virtual_agent_activated\"") != std::string::npos;
    logged_refusal |= l.find("\"event\":\"route_refused\"") != std::string::npos;
    logged_idle |= l.find("\"event\":\"virtual_agent_deactivated\"") != std::string::npos;
  }
  CHECK(logged_activation);
  CHECK(logged_refusal);
  CHECK(logged_idle);
}

TEST_CASE("a stale duplicate activation cannot land its writes (journal fencing)", "[placement]") {
  test::temp_dir dir;
  placement_node pn{(dir.path() / "af.db").string(), 0ms};
  auto& n = *pn.n;
  REQUIRE(pn.add("counter/f", "op-1"));
  // A second activation of counter/f, as a node with another membership view would make. It
  // loads the stream at version 1.
  REQUIRE(n.spawn_agent([] { return cluster::counter_kind()("counter", "f"); }, "dup-f"));
  v1::CounterGet get;
  auto seen = n.ask<v1::CounterValue>("dup-f", get, 10s);
  REQUIRE(seen);
  CHECK(seen->version() == 1);
  // The placed activation writes version 2; the duplicate's next append expects 1: refused.
  REQUIRE(pn.add("counter/f", "op-2"));
  v1::CounterAdd a;
  a.set_op_id("op-3");
  a.set_amount(1);
  auto late = n.ask<v1::CounterValue>("dup-f", a, 10s);
  REQUIRE(late);
  CHECK(metric(n, "af_counter_fenced_total") == 1);
  // It caught up and applied op-3 after op-2: nothing written at a stale version.
  CHECK(late->value() == 3);
  CHECK(late->version() == 3);
  // The same op through the other activation: applied once only.
  auto again = pn.add("counter/f", "op-3");
  REQUIRE(again);
  CHECK(again->duplicate());
  CHECK(again->value() == 3);
  const auto evs = pn.events("agent/counter/f");
  CHECK(op_ids(evs) == std::vector<std::string>{"op-1", "op-2", "op-3"});
  for (std::size_t i = 0; i < evs.size(); ++i)
    CHECK(evs[i].version == i + 1);
}

TEST_CASE("placement refuses activations beyond max_activations with quota", "[placement]") {
  test::temp_dir dir;
  placement_node pn{(dir.path() / "af.db").string(), 0ms, 2};
  REQUIRE(pn.add("counter/a", "1"));
  REQUIRE(pn.add("counter/b", "2"));
  auto third = pn.add("counter/c", "3");
  REQUIRE(!third);
  CHECK(third.error().code() == errc::quota);
  CHECK(third.error().message().find("max_activations") != std::string::npos);
  // The ones held still answer.
  auto again = pn.add("counter/a", "4");
  REQUIRE(again);
  CHECK(again->value() == 2);
  CHECK(metric(*pn.n, "af_placement_refused_total{reason=\"quota\"}") == 1);
}
