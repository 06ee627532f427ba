// Virtual agents in the simulator: placement on every node over the scripted membership agent
// (until the SWIM agent runs there), client load on the event-sourced counter kind, owner
// crashes, views in disagreement (duplicate activations counted) and the exactly-once effect of
// the writes checked against the shared journal.
#include "af/sim/simulation.hpp"

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using af::sim::fault_spec;
using af::sim::scenario;

scenario placed(std::size_t ids = 30) {
  scenario sc;
  sc.name = "test-virtual-agents";
  sc.nodes = {"n1", "n2", "n3"};
  sc.run_for = 6s;
  sc.drain = 6s;
  sc.network.defaults.latency = {af::sim::latency_spec::kind::uniform, 1ms, 10ms, 5ms};
  auto& va = sc.virtual_agents;
  va.kinds = {"counter"};
  va.ids = ids;
  va.client_interval = 20ms;
  va.client_timeout = 1s;
  va.idle_timeout = 2s;
  sc.invariants = {"virtual_exactly_once", "tree_recovers", "no_actor_leak"};
  return sc;
}

af::sim::report run_ok(const scenario& sc, std::uint64_t seed) {
  af::sim::run_options o;
  o.seed = seed;
  auto r = af::sim::run(sc, o);
  REQUIRE(r);
  for (const auto& i : r->invariants) {
    INFO(i.name << ": " << i.detail);
    CHECK(i.ok);
  }
  REQUIRE(r->virtual_agents);
  return *r;
}

} // namespace

TEST_CASE("virtual agents: one activation per id across three nodes, asks cross nodes",
          "[sim][placement]") {
  auto sc = placed();
  auto r = run_ok(sc, 3);
  const auto& v = *r.virtual_agents;
  INFO(r.to_text());
  CHECK(v.adds_sent > 500);
  CHECK(v.adds_acked == v.adds_sent); // no faults: every add answered
  CHECK(v.adds_failed == 0);
  CHECK(v.events_in_journal == v.adds_acked);
  CHECK(v.duplicate_activations == 0);
  CHECK(v.fenced_appends == 0);
  // Each id was activated once until the idle timeout after the load stopped, on its owner
  // only (30 ids, at most 30 first activations; re-activations only after idling).
  CHECK(v.activations >= 25);
  CHECK(v.activations <= 30 + v.deactivations);
  CHECK(v.forwards > 0);                   // asks made on a non-owner went to the owner
  CHECK(v.deactivations == v.activations); // idle after the load stopped: all of them
  auto again = run_ok(sc, 3);
  CHECK(again.trace_hash == r.trace_hash);
}

TEST_CASE("virtual agents: an owner crashes - its ids answer from the new owner with state "
          "reloaded",
          "[sim][placement]") {
  auto sc = placed();
  fault_spec crash;
  crash.what = fault_spec::kind::crash;
  crash.at = 2s;
  crash.node = "n2";
  crash.down_for = 0s; // stays down until the drain restarts it
  sc.faults = {crash};
  sc.virtual_agents.client_nodes = {"n1", "n3"};
  auto r = run_ok(sc, 5);
  const auto& v = *r.virtual_agents;
  INFO(r.to_text());
  CHECK(r.crashes == 1);
  // n2's ids were activated again on n1 or n3, with their state reloaded (value == version on
  // every reply: checked by the invariant), and every acknowledged add is in the journal once.
  CHECK(v.activations > 30);
  CHECK(v.stale_replies == 0);
  CHECK(v.acked_ops_missing == 0);
  CHECK(v.ops_written_twice == 0);
  // Only the asks in flight to n2 around the crash and before it was declared dead failed.
  CHECK(v.adds_acked > v.adds_sent * 9 / 10);
}

TEST_CASE("virtual agents: views in disagreement make duplicate activations - the journal "
          "fences them",
          "[sim][placement]") {
  auto sc = placed(10);
  // n1 and n3 are told n2 is dead while it runs (n2's own view keeps itself): n2's ids are
  // activated twice, and clients on every node write to both activations.
  af::sim::membership_declaration d;
  d.at = 2s;
  d.node = "n2";
  d.state = "dead";
  sc.virtual_agents.declarations = {d};
  auto r = run_ok(sc, 9);
  const auto& v = *r.virtual_agents;
  INFO(r.to_text());
  CHECK(v.duplicate_activations > 0);
  CHECK(v.fenced_appends > 0);
  CHECK(v.ops_written_twice == 0);
  CHECK(v.acked_ops_missing == 0);
  CHECK(v.stale_replies == 0);
  CHECK(v.adds_acked > 0);
  bool noted = false;
  for (const auto& t : r.timeline)
    noted |= t.find("duplicate activation of counter/") != std::string::npos;
  CHECK(noted);
}

TEST_CASE("virtual agents: crash churn keeps every write exactly once", "[sim][placement]") {
  auto sc = placed(20);
  sc.run_for = 10s;
  sc.virtual_agents.detect_min = 0ms;
  sc.virtual_agents.detect_max = 3s; // views disagree for up to 3 s after each crash
  sc.random_faults.crash_per_minute = 12;
  sc.random_faults.down_for = 2s;
  std::uint64_t duplicates = 0, fenced = 0;
  for (std::uint64_t seed : {1, 2, 3}) {
    auto r = run_ok(sc, seed);
    const auto& v = *r.virtual_agents;
    INFO("seed " << seed << "\n" << r.to_text());
    CHECK(v.ops_written_twice == 0);
    CHECK(v.acked_ops_missing == 0);
    CHECK(v.stale_replies == 0);
    CHECK(v.adds_acked > 0);
    duplicates += v.duplicate_activations;
    fenced += v.fenced_appends;
  }
  WARN("duplicate activations over 3 seeds: " << duplicates << ", fenced appends: " << fenced);
}

TEST_CASE("virtual_agents: the scenario section is read and checked", "[scenario][placement]") {
  const std::string head = "apiVersion: agentflow/v1\nkind: Scenario\nmetadata: {name: t}\n"
                           "spec:\n  nodes: [n1, n2]\n";
  auto sc = af::sim::parse_scenario(
      head
          + "  virtual_agents:\n    kinds: [counter, ledger]\n    ids: 7\n"
            "    client_interval: 5ms\n    client_nodes: [n2]\n    idle_timeout: 0s\n"
            "    detect_min: 1s\n    detect_max: 2s\n"
            "    declare: [{at: 3s, node: n1, state: dead}]\n"
            "  invariants: [virtual_exactly_once]\n",
      "s.yaml");
  REQUIRE(sc);
  const auto& va = sc->virtual_agents;
  CHECK(va.kinds == std::vector<std::string>{"counter", "ledger"});
  CHECK(va.ids == 7);
  CHECK(va.client_interval == 5ms);
  CHECK(va.client_nodes == std::vector<std::string>{"n2"});
  CHECK(va.idle_timeout == 0s);
  CHECK(va.detect_min == 1s);
  CHECK(va.detect_max == 2s);
  REQUIRE(va.declarations.size() == 1);
  CHECK(va.declarations[0].node == "n1");
  CHECK(va.declarations[0].state == "dead");
  CHECK(va.declarations[0].at == 3s);
  auto bad = [&](const std::string& body) {
    auto r = af::sim::parse_scenario(head + body, "s.yaml");
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == af::errc::validation);
    return r.error().message();
  };
  CHECK(bad("  virtual_agents: {ids: 3}\n").find("missing 'kinds'") != std::string::npos);
  CHECK(bad("  virtual_agents: {kinds: [af.x]}\n").find("not starting with 'af.'")
        != std::string::npos);
  CHECK(bad("  virtual_agents: {kinds: [c], declare: [{at: 1s, node: n9, state: dead}]}\n")
            .find("unknown node 'n9'")
        != std::string::npos);
  CHECK(bad("  virtual_agents: {kinds: [c], declare: [{at: 1s, node: n1, state: gone}]}\n")
            .find("expected alive, suspect, dead or left")
        != std::string::npos);
  CHECK(bad("  virtual_agents: {kinds: [c], oops: 1}\n").find("oops") != std::string::npos);
}

TEST_CASE("the built-in virtual-agents scenario holds and replays", "[sim][placement]") {
  auto sc =
      af::sim::load_scenario(std::string{AF_SOURCE_DIR} + "/examples/sim/virtual-agents.yaml");
  REQUIRE(sc);
  auto a = run_ok(*sc, 3);
  INFO(a.to_text());
  const auto& v = *a.virtual_agents;
  CHECK(v.adds_acked > 1000);
  CHECK(v.duplicate_activations > 0); // n4 declared dead while it runs
  CHECK(v.ops_written_twice == 0);
  auto b = run_ok(*sc, 3);
  CHECK(a.trace_hash == b.trace_hash);
  CHECK(a.virtual_agents->duplicate_activations == b.virtual_agents->duplicate_activations);
}

TEST_CASE("virtual agents over real SWIM membership: churn, partition, exactly-once adds",
          "[sim][placement][swim]") {
  auto sc =
      af::sim::load_scenario(std::string{AF_SOURCE_DIR} + "/examples/sim/cluster-churn.yaml");
  REQUIRE(sc);
  auto a = run_ok(*sc, 1);
  INFO(a.to_text());
  REQUIRE(a.membership);
  CHECK(a.membership->false_dead == 0);
  REQUIRE(a.membership->crashes.size() == 2);
  for (const auto& c : a.membership->crashes)
    CHECK(c.first_detect_periods > 0);
  const auto& v = *a.virtual_agents;
  CHECK(v.adds_acked > 5000);
  CHECK(v.ops_written_twice == 0);
  CHECK(v.acked_ops_missing == 0);
  CHECK(v.forwards > 0); // asks crossed nodes through the simulated network
  auto b = run_ok(*sc, 1);
  CHECK(a.trace_hash == b.trace_hash);
  CHECK(a.virtual_agents->duplicate_activations == b.virtual_agents->duplicate_activations);
}
