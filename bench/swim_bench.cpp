// SWIM membership in the simulator (issue 7): periods to converge after a join, periods to detect
// a crash (first suspicion, and dead in every view), false positives at 5% loss, and messages per
// member per period, for 100 and 1,000 members. Virtual time: the figures count protocol periods,
// not wall time, so they do not depend on the machine.
#include "af/sim/simulation.hpp"
#include "bench_common.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// "n" + i, built by append (GCC 12 warns falsely about "literal" + std::string&&).
std::string node(std::size_t i) {
  std::string s{"n"};
  s += std::to_string(i);
  return s;
}

/// n members with the membership-only profile and 5% loss: n-1 join from 0.5s (staggered), the
/// last one joins alone once the others have settled, then `crashes` members crash for good,
/// 10 s apart.
double g_loss = 0.05; // --loss

af::sim::scenario scenario_for(std::size_t n, std::size_t crashes, std::uint64_t seed) {
  af::sim::scenario sc;
  sc.name = "bench-swim-";
  sc.name += std::to_string(n);
  sc.nodes.clear();
  for (std::size_t i = 1; i <= n; ++i)
    sc.nodes.push_back(node(i));
  sc.network.defaults.latency = {af::sim::latency_spec::kind::uniform, 1ms, 10ms, 5ms};
  sc.network.defaults.loss = g_loss;
  sc.cluster.enabled = true;
  sc.cluster.membership_only = true;
  const auto stagger = n > 200 ? 5ms : 20ms;
  const auto settled = 500ms + stagger * static_cast<std::int64_t>(n) + 25s;
  af::sim::cluster_join_spec first, rest, late;
  first.nodes = {"n1"};
  rest.at = 500ms;
  rest.every = stagger;
  rest.seeds = {"n1", "n2"};
  for (std::size_t i = 2; i < n; ++i)
    rest.nodes.push_back(node(i));
  late.at = settled;
  late.nodes = {node(n)};
  late.seeds = {"n1", "n2"};
  sc.cluster.joins = {first, rest, late};
  // Crash victims drawn from the seed (never the seeds or the late joiner).
  af::rng r{seed * 7919 + n};
  std::vector<std::string> victims;
  while (victims.size() < crashes) {
    const auto v = node(3 + r.uniform(n - 3));
    if (std::find(victims.begin(), victims.end(), v) == victims.end()) victims.push_back(v);
  }
  for (std::size_t i = 0; i < crashes; ++i) {
    af::sim::fault_spec f;
    f.what = af::sim::fault_spec::kind::crash;
    f.node = victims[i];
    f.at = settled + 20s + 10s * static_cast<std::int64_t>(i);
    sc.faults.push_back(f);
  }
  sc.run_for = settled + 20s + 10s * static_cast<std::int64_t>(crashes) + 20s;
  sc.drain = 0s;
  return sc;
}

struct totals {
  std::vector<double> join, detect, dead;
  std::uint64_t false_dead = 0, false_suspect = 0, member_periods = 0, messages = 0;
  double wall = 0;
  bool all_converged = true;
};

void one_run(std::size_t n, std::size_t seeds, std::size_t crashes, std::uint64_t base, totals& t) {
  for (std::size_t s = 0; s < seeds; ++s) {
    const auto seed = base + s;
    auto sc = scenario_for(n, crashes, seed);
    af::sim::run_options o;
    o.seed = seed;
    const auto start = bench::clock::now();
    auto r = af::sim::run(sc, o);
    t.wall += bench::seconds_between(start, bench::clock::now());
    if (!r) bench::die("swim run failed: " + r.error().to_string());
    if (std::getenv("AF_SWIM_BENCH_VERBOSE") != nullptr)
      std::fprintf(stderr, "seed %llu\n%s", static_cast<unsigned long long>(seed),
                   r->to_text().c_str());
    const auto& m = *r->membership;
    if (m.join_converge_periods < 0) {
      t.all_converged = false;
    } else {
      t.join.push_back(m.join_converge_periods);
    }
    for (const auto& c : m.crashes) {
      t.detect.push_back(c.first_detect_periods < 0 ? 1e9 : c.first_detect_periods);
      t.dead.push_back(c.all_dead_periods < 0 ? 1e9 : c.all_dead_periods);
    }
    t.false_dead += m.false_dead;
    t.false_suspect += m.false_suspect;
    t.member_periods += m.member_periods;
    t.messages += m.messages;
  }
}

bench::run as_run(const std::vector<double>& samples) {
  bench::run r;
  r.samples = samples;
  r.value = bench::median(samples);
  r.ops = samples.size();
  return r;
}

void bench_members(int runs, std::size_t n, std::size_t seeds, std::size_t crashes) {
  std::vector<bench::run> join, detect, dead, fp, load, suspect;
  double wall = 0;
  std::size_t not_converged = 0;
  for (int i = 0; i < runs; ++i) {
    totals t;
    one_run(n, seeds, crashes, 1000 * static_cast<std::uint64_t>(i) + 1, t);
    wall += t.wall;
    if (!t.all_converged) ++not_converged;
    join.push_back(as_run(t.join));
    detect.push_back(as_run(t.detect));
    dead.push_back(as_run(t.dead));
    const auto mp = static_cast<double>(t.member_periods);
    bench::run f;
    f.value = static_cast<double>(t.false_dead) / mp;
    f.ops = t.member_periods;
    fp.push_back(f);
    bench::run s;
    s.value = static_cast<double>(t.false_suspect) / mp;
    s.ops = t.member_periods;
    suspect.push_back(s);
    bench::run l;
    l.value = static_cast<double>(t.messages) / mp;
    l.ops = t.messages;
    load.push_back(l);
  }
  const auto N = std::to_string(n);
  const auto how =
      std::to_string(seeds)
      + " seeds per run, 5% loss, 1-10 ms links, period 1 s, "
        "k = 3, suspicion 4 log10(n+1) periods (min 2 s), lambda = 4, sync every 20 periods; "
      + std::to_string(wall / runs) + " s wall per run";
  bench::emit("swim.join." + N, "Periods to converge after one join, " + N + " members",
              bench::summarize(join, bench::kind::latency, "periods"), nullptr, {}, std::nullopt,
              how
                  + (not_converged ? "; " + std::to_string(not_converged)
                                         + " runs had a seed that never converged"
                                   : std::string{}));
  bench::emit("swim.detect." + N, "Periods from a crash to its first suspicion, " + N + " members",
              bench::summarize(detect, bench::kind::latency, "periods"), nullptr, {},
              bench::target{"p99", "<=", 5},
              std::to_string(crashes) + " crashes per seed; p99 over all crashes of a run");
  bench::emit("swim.dead." + N,
              "Periods from a crash until every member declared it dead, " + N + " members",
              bench::summarize(dead, bench::kind::latency, "periods"));
  bench::emit("swim.false_dead." + N,
              "False dead declarations per member-period at 5% loss, " + N + " members",
              bench::summarize(fp, bench::kind::plain, "per member-period"), nullptr, {},
              bench::target{"median", "<", 0.001},
              "a live member declared dead by a member that can reach it; n = member-periods");
  bench::emit("swim.false_suspect." + N,
              "False suspicions per member-period at 5% loss, " + N + " members",
              bench::summarize(suspect, bench::kind::plain, "per member-period"), nullptr, {},
              std::nullopt, "suspicions later refuted (informational)");
  bench::emit("swim.messages." + N, "SWIM messages per member per period, " + N + " members",
              bench::summarize(load, bench::kind::plain, "messages"), nullptr, {}, std::nullopt,
              "pings, acks, ping-reqs, joins and syncs sent; constant in n is the target");
}

} // namespace

int main(int argc, char** argv) {
  const int runs = static_cast<int>(bench::int_option(argc, argv, "--runs", 3));
  const auto seeds100 = static_cast<std::size_t>(bench::int_option(argc, argv, "--seeds", 20));
  const auto seeds1000 = static_cast<std::size_t>(bench::int_option(argc, argv, "--seeds-1000", 1));
  const auto scenario = bench::string_option(argc, argv, "--scenario", "all");
  g_loss = std::stod(bench::string_option(argc, argv, "--loss", "0.05"));
  if (scenario == "all" || scenario == "100") bench_members(runs, 100, seeds100, 5);
  if (scenario == "all" || scenario == "1000") bench_members(runs, 1000, seeds1000, 5);
  return 0;
}
