// Takeover of a dead node's executions in the simulator (scenario `ownership:`): 3 nodes share
// one store and run Raft; executions are leased. Over many seeds, with a crash of a node that
// runs executions, a partition that cuts one node off (it must stop its executions before the
// majority takes them over) and random crashes and partitions: no execution ever runs on two
// nodes at once (`exec_single_owner`), every execution completes, and each ledger step is
// applied once. A planted bug (a node that keeps running past its lease deadline) and another
// (a node that runs executions without taking their lease) are caught by `exec_single_owner`.
#include "af/sim/simulation.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

namespace {

using namespace std::chrono_literals;
using af::sim::fault_spec;
using af::sim::scenario;

fault_spec crash(af::duration at, std::string node, af::duration down_for) {
  fault_spec f;
  f.what = fault_spec::kind::crash;
  f.at = at;
  f.node = std::move(node);
  f.down_for = down_for;
  f.where = "test";
  return f;
}

/// `node` alone on one side, the other nodes of {n1, n2, n3} on the other.
fault_spec cut_off(af::duration at, const std::string& node, af::duration heal_after) {
  fault_spec f;
  f.what = fault_spec::kind::partition;
  f.at = at;
  std::vector<std::string> rest;
  for (const char* n : {"n1", "n2", "n3"})
    if (node != n) rest.emplace_back(n);
  f.groups = {{node}, rest};
  f.heal_after = heal_after;
  f.where = "test";
  return f;
}

/// 3 nodes, Raft on all, 30 executions of a plan with three ledger steps and two 3 s pauses,
/// started 400 ms apart round-robin; n2 crashes at 3 s (down 6 s), n3 is cut off at 10 s (for
/// 6 s), and random faults come on top.
scenario takeover(af::plan::exec_planted_bug bug = af::plan::exec_planted_bug::none) {
  scenario sc;
  sc.name = "test-takeover";
  sc.nodes = {"n1", "n2", "n3"};
  sc.run_for = 25s;
  sc.drain = 40s;
  sc.network.defaults.latency = {af::sim::latency_spec::kind::uniform, 1ms, 10ms, 5ms};
  sc.raft.enabled = true;
  sc.raft.options.members = sc.nodes;
  sc.raft.options.election_timeout_min = 150ms;
  sc.raft.options.election_timeout_max = 300ms;
  sc.raft.options.heartbeat = 50ms;
  sc.ownership.enabled = true;
  auto& o = sc.ownership.options;
  o.enabled = true;
  o.lease_ttl = 2s;
  o.margin = 400ms;
  o.renew_every = 500ms;
  o.scan_every = 500ms;
  o.ask_timeout = 500ms;
  o.planted_bug = bug;
  af::sim::workflow_spec w;
  w.plan = std::string{AF_SOURCE_DIR} + "/examples/sim/plans/payout.yaml";
  w.count = 30;
  w.interval = 400ms;
  w.where = "test";
  sc.workflows.push_back(w);
  sc.faults = {crash(3s, "n2", 6s), cut_off(10s, "n3", 6s)};
  sc.random_faults.crash_per_minute = 2;
  sc.random_faults.down_for = 3s;
  sc.random_faults.partition_per_minute = 2;
  sc.random_faults.partition_for = 4s;
  sc.invariants = {"exec_single_owner", "executions_complete", "ledger_exactly_once"};
  return sc;
}

af::sim::report run(const scenario& sc, std::uint64_t seed) {
  af::sim::run_options o;
  o.seed = seed;
  auto r = af::sim::run(sc, o);
  REQUIRE(r);
  REQUIRE(r->ownership);
  return *r;
}

const af::sim::invariant_result* find(const af::sim::report& r, const std::string& name) {
  for (const auto& i : r.invariants)
    if (i.name == name) return &i;
  return nullptr;
}

int seeds(int fallback) {
  if (const char* s = std::getenv("AF_TAKEOVER_SEEDS")) return std::max(1, std::atoi(s));
  return fallback;
}

} // namespace

TEST_CASE("takeover sim: one owner at a time, every execution completes, ledger once",
          "[sim][takeover]") {
  const auto sc = takeover();
  std::uint64_t takeovers = 0, expirations = 0;
  int with_takeovers = 0;
  const int n = seeds(8);
  for (int seed = 1; seed <= n; ++seed) {
    auto r = run(sc, static_cast<std::uint64_t>(seed));
    INFO("seed " << seed << "\n" << r.to_text());
    for (auto name : {"exec_single_owner", "executions_complete", "ledger_exactly_once"}) {
      const auto* inv = find(r, name);
      REQUIRE(inv != nullptr);
      INFO(name << ": " << inv->detail);
      CHECK(inv->ok);
    }
    CHECK(r.ownership->max_owners == 1);
    takeovers += r.ownership->takeovers;
    expirations += r.ownership->lease_expirations;
    if (r.ownership->takeovers > 0) ++with_takeovers;
  }
  // n2 crashed while it ran executions and n3 was cut off: the others took work over, unless a
  // random fault left no majority until the node came back (then it resumed its own work).
  CHECK(with_takeovers * 2 >= n);
  // Cut-off nodes stopped executions at their lease deadline (safe downing).
  CHECK(expirations >= 1);
  INFO(takeovers << " takeovers in " << n << " runs");
  CHECK(takeovers >= static_cast<std::uint64_t>(n));
}

TEST_CASE("takeover sim: a seed replays to the same trace", "[sim][takeover]") {
  const auto sc = takeover();
  auto a = run(sc, 3);
  auto b = run(sc, 3);
  CHECK(a.trace_hash == b.trace_hash);
  CHECK(a.ownership->takeovers == b.ownership->takeovers);
}

TEST_CASE("takeover sim: a node that keeps running past its lease deadline is caught",
          "[sim][takeover]") {
  // The planted bug: the cut-off node does not stop its executions when it cannot renew
  // their leases; the majority takes them over once the leases expired at the leader. Only the
  // scheduled faults (a random crash during the partition can leave no majority to take over).
  auto sc = takeover(af::plan::exec_planted_bug::ignore_deadline);
  sc.random_faults = {};
  int caught = 0;
  const int n = seeds(4);
  for (int seed = 1; seed <= n; ++seed) {
    auto r = run(sc, static_cast<std::uint64_t>(seed));
    const auto* inv = find(r, "exec_single_owner");
    REQUIRE(inv != nullptr);
    INFO("seed " << seed << ": " << inv->detail);
    if (!inv->ok) {
      ++caught;
      CHECK(r.ownership->max_owners >= 2);
      CHECK_THAT(inv->detail, Catch::Contains("running on"));
    }
  }
  CHECK(caught == n);
}

TEST_CASE("takeover sim: a node that runs executions without their lease is caught",
          "[sim][takeover]") {
  const auto sc = takeover(af::plan::exec_planted_bug::skip_lease_check);
  auto r = run(sc, 1);
  const auto* inv = find(r, "exec_single_owner");
  REQUIRE(inv != nullptr);
  CHECK_FALSE(inv->ok);
  CHECK(r.ownership->max_owners >= 2);
}

TEST_CASE("takeover sim: the built-in scenario holds its invariants", "[sim][takeover]") {
  auto sc = af::sim::load_scenario(std::string{AF_SOURCE_DIR} + "/examples/sim/takeover.yaml");
  REQUIRE(sc);
  REQUIRE(sc->ownership.enabled);
  auto r = run(*sc, 1);
  INFO(r.to_text());
  CHECK(r.ok());
  CHECK(find(r, "exec_single_owner") != nullptr);
  CHECK(r.ownership->takeovers >= 1);
}

TEST_CASE("takeover sim: a bad ownership section is refused, naming the key", "[sim][takeover]") {
  const std::string head = "apiVersion: agentflow/v1\n"
                           "kind: Scenario\n"
                           "metadata: {name: t}\n"
                           "spec:\n"
                           "  nodes: [n1, n2, n3]\n";
  auto bad_bug = af::sim::parse_scenario(head + "  raft: {}\n  ownership: {planted_bug: sometimes}\n",
                                         "t.yaml");
  REQUIRE_FALSE(bad_bug);
  CHECK_THAT(bad_bug.error().message(), Catch::Contains("spec.ownership.planted_bug"));
  CHECK_THAT(bad_bug.error().message(), Catch::Contains("ignore_deadline"));
  auto bad_renew =
      af::sim::parse_scenario(head + "  raft: {}\n  ownership: {lease_ttl: 1s, renew: 900ms}\n",
                              "t.yaml");
  REQUIRE_FALSE(bad_renew);
  CHECK_THAT(bad_renew.error().message(), Catch::Contains("spec.ownership"));
  CHECK_THAT(bad_renew.error().message(), Catch::Contains("renew_every"));
  // Leases come from af.cluster.raft on every node: ownership without raft cannot run.
  auto no_raft = af::sim::parse_scenario(head + "  ownership: {}\n", "t.yaml");
  REQUIRE(no_raft);
  af::sim::run_options o;
  auto r = af::sim::run(*no_raft, o);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().message(), Catch::Contains("ownership needs raft on every node"));
}
