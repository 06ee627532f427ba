// Scenario YAML (af/sim/scenario.hpp): a full scenario read to the right values, defaults, every
// validation error with its exact "FILE:LINE:COL: path: what" message, and the scenarios shipped
// in examples/sim.
#include "af/duration_text.hpp"
#include "af/sim/scenario.hpp"

#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

namespace {

using namespace std::chrono_literals;
using af::sim::fault_spec;
using af::sim::latency_spec;

const std::string k_head = "apiVersion: agentflow/v1\nkind: Scenario\nmetadata: {name: t}\nspec:\n";

/// The scenario of `spec_body` (lines 5.. of s.yaml), which must parse.
af::sim::scenario parse_ok(const std::string& spec_body) {
  auto sc = af::sim::parse_scenario(k_head + spec_body, "");
  INFO(spec_body);
  if (!sc) FAIL(sc.error().message());
  return *sc;
}

/// The error message of `spec_body` (lines 5.. of s.yaml), which must be refused.
std::string error_of(const std::string& spec_body) {
  auto sc = af::sim::parse_scenario(k_head + spec_body, "s.yaml");
  INFO(spec_body);
  REQUIRE_FALSE(sc);
  CHECK(sc.error().code() == af::errc::validation);
  return sc.error().message();
}

} // namespace

TEST_CASE("a full scenario reads to the values it says", "[scenario]") {
  af::test::temp_dir dir{"af-sim-scenario"};
  std::filesystem::create_directories(dir.path() / "plans");
  dir.write("plans/ledger.yaml", "not read by the scenario reader, only found\n");
  const auto file = dir.write("work.yaml", R"(apiVersion: agentflow/v1
kind: Scenario
metadata: {name: work-exchange, description: the lot}
spec:
  duration: 90s
  drain: 1.5m
  nodes: [n1, n2, n3]
  network:
    latency: {distribution: uniform, min: 1ms, max: 20ms}
    loss: 0.01
    duplicate: 0.001
    links:
      - {from: n1, to: n2, both: false, latency: {distribution: constant, value: 50ms}, loss: 0.2}
      - {from: n3, to: n1, latency: {distribution: exponential, min: 2ms, mean: 8ms}}
  populations:
    - {name: worker, type: sim.worker, count: 1000, nodes: [n1, n2], params: {forward: 0.5, tags: [a, "1"]}}
    - {type: sim.client}
  workflows:
    - {plan: plans/ledger.yaml, count: 50, interval: 100ms, inputs: {x: 1}}
  faults:
    schedule:
      - {at: 10s, partition: [[n1], [n2]], heal_after: 5s}
      - {at: 20s, heal: true}
      - {at: 15s, crash: n2, down_for: 5s}
      - {at: 30s, restart: n2}
      - {at: 5s, skew: {node: n3, by: -250ms}}
      - {at: 7s, throw: {node: n1, agent: worker-4}}
    random: {crash_per_minute: 1, down_for: 5s, partition_per_minute: 0.5, partition_for: 3s, throw_per_minute: 2}
  invariants: [tasks_answered_once, tree_recovers, no_actor_leak, executions_complete, ledger_exactly_once]
)");
  auto sc = af::sim::load_scenario(file);
  if (!sc) FAIL(sc.error().message());
  CHECK(sc->name == "work-exchange");
  CHECK(sc->file == file);
  CHECK(sc->run_for == 90s);
  CHECK(sc->drain == 90s);
  CHECK(sc->nodes == std::vector<std::string>{"n1", "n2", "n3"});

  const auto& net = sc->network;
  CHECK(net.defaults.latency.dist == latency_spec::kind::uniform);
  CHECK(net.defaults.latency.min == 1ms);
  CHECK(net.defaults.latency.max == 20ms);
  CHECK(net.defaults.loss == 0.01);
  CHECK(net.defaults.duplicate == 0.001);
  REQUIRE(net.links.size() == 2);
  CHECK(net.links[0].from == "n1");
  CHECK(net.links[0].to == "n2");
  CHECK_FALSE(net.links[0].both);
  CHECK(net.links[0].link.latency.dist == latency_spec::kind::constant);
  CHECK(net.links[0].link.latency.min == 50ms);
  CHECK(net.links[0].link.loss == 0.2);
  CHECK(net.links[0].link.duplicate == 0.001); // not given: the network's
  CHECK(net.links[1].both);
  CHECK(net.links[1].link.latency.dist == latency_spec::kind::exponential);
  CHECK(net.links[1].link.latency.min == 2ms);
  CHECK(net.links[1].link.latency.mean == 8ms);
  CHECK(net.links[1].link.loss == 0.01);

  REQUIRE(sc->populations.size() == 2);
  const auto& w = sc->populations[0];
  CHECK(w.name == "worker");
  CHECK(w.type == "sim.worker");
  CHECK(w.count == 1000);
  CHECK(w.nodes == std::vector<std::string>{"n1", "n2"});
  CHECK(w.params == nlohmann::json{{"forward", 0.5}, {"tags", {"a", "1"}}});
  CHECK(w.where == file + ":16:7");
  const auto& c = sc->populations[1];
  CHECK(c.name == "sim.client"); // the type names an unnamed population
  CHECK(c.count == 1);
  CHECK(c.nodes.empty());
  CHECK(c.params == nlohmann::json::object());

  REQUIRE(sc->workflows.size() == 1);
  const auto& wf = sc->workflows[0];
  CHECK(wf.plan == (std::filesystem::absolute(dir.path()) / "plans/ledger.yaml").string());
  CHECK(std::filesystem::path{wf.plan}.is_absolute());
  CHECK(wf.count == 50);
  CHECK(wf.interval == 100ms);
  CHECK(wf.inputs == nlohmann::json{{"x", 1}});
  CHECK(wf.where == file + ":19:7");

  REQUIRE(sc->faults.size() == 6);
  const auto& f = sc->faults;
  CHECK(f[0].what == fault_spec::kind::partition);
  CHECK(f[0].at == 10s);
  // The nodes no group lists (n3) form a group of their own.
  CHECK(f[0].groups == std::vector<std::vector<std::string>>{{"n1"}, {"n2"}, {"n3"}});
  CHECK(f[0].heal_after == 5s);
  CHECK(f[0].where == file + ":22:9");
  CHECK(f[1].what == fault_spec::kind::heal);
  CHECK(f[1].at == 20s);
  CHECK(f[2].what == fault_spec::kind::crash);
  CHECK(f[2].node == "n2");
  CHECK(f[2].down_for == 5s);
  CHECK(f[3].what == fault_spec::kind::restart);
  CHECK(f[3].node == "n2");
  CHECK(f[3].down_for == 0s);
  CHECK(f[4].what == fault_spec::kind::skew);
  CHECK(f[4].node == "n3");
  CHECK(f[4].skew == -250ms);
  CHECK(f[5].what == fault_spec::kind::throw_in);
  CHECK(f[5].node == "n1");
  CHECK(f[5].agent == "worker-4");

  const auto& r = sc->random_faults;
  CHECK(r.crash_per_minute == 1);
  CHECK(r.down_for == 5s);
  CHECK(r.partition_per_minute == 0.5);
  CHECK(r.partition_for == 3s);
  CHECK(r.throw_per_minute == 2);
  CHECK(sc->invariants
        == std::vector<std::string>{"tasks_answered_once", "tree_recovers", "no_actor_leak",
                                    "executions_complete", "ledger_exactly_once"});
}

TEST_CASE("a small scenario takes the defaults", "[scenario]") {
  auto sc = parse_ok("  populations: [{type: sim.worker, count: 10}]\n");
  CHECK(sc.name == "t");
  CHECK(sc.file.empty());
  CHECK(sc.run_for == 60s);
  CHECK(sc.drain == 30s);
  CHECK(sc.nodes == std::vector<std::string>{"n1"});
  CHECK(sc.network.defaults.latency.dist == latency_spec::kind::uniform);
  CHECK(sc.network.defaults.loss == 0);
  CHECK(sc.faults.empty());
  CHECK(sc.random_faults.crash_per_minute == 0);
  CHECK(sc.invariants.empty());

  SECTION("a node count names the nodes n1..nN") {
    CHECK(parse_ok("  nodes: 3\n").nodes == std::vector<std::string>{"n1", "n2", "n3"});
  }
  SECTION("a latency given as one duration is constant") {
    auto l = parse_ok("  network: {latency: 5ms}\n").network.defaults.latency;
    CHECK(l.dist == latency_spec::kind::constant);
    CHECK(l.min == 5ms);
  }
  SECTION("a latency map without a distribution is uniform") {
    auto l = parse_ok("  network: {latency: {min: 2ms, max: 3ms}}\n").network.defaults.latency;
    CHECK(l.dist == latency_spec::kind::uniform);
    CHECK(l.min == 2ms);
    CHECK(l.max == 3ms);
  }
  SECTION("without a file, workflow plans are kept as given") {
    auto wf = parse_ok("  workflows: [{plan: ../plans/x.yaml}]\n").workflows;
    REQUIRE(wf.size() == 1);
    CHECK(wf[0].plan == "../plans/x.yaml");
    CHECK(wf[0].count == 1);
    CHECK(wf[0].interval == 100ms);
  }
  SECTION("a fault at the very end of the run is allowed") {
    CHECK(parse_ok("  duration: 10s\n  faults: {schedule: [{at: 10s, heal: true}]}\n").faults.size()
          == 1);
  }
}

TEST_CASE("scenario errors name file:line:col, the path and what was expected", "[scenario]") {
  SECTION("the document") {
    CHECK(af::sim::parse_scenario("", "s.yaml").error().message()
          == "s.yaml: empty scenario; expected a map with apiVersion, kind, metadata and spec");
    CHECK(af::sim::parse_scenario("apiVersion: agentflow/v2\n", "s.yaml").error().message()
          == "s.yaml:1:13: apiVersion: 'agentflow/v2'; expected agentflow/v1");
    CHECK(af::sim::parse_scenario("apiVersion: agentflow/v1\nkind: Plan\n", "s.yaml")
              .error()
              .message()
          == "s.yaml:2:7: kind: 'Plan'; expected Scenario");
    CHECK(af::sim::parse_scenario("apiVersion: agentflow/v1\nkind: Scenario\nspec: {}\n", "s.yaml")
              .error()
              .message()
          == "s.yaml:1:1: missing 'metadata'; expected metadata: {name: NAME}");
    CHECK(af::sim::parse_scenario(k_head + "  nodes: [n1\n", "s.yaml").error().message()
          == "s.yaml:6:1: invalid YAML: end of sequence flow not found");
    CHECK(error_of("  seeds: 3\n")
          == "s.yaml:5:3: spec: unknown key 'seeds' (expected one of: duration, drain, nodes, "
             "network, populations, workflows, faults, invariants, cluster, virtual_agents, "
             "raft, ownership, kv_clients)");
  }
  SECTION("unknown keys") {
    CHECK(error_of("  network: {latency: 5ms, jitter: 1ms}\n")
          == "s.yaml:5:27: spec.network: unknown key 'jitter' (expected one of: latency, loss, "
             "duplicate, links)");
    CHECK(error_of("  populations: [{type: sim.worker, size: 3}]\n")
          == "s.yaml:5:36: spec.populations[0]: unknown key 'size' (expected one of: name, type, "
             "count, nodes, params)");
    CHECK(error_of("  network: {latency: {distribution: constant, value: 1ms, max: 2ms}}\n")
          == "s.yaml:5:59: spec.network.latency: unknown key 'max' (expected one of: "
             "distribution, value)");
    CHECK(error_of("  faults: {schedule: [{at: 1s, restart: n1, down_for: 2s}]}\n")
          == "s.yaml:5:45: spec.faults.schedule[0]: unknown key 'down_for' (expected one of: at, "
             "restart)");
  }
  SECTION("wrong types") {
    CHECK(error_of("  network: {loss: high}\n")
          == "s.yaml:5:19: spec.network.loss: expected a number in 0.0..1.0");
    CHECK(error_of("  populations: {type: sim.worker}\n")
          == "s.yaml:5:16: spec.populations: expected a list of populations ({name, type, count, "
             "nodes, params}), got a map");
    CHECK(error_of("  nodes: n1\n")
          == "s.yaml:5:10: spec.nodes: 'n1': expected a list of node names ([n1, n2]) or a node "
             "count (3)");
    CHECK(error_of("  populations: [{type: sim.worker, count: many}]\n")
          == "s.yaml:5:43: spec.populations[0].count: 'many': expected an integer in 1..10000000");
    CHECK(error_of("  nodes: 2\n  network: {links: [{from: n1, to: n2, both: maybe}]}\n")
          == "s.yaml:6:46: spec.network.links[0].both: expected true or false");
    CHECK(error_of("  populations: [{type: sim.worker, params: [1, 2]}]\n")
          == "s.yaml:5:44: spec.populations[0].params: expected a map of parameters, got a list");
  }
  SECTION("probabilities are in [0, 1]") {
    CHECK(error_of("  network: {duplicate: 1.5}\n")
          == "s.yaml:5:24: spec.network.duplicate: expected a number in 0.0..1.0");
    CHECK(error_of("  nodes: 2\n  network: {links: [{from: n1, to: n2, loss: -0.1}]}\n")
          == "s.yaml:6:46: spec.network.links[0].loss: expected a number in 0.0..1.0");
  }
  SECTION("nodes must be declared, once") {
    CHECK(error_of("  nodes: [n1, n2, n3]\n  faults:\n    schedule:\n      - {at: 1s, heal: true}\n"
                   "      - {at: 2s, heal: true}\n      - {at: 3s, crash: n9}\n")
          == "s.yaml:10:25: spec.faults.schedule[2].crash: unknown node 'n9' (nodes: n1, n2, n3)");
    CHECK(error_of("  nodes: [n1, n2]\n  populations: [{type: sim.worker, nodes: [n2, n3]}]\n")
          == "s.yaml:6:48: spec.populations[0].nodes[1]: unknown node 'n3' (nodes: n1, n2)");
    CHECK(error_of("  nodes: [n1, n2]\n  network: {links: [{from: n1, to: n5}]}\n")
          == "s.yaml:6:36: spec.network.links[0].to: unknown node 'n5' (nodes: n1, n2)");
    CHECK(error_of("  faults: {schedule: [{at: 1s, skew: {node: n2, by: 1ms}}]}\n")
          == "s.yaml:5:45: spec.faults.schedule[0].skew.node: unknown node 'n2' (nodes: n1)");
    CHECK(error_of("  nodes: [n1, n2, n1]\n")
          == "s.yaml:5:19: spec.nodes[2]: duplicate node 'n1' (first at spec.nodes[0])");
    CHECK(error_of("  nodes: [n1, 'n 2']\n")
          == "s.yaml:5:15: spec.nodes[1]: 'n 2': expected a node name of 1 to 128 characters of "
             "[A-Za-z0-9_-]");
    CHECK(error_of("  nodes: 0\n")
          == "s.yaml:5:10: spec.nodes: '0': expected an integer in 1..1000");
    CHECK(error_of("  nodes: [n1, n2]\n  network: {links: [{from: n1, to: n1}]}\n")
          == "s.yaml:6:36: spec.network.links[0].to: a link from 'n1' to itself; expected two "
             "different nodes");
    CHECK(error_of("  nodes: [n1, n2]\n  network:\n    links:\n      - {from: n1, to: n2}\n"
                   "      - {from: n2, to: n1, loss: 0.5}\n")
          == "s.yaml:9:9: spec.network.links[1]: the link n2 -> n1 is already set by "
             "spec.network.links[0]; expected one entry per direction");
  }
  SECTION("populations") {
    CHECK(error_of("  populations:\n    - {name: w, type: sim.worker}\n"
                   "    - {name: w, type: sim.client}\n")
          == "s.yaml:7:14: spec.populations[1].name: duplicate population name 'w' (first at "
             "spec.populations[0]); expected distinct names");
    CHECK(error_of("  populations: [{type: sim.worker}, {type: sim.worker}]\n")
          == "s.yaml:5:44: spec.populations[1].name: duplicate population name 'sim.worker' "
             "(first at spec.populations[0]); expected distinct names");
    CHECK(error_of("  populations: [{type: sim.worker, count: 0}]\n")
          == "s.yaml:5:43: spec.populations[0].count: '0': expected an integer in 1..10000000");
    CHECK(error_of("  populations: [{type: sim.worker, count: 10000001}]\n")
          == "s.yaml:5:43: spec.populations[0].count: '10000001': expected an integer in "
             "1..10000000");
    CHECK(parse_ok("  populations: [{type: sim.worker, count: 10000000}]\n").populations[0].count
          == 10'000'000);
    CHECK(error_of("  populations: [{name: w}]\n")
          == "s.yaml:5:17: spec.populations[0]: missing 'type'; expected an agent type "
             "(sim.worker, std.echo, a plugin's)");
  }
  SECTION("fault times") {
    CHECK(error_of("  faults: {schedule: [{at: -1s, heal: true}]}\n")
          == "s.yaml:5:28: spec.faults.schedule[0].at: '-1s': expected a duration >= 0");
    CHECK(error_of("  duration: 30s\n  faults: {schedule: [{at: 1m, heal: true}]}\n")
          == "s.yaml:6:28: spec.faults.schedule[0].at: 1m is after the end of the run "
             "(spec.duration 30s); expected at most 30s");
    CHECK(error_of("  faults: {schedule: [{heal: true}]}\n")
          == "s.yaml:5:23: spec.faults.schedule[0]: missing 'at'; expected the virtual time of "
             "the fault (at: 10s)");
    CHECK(error_of("  duration: 0s\n")
          == "s.yaml:5:13: spec.duration: '0s': expected a duration > 0");
    CHECK(error_of("  drain: 5 seconds\n")
          == "s.yaml:5:10: spec.drain: '5 seconds': expected a duration: a number and a unit "
             "ns, us, ms, s, m or h (250ms, 1.5s, 2m)");
    CHECK(error_of("  faults: {random: {down_for: 0s}}\n")
          == "s.yaml:5:31: spec.faults.random.down_for: '0s': expected a duration > 0");
  }
  SECTION("fault kinds") {
    CHECK(error_of("  faults: {schedule: [{at: 1s}]}\n")
          == "s.yaml:5:23: spec.faults.schedule[0]: missing the fault; expected one of: crash, "
             "restart, partition, heal, skew, throw (and at)");
    CHECK(error_of("  faults: {schedule: [{at: 1s, crash: n1, restart: n1}]}\n")
          == "s.yaml:5:43: spec.faults.schedule[0]: both 'crash' and 'restart'; expected one "
             "fault per entry");
    CHECK(error_of("  faults: {schedule: [{at: 1s, heal: false}]}\n")
          == "s.yaml:5:38: spec.faults.schedule[0].heal: expected true (heal: true ends every "
             "partition)");
    CHECK(error_of("  faults: {schedule: [{at: 1s, skew: {node: n1}}]}\n")
          == "s.yaml:5:38: spec.faults.schedule[0].skew: missing 'by'; expected how far the clock "
             "runs ahead (by: 250ms, or -250ms)");
  }
  SECTION("partitions") {
    CHECK(error_of("  nodes: 3\n  faults: {schedule: [{at: 1s, partition: [[n1, n2], [n2]]}]}\n")
          == "s.yaml:6:54: spec.faults.schedule[0].partition[1]: node 'n2' is also in "
             "spec.faults.schedule[0].partition[0]; expected each node in one group");
    CHECK(error_of("  nodes: 2\n  faults: {schedule: [{at: 1s, partition: [[n1, n2]]}]}\n")
          == "s.yaml:6:43: spec.faults.schedule[0].partition: every node is in one group, so "
             "nothing is cut off; expected at least two groups");
    CHECK(error_of("  nodes: 2\n  faults: {schedule: [{at: 1s, partition: [[n1], []]}]}\n")
          == "s.yaml:6:50: spec.faults.schedule[0].partition[1]: expected at least one node");
  }
  SECTION("throw names an agent that exists on that node") {
    const std::string pops =
        "  nodes: 2\n  populations: [{name: worker, type: sim.worker, count: 4}]\n";
    CHECK(parse_ok(pops + "  faults: {schedule: [{at: 1s, throw: {node: n2, agent: worker-3}}]}\n")
              .faults[0]
              .agent
          == "worker-3");
    CHECK(error_of(pops + "  faults: {schedule: [{at: 1s, throw: {node: n1, agent: worker-3}}]}\n")
          == "s.yaml:7:57: spec.faults.schedule[0].throw.agent: agent 'worker-3' runs on node "
             "'n2', not 'n1' (population agents are placed round-robin over their nodes)");
    CHECK(error_of(pops + "  faults: {schedule: [{at: 1s, throw: {node: n1, agent: worker-4}}]}\n")
          == "s.yaml:7:57: spec.faults.schedule[0].throw.agent: no agent 'worker-4': population "
             "'worker' has 4 agents (worker-0 .. worker-3)");
  }
  SECTION("latency") {
    CHECK(error_of("  network: {latency: {distribution: normal}}\n")
          == "s.yaml:5:37: spec.network.latency.distribution: unknown distribution 'normal'; "
             "expected constant, uniform or exponential");
    CHECK(error_of("  network: {latency: {min: 5ms, max: 1ms}}\n")
          == "s.yaml:5:22: spec.network.latency: max (1ms) is below min (5ms); expected min <= "
             "max");
    CHECK(error_of("  network: {latency: {distribution: constant}}\n")
          == "s.yaml:5:22: spec.network.latency: missing 'value'; expected the constant latency "
             "(value: 5ms)");
    CHECK(error_of("  network: {latency: {distribution: exponential, mean: 0s}}\n")
          == "s.yaml:5:56: spec.network.latency.mean: expected a mean > 0");
  }
  SECTION("invariants") {
    CHECK(error_of("  invariants: [no_actor_leak, everything_fine]\n")
          == "s.yaml:5:31: spec.invariants[1]: unknown invariant 'everything_fine'; expected one "
             "of: tasks_answered_once, tree_recovers, no_actor_leak, executions_complete, "
             "ledger_exactly_once, members_agree, crashed_members_dead, virtual_exactly_once, "
             "sagas_settled, exec_single_owner, linearizable");
    CHECK(error_of("  invariants: [no_actor_leak, no_actor_leak]\n")
          == "s.yaml:5:31: spec.invariants[1]: invariant 'no_actor_leak' listed twice");
  }
  SECTION("workflow plans are found relative to the scenario file") {
    af::test::temp_dir dir{"af-sim-plans"};
    const auto file = (dir.path() / "s.yaml").string();
    auto sc = af::sim::parse_scenario(k_head + "  workflows: [{plan: nope.yaml}]\n", file);
    REQUIRE_FALSE(sc);
    CHECK(sc.error().message()
          == file + ":5:22: spec.workflows[0].plan: plan file '"
                 + (std::filesystem::absolute(dir.path()) / "nope.yaml").string()
                 + "' not found (a relative path is read from the scenario's directory)");
  }
}

TEST_CASE("load_scenario: a missing file is not_found, naming it", "[scenario]") {
  auto sc = af::sim::load_scenario("/nonexistent/dir/s.yaml");
  REQUIRE_FALSE(sc);
  CHECK(sc.error().code() == af::errc::not_found);
  CHECK(sc.error().message() == "scenario file '/nonexistent/dir/s.yaml' not found");
}

TEST_CASE("the scenarios in examples/sim are valid", "[scenario]") {
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator{AF_SOURCE_DIR "/examples/sim"}) {
    if (e.path().extension() != ".yaml") continue;
    INFO(e.path());
    auto sc = af::sim::load_scenario(e.path().string());
    if (!sc) FAIL(sc.error().message());
    CHECK(sc->name == e.path().stem().string());
    CHECK_FALSE(sc->invariants.empty());
    ++seen;
  }
  CHECK(seen >= 4);
}

TEST_CASE("af::sim::parse_duration is the runtime's duration parser", "[scenario]") {
  CHECK(*af::sim::parse_duration("30s") == 30s);
  CHECK(*af::sim::parse_duration("-1.5ms") == -1500us);
  CHECK(af::sim::parse_duration("5 s").error() == af::parse_duration("5 s").error());
}
