// Scheduler choice (docs/architecture.md, "Scheduler"): agent -> agent ask round trips and
// thread -> agent round trips (node::ask from a plain thread, as the CLI and HTTP handlers do)
// under CAF's work-stealing and work-sharing policies, 2 threads each. The sharing rows carry
// the stealing figure of the same run as their baseline.
//
//   af_bench_scheduler [--runs 5] [--n 20000]
#include "af/node.hpp"
#include "bench_common.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace {

using google::protobuf::Int64Value;
using steady = std::chrono::steady_clock;

class ponger : public af::agent_base<ponger> {
public:
  static void define(af::handlers<ponger>& h) { h.kind("bench.ponger").on(&ponger::pong); }
  af::expected<Int64Value> pong(af::context&, const Int64Value& v) { return v; }
};

/// Asks the ponger `n` times in a row and answers with nothing; the samples go to `out`.
class pinger : public af::agent_base<pinger> {
public:
  explicit pinger(std::vector<double>* out) : out_(out) {}
  static void define(af::handlers<pinger>& h) { h.kind("bench.pinger").on(&pinger::go); }
  void go(af::context& ctx, const Int64Value& n, af::responder<Int64Value> r) {
    left_ = n.value();
    done_ = std::move(r);
    target_ = *ctx.lookup("ponger");
    next(ctx);
  }

private:
  void next(af::context& ctx) {
    if (left_-- == 0) return done_->reply(Int64Value{});
    auto t0 = steady::now();
    ctx.ask<Int64Value>(
        target_, Int64Value{}, std::chrono::seconds(5),
        [this, t0, &ctx](af::expected<Int64Value> r) {
          out_->push_back(std::chrono::duration<double, std::micro>(steady::now() - t0).count());
          if (r)
            next(ctx);
          else
            done_->fail(r.error());
        });
  }
  std::vector<double>* out_;
  std::int64_t left_ = 0;
  std::optional<af::responder<Int64Value>> done_;
  af::agent_ref target_;
};

struct sample {
  double p50 = 0, p99 = 0;
};

std::pair<sample, sample> run_once(const std::string& policy, int n) {
  af::config_sources src;
  src.flags = {{"scheduler.policy", policy, "bench"}, {"log.level", "warn", "bench"}};
  af::node::options opt;
  opt.cfg = *af::config::load(src);
  auto node = std::move(*af::node::start(std::move(opt)));
  std::vector<double> a2a, t2a;
  a2a.reserve(n);
  t2a.reserve(n);
  auto pong = *node->spawn<ponger>("ponger");
  auto ping = *node->spawn<pinger>("pinger", &a2a);
  Int64Value count;
  count.set_value(n);
  (void)node->ask<Int64Value>(ping, count, std::chrono::minutes(2));
  for (int i = 0; i < n; ++i) {
    auto t0 = steady::now();
    (void)node->ask<Int64Value>(pong, Int64Value{}, std::chrono::seconds(5));
    t2a.push_back(std::chrono::duration<double, std::micro>(steady::now() - t0).count());
  }
  return {{bench::percentile(a2a, 0.5), bench::percentile(a2a, 0.99)},
          {bench::percentile(t2a, 0.5), bench::percentile(t2a, 0.99)}};
}

nlohmann::json side(const std::vector<sample>& s, int n) {
  std::vector<double> p50, p99;
  for (auto& x : s) {
    p50.push_back(x.p50);
    p99.push_back(x.p99);
  }
  auto med = [](std::vector<double> v) { return bench::percentile(std::move(v), 0.5); };
  return {{"n", n * static_cast<int>(s.size())},
          {"median", med(p50)},
          {"p50", med(p50)},
          {"p99", med(p99)},
          {"min", *std::min_element(p50.begin(), p50.end())},
          {"max", *std::max_element(p50.begin(), p50.end())},
          {"unit", "us"}};
}

} // namespace

int main(int argc, char** argv) {
  bench::exit_if_help(argc, argv);
  int runs = 5, n = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--n") == 0) n = std::stoi(argv[i + 1]);
  }
  std::vector<sample> a2a[2], t2a[2];
  const char* policies[2] = {"stealing", "sharing"};
  for (int r = 0; r < runs; ++r)
    for (int p = 0; p < 2; ++p) {
      auto [a, t] = run_once(policies[p], n);
      a2a[p].push_back(a);
      t2a[p].push_back(t);
    }
  for (auto [what, data] : {std::pair{"actor_actor", a2a}, std::pair{"thread_actor", t2a}}) {
    auto steal = side(data[0], n);
    auto share = side(data[1], n);
    auto row = steal;
    row["name"] = std::string{"scheduler."} + what + ".stealing";
    std::cout << row.dump() << "\n";
    row = share;
    row["name"] = std::string{"scheduler."} + what + ".sharing";
    row["baseline"] = steal;
    row["ratio"] = share["median"].get<double>() / steal["median"].get<double>();
    row["target"] = "informational";
    std::cout << row.dump() << std::endl;
  }
}
