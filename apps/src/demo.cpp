#include "demo.hpp"

#include "af/v1/runtime.pb.h"
#include "demo.pb.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <ostream>
#include <vector>

namespace af::demo {

namespace {

namespace pb = ::af::demo::v1;
namespace rt = ::af::v1;

constexpr auto k_task_timeout = std::chrono::seconds(120);
constexpr auto k_peer_timeout = std::chrono::seconds(60);

double micros(duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(rank == 0 ? 0 : rank - 1, v.size() - 1)];
}

std::string worker_name(std::uint64_t run, std::uint32_t i) {
  return "demo.run" + std::to_string(run) + ".worker-" + std::to_string(i);
}

/// Counts primes in ranges for its peers; splits each of its own tasks between two peers.
class worker : public agent_base<worker> {
public:
  worker(std::uint64_t run, std::uint32_t index, std::uint32_t count)
      : run_(run), index_(index), count_(count) {}

  static void define(handlers<worker>& h) {
    h.kind("demo.worker").on(&worker::on_range).on(&worker::on_task);
  }

  expected<pb::Count> on_range(context&, const pb::Range& r) {
    if (r.hi() < r.lo())
      return validation_error("range: hi " + std::to_string(r.hi()) + " < lo "
                              + std::to_string(r.lo()));
    pb::Count c;
    c.set_primes(count_primes_in(r.lo(), r.hi()));
    return c;
  }

  void on_task(context& ctx, const pb::Task& t, responder<pb::TaskResult> reply) {
    // Two peers each count half of the range; the reply goes out when both have answered.
    struct pending {
      pb::TaskResult result;
      int outstanding = 2;
      bool failed = false;
    };
    auto st = std::make_shared<pending>();
    st->result.set_index(t.index());
    const std::uint64_t mid = t.lo() + (t.hi() - t.lo()) / 2;
    const std::pair<std::uint64_t, std::uint64_t> halves[2] = {{t.lo(), mid}, {mid, t.hi()}};
    for (std::uint32_t k = 0; k < 2; ++k) {
      pb::Range r;
      r.set_lo(halves[k].first);
      r.set_hi(halves[k].second);
      auto peer = worker_name(run_, (index_ + 1 + k) % count_);
      auto started = ctx.monotonic();
      ctx.ask<pb::Count>(peer, r, k_peer_timeout,
                         [st, reply, k, started, &ctx](expected<pb::Count> c) mutable {
                           if (st->failed) return;
                           if (!c) {
                             st->failed = true;
                             reply.fail(c.error());
                             return;
                           }
                           double us = micros(ctx.monotonic() - started);
                           if (k == 0)
                             st->result.set_peer_a_us(us);
                           else
                             st->result.set_peer_b_us(us);
                           st->result.set_primes(st->result.primes() + c->primes());
                           if (--st->outstanding == 0) reply.reply(st->result);
                         });
    }
  }

private:
  std::uint64_t run_;
  std::uint32_t index_;
  std::uint32_t count_;
};

/// Spawns the workers, fans the tasks out, reduces the answers and checks them.
class coordinator : public agent_base<coordinator> {
public:
  coordinator(std::uint64_t run, rt::DemoRequest req, responder<rt::DemoResult> reply)
      : run_(run), req_(std::move(req)), reply_(std::move(reply)) {}

  static void define(handlers<coordinator>& h) { h.kind("demo.coordinator"); }

  void on_start(context& ctx) override {
    const std::uint32_t w = req_.workers();
    std::vector<agent_ref> workers;
    workers.reserve(w);
    for (std::uint32_t i = 0; i < w; ++i) {
      auto ref = ctx.spawn<worker>(worker_name(run_, i), run_, i, w);
      if (!ref) return finish_with(ctx, ref.error());
      workers.push_back(*ref);
    }
    started_ = ctx.monotonic();
    workers_ = std::move(workers);
    ctx.log().info("demo_started", "fanning out tasks",
                   {{"workers", w},
                    {"tasks", req_.tasks()},
                    {"limit", req_.limit()},
                    {"window", req_.window()}});
    // A bounded window of tasks in flight, so round trips measure work, not queueing.
    const std::uint32_t window = std::min(req_.tasks(), std::max<std::uint32_t>(req_.window(), 1));
    for (std::uint32_t i = 0; i < window; ++i)
      send_task(ctx);
  }

private:
  void send_task(context& ctx) {
    const std::uint32_t i = next_task_++;
    const std::uint64_t lo = 2, hi = std::max<std::uint64_t>(req_.limit(), 2);
    const std::uint32_t n = req_.tasks();
    pb::Task t;
    t.set_index(i);
    t.set_lo(lo + (hi - lo) * i / n);
    t.set_hi(lo + (hi - lo) * (i + 1) / n);
    auto sent = ctx.monotonic();
    ctx.ask<pb::TaskResult>(
        workers_[i % workers_.size()], t, k_task_timeout,
        [this, sent, &ctx](expected<pb::TaskResult> r) { on_result(ctx, sent, std::move(r)); });
  }

  void on_result(context& ctx, duration sent, expected<pb::TaskResult> r) {
    if (done_) return;
    if (!r) return finish_with(ctx, r.error());
    if (next_task_ < req_.tasks()) send_task(ctx);
    task_us_.push_back(micros(ctx.monotonic() - sent));
    peer_us_.push_back(r->peer_a_us());
    peer_us_.push_back(r->peer_b_us());
    primes_ += r->primes();
    const auto finished = static_cast<std::uint32_t>(task_us_.size());
    if (finished * 10 / req_.tasks() != (finished - 1) * 10 / req_.tasks()
        || finished == req_.tasks()) {
      pb::Progress p;
      p.set_done(finished);
      p.set_total(req_.tasks());
      (void)ctx.tell("demo.progress", p); // no printer is fine (remote runs)
    }
    if (finished < req_.tasks()) return;
    rt::DemoResult out;
    out.set_primes(primes_);
    out.set_expected(count_primes_below(std::max<std::uint64_t>(req_.limit(), 2)));
    out.set_tasks(req_.tasks());
    out.set_asks(3ull * req_.tasks());
    out.set_seconds(std::chrono::duration<double>(ctx.monotonic() - started_).count());
    out.set_task_p50_us(percentile(task_us_, 0.50));
    out.set_task_p99_us(percentile(task_us_, 0.99));
    out.set_peer_p50_us(percentile(peer_us_, 0.50));
    out.set_peer_p99_us(percentile(peer_us_, 0.99));
    ctx.log().info("demo_finished", "all tasks answered",
                   {{"primes", primes_}, {"expected", out.expected()}, {"seconds", out.seconds()}});
    done_ = true;
    reply_.reply(out);
    ctx.stop(); // its workers stop with it
  }

  void finish_with(context& ctx, const error& e) {
    done_ = true;
    ctx.log().error("demo_failed", e.to_string());
    reply_.fail(e);
    ctx.stop();
  }

  std::uint64_t run_;
  rt::DemoRequest req_;
  responder<rt::DemoResult> reply_;
  duration started_{};
  std::vector<agent_ref> workers_;
  std::uint32_t next_task_ = 0;
  std::vector<double> task_us_, peer_us_;
  std::uint64_t primes_ = 0;
  bool done_ = false;
};

class service : public agent_base<service> {
public:
  static void define(handlers<service>& h) { h.kind("demo.service").on(&service::on_request); }

  void on_request(context& ctx, const rt::DemoRequest& req, responder<rt::DemoResult> reply) {
    if (req.workers() < 3 || req.workers() > 1'000'000)
      return reply.fail(validation_error("demo: workers must be in 3..1000000, got "
                                         + std::to_string(req.workers())));
    if (req.tasks() < 1 || req.tasks() > 10'000'000)
      return reply.fail(validation_error("demo: tasks must be in 1..10000000, got "
                                         + std::to_string(req.tasks())));
    if (req.limit() < 3 || req.limit() > 1'000'000'000)
      return reply.fail(validation_error("demo: limit must be in 3..1000000000, got "
                                         + std::to_string(req.limit())));
    const auto run = ++runs_;
    auto c = ctx.spawn<coordinator>("demo.run" + std::to_string(run), run, req, reply);
    if (!c) reply.fail(c.error());
  }

private:
  std::uint64_t runs_ = 0;
};

class progress_printer : public agent_base<progress_printer> {
public:
  progress_printer(std::ostream& out, bool tty) : out_(out), tty_(tty) {}
  static void define(handlers<progress_printer>& h) {
    h.kind("demo.progress").on(&progress_printer::on_progress);
  }

  void on_progress(context&, const pb::Progress& p) {
    const unsigned width = 30;
    const unsigned filled = p.total() ? width * p.done() / p.total() : width;
    out_ << (tty_ ? "\r" : "") << "progress [" << std::string(filled, '#')
         << std::string(width - filled, '.') << "] "
         << (p.total() ? 100 * p.done() / p.total() : 100) << "% (" << p.done() << "/" << p.total()
         << " tasks)" << (tty_ ? "" : "\n");
    if (tty_ && p.done() == p.total()) out_ << "\n";
    out_.flush();
  }

private:
  std::ostream& out_;
  bool tty_;
};

} // namespace

expected<agent_ref> spawn_service(node& n) { return n.spawn<service>("demo.service"); }

expected<agent_ref> spawn_progress(node& n, std::ostream& out, bool tty) {
  return n.spawn<progress_printer>("demo.progress", out, tty);
}

std::uint64_t count_primes_below(std::uint64_t limit) {
  if (limit < 3) return 0;
  std::vector<bool> composite(limit, false);
  std::uint64_t count = 0;
  for (std::uint64_t i = 2; i < limit; ++i) {
    if (composite[i]) continue;
    ++count;
    for (std::uint64_t j = i * i; j < limit; j += i)
      composite[j] = true;
  }
  return count;
}

std::uint64_t count_primes_in(std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t count = 0;
  for (std::uint64_t n = std::max<std::uint64_t>(lo, 2); n < hi; ++n) {
    if (n < 4) {
      ++count;
      continue;
    }
    if (n % 2 == 0 || n % 3 == 0) continue;
    bool prime = true;
    for (std::uint64_t d = 5; d * d <= n; d += 6)
      if (n % d == 0 || n % (d + 2) == 0) {
        prime = false;
        break;
      }
    count += prime ? 1 : 0;
  }
  return count;
}

} // namespace af::demo
