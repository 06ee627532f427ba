// Scenario 4: spawning 100k idle agents vs 100k idle bare-CAF event-based actors: wall time until
// every one has started (each agent's on_start / each actor's init function counts an atomic) and
// resident memory per idle agent (/proc/self/statm before the first spawn and after the last
// start). Each run of each variant is a fresh child process (this executable re-run with
// --child), so RSS is not polluted by earlier runs.
//
//   af_bench_spawn [--runs 5] [--n 100000]
//   af_bench_spawn --child agent|bare --n 100000   (prints "<seconds> <rss before> <rss after>")
#include "bench_common.hpp"
#include "bench_systems.hpp"

#include "af/agent.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using google::protobuf::Int64Value;
using namespace std::chrono_literals;

namespace {

std::atomic<std::size_t> g_started{0};

void wait_started(std::size_t n) {
  while (g_started.load(std::memory_order_acquire) < n)
    std::this_thread::sleep_for(1ms);
}

/// Prints the child's result and leaves without tearing 100k actors down (not measured).
[[noreturn]] void report_and_exit(double seconds, std::size_t before, std::size_t after) {
  std::printf("%.9f %zu %zu\n", seconds, before, after);
  std::fflush(stdout);
  std::_Exit(0);
}

class idle_agent : public af::agent_base<idle_agent> {
public:
  static void define(af::handlers<idle_agent>& h) { h.kind("bench.idle").on(&idle_agent::poke); }
  void on_start(af::context&) override { g_started.fetch_add(1, std::memory_order_release); }
  void poke(af::context&, const Int64Value&) {}
};

[[noreturn]] void child_agent(std::size_t n) {
  auto node = bench::start_node();
  const auto before = bench::rss_bytes();
  const auto t0 = bench::clock::now();
  for (std::size_t i = 0; i < n; ++i)
    if (auto r = node->spawn<idle_agent>("idle-" + std::to_string(i)); !r) {
      std::fprintf(stderr, "bench: spawn failed: %s\n", r.error().to_string().c_str());
      std::exit(1);
    }
  wait_started(n);
  const auto t1 = bench::clock::now();
  report_and_exit(bench::seconds_between(t0, t1), before, bench::rss_bytes());
}

caf::behavior idle_actor(caf::event_based_actor*) {
  g_started.fetch_add(1, std::memory_order_release);
  return {[](std::int64_t) {}};
}

[[noreturn]] void child_bare(std::size_t n) {
  bench::bare_config cfg;
  caf::actor_system sys{cfg};
  std::vector<caf::actor> actors; // the handles keep the actors alive (the node's registry does
  actors.reserve(n);              // the same for agents); counted in the RSS delta either way
  const auto before = bench::rss_bytes();
  const auto t0 = bench::clock::now();
  for (std::size_t i = 0; i < n; ++i)
    actors.push_back(sys.spawn(idle_actor));
  wait_started(n);
  const auto t1 = bench::clock::now();
  report_and_exit(bench::seconds_between(t0, t1), before, bench::rss_bytes());
}

struct child_result {
  double seconds = 0;
  double bytes_per_actor = 0;
};

child_result run_child(const std::string& exe, const char* variant, std::size_t n) {
  const auto cmd = "'" + exe + "' --child " + variant + " --n " + std::to_string(n);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    std::perror("popen");
    std::exit(1);
  }
  double seconds = 0;
  std::size_t before = 0, after = 0;
  const int got = std::fscanf(p, "%lf %zu %zu", &seconds, &before, &after);
  const int rc = ::pclose(p);
  if (got != 3 || rc != 0) {
    std::fprintf(stderr, "bench: child '%s' failed (rc %d)\n", cmd.c_str(), rc);
    std::exit(1);
  }
  return {seconds,
          (static_cast<double>(after) - static_cast<double>(before)) / static_cast<double>(n)};
}

std::string self_exe() {
  std::vector<char> buf(4096);
  auto len = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (len <= 0) {
    std::perror("readlink");
    std::exit(1);
  }
  return {buf.data(), static_cast<std::size_t>(len)};
}

} // namespace

int main(int argc, char** argv) {
  const auto n = static_cast<std::size_t>(bench::int_option(argc, argv, "--n", 100000));
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string{argv[i]} == "--child") {
      std::string v = argv[i + 1];
      if (v == "agent") child_agent(n);
      if (v == "bare") child_bare(n);
      std::fprintf(stderr, "bench: unknown child variant '%s'\n", v.c_str());
      return 2;
    }

  const auto runs = static_cast<std::size_t>(bench::int_option(argc, argv, "--runs", 5));
  const auto exe = self_exe();
  std::vector<bench::run> agent_t, bare_t, agent_m, bare_m;
  for (std::size_t r = 0; r < runs; ++r) {
    auto a = run_child(exe, "agent", n);
    auto b = run_child(exe, "bare", n);
    agent_t.push_back({a.seconds, {}, 1, n});
    bare_t.push_back({b.seconds, {}, 1, n});
    agent_m.push_back({a.bytes_per_actor, {}, 1, n});
    bare_m.push_back({b.bytes_per_actor, {}, 1, n});
  }
  const auto count = std::to_string(n / 1000) + "k";
  auto at = bench::summarize(agent_t, bench::kind::plain, "s");
  auto bt = bench::summarize(bare_t, bench::kind::plain, "s");
  auto am = bench::summarize(agent_m, bench::kind::plain, "B/agent");
  auto bm = bench::summarize(bare_m, bench::kind::plain, "B/actor");
  bench::emit("spawn.time", "Spawn " + count + " idle agents until all have started", at, &bt,
              "bare CAF: spawn " + count + " idle event-based actors", std::nullopt,
              "informational; each run in a fresh process");
  bench::emit("spawn.rss_per_agent", "RSS per idle agent (" + count + " agents)", am, &bm,
              "bare CAF: RSS per idle event-based actor", bench::target{"median", "<", 2048},
              "statm delta / count; each run in a fresh process");
  return 0;
}
