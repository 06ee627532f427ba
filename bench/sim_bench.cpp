// The deterministic simulator (issue 6), two scenarios:
//   deliveries  1,000 agents relay 1,000 tokens for 1,000 hops each (1 M deliveries) on one
//               simulated node under af::sim::run; the baseline is the bare CAF test coordinator
//               relaying the same tokens between plain CAF actors, driven by the same seeded
//               pick-a-runnable-actor loop. Deliveries per wall second, and the ratio.
//   population  N idle sim.worker agents on one simulated node, each size in a fresh process
//               (this executable, --scenario population_once): the peak RSS growth of the run
//               over the process before it, per agent, and the wall time to spawn them.
#include "af/agent.hpp"
#include "af/sim/simulation.hpp"
#include "bench_common.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/send.hpp>

#include <google/protobuf/wrappers.pb.h>

#include <memory>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using bench::die;

constexpr std::uint64_t k_hops = 1000;

// --- AgentFlow: the relay agent ---------------------------------------------------------------

/// Starts one token; passes every token it gets to a random relay until it has made k_hops hops.
class relay_agent : public af::agent_base<relay_agent> {
public:
  explicit relay_agent(std::size_t n) : n_(n) {}
  static void define(af::handlers<relay_agent>& h) {
    h.kind("bench.relay").on(&relay_agent::on_token);
  }
  void on_start(af::context& ctx) override { pass(ctx, 0); }
  void on_token(af::context& ctx, const google::protobuf::UInt64Value& t) {
    if (t.value() + 1 < k_hops) pass(ctx, t.value() + 1);
  }

private:
  void pass(af::context& ctx, std::uint64_t hops) {
    google::protobuf::UInt64Value t;
    t.set_value(hops);
    auto to = ctx.lookup("relay-" + std::to_string(ctx.rng().uniform(n_)));
    if (to) ctx.tell(*to, t);
  }
  std::size_t n_;
};

/// One simulated node with `count` agents of `type` named NAME-i, run for `run_for`, no drain.
af::sim::scenario one_node(std::string name, std::string type, std::size_t count,
                           af::duration run_for) {
  af::sim::scenario sc;
  sc.name = "bench-" + name;
  sc.nodes = {"n1"};
  sc.run_for = run_for;
  sc.drain = 0s;
  af::sim::population_spec p;
  p.name = std::move(name);
  p.type = std::move(type);
  p.count = count;
  sc.populations = {p};
  return sc;
}

bench::run agentflow_deliveries(std::size_t agents, std::uint64_t seed) {
  const auto sc = one_node("relay", "bench.relay", agents, 1h);
  auto types = std::make_shared<af::plan::agent_types>();
  if (auto s = types->add<relay_agent>("bench.relay", agents); !s) die(s.error().to_string());
  af::sim::run_options o;
  o.seed = seed;
  o.agents = types;
  auto t0 = bench::clock::now();
  auto r = af::sim::run(sc, o);
  auto secs = bench::seconds_between(t0, bench::clock::now());
  if (!r) die(r.error().to_string());
  if (r->delivered < agents * k_hops) die("fewer deliveries than tokens: " + std::to_string(r->delivered));
  bench::run out;
  out.ops = r->delivered;
  out.value = static_cast<double>(r->delivered) / secs;
  return out;
}

// --- bare CAF: plain actors under the test coordinator ----------------------------------------

struct bare_world {
  std::vector<caf::actor> actors;
};

caf::behavior bare_relay(caf::event_based_actor* self, std::shared_ptr<bare_world> w,
                         std::uint64_t seed) {
  auto rng = std::make_shared<af::rng>(seed);
  return {[self, w, rng](std::uint64_t hops) {
    if (hops + 1 < k_hops) self->send(w->actors[rng->uniform(w->actors.size())], hops + 1);
  }};
}

bench::run bare_deliveries(std::size_t agents, std::uint64_t seed) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("testing"));
  auto t0 = bench::clock::now();
  std::uint64_t delivered = 0;
  {
    caf::actor_system sys{cfg};
    auto& sched = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
    auto w = std::make_shared<bare_world>();
    af::rng seeds{seed};
    for (std::size_t i = 0; i < agents; ++i)
      w->actors.push_back(sys.spawn(bare_relay, w, seeds.next_u64()));
    for (std::size_t i = 0; i < agents; ++i)
      caf::anon_send(w->actors[seeds.uniform(agents)], std::uint64_t{0});
    af::rng pick{seed ^ 0x9e3779b97f4a7c15ULL};
    while (!sched.jobs.empty()) {
      const auto n = sched.jobs.size();
      if (n > 1) std::swap(sched.jobs.front(), sched.jobs[pick.uniform(n)]);
      sched.run_once();
      ++delivered;
    }
    for (auto& a : w->actors)
      caf::anon_send_exit(a, caf::exit_reason::kill);
    w->actors.clear();
    while (sched.try_run_once()) {
    }
  }
  auto secs = bench::seconds_between(t0, bench::clock::now());
  bench::run out;
  out.ops = delivered;
  out.value = static_cast<double>(delivered) / secs;
  return out;
}

void bench_deliveries(int runs, std::size_t agents) {
  std::vector<bench::run> ours, bare;
  for (int i = 0; i < runs; ++i) {
    ours.push_back(agentflow_deliveries(agents, 100 + static_cast<std::uint64_t>(i)));
    bare.push_back(bare_deliveries(agents, 100 + static_cast<std::uint64_t>(i)));
  }
  auto s = bench::summarize(ours, bench::kind::rate, "deliveries/s");
  auto b = bench::summarize(bare, bench::kind::rate, "messages/s");
  bench::emit("sim.deliveries", std::to_string(agents) + " agents x " + std::to_string(k_hops)
                                    + " messages on one simulated node (1 thread)",
              s, &b, "bare CAF test coordinator, plain actors, same pick loop",
              bench::target{"ratio", ">=", 0.7},
              s.median >= 700'000 ? "" : "below the 700,000 deliveries/s target");
}

// --- population ---------------------------------------------------------------------------

struct population_figures {
  double bytes_per_agent = 0;
  double peak_mib = 0;
  double spawn_seconds = 0;
};

population_figures population_once(std::size_t agents) {
  const auto sc = one_node("worker", "sim.worker", agents, 1s);
  af::sim::run_options o;
  o.seed = 1;
  const auto rss0 = bench::rss_bytes();
  bench::reset_peak_rss();
  auto t0 = bench::clock::now();
  auto r = af::sim::run(sc, o);
  auto secs = bench::seconds_between(t0, bench::clock::now());
  if (!r) die(r.error().to_string());
  const auto peak = bench::peak_rss_bytes();
  population_figures f;
  f.bytes_per_agent = static_cast<double>(peak - rss0) / static_cast<double>(agents);
  f.peak_mib = static_cast<double>(peak) / (1024.0 * 1024.0);
  f.spawn_seconds = secs;
  return f;
}

population_figures population_child(std::size_t agents) {
  namespace fs = std::filesystem;
  const auto exe = fs::read_symlink("/proc/self/exe").string();
  const auto cmd = exe + " --scenario population_once --agents " + std::to_string(agents);
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) die("popen " + cmd);
  population_figures m;
  if (std::fscanf(f, "population %lf %lf %lf", &m.bytes_per_agent, &m.peak_mib,
                  &m.spawn_seconds)
      != 3)
    die("no figures from " + cmd);
  if (::pclose(f) != 0) die(cmd + " failed");
  return m;
}

void bench_population(int runs, std::size_t agents, double limit_mib) {
  std::vector<bench::run> per_agent, peak, spawn;
  for (int i = 0; i < runs; ++i) {
    auto m = population_child(agents);
    per_agent.push_back({m.bytes_per_agent, {}, 1, agents});
    peak.push_back({m.peak_mib, {}, 1, agents});
    spawn.push_back({m.spawn_seconds, {}, 1, agents});
  }
  auto s = bench::summarize(peak, bench::kind::plain, "MiB peak RSS");
  s.extra = {"bytes_per_agent", bench::summarize(per_agent, bench::kind::plain, "").median};
  auto w = bench::summarize(spawn, bench::kind::plain, "s");
  bench::emit("sim.population." + std::to_string(agents),
              std::to_string(agents) + " idle sim.worker agents on one simulated node", s,
              nullptr, {}, bench::target{"median", "<", limit_mib},
              "run wall time (spawn, 1 s virtual, teardown) median " + bench::num(w.median) + " s");
}

} // namespace

int main(int argc, char** argv) {
  const int runs = static_cast<int>(bench::int_option(argc, argv, "--runs", 5));
  const auto scenario = bench::string_option(argc, argv, "--scenario", "all");
  const auto agents = static_cast<std::size_t>(bench::int_option(argc, argv, "--agents", 1000));
  if (scenario == "population_once") {
    auto m = population_once(agents);
    std::printf("population %.17g %.17g %.17g\n", m.bytes_per_agent, m.peak_mib, m.spawn_seconds);
    return 0;
  }
  const auto want = [&](const char* s) { return scenario == "all" || scenario == s; };
  bool any = false;
  if (want("deliveries")) {
    any = true;
    bench_deliveries(runs, agents);
  }
  if (want("population")) {
    any = true;
    bench_population(std::min(runs, 3), 100'000, 512);
    if (bench::int_option(argc, argv, "--million", 1) != 0) bench_population(1, 1'000'000, 4096);
  }
  if (!any) die("unknown --scenario " + scenario);
  return 0;
}
