#include "sim_agents.hpp"

#include "af/duration_text.hpp"
#include "af/plan/executor.hpp"
#include "af/v1/exec.pb.h"
#include "plan/std_agents.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <optional>
#include <set>

namespace af::sim::detail {

namespace {

using nlohmann::json;
using v1::StepOutput;
using v1::StepRequest;

/// A duration param ("250ms") or the default; `validation` naming the population otherwise.
expected<duration> duration_param(const population_spec& p, const char* key, duration dflt) {
  auto it = p.params.find(key);
  if (it == p.params.end()) return dflt;
  if (it->is_string())
    if (auto d = af::parse_duration(it->get<std::string>()); d && *d >= duration::zero())
      return *d;
  return validation_error(p.where + ": population '" + p.name + "': params." + key
                          + ": expected a duration such as \"250ms\", got " + it->dump());
}

expected<double> number_param(const population_spec& p, const char* key, double dflt, double lo,
                              double hi) {
  auto it = p.params.find(key);
  if (it == p.params.end()) return dflt;
  if (it->is_number() && it->get<double>() >= lo && it->get<double>() <= hi)
    return it->get<double>();
  return validation_error(p.where + ": population '" + p.name + "': params." + key
                          + ": expected a number in [" + json(lo).dump() + ", " + json(hi).dump()
                          + "], got " + it->dump());
}

expected<std::string> name_param(const population_spec& p, const char* key, std::string dflt,
                                 const sim_state& st) {
  auto it = p.params.find(key);
  std::string v = std::move(dflt);
  if (it != p.params.end()) {
    if (!it->is_string())
      return validation_error(p.where + ": population '" + p.name + "': params." + key
                              + ": expected a population name, got " + it->dump());
    v = it->get<std::string>();
  }
  if (!st.populations.contains(v))
    return validation_error(p.where + ": population '" + p.name + "': params." + key
                            + ": no population named '" + v + "'");
  return v;
}

template <class... Ts>
std::optional<error> first_error(const Ts&... results) {
  std::optional<error> out;
  ((!out && !results ? (void)out.emplace(results.error()) : (void)0), ...);
  return out;
}

// --- sim.worker ------------------------------------------------------------------------------

struct worker_params {
  double forward = 0;
  std::uint32_t max_hops = 2;
  std::string peers;
  duration work{};
  duration forward_timeout = std::chrono::seconds(1);
};

/// Answers a task {"task": ID, "value": N} with {"task": ID, "result": 2N+1, "by": NAME}, after
/// `work` of virtual time; with probability `forward` it hands the task to a random agent of
/// the `peers` population instead (usually on another node) and relays that answer.
class worker_agent : public agent_base<worker_agent> {
public:
  worker_agent(worker_params p, const sim_state* st) : p_(std::move(p)), st_(st) {}

  static void define(handlers<worker_agent>& h) {
    h.kind("sim.worker")
        .on(&worker_agent::on_step)
        .on(&worker_agent::on_done)
        .on(&worker_agent::on_cancel);
  }

  void on_step(context& ctx, const StepRequest& req, responder<StepOutput> rp) {
    auto in = json::parse(req.input_json(), nullptr, false);
    if (in.is_discarded() || !in.is_object() || !in.contains("value")
        || !in["value"].is_number_integer())
      return rp.fail(validation_error("sim.worker '" + ctx.name()
                                      + "': input: expected {\"task\": ID, \"value\": integer}"));
    const auto hops = in.value("hops", 0U);
    if (p_.forward > 0 && hops < p_.max_hops && ctx.rng().uniform01() < p_.forward) {
      const auto& peers = st_->populations.at(p_.peers);
      const auto& to = peers[ctx.rng().uniform(peers.size())];
      if (to != ctx.self())
        if (auto ref = ctx.lookup(to)) {
          StepRequest fwd = req;
          in["hops"] = hops + 1;
          fwd.set_input_json(in.dump());
          ctx.ask<StepOutput>(*ref, std::move(fwd), p_.forward_timeout,
                              [rp](expected<StepOutput> r) mutable {
                                if (r)
                                  rp.reply(std::move(*r));
                                else
                                  rp.fail(std::move(r).error());
                              });
          return;
        }
    }
    if (p_.work > duration::zero()) {
      const auto token = ++last_token_;
      pending_.emplace(token, std::make_pair(std::move(in), std::move(rp)));
      google::protobuf::UInt64Value t;
      t.set_value(token);
      ctx.schedule(p_.work, t);
      return;
    }
    if (rp.pending()) rp.reply(answer(ctx, in));
  }

  void on_done(context& ctx, const google::protobuf::UInt64Value& t) {
    auto it = pending_.find(t.value());
    if (it == pending_.end()) return;
    auto [in, rp] = std::move(it->second);
    pending_.erase(it);
    if (rp.pending()) rp.reply(answer(ctx, in));
  }

  void on_cancel(context&, const v1::StepCancel&) {}

private:
  static StepOutput answer(context& ctx, const json& in) {
    StepOutput out;
    out.set_output_json(json{{"task", in.value("task", json{})},
                             {"result", in["value"].get<std::int64_t>() * 2 + 1},
                             {"by", ctx.name()}}
                            .dump());
    return out;
  }

  worker_params p_;
  const sim_state* st_;
  std::uint64_t last_token_ = 0;
  std::map<std::uint64_t, std::pair<json, responder<StepOutput>>> pending_;
};

// --- sim.client ------------------------------------------------------------------------------

struct client_params {
  std::string target;
  std::uint64_t tasks = 100;
  duration interval = std::chrono::milliseconds(10);
  duration timeout = std::chrono::seconds(2);
  std::uint32_t retries = 2;
};

/// Issues `tasks` tasks, one every `interval`, each to a random agent of `target` (any node),
/// with `retries` more tries (each to another random agent) when an ask fails; records in the
/// task book how each ended. A restarted client reports its unanswered tasks as failed and goes
/// on with the next task.
class client_agent : public agent_base<client_agent> {
public:
  client_agent(client_params p, sim_state* st) : p_(std::move(p)), st_(st) {}

  static void define(handlers<client_agent>& h) {
    h.kind("sim.client").on(&client_agent::on_tick);
  }

  void on_start(context& ctx) override {
    auto& book = st_->tasks;
    // Asks of a previous instance died with it: they end as failed, once.
    if (auto it = outstanding().find(ctx.name()); it != outstanding().end()) {
      for (const auto& id : it->second) {
        auto& t = book.tasks[id];
        ++t.failures;
        ++book.failed;
      }
      outstanding().erase(it);
    }
    tick(ctx);
  }

  void on_tick(context& ctx, const google::protobuf::UInt64Value&) {
    auto& issued = st_->tasks.issued[ctx.name()];
    if (issued >= p_.tasks) return;
    const auto seq = issued++;
    const auto id = ctx.name() + "/" + std::to_string(seq);
    auto& t = st_->tasks.tasks[id];
    t.value = static_cast<std::int64_t>(ctx.rng().uniform(1'000'000));
    outstanding()[ctx.name()].insert(id);
    send(ctx, id, 1);
    tick(ctx);
  }

private:
  std::map<std::string, std::set<std::string>>& outstanding() { return st_->client_outstanding; }

  void tick(context& ctx) {
    if (st_->tasks.issued[ctx.name()] >= p_.tasks) return;
    ctx.schedule(p_.interval, google::protobuf::UInt64Value{});
  }

  void send(context& ctx, const std::string& id, std::uint32_t attempt) {
    const auto& targets = st_->populations.at(p_.target);
    const auto& to = targets[ctx.rng().uniform(targets.size())];
    auto& t = st_->tasks.tasks[id];
    ++t.attempts;
    StepRequest req;
    req.set_execution_id("sim");
    req.set_step_id(id);
    req.set_attempt(attempt);
    req.set_idempotency_key(id + "#" + std::to_string(attempt));
    req.set_input_json(json{{"task", id}, {"value", t.value}}.dump());
    auto done = [this, &ctx, id, attempt](expected<StepOutput> r) {
      if (!r && attempt <= p_.retries) return send(ctx, id, attempt + 1);
      finish(id, std::move(r));
    };
    auto ref = ctx.lookup(to);
    if (!ref) return done(std::move(ref).error());
    ctx.ask<StepOutput>(*ref, std::move(req), p_.timeout, std::move(done));
  }

  void finish(const std::string& id, expected<StepOutput> r) {
    auto& book = st_->tasks;
    auto& t = book.tasks[id];
    auto& mine = outstanding()[client_name_of(id)];
    const bool was_outstanding = mine.erase(id) > 0;
    if (!r) {
      ++t.failures;
      ++book.failed;
      if (!was_outstanding)
        book.problem(st_->elapsed(), "task " + id + " failed after it had ended");
      return;
    }
    ++t.answers;
    ++book.answered;
    if (t.answers + t.failures > 1 || !was_outstanding) {
      ++book.twice;
      book.problem(st_->elapsed(), "task " + id + " was answered after it had ended");
    }
    auto out = json::parse(r->output_json(), nullptr, false);
    if (out.is_object() && out.contains("result")
        && (!out["result"].is_number_integer() || out["result"].get<std::int64_t>() != t.value * 2 + 1)) {
      t.wrong = true;
      ++book.wrong;
      book.problem(st_->elapsed(), "task " + id + ": wrong answer " + out["result"].dump()
                                       + " for value " + std::to_string(t.value) + " (from "
                                       + out.value("by", std::string{"?"}) + ")");
    }
  }

  static std::string client_name_of(const std::string& id) { return id.substr(0, id.rfind('/')); }

  client_params p_;
  sim_state* st_;
};

// --- sim.submitter ---------------------------------------------------------------------------

/// Starts this node's share of the scenario's executions at their times; after a restart it
/// starts them again (af.exec answers an execution id it already has with that execution).
class submitter_agent : public agent_base<submitter_agent> {
public:
  explicit submitter_agent(std::shared_ptr<const std::vector<submission>> mine)
      : mine_(std::move(mine)) {}

  static void define(handlers<submitter_agent>& h) {
    h.kind("sim.submitter").on(&submitter_agent::on_due);
  }

  void on_start(context& ctx) override {
    for (std::size_t i = 0; i < mine_->size(); ++i) {
      google::protobuf::UInt64Value t;
      t.set_value(i);
      ctx.schedule(std::max((*mine_)[i].at - ctx.monotonic(), duration::zero()), t);
    }
  }

  void on_due(context& ctx, const google::protobuf::UInt64Value& t) {
    const auto i = t.value();
    if (i >= mine_->size()) return;
    const auto& s = (*mine_)[i];
    v1::StartExecution start;
    *start.mutable_plan() = *s.plan;
    start.set_inputs_json(s.inputs_json);
    start.set_execution_id(s.execution_id);
    start.set_by("sim");
    ctx.ask<v1::ExecutionInfo>(plan::k_exec_agent, std::move(start), std::chrono::seconds(10),
                               [&ctx, i](expected<v1::ExecutionInfo> r) {
                                 if (r) return;
                                 // af.exec restarting, the journal busy: try again shortly.
                                 google::protobuf::UInt64Value again;
                                 again.set_value(i);
                                 ctx.schedule(std::chrono::milliseconds(200), again);
                               });
  }

private:
  std::shared_ptr<const std::vector<submission>> mine_;
};

// --- the in-memory ledger --------------------------------------------------------------------

class memory_ledger_db final : public plan::detail::ledger_db {
public:
  explicit memory_ledger_db(std::shared_ptr<memory_ledger> l) : l_(std::move(l)) {}
  expected<bool> insert(const plan::detail::ledger_row& row) override {
    auto [it, inserted] = l_->rows.try_emplace(row.key, row);
    if (!inserted) ++l_->duplicates;
    return inserted;
  }

private:
  std::shared_ptr<memory_ledger> l_;
};

} // namespace

void task_book::problem(duration at, std::string what) {
  if (!first_problem.empty()) return;
  first_problem = std::move(what);
  first_problem_at = at;
}

bool is_sim_type(std::string_view type) {
  return type == "sim.worker" || type == "sim.client";
}

expected<std::function<std::unique_ptr<agent>()>>
population_factory(const population_spec& p, sim_state& st, const plan::agent_types& types) {
  auto known = [&](std::initializer_list<const char*> keys) -> status {
    for (const auto& [k, v] : p.params.items()) {
      bool ok = false;
      for (const auto* key : keys)
        ok = ok || k == key;
      if (!ok) {
        std::string list;
        for (const auto* key : keys)
          list += std::string{list.empty() ? "" : ", "} + key;
        return validation_error(p.where + ": population '" + p.name + "': params." + k
                                + ": unknown parameter of " + p.type + " (known: " + list + ")");
      }
    }
    return {};
  };
  if (p.type == "sim.worker") {
    if (auto s = known({"forward", "max_hops", "peers", "work", "forward_timeout"}); !s)
      return s.error();
    worker_params w;
    auto fwd = number_param(p, "forward", 0, 0, 1);
    auto hops = number_param(p, "max_hops", 2, 0, 64);
    auto peers = name_param(p, "peers", p.name, st);
    auto work = duration_param(p, "work", duration::zero());
    auto ft = duration_param(p, "forward_timeout", std::chrono::seconds(1));
    if (auto e = first_error(fwd, hops, peers, work, ft)) return *e;
    w.forward = *fwd;
    w.max_hops = static_cast<std::uint32_t>(*hops);
    w.peers = *peers;
    w.work = *work;
    w.forward_timeout = *ft;
    return sup::agent_factory<worker_agent>(std::move(w), static_cast<const sim_state*>(&st));
  }
  if (p.type == "sim.client") {
    if (auto s = known({"target", "tasks", "interval", "timeout", "retries"}); !s)
      return s.error();
    client_params c;
    auto target = name_param(p, "target", "", st);
    auto tasks = number_param(p, "tasks", 100, 0, 1e9);
    auto interval = duration_param(p, "interval", std::chrono::milliseconds(10));
    auto timeout = duration_param(p, "timeout", std::chrono::seconds(2));
    auto retries = number_param(p, "retries", 2, 0, 100);
    if (auto e = first_error(target, tasks, interval, timeout, retries)) return *e;
    if (*interval <= duration::zero())
      return validation_error(p.where + ": population '" + p.name
                              + "': params.interval: must be more than 0");
    c.target = *target;
    c.tasks = static_cast<std::uint64_t>(*tasks);
    c.interval = *interval;
    c.timeout = *timeout;
    c.retries = static_cast<std::uint32_t>(*retries);
    return sup::agent_factory<client_agent>(std::move(c), &st);
  }
  const auto* t = types.find(p.type);
  if (t == nullptr) {
    std::string list = "sim.client, sim.worker";
    for (const auto& n : types.names())
      list += ", " + n;
    return validation_error(p.where + ": population '" + p.name + "': unknown agent type '"
                            + p.type + "' (known: " + list + ")");
  }
  if (!p.params.empty())
    return validation_error(p.where + ": population '" + p.name + "': params: agent type '"
                            + p.type + "' takes no parameters in a scenario");
  return t->factory;
}

std::function<std::unique_ptr<agent>()> submitter_factory(std::vector<submission> mine) {
  return sup::agent_factory<submitter_agent>(
      std::make_shared<const std::vector<submission>>(std::move(mine)));
}

plan::agent_type memory_ledger_type(std::shared_ptr<memory_ledger> ledger) {
  return plan::detail::ledger_agent_type(
      [ledger]() -> expected<std::unique_ptr<plan::detail::ledger_db>> {
        return std::unique_ptr<plan::detail::ledger_db>{std::make_unique<memory_ledger_db>(ledger)};
      },
      "the simulation's ledger");
}

} // namespace af::sim::detail
