// FSM plans: one state at a time; a state's step output names its outcome (`outcome` in an
// object output, else "ok"; a failed step is "error"), and `on` maps the outcome to the next
// state ("*" matches any). Each entry is step "STATE#n" (n: transitions so far), so a loop's
// visits are distinct steps; max_transitions stops a runaway loop.
#include "plan/engine.hpp"

#include <optional>

namespace af::plan {

namespace {

class fsm_engine final : public engine {
public:
  fsm_engine(std::shared_ptr<const v1::ExecutionStarted> s, error& err) : engine(std::move(s)) {
    const auto& f = ir().fsm();
    for (const auto& st : f.states())
      states_.emplace(st.name(), &st);
    if (!states_.contains(f.initial())) {
      err = validation_error("plan '" + ir().name() + "': initial state '" + f.initial()
                             + "' is not a state");
      ok_ = false;
      return;
    }
    max_ = f.max_transitions() > 0 ? f.max_transitions() : 1000;
    next_ = f.initial();
  }
  bool ok_ = true;

private:
  void plan(std::vector<v1::ExecEvent>& out) override {
    plan_pending(out);
    while (next_ && !finished()) {
      const std::string name = *next_;
      next_.reset();
      enter(out, name);
    }
  }

  void enter(std::vector<v1::ExecEvent>& out, const std::string& name) {
    const v1::FsmState& st = *states_.at(name);
    current_ = name;
    if (st.call().kind() == v1::STEP_NONE || st.call().kind() == v1::STEP_KIND_UNSPECIFIED) {
      if (st.final()) {
        end(out, st, nullptr);
        return;
      }
      take(out, st, "ok", nullptr);
      return;
    }
    const std::string id = name + "#" + std::to_string(transitions_);
    auto input = render_input(st.call(), id, nullptr);
    if (!input) {
      fail_step(out, id, st.call(), input.error(), name);
      return;
    }
    schedule(out, id, 1, st.call(), *input, name);
  }

  void on_success(const v1::StepScheduled& s, const nlohmann::json& output) override {
    const v1::FsmState& st = *states_.at(s.parent_step());
    set_output(st.name(), output); // ${steps.STATE.output}: the state's latest output
    std::string outcome = "ok";
    if (output.is_object() && output.contains("outcome") && output["outcome"].is_string())
      outcome = output["outcome"].get<std::string>();
    pending_ = {st.name(), outcome, output, {}};
  }

  void on_failure(const v1::StepScheduled& s, const v1::StepFailed& f) override {
    pending_ = {s.parent_step(), "error", nullptr,
                "state '" + s.parent_step() + "' failed: " + f.error_kind() + ": " + f.message()};
  }

  // Results are taken in decide() (plan), so a paused execution does not move on.
  struct result {
    std::string state, outcome;
    nlohmann::json output;
    std::string error;
  };

  void take(std::vector<v1::ExecEvent>& out, const v1::FsmState& st, const std::string& outcome,
            const std::string* err) {
    const v1::FsmTransition* t = nullptr;
    for (const auto& tr : st.on())
      if (tr.outcome() == outcome) t = &tr;
    if (t == nullptr && outcome != "error")
      for (const auto& tr : st.on())
        if (tr.outcome() == "*") t = &tr;
    if (t == nullptr) {
      if (err != nullptr) {
        fail_execution(out, error{errc::internal, *err}, st.name());
        return;
      }
      std::string have;
      for (const auto& tr : st.on())
        have += (have.empty() ? "" : ", ") + tr.outcome();
      fail_execution(out,
                     validation_error("state '" + st.name() + "' ended with outcome '" + outcome
                                      + "' and has no transition for it (it has: "
                                      + (have.empty() ? "none" : have) + ")"),
                     st.name());
      return;
    }
    if (++transitions_ > max_) {
      fail_execution(out,
                     validation_error("max_transitions (" + std::to_string(max_)
                                      + ") exceeded at state '" + st.name() + "' -> '" + t->next()
                                      + "': a runaway loop?"),
                     st.name());
      return;
    }
    next_ = t->next();
  }

  void end(std::vector<v1::ExecEvent>& out, const v1::FsmState& st, const nlohmann::json* output) {
    if (!ir().outputs_json().empty()) {
      auto tmpl = nlohmann::json::parse(ir().outputs_json(), nullptr, false);
      auto r = render(tmpl, scope());
      if (!r) {
        fail_execution(out, validation_error("plan outputs: " + r.error().message()), {});
        return;
      }
      complete(out, *r);
      return;
    }
    nlohmann::json o = {{"state", st.name()}, {"transitions", transitions_}};
    if (output != nullptr) o["output"] = *output;
    else if (const auto* last = output_of(last_state_)) o["output"] = *last;
    complete(out, o);
  }

  void plan_pending(std::vector<v1::ExecEvent>& out) {
    if (!pending_) return;
    result r = std::move(*pending_);
    pending_.reset();
    const v1::FsmState& st = *states_.at(r.state);
    last_state_ = r.state;
    if (r.error.empty() && st.final()) {
      end(out, st, &r.output);
      return;
    }
    take(out, st, r.outcome, r.error.empty() ? nullptr : &r.error);
  }

  std::map<std::string, const v1::FsmState*> states_;
  std::optional<std::string> next_;
  std::optional<result> pending_;
  std::string current_, last_state_;
  std::uint32_t transitions_ = 0;
  std::uint32_t max_ = 1000;
};

} // namespace

std::unique_ptr<engine> make_fsm_engine(std::shared_ptr<const v1::ExecutionStarted> s,
                                         error& err) {
  auto e = std::make_unique<fsm_engine>(std::move(s), err);
  if (!e->ok_) return nullptr;
  return e;
}

} // namespace af::plan
