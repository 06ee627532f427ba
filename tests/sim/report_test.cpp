// The report of a simulation run (af/sim/simulation.hpp): ok and the first failure, the JSON
// `af sim run --json` prints and `af sim fuzz` reads, the text report, the replay command.
#include "af/sim/simulation.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace {
using namespace std::chrono_literals;
using Catch::Matchers::Contains;
} // namespace

TEST_CASE("report: ok, first failure, JSON with every field, text", "[report]") {
  af::sim::report r;
  r.scenario = "work-exchange";
  r.seed = 7;
  r.trace_hash = std::string(64, 'a');
  r.virtual_time = 90s;
  r.stopped_early = true;
  r.delivered = 1000;
  r.network_sent = 900;
  r.dropped = 9;
  r.duplicated = 1;
  r.crashes = 2;
  r.restarts = 1;
  r.agents = 1010;
  r.wall_seconds = 0.5;
  r.deliveries_per_second = 2000;
  r.timeline = {"10.000s partition [n1] | [n2, n3]", "15.000s heal"};
  r.invariants = {{"no_actor_leak", true, "0 actors left", 90s},
                  {"tasks_answered_once", false, "task 17 answered twice", 12500ms},
                  {"tree_recovers", false, "n2 never came back", 80s}};

  CHECK_FALSE(r.ok());
  REQUIRE(r.first_failure() != nullptr);
  CHECK(r.first_failure()->name == "tasks_answered_once");

  const auto j = r.to_json();
  CHECK(j == nlohmann::json::parse(R"({
    "scenario": "work-exchange", "seed": 7, "ok": false,
    "trace_hash": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "virtual_time_ns": 90000000000, "stopped_early": true,
    "delivered": 1000, "network_sent": 900, "dropped": 9, "duplicated": 1,
    "crashes": 2, "restarts": 1, "supervisor_restarts": 0, "agents": 1010,
    "wall_seconds": 0.5, "deliveries_per_second": 2000.0,
    "invariants": [
      {"name": "no_actor_leak", "ok": true, "checked": true, "detail": "0 actors left", "at_ns": 90000000000},
      {"name": "tasks_answered_once", "ok": false, "checked": true, "detail": "task 17 answered twice",
       "at_ns": 12500000000},
      {"name": "tree_recovers", "ok": false, "checked": true, "detail": "n2 never came back", "at_ns": 80000000000}],
    "timeline": ["10.000s partition [n1] | [n2, n3]", "15.000s heal"]})"));
  // The JSON survives a round trip through text (what `af sim fuzz` reads from its workers).
  CHECK(nlohmann::json::parse(j.dump()) == j);

  const auto text = r.to_text();
  CHECK_THAT(text, Contains("scenario    work-exchange  seed 7\n"));
  CHECK_THAT(text, Contains("trace hash  " + std::string(64, 'a') + "\n"));
  CHECK_THAT(text, Contains("virtual     90.000s (stopped early by --until)\n"));
  CHECK_THAT(text, Contains("messages    1000 delivered; network: 900 sent, 9 dropped, 1 "
                            "duplicated\n"));
  CHECK_THAT(text, Contains("faults      2 crashes, 1 restart\n"));
  CHECK_THAT(text, Contains("agents      1010\n"));
  CHECK_THAT(text, Contains("wall        0.500 s wall, 2000 deliveries/s\n"));
  CHECK_THAT(text, Contains("timeline    10.000s partition [n1] | [n2, n3]\n"
                            "            15.000s heal\n"));
  CHECK_THAT(text, Contains("  OK      no_actor_leak        at 90.000s: 0 actors left\n"));
  CHECK_THAT(text, Contains("  FAILED  tasks_answered_once  at 12.500s: task 17 answered twice\n"));
  CHECK_THAT(text, Contains("result      FAILED: invariant tasks_answered_once at virtual time "
                            "12.500s with seed 7\n"));

  r.invariants[1].ok = r.invariants[2].ok = true;
  CHECK(r.ok());
  CHECK(r.first_failure() == nullptr);
  CHECK(r.to_json()["ok"] == true);
  // Stopped by --until: the invariants were not checked, and the result says so.
  CHECK_THAT(r.to_text(), Contains("result      STOPPED at virtual time 90.000s (--until): "
                                   "invariants not checked\n"));
  r.invariants[0].checked = false;
  CHECK_THAT(r.to_text(), Contains("  SKIPPED no_actor_leak"));
  CHECK(r.to_json()["invariants"][0]["checked"] == false);
  r.invariants[0].checked = true;
  r.stopped_early = false;
  CHECK_THAT(r.to_text(), Contains("result      OK: 3 invariants hold\n"));
  r.invariants.clear();
  CHECK(r.ok());
  CHECK_THAT(r.to_text(), Contains("invariants  none checked\n"));
}

TEST_CASE("replay_command names the file and the seed, quoted for a shell", "[report]") {
  af::sim::scenario sc;
  sc.name = "work-exchange";
  sc.file = "examples/sim/work-exchange.yaml";
  CHECK(af::sim::replay_command(sc, 7) == "af sim run examples/sim/work-exchange.yaml --seed 7");
  CHECK(af::sim::replay_command(sc, 18446744073709551615ULL)
        == "af sim run examples/sim/work-exchange.yaml --seed 18446744073709551615");
  sc.file = "my scenarios/it's.yaml";
  CHECK(af::sim::replay_command(sc, 1) == R"(af sim run 'my scenarios/it'\''s.yaml' --seed 1)");
  sc.file.clear(); // built in code: the name stands in for the file
  CHECK(af::sim::replay_command(sc, 3) == "af sim run work-exchange --seed 3");
}
