// The simulation engine: determinism (same seed, same trace hash), the network's faults, node
// crashes and restarts, injected throws, and durable workflows across crashing nodes.
#include "af/sim/simulation.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

namespace {

using namespace std::chrono_literals;
using af::sim::fault_spec;
using af::sim::scenario;

/// 3 nodes, 30 workers forwarding half their tasks, 3 clients with 40 tasks each.
scenario work_exchange() {
  scenario sc;
  sc.name = "test-work-exchange";
  sc.nodes = {"n1", "n2", "n3"};
  sc.run_for = 2s;
  sc.drain = 5s;
  sc.network.defaults.latency = {af::sim::latency_spec::kind::uniform, 1ms, 20ms, 5ms};
  sc.network.defaults.loss = 0.02;
  sc.network.defaults.duplicate = 0.01;
  af::sim::population_spec workers;
  workers.name = "worker";
  workers.type = "sim.worker";
  workers.count = 30;
  workers.params = {{"forward", 0.5}, {"work", "2ms"}, {"forward_timeout", "300ms"}};
  af::sim::population_spec clients;
  clients.name = "client";
  clients.type = "sim.client";
  clients.count = 3;
  clients.params = {{"target", "worker"}, {"tasks", 40}, {"interval", "20ms"},
                    {"timeout", "1s"}, {"retries", 2}};
  sc.populations = {workers, clients};
  fault_spec part;
  part.what = fault_spec::kind::partition;
  part.at = 500ms;
  part.groups = {{"n1"}, {"n2", "n3"}};
  part.heal_after = 400ms;
  sc.faults = {part};
  sc.invariants = {"tasks_answered_once", "tree_recovers", "no_actor_leak"};
  return sc;
}

af::sim::report run_ok(const scenario& sc, std::uint64_t seed, std::string trace = {}) {
  af::sim::run_options o;
  o.seed = seed;
  o.trace_file = std::move(trace);
  auto r = af::sim::run(sc, o);
  REQUIRE(r);
  return *r;
}

void require_all_ok(const af::sim::report& r) {
  for (const auto& i : r.invariants) {
    INFO(i.name << ": " << i.detail);
    CHECK(i.ok);
  }
}

} // namespace

TEST_CASE("the same seed gives the same trace hash - another seed another", "[sim]") {
  auto sc = work_exchange();
  auto a = run_ok(sc, 7);
  auto b = run_ok(sc, 7);
  auto c = run_ok(sc, 8);
  require_all_ok(a);
  require_all_ok(c);
  CHECK(a.trace_hash.size() == 64);
  CHECK(a.trace_hash == b.trace_hash);
  CHECK(a.delivered == b.delivered);
  CHECK(a.dropped == b.dropped);
  CHECK(a.trace_hash != c.trace_hash);
  // The network did what the scenario asked of it.
  CHECK(a.delivered > 600);
  CHECK(a.network_sent > 100);
  CHECK(a.dropped > 0);
  CHECK(a.virtual_time >= 7s);
  REQUIRE(a.timeline.size() >= 2);
  CHECK(a.timeline[0].find("partition [n1] | [n2,n3]") != std::string::npos);
}

TEST_CASE("a crashed node loses its actors, restarts and recovers - tasks still end once", "[sim]") {
  auto sc = work_exchange();
  fault_spec crash;
  crash.what = fault_spec::kind::crash;
  crash.at = 700ms;
  crash.node = "n2";
  crash.down_for = 500ms;
  sc.faults.push_back(crash);
  fault_spec skew;
  skew.what = fault_spec::kind::skew;
  skew.at = 100ms;
  skew.node = "n3";
  skew.skew = -250ms;
  sc.faults.push_back(skew);
  auto a = run_ok(sc, 11);
  require_all_ok(a);
  CHECK(a.crashes == 1);
  CHECK(a.restarts == 1);
  auto b = run_ok(sc, 11);
  CHECK(a.trace_hash == b.trace_hash);
}

TEST_CASE("an agent made to throw is restarted by its supervisor", "[sim]") {
  auto sc = work_exchange();
  for (int i = 0; i < 5; ++i) {
    fault_spec t;
    t.what = fault_spec::kind::throw_in;
    t.at = 300ms + 100ms * i;
    t.node = "n" + std::to_string(1 + i % 3);
    t.agent = "worker-" + std::to_string(i % 3 == 0 ? 0 : i % 3);
    sc.faults.push_back(t);
  }
  sc.random_faults.throw_per_minute = 120;
  auto r = run_ok(sc, 5);
  require_all_ok(r);
  std::size_t throws = 0;
  for (const auto& line : r.timeline)
    throws += line.find(" throw ") != std::string::npos ? 1 : 0;
  CHECK(throws >= 5);
}

TEST_CASE("the trace file has one line per delivery", "[sim]") {
  auto dir = std::filesystem::temp_directory_path() / "af_sim_trace_test";
  std::filesystem::create_directories(dir);
  auto file = (dir / "trace.jsonl").string();
  auto r = run_ok(work_exchange(), 3, file);
  std::ifstream in{file};
  std::size_t lines = 0;
  for (std::string line; std::getline(in, line);)
    ++lines;
  CHECK(lines == r.delivered);
  std::filesystem::remove_all(dir);
}

TEST_CASE("durable workflows on crashing nodes complete with each ledger step applied once",
          "[sim]") {
  scenario sc;
  sc.name = "test-workflows";
  sc.nodes = {"n1", "n2", "n3"};
  sc.run_for = 6s;
  sc.drain = 20s;
  af::sim::workflow_spec w;
  w.plan = std::string{AF_SOURCE_DIR} + "/examples/sim/plans/transfer.yaml";
  w.count = 12;
  w.interval = 150ms;
  sc.workflows = {w};
  for (int i = 0; i < 3; ++i) {
    fault_spec crash;
    crash.what = fault_spec::kind::crash;
    crash.at = 400ms + 900ms * i;
    crash.node = "n" + std::to_string(1 + i);
    crash.down_for = 300ms;
    sc.faults.push_back(crash);
  }
  sc.invariants = {"executions_complete", "ledger_exactly_once", "tree_recovers",
                   "no_actor_leak"};
  auto a = run_ok(sc, 21);
  require_all_ok(a);
  CHECK(a.crashes == 3);
  auto b = run_ok(sc, 21);
  CHECK(a.trace_hash == b.trace_hash);
}

TEST_CASE("a crash storm: the trees recover, nothing leaks, every task still ends once", "[sim]") {
  auto sc = work_exchange();
  sc.name = "test-crash-storm";
  sc.run_for = 3s;
  sc.random_faults.throw_per_minute = 18000; // 300 throws a second, 100 per node
  for (const char* victim : {"af.journal", "af.exec", "af.audit"}) {
    fault_spec t;
    t.what = fault_spec::kind::throw_in;
    t.at = 1s;
    t.node = "n1";
    t.agent = victim;
    sc.faults.push_back(t);
  }
  fault_spec crash;
  crash.what = fault_spec::kind::crash;
  crash.at = 1500ms;
  crash.node = "n3";
  crash.down_for = 500ms;
  sc.faults.push_back(crash);
  auto a = run_ok(sc, 99);
  require_all_ok(a);
  auto b = run_ok(sc, 99);
  CHECK(a.trace_hash == b.trace_hash);
  std::size_t throws = 0;
  for (const auto& line : a.timeline)
    throws += line.find(" throw ") != std::string::npos ? 1 : 0;
  CHECK(throws > 300);
  // The throws that landed were restarts the population supervisors made.
  CHECK(a.supervisor_restarts > 100);
  CHECK(a.supervisor_restarts == b.supervisor_restarts);
}

TEST_CASE("every built-in scenario runs twice in one process with one trace hash", "[sim]") {
  // planted-bug needs its test plugin: the two-process e2e test (apps: sim e2e) covers it.
  for (const char* name : {"work-exchange", "crash-storm", "durable-workflows"}) {
    INFO(name);
    auto sc = af::sim::load_scenario(std::string{AF_SOURCE_DIR} + "/examples/sim/" + name + ".yaml");
    REQUIRE(sc);
    auto a = run_ok(*sc, 5);
    auto b = run_ok(*sc, 5);
    require_all_ok(a);
    CHECK(a.trace_hash == b.trace_hash);
    CHECK(a.delivered == b.delivered);
    CHECK(a.timeline == b.timeline);
    CHECK(run_ok(*sc, 6).trace_hash != a.trace_hash);
  }
}
