// Raft in the simulator (issue 8): virtual time from a crash of the leader until the next leader
// is elected, p50/p99 over 1,000 seeds, for 3 and 5 members. Each seed crashes every member once
// in turn (down 1.5 s, 3 s apart); the crashes that hit the leader of the moment are timed by the
// simulator's Raft book (report.raft.elect_after_crash_ms). Virtual time: the figures depend on
// the Raft options and the simulated links, not on the machine.
#include "af/sim/simulation.hpp"
#include "bench_common.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

std::string node(std::size_t i) {
  std::string s{"n"};
  s += std::to_string(i);
  return s;
}

/// `members` members on 1-10 ms links (`loss`), default Raft options (elections after
/// 150-300 ms of silence, heartbeats every 50 ms), a writer putting 10 keys/s on each member,
/// and member i crashing at 2 s + 3 s * (i - 1) for 1.5 s.
af::sim::scenario scenario_for(std::size_t members, double loss) {
  af::sim::scenario sc;
  sc.name = "bench-raft-" + std::to_string(members);
  sc.nodes.clear();
  for (std::size_t i = 1; i <= members; ++i)
    sc.nodes.push_back(node(i));
  sc.network.defaults.latency = {af::sim::latency_spec::kind::uniform, 1ms, 10ms, 5ms};
  sc.network.defaults.loss = loss;
  sc.raft.enabled = true;
  sc.raft.options.members = sc.nodes;
  sc.raft.writes_per_second = 10;
  for (std::size_t i = 0; i < members; ++i) {
    af::sim::fault_spec f;
    f.what = af::sim::fault_spec::kind::crash;
    f.node = node(i + 1);
    f.at = 2s + 3s * static_cast<std::int64_t>(i);
    f.down_for = 1500ms;
    sc.faults.push_back(f);
  }
  sc.run_for = 2s + 3s * static_cast<std::int64_t>(members) + 2s;
  sc.drain = 0s;
  return sc;
}

void bench_members(std::size_t members, std::size_t seeds, double loss) {
  const auto sc = scenario_for(members, loss);
  bench::run r;
  std::uint64_t leader_crashes = 0, failed_invariants = 0;
  double wall = 0;
  for (std::size_t s = 1; s <= seeds; ++s) {
    af::sim::run_options o;
    o.seed = s;
    const auto start = bench::clock::now();
    auto rep = af::sim::run(sc, o);
    wall += bench::seconds_between(start, bench::clock::now());
    if (!rep) bench::die("raft run failed: " + rep.error().to_string());
    if (!rep->ok()) ++failed_invariants;
    leader_crashes += rep->raft->leader_crashes;
    for (auto ms : rep->raft->elect_after_crash_ms)
      r.samples.push_back(ms);
  }
  r.ops = r.samples.size();
  r.value = bench::median(r.samples);
  const auto M = std::to_string(members);
  char how[512];
  std::snprintf(how, sizeof how,
                "%zu seeds; links 1-10 ms, %.0f%% loss; election timeout 150-300 ms, heartbeat "
                "50 ms; %llu leader crashes, %zu followed by an election before the run ended; "
                "%llu seeds with a failed invariant; %.1f s wall",
                seeds, loss * 100, static_cast<unsigned long long>(leader_crashes),
                r.samples.size(), static_cast<unsigned long long>(failed_invariants), wall);
  bench::emit("raft.elect_after_leader_crash." + M,
              "Virtual time from a leader crash to the next leader, " + M + " members",
              bench::summarize({r}, bench::kind::latency, "ms"), nullptr, {}, std::nullopt, how);
}

} // namespace

int main(int argc, char** argv) {
  const auto seeds = static_cast<std::size_t>(bench::int_option(argc, argv, "--seeds", 1000));
  const auto scenario = bench::string_option(argc, argv, "--scenario", "all");
  const double loss = std::stod(bench::string_option(argc, argv, "--loss", "0"));
  if (scenario == "all" || scenario == "3") bench_members(3, seeds, loss);
  if (scenario == "all" || scenario == "5") bench_members(5, seeds, loss);
  return 0;
}
