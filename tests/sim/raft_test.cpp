// The Raft group in the simulator (scenario `raft:`): Raft's safety invariants hold over many
// seeds with crashes, partitions and message loss; a seed replays to the same trace; a planted
// election-safety bug is caught; leader crashes are followed by a new leader (timed in virtual
// time); the example scenario runs clean.
#include "af/sim/simulation.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

namespace {

using namespace std::chrono_literals;
using af::sim::scenario;

scenario raft_cluster(af::duration run_for) {
  scenario sc;
  sc.name = "test-raft";
  sc.nodes = {"n1", "n2", "n3", "n4"};
  sc.run_for = run_for;
  sc.drain = 3s;
  sc.network.defaults.latency = {af::sim::latency_spec::kind::uniform, 1ms, 10ms, 5ms};
  sc.network.defaults.loss = 0.02;
  sc.raft.enabled = true;
  sc.raft.options.members = {"n1", "n2", "n3"};
  sc.raft.options.snapshot_every = 50;
  sc.raft.writes_per_second = 10;
  sc.random_faults.crash_per_minute = 12;
  sc.random_faults.down_for = 1500ms;
  sc.random_faults.partition_per_minute = 8;
  sc.random_faults.partition_for = 1500ms;
  sc.invariants = {"no_actor_leak"};
  return sc;
}

af::sim::report run(const scenario& sc, std::uint64_t seed) {
  af::sim::run_options o;
  o.seed = seed;
  auto r = af::sim::run(sc, o);
  REQUIRE(r);
  REQUIRE(r->raft);
  return *r;
}

const af::sim::invariant_result* find(const af::sim::report& r, const std::string& name) {
  for (const auto& i : r.invariants)
    if (i.name == name) return &i;
  return nullptr;
}

int seeds(int fallback) {
  if (const char* s = std::getenv("AF_RAFT_SEEDS")) return std::max(1, std::atoi(s));
  return fallback;
}

} // namespace

TEST_CASE("raft sim: safety invariants hold over many seeds with crashes, partitions, loss",
          "[sim][raft]") {
  const auto sc = raft_cluster(8s);
  std::uint64_t commits = 0, crashes = 0, snapshots = 0;
  // AF_RAFT_SEEDS=1000 for a long sweep.
  for (int seed = 1; seed <= seeds(50); ++seed) {
    auto r = run(sc, static_cast<std::uint64_t>(seed));
    INFO("seed " << seed << "\n" << r.to_text());
    for (auto name : {"raft_election_safety", "raft_log_matching", "raft_leader_completeness",
                      "raft_state_machine_safety"}) {
      const auto* inv = find(r, name);
      REQUIRE(inv != nullptr);
      INFO(name << ": " << inv->detail);
      CHECK(inv->ok);
    }
    CHECK(r.ok());
    CHECK(r.raft->leaders_elected >= 1);
    CHECK(r.raft->commit_index > 10); // writes got through despite the faults
    commits += r.raft->commit_index;
    crashes += r.crashes;
    snapshots += r.raft->snapshots_installed;
  }
  // The faults really happened, and lagging members were caught up by snapshots.
  CHECK(crashes > 0);
  CHECK(commits > 0);
  CHECK(snapshots > 0);
}

TEST_CASE("raft sim: the same seed gives the same trace", "[sim][raft]") {
  const auto sc = raft_cluster(6s);
  const auto a = run(sc, 42);
  const auto b = run(sc, 42);
  CHECK(a.trace_hash == b.trace_hash);
  CHECK(a.raft->to_json() == b.raft->to_json());
  const auto c = run(sc, 43);
  CHECK(c.trace_hash != a.trace_hash);
}

TEST_CASE("raft sim: a planted double vote is caught by election safety", "[sim][raft]") {
  auto sc = raft_cluster(8s);
  sc.raft.options.unsafe_double_vote = true;
  // Candidates at nearly the same moment: two of them split the votes (and both win them all).
  sc.raft.options.election_timeout_min = 150ms;
  sc.raft.options.election_timeout_max = 152ms;
  sc.random_faults.crash_per_minute = 30;
  std::string caught;
  for (std::uint64_t seed = 1; seed <= 30 && caught.empty(); ++seed) {
    auto r = run(sc, seed);
    const auto* inv = find(r, "raft_election_safety");
    REQUIRE(inv != nullptr);
    if (!inv->ok) caught = "seed " + std::to_string(seed) + ": " + inv->detail;
  }
  INFO(caught);
  REQUIRE_FALSE(caught.empty());
  CHECK(caught.find("two leaders in term") != std::string::npos);
}

TEST_CASE("raft sim: a new leader follows every leader crash", "[sim][raft]") {
  auto sc = raft_cluster(15s);
  sc.random_faults.partition_per_minute = 0;
  sc.network.defaults.loss = 0;
  sc.raft.writes_per_second = 2;
  sc.random_faults.crash_per_minute = 20;
  std::size_t measured = 0;
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    auto r = run(sc, seed);
    INFO(r.to_text());
    CHECK(r.ok());
    for (auto ms : r.raft->elect_after_crash_ms) {
      ++measured;
      // Election timeouts are 150-300 ms: a new leader well within a few rounds (virtual time).
      CHECK(ms > 0);
      CHECK(ms < 3000);
    }
  }
  CHECK(measured > 0);
}

TEST_CASE("raft sim: the example scenario runs clean", "[sim][raft]") {
  auto sc = af::sim::load_scenario(std::string{AF_SOURCE_DIR} + "/examples/sim/raft-cluster.yaml");
  REQUIRE(sc);
  CHECK(sc->raft.enabled);
  CHECK(sc->raft.options.members.size() == 3);
  auto r = run(*sc, 1);
  INFO(r.to_text());
  CHECK(r.ok());
  CHECK(r.raft->commit_index > 100);
  // Writers on every member (followers forward to the leader) mostly get through.
  CHECK(r.raft->writes_acked > r.raft->writes_sent / 2);
  CHECK(r.raft->writes_acked + r.raft->writes_failed <= r.raft->writes_sent);
  CHECK(r.to_text().find("raft        3 members") != std::string::npos);
  CHECK(r.to_json().contains("raft"));
}

TEST_CASE("raft sim: the raft section is validated", "[sim][raft]") {
  auto bad = af::sim::parse_scenario(R"(apiVersion: agentflow/v1
kind: Scenario
metadata: {name: x}
spec:
  nodes: 3
  raft: {members: [n1, n2], heartbeat: 500ms}
)",
                                     "bad.yaml");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("spec.raft") != std::string::npos);
  CHECK(bad.error().message().find("heartbeat") != std::string::npos);
  auto typo = af::sim::parse_scenario(R"(apiVersion: agentflow/v1
kind: Scenario
metadata: {name: x}
spec:
  nodes: 3
  raft: {memebrs: [n1]}
)",
                                      "typo.yaml");
  REQUIRE_FALSE(typo);
  CHECK(typo.error().message().find("memebrs") != std::string::npos);
}
