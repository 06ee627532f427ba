// std.ledger: a real side effect for plans and crash tests. Each step inserts one row keyed by
// its idempotency key into the `ledger` table (docs/planning.md, "The `ledger` table"); a key
// applied before is reported as a duplicate, never written twice. Its handlers block on SQL, so
// the agent runs detached.
#include "plan/std_agents.hpp"

#include "af/metrics.hpp"
#include "af/v1/exec.pb.h"
#include "plan/ledger_db.hpp"
#include "plan/step_io.hpp"

namespace af::plan {

namespace {

using nlohmann::json;

class ledger_agent : public agent_base<ledger_agent> {
public:
  ledger_agent(detail::ledger_opener open, std::string shown)
      : open_(std::move(open)), shown_(std::move(shown)) {}

  static void define(handlers<ledger_agent>& h) {
    h.kind("std.ledger").on(&ledger_agent::on_step).on(&ledger_agent::on_cancel);
  }

  void on_start(context& ctx) override {
    if (auto c = ctx.metrics().counter("af_ledger_duplicates_total",
                                       "std.ledger steps whose idempotency key was applied before "
                                       "(nothing written)"))
      duplicates_ = *c;
    // Connect early so that a wrong URL shows in the log at once; a failure is retried on the
    // first step.
    if (auto db = open_())
      db_ = std::move(*db);
    else
      ctx.log().warn("ledger_unavailable", db.error().message(), {{"ledger", shown_}});
  }

  expected<v1::StepOutput> on_step(context& ctx, const v1::StepRequest& req) {
    constexpr std::string_view who = "std.ledger";
    if (req.idempotency_key().empty())
      return validation_error("std.ledger: idempotency_key: must not be empty");
    auto in = detail::parse_object_input(who, req.input_json());
    if (!in) return std::move(in).error();
    json amount = 0;
    if (auto it = in->find("amount"); it != in->end() && !it->is_null()) {
      if (!it->is_number()) return detail::field_error(who, "input.amount", "a number", &*it);
      amount = *it;
    }
    if (!db_) {
      auto db = open_();
      if (!db) return std::move(db).error();
      db_ = std::move(*db);
    }
    detail::ledger_row row{req.idempotency_key(), req.execution_id(), req.step_id(), amount,
                           ctx.now().time_since_epoch().count()};
    auto applied = db_->insert(row);
    if (!applied) {
      // Start over with a fresh connection next time: this one may be broken.
      if (applied.error().code() == errc::transient) db_.reset();
      return std::move(applied).error();
    }
    if (*applied) return detail::make_output(json{{"applied", true}, {"key", row.key}});
    duplicates_.inc();
    ctx.log().warn("ledger_duplicate", "idempotency key applied before: nothing written",
                   {{"key", row.key}, {"step_id", row.step_id}, {"ledger", shown_}});
    return detail::make_output(json{{"applied", false}, {"duplicate", true}, {"key", row.key}});
  }

  void on_cancel(context&, const v1::StepCancel&) {} // an insert is never left in flight

private:
  detail::ledger_opener open_;
  std::string shown_;
  std::unique_ptr<detail::ledger_db> db_;
  counter_handle duplicates_;
};

} // namespace

namespace detail {

expected<agent_type> ledger_agent_type(const std::string& ledger_url) {
  auto target = resolve_ledger_url(ledger_url);
  if (!target) return std::move(target).error();
  auto shown = target->shown;
  auto t = ledger_agent_type([target = std::move(*target)] { return open_ledger(target); },
                             std::move(shown));
  t.detached = true;
  return t;
}

agent_type ledger_agent_type(ledger_opener open, std::string shown) {
  agent_type t;
  t.factory = sup::agent_factory<ledger_agent>(std::move(open), std::move(shown));
  t.description = "inserts (key, execution_id, step_id, amount, ts) into the ledger table once "
                  "per idempotency key";
  return t;
}

} // namespace detail

} // namespace af::plan
