// Clients of the Raft metadata store in the simulator (spec.kv_clients,
// examples/sim/raft-kv.yaml): their history is linearizable over many seeds with partitions,
// crashes, message loss and clock skew; a planted stale read is caught; the history file holds
// every operation in the documented format; the section is validated.
#include "af/sim/kv_history.hpp"
#include "af/sim/linearizability.hpp"
#include "af/sim/simulation.hpp"

#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

namespace {

using af::sim::scenario;

scenario example() {
  auto sc = af::sim::load_scenario(AF_SOURCE_DIR "/examples/sim/raft-kv.yaml");
  REQUIRE(sc);
  return *sc;
}

const af::sim::invariant_result* find(const af::sim::report& r, const std::string& name) {
  for (const auto& i : r.invariants)
    if (i.name == name) return &i;
  return nullptr;
}

/// Runs the example over seeds [from, to]: every invariant holds (linearizable and Raft's), and
/// the faults really made operations fail over and end without a return.
void sweep(std::uint64_t from, std::uint64_t to) {
  const auto sc = example();
  std::uint64_t ops = 0, unknown = 0, retried = 0, crashes = 0, partitions = 0;
  for (auto seed = from; seed <= to; ++seed) {
    af::sim::run_options o;
    o.seed = seed;
    auto r = af::sim::run(sc, o);
    REQUIRE(r);
    REQUIRE(r->kv);
    const auto* lin = find(*r, "linearizable");
    REQUIRE(lin != nullptr);
    INFO("seed " << seed << "; replay: " << af::sim::replay_command(sc, seed)
                 << " --history h.jsonl\n"
                 << r->to_text());
    CHECK(lin->ok);
    CHECK(r->ok());
    if (!r->ok()) break; // one failing seed is enough to read
    ops += r->kv->ops;
    unknown += r->kv->unknown;
    retried += r->kv->retried;
    crashes += r->crashes;
    for (const auto& t : r->timeline)
      if (t.find(" partition ") != std::string::npos) ++partitions;
  }
  const auto n = to - from + 1;
  CHECK(ops >= n * 80);   // most of the 150 planned operations start before the faults end
  CHECK(unknown > n);     // faults left operations without a return: the hard case was there
  CHECK(retried > n * 5); // and made clients fail over to another member
  CHECK(crashes >= n);    // the scheduled crash of n2, plus random ones
  CHECK(partitions >= n);
}

std::string temp_file(const std::string& stem) {
  return (std::filesystem::temp_directory_path()
          / ("af-" + stem + "-" + std::to_string(::getpid()) + ".jsonl"))
      .string();
}

std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

TEST_CASE("raft kv: the clients' history is linearizable, seeds 1-50", "[sim][raft][kv]") {
  sweep(1, 50);
}

TEST_CASE("raft kv: the clients' history is linearizable, seeds 51-100", "[sim][raft][kv]") {
  sweep(51, 100);
}

// 1,000 seeds (CI's `slow` label), in four parts so that `ctest -j2` runs two at once.
TEST_CASE("raft kv: 1000 seeds, part 1 (seeds 1-250)", "[slow][raft][kv]") { sweep(1, 250); }
TEST_CASE("raft kv: 1000 seeds, part 2 (seeds 251-500)", "[slow][raft][kv]") { sweep(251, 500); }
TEST_CASE("raft kv: 1000 seeds, part 3 (seeds 501-750)", "[slow][raft][kv]") { sweep(501, 750); }
TEST_CASE("raft kv: 1000 seeds, part 4 (seeds 751-1000)", "[slow][raft][kv]") { sweep(751, 1000); }

TEST_CASE("raft kv: reads of a member's local replica (stale_ok) are caught", "[sim][raft][kv]") {
  // The planted bug: gets skip ReadIndex and read whichever replica the client asked, so a
  // follower that has not heard of a completed write yet answers with the old value.
  auto sc = example();
  sc.kv_clients.stale_reads = true;
  std::string caught;
  for (std::uint64_t seed = 1; seed <= 20 && caught.empty(); ++seed) {
    af::sim::run_options o;
    o.seed = seed;
    auto r = af::sim::run(sc, o);
    REQUIRE(r);
    const auto* lin = find(*r, "linearizable");
    REQUIRE(lin != nullptr);
    if (!lin->ok) {
      caught = "seed " + std::to_string(seed) + ": " + lin->detail;
      CHECK(r->first_failure() != nullptr);
      CHECK(lin->at > af::duration::zero());
      CHECK(lin->at <= sc.run_for + sc.drain);
    }
  }
  INFO(caught);
  REQUIRE_FALSE(caught.empty());
  CHECK_THAT(caught, Catch::Contains("no valid order") || Catch::Contains("which no put"));
  CHECK_THAT(caught, Catch::Contains(" get -> "));
}

TEST_CASE("raft kv: the history file holds every operation in the documented format",
          "[sim][raft][kv]") {
  const auto sc = example();
  const auto path = temp_file("raft-kv-history");
  af::sim::run_options o;
  o.seed = 7;
  o.history_file = path;
  auto r = af::sim::run(sc, o);
  REQUIRE(r);
  REQUIRE(r->kv);
  const auto text = slurp(path);
  std::istringstream lines{text};
  std::uint64_t n = 0, without_return = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    auto j = nlohmann::json::parse(line);
    INFO(line);
    REQUIRE(j.is_object());
    CHECK(j["client"].is_number_integer());
    CHECK(j["client"].get<int>() >= 0);
    CHECK(j["client"].get<int>() < 5);
    const auto op = j["op"].get<std::string>();
    CHECK((op == "put" || op == "get" || op == "cas"));
    CHECK(j["key"].is_string());
    CHECK(j["value"].is_string());
    CHECK(j["call"].is_number_integer());
    CHECK(j.contains("expected") == (op == "cas"));
    if (j.contains("return")) {
      CHECK(j["return"].get<std::int64_t>() >= j["call"].get<std::int64_t>());
      CHECK(j.contains("ok") == (op == "cas"));
    } else {
      ++without_return;
      CHECK_FALSE(j.contains("ok"));
    }
    if (op != "get") CHECK(j["value"].get<std::string>().starts_with("c"));
  }
  CHECK(n == r->kv->ops);
  CHECK(without_return == r->kv->unknown);
  CHECK(n - without_return == r->kv->returned);
  // It reads back (each client sequential) and is what the run checked.
  auto h = af::sim::parse_history(text, path);
  REQUIRE(h);
  CHECK(h->size() == n);
  auto verdict = af::sim::check_linearizable(*h);
  CHECK(verdict.ok);
  CHECK(verdict.states == r->kv->check_states);
  // The same seed writes the same history.
  const auto again = temp_file("raft-kv-history-again");
  o.history_file = again;
  auto r2 = af::sim::run(sc, o);
  REQUIRE(r2);
  CHECK(r2->trace_hash == r->trace_hash);
  CHECK(slurp(again) == text);
  std::filesystem::remove(path);
  std::filesystem::remove(again);
}

TEST_CASE("raft kv: the kv_clients section is validated", "[sim][raft][kv]") {
  const std::string head = "apiVersion: agentflow/v1\nkind: Scenario\nmetadata: {name: t}\n"
                           "spec:\n  nodes: [n1, n2, n3]\n";
  const std::string raft = "  raft: {members: [n1, n2, n3]}\n";
  auto fails = [&](const std::string& spec, const std::string& what) {
    auto sc = af::sim::parse_scenario(head + spec, "t.yaml");
    REQUIRE_FALSE(sc);
    CHECK(sc.error().code() == af::errc::validation);
    CHECK_THAT(sc.error().message(), Catch::Contains(what));
  };
  fails("  kv_clients: {clients: 2}\n", "spec.kv_clients: needs a raft section");
  fails(raft + "  kv_clients: {clients: 0}\n", "spec.kv_clients.clients");
  fails(raft + "  kv_clients: {mix: {put: 0, get: 0}}\n", "spec.kv_clients.mix");
  fails(raft + "  kv_clients: {mix: {delete: 1}}\n", "delete");
  fails(raft + "  kv_clients: {timeout: 0s}\n", "spec.kv_clients.timeout");
  fails(raft + "  kv_clients: {nodes: [n9]}\n", "n9");
  fails(raft + "  kv_clients: {colour: blue}\n", "colour");

  auto sc = af::sim::parse_scenario(head + raft
                                        + "  kv_clients: {clients: 2, ops_per_client: 7, keys: 1, "
                                          "mix: {get: 1}, nodes: [n3], stale_reads: true}\n",
                                    "t.yaml");
  REQUIRE(sc);
  const auto& k = sc->kv_clients;
  CHECK(k.enabled);
  CHECK(k.clients == 2);
  CHECK(k.ops_per_client == 7);
  CHECK(k.keys == 1);
  CHECK(k.put == 0);
  CHECK(k.get == 1);
  CHECK(k.cas == 0);
  CHECK(k.nodes == std::vector<std::string>{"n3"});
  CHECK(k.stale_reads);
  // The history is always checked.
  CHECK(std::find(sc->invariants.begin(), sc->invariants.end(), "linearizable")
        != sc->invariants.end());
}

TEST_CASE("raft kv: a history file needs a kv_clients section", "[sim][raft][kv]") {
  auto sc = example();
  sc.kv_clients = {};
  sc.invariants = {"no_actor_leak"};
  af::sim::run_options o;
  o.history_file = temp_file("raft-kv-none");
  auto r = af::sim::run(sc, o);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  CHECK_THAT(r.error().message(), Catch::Contains("no kv_clients section"));
  CHECK_FALSE(std::filesystem::exists(o.history_file));
}
