// Scenario 2: one-way throughput from one sender to one receiver (tell) vs bare CAF send between
// two event-based actors. Memory stays bounded the same way in both variants: the sender sends
// batches of `batch` messages, the receiver acks every full batch, and the sender keeps at most
// `window` batches unacknowledged (it sends the next batch when an ack arrives).
// A sample is the time for `window` consecutive acks (`window` x `batch` messages).
//
//   af_bench_throughput [--runs 5] [--messages 500000] [--batch 1000] [--window 2]
//                       [--variant agent|bare]   (one side only, prints nothing: for profilers)
#include "bench_common.hpp"
#include "bench_systems.hpp"

#include "af/agent.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <cstdint>
#include <future>
#include <vector>

using google::protobuf::Int64Value;
using google::protobuf::UInt32Value;
using google::protobuf::UInt64Value;

namespace {

struct tp_job {
  std::size_t batch = 1000;
  std::size_t window = 2;
  std::size_t warmup_batches = 20;
  std::size_t batches = 300; // measured
  std::vector<double> batch_s;
  double total_s = 0;
  std::promise<void> done;
};

/// The sender's bookkeeping, identical for both variants: returns how many batches to send now.
class flow {
public:
  explicit flow(tp_job* job) : job_(job) {}
  [[nodiscard]] std::size_t total() const { return job_->warmup_batches + job_->batches; }
  /// Batches to send at start.
  std::size_t start() {
    sent_ = std::min(job_->window, total());
    return sent_;
  }
  /// An ack arrived; returns whether to send one more batch. Sets `done` at the last ack.
  bool on_ack() {
    auto now = bench::clock::now();
    ++acked_;
    if (acked_ == job_->warmup_batches) {
      first_ = last_ = now; // measuring starts at the last warm-up ack
    } else if (acked_ > job_->warmup_batches
               && (acked_ - job_->warmup_batches) % job_->window == 0) {
      // One sample per `window` acks: with several batches in flight, acks come in bursts, and
      // single inter-ack intervals would alternate between short and long.
      job_->batch_s.push_back(bench::seconds_between(last_, now));
      last_ = now;
    }
    if (acked_ == total()) {
      job_->total_s = bench::seconds_between(first_, now);
      job_->done.set_value();
      return false;
    }
    if (sent_ < total()) {
      ++sent_;
      return true;
    }
    return false;
  }

private:
  tp_job* job_;
  std::size_t sent_ = 0;
  std::size_t acked_ = 0;
  bench::clock::time_point first_, last_;
};

// --- agent variant ---------------------------------------------------------------------------

class sink_agent : public af::agent_base<sink_agent> {
public:
  static void define(af::handlers<sink_agent>& h) { h.kind("bench.sink").on(&sink_agent::take); }
  explicit sink_agent(std::size_t batch) : batch_(batch) {}
  void take(af::context& ctx, const Int64Value&) {
    if (++count_ % batch_ != 0) return;
    if (!sender_.valid()) {
      auto ref = ctx.lookup("source");
      if (!ref) std::exit(1);
      sender_ = *ref;
    }
    ctx.tell(sender_, UInt32Value{});
  }

private:
  std::size_t batch_;
  std::size_t count_ = 0;
  af::agent_ref sender_;
};

class source_agent : public af::agent_base<source_agent> {
public:
  static void define(af::handlers<source_agent>& h) {
    h.kind("bench.source").on(&source_agent::start).on(&source_agent::ack);
  }
  explicit source_agent(tp_job* job) : job_(job), flow_(job) {}

  void start(af::context& ctx, const UInt64Value&) {
    auto ref = ctx.lookup("sink");
    if (!ref) std::exit(1);
    sink_ = *ref;
    for (auto k = flow_.start(); k > 0; --k)
      send_batch(ctx);
  }
  void ack(af::context& ctx, const UInt32Value&) {
    if (flow_.on_ack()) send_batch(ctx);
  }

private:
  void send_batch(af::context& ctx) {
    for (std::size_t i = 0; i < job_->batch; ++i) {
      Int64Value v;
      v.set_value(static_cast<std::int64_t>(next_++));
      ctx.tell(sink_, std::move(v));
    }
  }

  tp_job* job_;
  flow flow_;
  af::agent_ref sink_;
  std::uint64_t next_ = 0;
};

void run_agent(tp_job& job) {
  auto fut = job.done.get_future();
  auto node = bench::start_node();
  if (!node->spawn<sink_agent>("sink", job.batch)) std::exit(1);
  auto src = node->spawn<source_agent>("source", &job);
  if (!src) std::exit(1);
  node->tell(*src, UInt64Value{});
  fut.wait();
}

// --- bare CAF variant ------------------------------------------------------------------------

using start_atom = caf::atom_constant<caf::atom("start")>;
using ack_atom = caf::atom_constant<caf::atom("ack")>;

class bare_sink : public caf::event_based_actor {
public:
  bare_sink(caf::actor_config& cfg, std::size_t batch)
      : caf::event_based_actor(cfg), batch_(batch) {}
  caf::behavior make_behavior() override {
    return {[this](std::int64_t) {
      if (++count_ % batch_ != 0) return;
      if (!sender_) sender_ = caf::actor_cast<caf::actor>(current_sender());
      send(sender_, ack_atom::value);
    }};
  }

private:
  std::size_t batch_;
  std::size_t count_ = 0;
  caf::actor sender_;
};

class bare_source : public caf::event_based_actor {
public:
  bare_source(caf::actor_config& cfg, caf::actor sink, tp_job* job)
      : caf::event_based_actor(cfg), sink_(std::move(sink)), job_(job), flow_(job) {}
  caf::behavior make_behavior() override {
    return {[this](start_atom) {
              for (auto k = flow_.start(); k > 0; --k)
                send_batch();
            },
            [this](ack_atom) {
              if (flow_.on_ack()) send_batch();
            }};
  }

private:
  void send_batch() {
    for (std::size_t i = 0; i < job_->batch; ++i)
      send(sink_, static_cast<std::int64_t>(next_++));
  }

  caf::actor sink_;
  tp_job* job_;
  flow flow_;
  std::uint64_t next_ = 0;
};

void run_bare(tp_job& job) {
  auto fut = job.done.get_future();
  bench::bare_config cfg;
  caf::actor_system sys{cfg};
  auto sink = sys.spawn<bare_sink>(job.batch);
  auto src = sys.spawn<bare_source>(sink, &job);
  caf::anon_send(src, start_atom::value);
  fut.wait();
  caf::anon_send_exit(src, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
}

template <class F>
bench::run measure(F run_variant, std::size_t batch, std::size_t batches, std::size_t window) {
  tp_job job;
  job.batch = batch;
  job.batches = batches;
  job.window = window;
  job.batch_s.reserve(batches);
  run_variant(job);
  const auto msgs = batch * batches;
  return {static_cast<double>(msgs) / job.total_s, std::move(job.batch_s),
          static_cast<double>(batch * window), msgs};
}

} // namespace

int main(int argc, char** argv) {
  const auto runs = static_cast<std::size_t>(bench::int_option(argc, argv, "--runs", 5));
  const auto batch = static_cast<std::size_t>(bench::int_option(argc, argv, "--batch", 1000));
  const auto window = static_cast<std::size_t>(bench::int_option(argc, argv, "--window", 2));
  const auto messages =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--messages", 500000));
  const auto batches = std::max<std::size_t>(1, messages / batch);

  const auto only = bench::string_option(argc, argv, "--variant", "");
  if (!only.empty()) {
    for (std::size_t r = 0; r < runs; ++r)
      (void)measure(only == "agent" ? run_agent : run_bare, batch, batches, window);
    return 0;
  }

  std::vector<bench::run> agent, bare;
  for (std::size_t r = 0; r < runs; ++r) {
    agent.push_back(measure(run_agent, batch, batches, window));
    bare.push_back(measure(run_bare, batch, batches, window));
  }
  auto a = bench::summarize(agent, bench::kind::rate, "msg/s");
  auto b = bench::summarize(bare, bench::kind::rate, "msg/s");
  bench::emit("throughput.tell",
              "One-way throughput, agent tell (Int64Value), batches of " + std::to_string(batch)
                  + ", " + std::to_string(window) + " in flight",
              a, &b, "bare CAF send (int64), same batching", bench::target{"ratio", ">=", 0.6});
  return 0;
}
