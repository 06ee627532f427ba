// SWIM membership in the simulator (scenario `cluster:`): joins converge, crashes are detected by
// every member, detection and false positives under 5% loss over many seeds, partitions heal,
// a falsely suspected member refutes, a restarted member rejoins, and runs are deterministic.
#include "af/sim/simulation.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using af::sim::fault_spec;
using af::sim::scenario;

/// `n` nodes running only membership; n1 starts the cluster, the others join through n1 and n2
/// from 0.5s, `every` apart.
scenario swim_cluster(std::size_t n, af::duration run_for, af::duration every = 20ms) {
  scenario sc;
  sc.name = "test-swim";
  sc.nodes.clear();
  for (std::size_t i = 1; i <= n; ++i)
    sc.nodes.push_back("n" + std::to_string(i));
  sc.run_for = run_for;
  sc.drain = 20s;
  sc.network.defaults.latency = {af::sim::latency_spec::kind::uniform, 1ms, 10ms, 5ms};
  sc.cluster.enabled = true;
  sc.cluster.membership_only = true;
  af::sim::cluster_join_spec first;
  first.nodes = {"n1"};
  af::sim::cluster_join_spec rest;
  rest.at = 500ms;
  rest.every = every;
  rest.seeds = {"n1", "n2"};
  for (std::size_t i = 2; i <= n; ++i)
    rest.nodes.push_back("n" + std::to_string(i));
  sc.cluster.joins = {first, rest};
  sc.invariants = {"members_agree", "crashed_members_dead", "no_actor_leak"};
  return sc;
}

fault_spec crash(const std::string& node, af::duration at, af::duration down_for = {}) {
  fault_spec f;
  f.what = fault_spec::kind::crash;
  f.node = node;
  f.at = at;
  f.down_for = down_for;
  return f;
}

af::sim::report run_ok(const scenario& sc, std::uint64_t seed, std::string log = {}) {
  af::sim::run_options o;
  o.seed = seed;
  o.log_file = std::move(log);
  auto r = af::sim::run(sc, o);
  REQUIRE(r);
  REQUIRE(r->membership);
  return *r;
}

void require_all_ok(const af::sim::report& r) {
  for (const auto& i : r.invariants) {
    INFO(i.name << ": " << i.detail);
    CHECK(i.ok);
  }
}

/// member_state_changed log lines (JSON) of a run.
std::vector<nlohmann::json> state_changes(const std::string& file) {
  std::vector<nlohmann::json> out;
  std::ifstream in{file};
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == "member_state_changed") out.push_back(j);
  }
  return out;
}

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("af-swim-test-" + name + ".jsonl")).string();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

} // namespace

TEST_CASE("swim: a 100-member cluster converges after joins", "[sim][swim]") {
  auto sc = swim_cluster(100, 15s);
  auto r = run_ok(sc, 11);
  require_all_ok(r);
  const auto& m = *r.membership;
  CHECK(m.members == 100);
  INFO(r.to_text());
  // The last node joins at 0.5s + 98 * 20ms; every view holds all 100 alive soon after.
  CHECK(m.join_converge_periods >= 0);
  CHECK(m.join_converge_periods < 10);
  CHECK(m.converged_at_end);
  CHECK(m.false_dead == 0);
  // Load does not grow with the cluster: about a ping and an ack per member and period.
  CHECK(m.messages_per_member_period() > 1.5);
  CHECK(m.messages_per_member_period() < 4);
  CHECK(m.member_periods > 100 * 30);
}

TEST_CASE("swim: a crashed member is declared dead by every member", "[sim][swim]") {
  auto sc = swim_cluster(30, 25s);
  sc.faults = {crash("n7", 8s), crash("n1", 12s)}; // n1: the cluster's first node and a seed
  auto r = run_ok(sc, 3);
  require_all_ok(r);
  const auto& m = *r.membership;
  REQUIRE(m.crashes.size() == 2);
  for (const auto& c : m.crashes) {
    INFO(c.node);
    CHECK(c.first_detect_periods >= 0);
    CHECK(c.first_detect_periods <= 5);
    // Suspicion for 30 members: 3 * log10(31) = 4.5 periods, then dissemination.
    CHECK(c.all_dead_periods >= c.first_detect_periods);
    CHECK(c.all_dead_periods <= 12);
    CHECK_FALSE(c.restarted);
  }
  // The drain restarted both; they rejoined (members_agree at the end) out-bidding their old
  // incarnations.
  CHECK(m.converged_at_end);
  CHECK(r.restarts == 2);
}

TEST_CASE("swim: detection time and false positives under 5% loss over 20 seeds",
          "[sim][swim][loss]") {
  std::vector<double> first, all_dead;
  std::uint64_t false_dead = 0, false_suspect = 0, member_periods = 0, messages = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    // 16 s after the crash before the drain (which restarts crashed nodes): the slowest
    // member to hear of a death at 5% loss needs about 12-15 periods.
    auto sc = swim_cluster(40, 24s);
    sc.network.defaults.loss = 0.05;
    sc.faults = {crash("n" + std::to_string(2 + seed % 39), 8s)};
    auto r = run_ok(sc, seed);
    INFO("seed " << seed << "\n" << r.to_text());
    require_all_ok(r);
    const auto& m = *r.membership;
    REQUIRE(m.crashes.size() == 1);
    REQUIRE(m.crashes[0].first_detect_periods >= 0);
    REQUIRE(m.crashes[0].all_dead_periods >= 0);
    first.push_back(m.crashes[0].first_detect_periods);
    all_dead.push_back(m.crashes[0].all_dead_periods);
    false_dead += m.false_dead;
    false_suspect += m.false_suspect;
    member_periods += m.member_periods;
    messages += m.messages;
  }
  const double fp_rate = static_cast<double>(false_dead) / static_cast<double>(member_periods);
  INFO("first detection p50 " << percentile(first, 0.5) << " p99 " << percentile(first, 0.99)
                              << "; dead everywhere p50 " << percentile(all_dead, 0.5) << " p99 "
                              << percentile(all_dead, 0.99) << "; false dead " << false_dead
                              << ", false suspect " << false_suspect << " in " << member_periods
                              << " member-periods");
  CHECK(percentile(first, 0.99) <= 5);
  CHECK(percentile(all_dead, 0.99) <= 15);
  CHECK(fp_rate < 0.001);
  // Loss makes suspicions happen, but they are refuted rather than turned into deaths.
  CHECK(false_suspect >= false_dead);
  const double per = static_cast<double>(messages) / static_cast<double>(member_periods);
  CHECK(per > 1.5);
  CHECK(per < 5);
}

TEST_CASE("swim: a partition and heal re-converge", "[sim][swim]") {
  auto sc = swim_cluster(20, 40s);
  fault_spec part;
  part.what = fault_spec::kind::partition;
  part.at = 8s;
  part.groups = {{"n1", "n2", "n3", "n4", "n5"},
                 {"n6", "n7", "n8", "n9", "n10", "n11", "n12", "n13", "n14", "n15", "n16", "n17",
                  "n18", "n19", "n20"}};
  part.heal_after = 12s;
  sc.faults = {part};
  const auto log = temp_file("partition");
  auto r = run_ok(sc, 5, log);
  require_all_ok(r);
  // During the partition each side declared the other dead...
  std::size_t cross_dead = 0, n1_back = 0;
  for (const auto& e : state_changes(log)) {
    const auto node = e.value("member", "");
    if (e.value("to", "") == "dead" && (node == "n1" || node == "n10")) ++cross_dead;
    if (node == "n1" && e.value("from", "") == "dead" && e.value("to", "") == "alive") ++n1_back;
  }
  CHECK(cross_dead > 0);
  // ...and after the heal they merged again without a restart (reconnect + refutation), long
  // before the drain.
  CHECK(n1_back > 0);
  CHECK(r.restarts == 0);
  CHECK(r.membership->converged_at_end);
  CHECK(r.membership->false_dead == 0);
  if (!std::getenv("AF_SWIM_KEEP_LOGS")) std::filesystem::remove(log);
}

TEST_CASE("swim: a falsely suspected live member refutes and stays alive", "[sim][swim]") {
  auto sc = swim_cluster(20, 20s);
  // n4 is cut off for 1.5 periods: long enough to be suspected, shorter than the suspicion
  // timeout (3 * log10(21) = 4 periods).
  fault_spec part;
  part.what = fault_spec::kind::partition;
  part.at = 8s;
  part.groups = {{"n4"}, {}};
  for (int i = 1; i <= 20; ++i)
    if (i != 4) part.groups[1].push_back("n" + std::to_string(i));
  part.heal_after = 1500ms;
  sc.faults = {part};
  const auto log = temp_file("refute");
  auto r = run_ok(sc, 9, log);
  require_all_ok(r);
  std::size_t suspected = 0, refuted = 0, dead = 0;
  std::set<std::string> observers; // each simulated node logs under its own name
  for (const auto& e : state_changes(log)) {
    observers.insert(e.value("node", ""));
    if (e.value("member", "") != "n4") continue;
    const auto to = e.value("to", "");
    if (to == "suspect") ++suspected;
    if (to == "dead") ++dead;
    if (e.value("from", "") == "suspect" && to == "alive" && e.value("incarnation", 0) >= 1)
      ++refuted;
  }
  CHECK(suspected > 0);
  CHECK(refuted > 0);
  CHECK(dead == 0);
  CHECK(observers.count("") == 0);
  CHECK(observers.size() > 1);
  CHECK(observers.count("n1") == 1);
  CHECK(r.membership->converged_at_end);
  if (!std::getenv("AF_SWIM_KEEP_LOGS")) std::filesystem::remove(log);
}

TEST_CASE("swim: a killed and restarted member rejoins", "[sim][swim]") {
  auto sc = swim_cluster(20, 30s);
  // Down long enough to be declared dead everywhere, then back under the same name.
  sc.faults = {crash("n5", 6s, 12s), crash("n1", 8s, 12s)};
  sc.drain = 5s;
  const auto log = temp_file("rejoin");
  auto r = run_ok(sc, 21, log);
  require_all_ok(r);
  const auto& m = *r.membership;
  REQUIRE(m.crashes.size() == 2);
  for (const auto& c : m.crashes) {
    CHECK(c.all_dead_periods > 0);
    CHECK_FALSE(c.restarted);
  }
  CHECK(r.restarts == 2);
  // Back alive in the others' views at a higher incarnation, before the drain.
  std::size_t n5_back = 0;
  for (const auto& e : state_changes(log))
    if (e.value("member", "") == "n5" && e.value("from", "") == "dead"
        && e.value("to", "") == "alive" && e.value("incarnation", 0) >= 1)
      ++n5_back;
  CHECK(n5_back >= 18); // every member but n1, which is down itself then
  CHECK(m.converged_at_end);
  if (!std::getenv("AF_SWIM_KEEP_LOGS")) std::filesystem::remove(log);
}

TEST_CASE("swim: the same seed gives the same trace hash", "[sim][swim]") {
  auto sc = swim_cluster(15, 10s);
  sc.network.defaults.loss = 0.05;
  sc.faults = {crash("n3", 4s, 3s)};
  auto a = run_ok(sc, 42);
  auto b = run_ok(sc, 42);
  auto c = run_ok(sc, 43);
  CHECK(a.trace_hash == b.trace_hash);
  CHECK(a.membership->to_json() == b.membership->to_json());
  CHECK(a.trace_hash != c.trace_hash);
}

TEST_CASE("swim: the full node profile runs membership beside the journal and executions",
          "[sim][swim]") {
  auto sc = swim_cluster(5, 6s);
  sc.cluster.membership_only = false;
  sc.invariants.push_back("tree_recovers");
  auto r = run_ok(sc, 2);
  require_all_ok(r);
  CHECK(r.membership->converged_at_end);
}

TEST_CASE("swim: the example scenario and the cluster section parse", "[sim][swim]") {
  auto sc = af::sim::load_scenario(std::string{AF_SOURCE_DIR} + "/examples/sim/swim-cluster.yaml");
  REQUIRE(sc);
  CHECK(sc->cluster.enabled);
  CHECK(sc->cluster.membership_only);
  REQUIRE(!sc->cluster.joins.empty());
  std::size_t joining = 0;
  for (const auto& j : sc->cluster.joins)
    joining += j.nodes.size();
  CHECK(joining == sc->nodes.size());

  const std::string bad = R"(apiVersion: agentflow/v1
kind: Scenario
metadata: {name: bad}
spec:
  nodes: 3
  cluster:
    swim: {period: 1s, ping_timeout: 2s}
)";
  auto e = af::sim::parse_scenario(bad, "bad.yaml");
  REQUIRE_FALSE(e);
  CHECK(e.error().message().find("ping_timeout") != std::string::npos);
  const std::string twice = R"(apiVersion: agentflow/v1
kind: Scenario
metadata: {name: twice}
spec:
  nodes: 3
  cluster:
    joins:
      - {at: 0s, nodes: [n1]}
      - {at: 1s, nodes: [n1, n2], seeds: [n1]}
)";
  auto t = af::sim::parse_scenario(twice, "twice.yaml");
  REQUIRE_FALSE(t);
  CHECK(t.error().message().find("joins twice") != std::string::npos);
}
