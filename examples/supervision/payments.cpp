// The payments example: a small supervision tree (rest_for_one: ledger, gateway, payments) in
// which `payments` charges through a flaky `gateway` with a retry policy and a circuit breaker,
// and records each charge in the `ledger`. It crashes the ledger on purpose, watches the tree
// restart it and everything started after it, takes the gateway down to open the breaker, and
// prints the tree. Exits 0 when every check passes. docs/supervision.md walks through it.
#include "af/node.hpp"
#include "af/sup/circuit_breaker.hpp"
#include "af/sup/retry.hpp"
#include "af/sup/supervisor.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

using google::protobuf::BoolValue;
using google::protobuf::Int64Value;
using google::protobuf::StringValue;
using google::protobuf::UInt64Value;
using namespace std::chrono_literals;

namespace {

StringValue str(std::string v) {
  StringValue s;
  s.set_value(std::move(v));
  return s;
}

/// A payment provider that is busy now and then (and fully down during an "outage").
class gateway : public af::agent_base<gateway> {
public:
  explicit gateway(double busy_ratio) : busy_ratio_(busy_ratio) {}
  static void define(af::handlers<gateway>& h) {
    h.kind("payments.gateway").on(&gateway::on_charge).on(&gateway::on_outage);
  }
  af::expected<StringValue> on_charge(af::context& ctx, const StringValue& m) {
    if (outage_ || ctx.rng().uniform01() < busy_ratio_)
      return af::error{af::errc::transient, "gateway: provider busy"};
    return str("charged " + m.value());
  }
  void on_outage(af::context&, const BoolValue& on) { outage_ = on.value(); }

private:
  double busy_ratio_;
  bool outage_ = false;
};

/// Counts recorded charges. An entry "bad" hits a bug: the handler throws and the agent crashes.
class ledger : public af::agent_base<ledger> {
public:
  static void define(af::handlers<ledger>& h) { h.kind("payments.ledger").on(&ledger::on_record); }
  void recover(af::context& ctx, const af::restart_info& info) override {
    ctx.log().info("ledger_recovered", "ledger restarted with fresh state",
                   {{"restarts", info.restarts}, {"last_exit", info.last_exit}});
  }
  af::expected<Int64Value> on_record(af::context&, const StringValue& m) {
    if (m.value() == "bad") throw std::logic_error("ledger: malformed entry");
    Int64Value n;
    n.set_value(++entries_);
    return n;
  }

private:
  std::int64_t entries_ = 0;
};

/// Charges through the gateway (retry with backoff, behind a circuit breaker), then records the
/// charge in the ledger and replies.
class payments : public af::agent_base<payments> {
public:
  static void define(af::handlers<payments>& h) {
    h.kind("payments.api").on(&payments::on_charge).on(&payments::on_retry);
  }

  void on_start(af::context& ctx) override {
    af::sup::retry_options ro;
    ro.max_attempts = 10;
    ro.budget_min_per_window = 100; // a low-volume caller: the ratio alone would be too tight
    ro.base = 2ms;
    ro.cap = 50ms;
    retry_.emplace("gateway", ro, ctx.clock(), ctx.rng(), ctx.log(), &ctx.metrics());
    af::sup::breaker_options bo;
    bo.consecutive_failures = 5;
    bo.failure_ratio = 0.8; // a busy provider (30%) is normal; an outage is not
    bo.cool_down = 200ms;
    bo.half_open_successes = 2;
    breaker_.emplace("gateway", bo, ctx.clock(), ctx.log(), &ctx.metrics());
  }

  void on_charge(af::context& ctx, const StringValue& m, af::responder<StringValue> reply) {
    auto id = next_++;
    calls_.emplace(id, call{m.value(), 1, std::move(reply)});
    retry_->on_first_attempt();
    attempt(ctx, id);
  }

  void on_retry(af::context& ctx, const UInt64Value& id) { attempt(ctx, id.value()); }

private:
  struct call {
    std::string what;
    std::uint32_t attempt;
    af::responder<StringValue> reply;
  };

  void attempt(af::context& ctx, std::uint64_t id) {
    auto permit = breaker_->acquire();
    if (!permit) return finish(id, permit.error()); // open: fail fast, do not retry
    ctx.ask<StringValue>("gateway", str(calls_.at(id).what), 1s,
                         [this, &ctx, id, p = *permit](af::expected<StringValue> r) {
                           if (!r) {
                             breaker_->on_failure(p, r.error());
                             return retry_or_fail(ctx, id, r.error());
                           }
                           breaker_->on_success(p);
                           record(ctx, id, r->value());
                         });
  }

  void retry_or_fail(af::context& ctx, std::uint64_t id, const af::error& e) {
    auto& c = calls_.at(id);
    auto d = retry_->next(e, c.attempt);
    if (!d.retry()) return finish(id, retry_->give_up_error(d, e));
    ++c.attempt;
    UInt64Value token;
    token.set_value(id);
    ctx.schedule(d.delay, token);
  }

  void record(af::context& ctx, std::uint64_t id, std::string charged) {
    ctx.ask<Int64Value>(
        "ledger", str(charged), 1s, [this, id, charged](af::expected<Int64Value> n) {
          if (!n) return finish(id, n.error());
          finish(id, str(charged + " (ledger entry " + std::to_string(n->value()) + ")"));
        });
  }

  void finish(std::uint64_t id, af::expected<StringValue> result) {
    auto it = calls_.find(id);
    if (result)
      it->second.reply.reply(std::move(*result));
    else
      it->second.reply.fail(std::move(result).error());
    calls_.erase(it);
  }

  std::optional<af::sup::retry_policy> retry_;
  std::optional<af::sup::circuit_breaker> breaker_;
  std::map<std::uint64_t, call> calls_;
  std::uint64_t next_ = 1;
};

/// Waits until `name` answers a charge (the tree may be restarting it).
bool charge_ok(af::node& n, const std::string& what) {
  for (int i = 0; i < 500; ++i) {
    if (n.ask<StringValue>("payments", str(what), 2s)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

} // namespace

int main() {
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) ++failures;
    std::cout << (ok ? "  ok    " : "  FAIL  ") << what << '\n';
  };

  // A fixed seed makes the gateway's busy answers the same on every run.
  auto cfg =
      af::config::load({.file = {},
                        .env = af::config::process_environment(),
                        .flags = {{"rng.seed", "7", "example"}, {"log.level", "warn", "example"}}});
  if (!cfg) {
    std::cerr << "config: " << cfg.error().to_string() << '\n';
    return 2;
  }
  auto started =
      af::node::start({.cfg = std::move(*cfg), .svc = {}, .log = {}, .system_services = {}});
  if (!started) {
    std::cerr << "node: " << started.error().to_string() << '\n';
    return 1;
  }
  af::node& n = **started;

  // The tree: if the ledger fails, the gateway and payments (started after it) restart too.
  af::sup::supervisor_spec spec;
  spec.name = "payments.sup";
  spec.policy.how = af::sup::strategy::rest_for_one;
  spec.policy.limits = {5, 10s};
  spec.children.push_back(af::sup::agent_child<ledger>("ledger"));
  spec.children.push_back(af::sup::agent_child<gateway>("gateway", 0.3));
  spec.children.push_back(af::sup::agent_child<payments>("payments"));
  auto sup_ref = n.start_child(af::sup::supervisor_child(spec));
  if (!sup_ref) {
    std::cerr << "start payments.sup: " << sup_ref.error().to_string() << '\n';
    return 1;
  }
  af::sup::supervisor_ref tree{n, *sup_ref};

  std::cout << "1. 20 charges through a gateway that is busy 30% of the time\n";
  int charged = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = n.ask<StringValue>("payments", str("order-" + std::to_string(i)), 5s);
    if (r)
      ++charged;
    else
      std::cout << "        order-" << i << ": " << r.error().to_string() << '\n';
  }
  check(charged == 20, std::to_string(charged) + "/20 charges succeeded (retried with backoff)");

  std::cout << "2. the ledger crashes on a malformed entry\n";
  auto bad = n.ask<Int64Value>("ledger", str("bad"), 2s);
  check(!bad && bad.error().code() == af::errc::internal,
        "the crashing call got an internal error");
  check(charge_ok(n, "after-crash"), "payments answers again after the restart");
  auto w = tree.which_children();
  check(w && w->children_size() == 3, "payments.sup still has 3 children");
  if (w) {
    for (const auto& c : w->children())
      check(c.restarts() == 1 && c.state() == "running",
            c.id() + " restarted once (rest_for_one), last exit: " + c.last_exit());
  }

  std::cout << "3. a gateway outage opens the circuit breaker\n";
  BoolValue on;
  on.set_value(true);
  n.tell(*n.lookup("gateway"), on);
  std::string last_error;
  for (int i = 0; i < 4; ++i) {
    auto r = n.ask<StringValue>("payments", str("during-outage"), 5s);
    if (!r) last_error = r.error().to_string();
  }
  check(last_error.find("circuit_breaker 'gateway': open") != std::string::npos,
        "charges fail fast: " + last_error);
  on.set_value(false);
  n.tell(*n.lookup("gateway"), on);
  std::this_thread::sleep_for(250ms); // the breaker's cool-down
  check(charge_ok(n, "after-outage") && charge_ok(n, "after-outage-2"),
        "after the cool-down, two good trial calls close the breaker");
  std::string state_line;
  std::istringstream metrics_text{n.metrics().serialize_text()};
  for (std::string line; std::getline(metrics_text, line);)
    if (line.starts_with("af_circuit_breaker_state{") && line.find("gateway") != std::string::npos)
      state_line = line;
  check(state_line.ends_with(" 0"), "metric: " + state_line + " (0 = closed)");

  std::cout << "\n" << af::sup::render_tree(*tree.tree()) << "\n";
  std::cout << (failures == 0 ? "all checks passed" : "some checks FAILED") << '\n';
  return failures == 0 ? 0 : 1;
}
