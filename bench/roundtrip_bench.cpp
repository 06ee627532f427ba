// Scenario 1: ask/reply round trip between two agents (the asker asks again from the reply
// callback) vs bare CAF request/response between two event-based actors doing the same exchange.
// Every round trip is timed with std::chrono::steady_clock inside the asking actor.
//
//   af_bench_roundtrip [--runs 5] [--n 50000] [--warmup 2000] [--variant agent|bare]
// (--variant runs one side only and prints nothing: for profilers)
#include "bench_common.hpp"
#include "bench_systems.hpp"

#include "af/agent.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <string>
#include <vector>

using google::protobuf::Int64Value;
using google::protobuf::UInt64Value;
using namespace std::chrono_literals;

namespace {

/// What the asking actor records, shared with the bench's main thread.
struct rt_job {
  std::size_t warmup = 0;
  std::size_t n = 0;
  std::vector<double> samples_us; // one per measured round trip
  std::promise<void> done;
};

// --- agent variant ---------------------------------------------------------------------------

class echo_agent : public af::agent_base<echo_agent> {
public:
  static void define(af::handlers<echo_agent>& h) { h.kind("bench.echo").on(&echo_agent::echo); }
  af::expected<Int64Value> echo(af::context&, const Int64Value& v) { return v; }
};

class asker_agent : public af::agent_base<asker_agent> {
public:
  static void define(af::handlers<asker_agent>& h) {
    h.kind("bench.asker").on(&asker_agent::start);
  }
  explicit asker_agent(rt_job* job) : job_(job) {}

  void start(af::context& ctx, const UInt64Value&) {
    auto ref = ctx.lookup("echo");
    if (!ref) {
      std::fprintf(stderr, "bench: %s\n", ref.error().to_string().c_str());
      std::exit(1);
    }
    echo_ = *ref;
    next(ctx);
  }

private:
  void next(af::context& ctx) {
    Int64Value v;
    v.set_value(static_cast<std::int64_t>(i_));
    t0_ = bench::clock::now();
    ctx.ask<Int64Value>(echo_, std::move(v), 5s, [this, &ctx](af::expected<Int64Value> r) {
      auto t1 = bench::clock::now();
      if (!r || r->value() != static_cast<std::int64_t>(i_)) {
        std::fprintf(stderr, "bench: agent round trip failed\n");
        std::exit(1);
      }
      if (i_ >= job_->warmup) job_->samples_us.push_back(bench::seconds_between(t0_, t1) * 1e6);
      if (++i_ == job_->warmup + job_->n) {
        job_->done.set_value();
        return;
      }
      next(ctx);
    });
  }

  rt_job* job_;
  af::agent_ref echo_;
  std::size_t i_ = 0;
  bench::clock::time_point t0_;
};

bench::run run_agent(std::size_t warmup, std::size_t n) {
  rt_job job;
  job.warmup = warmup;
  job.n = n;
  job.samples_us.reserve(n);
  auto fut = job.done.get_future();
  {
    auto node = bench::start_node();
    if (!node->spawn<echo_agent>("echo")) std::exit(1);
    auto asker = node->spawn<asker_agent>("asker", &job);
    if (!asker) std::exit(1);
    node->tell(*asker, UInt64Value{});
    fut.wait();
  }
  return {bench::median(job.samples_us), std::move(job.samples_us), 1, n};
}

// --- bare CAF variant ------------------------------------------------------------------------

using start_atom = caf::atom_constant<caf::atom("start")>;

caf::behavior bare_echo(caf::event_based_actor*) {
  return {[](std::int64_t v) { return v; }};
}

class bare_asker : public caf::event_based_actor {
public:
  bare_asker(caf::actor_config& cfg, caf::actor echo, rt_job* job, caf::duration timeout)
      : caf::event_based_actor(cfg), echo_(std::move(echo)), job_(job), timeout_(timeout) {}

  caf::behavior make_behavior() override {
    return {[this](start_atom) { next(); }};
  }

private:
  void next() {
    t0_ = bench::clock::now();
    request(echo_, timeout_, static_cast<std::int64_t>(i_)).then([this](std::int64_t v) {
      auto t1 = bench::clock::now();
      if (v != static_cast<std::int64_t>(i_)) {
        std::fprintf(stderr, "bench: bare round trip failed\n");
        std::exit(1);
      }
      if (i_ >= job_->warmup) job_->samples_us.push_back(bench::seconds_between(t0_, t1) * 1e6);
      if (++i_ == job_->warmup + job_->n) {
        job_->done.set_value();
        return;
      }
      next();
    });
  }

  caf::actor echo_;
  rt_job* job_;
  caf::duration timeout_;
  std::size_t i_ = 0;
  bench::clock::time_point t0_;
};

bench::run run_bare(std::size_t warmup, std::size_t n, caf::duration timeout) {
  rt_job job;
  job.warmup = warmup;
  job.n = n;
  job.samples_us.reserve(n);
  auto fut = job.done.get_future();
  {
    bench::bare_config cfg;
    caf::actor_system sys{cfg};
    auto echo = sys.spawn(bare_echo);
    auto asker = sys.spawn<bare_asker>(echo, &job, timeout);
    caf::anon_send(asker, start_atom::value);
    fut.wait();
    caf::anon_send_exit(asker, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
  }
  return {bench::median(job.samples_us), std::move(job.samples_us), 1, n};
}

} // namespace

int main(int argc, char** argv) {
  const auto runs = static_cast<std::size_t>(bench::int_option(argc, argv, "--runs", 5));
  const auto n = static_cast<std::size_t>(bench::int_option(argc, argv, "--n", 50000));
  const auto warmup = static_cast<std::size_t>(bench::int_option(argc, argv, "--warmup", 2000));

  const auto only = bench::string_option(argc, argv, "--variant", "");
  if (!only.empty()) {
    for (std::size_t r = 0; r < runs; ++r)
      only == "agent" ? (void)run_agent(warmup, n) : (void)run_bare(warmup, n, caf::infinite);
    return 0;
  }

  std::vector<bench::run> agent, bare, bare_timeout;
  for (std::size_t r = 0; r < runs; ++r) { // interleaved, so drift hits all variants alike
    agent.push_back(run_agent(warmup, n));
    bare.push_back(run_bare(warmup, n, caf::infinite));
    bare_timeout.push_back(run_bare(warmup, n, caf::duration{std::chrono::seconds(5)}));
  }
  auto a = bench::summarize(agent, bench::kind::latency, "us");
  auto b = bench::summarize(bare, bench::kind::latency, "us");
  auto bt = bench::summarize(bare_timeout, bench::kind::latency, "us");
  bench::emit("roundtrip.ask", "Ask/reply round trip, agent -> agent (Int64Value)", a, &b,
              "bare CAF request/response (int64, no timeout)", bench::target{"ratio", "<=", 1.5});
  bench::emit("roundtrip.ask_vs_timeout",
              "Ask/reply round trip vs bare CAF with the same 5 s request timeout", a, &bt,
              "bare CAF request/response (int64, 5 s timeout)", std::nullopt,
              "informational: every agent ask carries a timeout; this baseline does too");
  return 0;
}
