// Saga plans: the steps run one at a time, in order. When one fails for good (after its retries),
// or the saga is canceled, the saga decides SagaCompensating and runs the compensations of the
// steps that completed, newest first, one at a time; a compensation is retried (backoff from its
// retry block, whatever the error and the mode) until it succeeds or an operator marks the saga
// stuck. The end is all-completed (ExecutionCompleted) or all-compensated (ExecutionFailed with
// `compensated`). A compensation step is "ID.compensate" ('.' never occurs in a step id).
#include "plan/engine.hpp"

#include <optional>
#include <unordered_map>

namespace af::plan {

namespace {

constexpr std::string_view k_compensate_suffix = ".compensate";

nlohmann::json parse_or_null(const std::string& text) {
  if (text.empty()) return nullptr;
  auto j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? nlohmann::json(text) : j;
}

class saga_engine final : public engine {
public:
  saga_engine(std::shared_ptr<const v1::ExecutionStarted> s, error& err) : engine(std::move(s)) {
    for (const auto& st : ir().saga()) {
      if (!index_.emplace(st.id(), steps_.size()).second) {
        err = validation_error("plan '" + ir().name() + "': step '" + st.id() + "' twice");
        ok_ = false;
        return;
      }
      steps_.push_back(&st);
    }
    if (steps_.empty()) {
      err = validation_error("plan '" + ir().name() + "': a saga without steps");
      ok_ = false;
    }
  }
  bool ok_ = true;

  [[nodiscard]] std::string saga_state() const override {
    switch (status()) {
    case v1::EXEC_COMPLETED:
      return "completed";
    case v1::EXEC_FAILED:
    case v1::EXEC_CANCELED:
      // Ended without finishing its compensations (canceled while compensating, a recovery
      // that could not go on): what is left to undo needs a human.
      return compensated_end_ || (phase_ == phase::forward && done_ == 0) ? "compensated" : "stuck";
    default:
      break;
    }
    if (stuck_) return "stuck";
    return phase_ == phase::compensating ? "compensating" : "running";
  }

private:
  enum class phase : unsigned char { forward, compensating };

  /// A step result, taken in plan() so that a paused saga decides nothing.
  struct result {
    std::size_t index = 0;
    bool compensation = false;
    bool ok = false;
    std::string error;
  };

  void plan(std::vector<v1::ExecEvent>& out) override {
    while (!finished() && !paused()) {
      if (!results_.empty()) {
        result r = std::move(results_.front());
        results_.pop_front();
        take(out, r);
        continue;
      }
      if (phase_ == phase::forward) {
        if (forward_in_flight_) return;
        if (!cancel_reason_.empty()) {
          begin_compensation(out, {}, cancel_reason_);
          continue;
        }
        if (done_ < steps_.size()) {
          start_forward(out, done_);
          continue;
        }
        finish_forward(out);
        return;
      }
      if (compensation_in_flight_) return;
      if (queue_.empty()) {
        end_compensated(out);
        return;
      }
      start_compensation(out, queue_.back());
    }
  }

  void take(std::vector<v1::ExecEvent>& out, const result& r) {
    if (!r.compensation) {
      forward_in_flight_ = false;
      if (r.ok) {
        ++done_;
        return;
      }
      begin_compensation(out, steps_[r.index]->id(),
                         cancel_reason_.empty() ? r.error
                                                : cancel_reason_ + "; meanwhile " + r.error);
      return;
    }
    compensation_in_flight_ = false;
    if (r.ok) {
      queue_.pop_back();
      compensated_.push_back(steps_[r.index]->id());
      return;
    }
    // Only a compensation the engine could not start gets here (its input does not render):
    // retrying cannot help, so the saga waits for an operator (resume tries again).
    stuck_ = true;
    set_paused(true);
  }

  void start_forward(std::vector<v1::ExecEvent>& out, std::size_t i) {
    const auto& st = *steps_[i];
    forward_in_flight_ = true;
    auto input = render_input(st.call(), st.id(), nullptr);
    if (!input) {
      fail_step(out, st.id(), st.call(), input.error(), {});
      return;
    }
    schedule(out, st.id(), 1, st.call(), *input, {});
  }

  void start_compensation(std::vector<v1::ExecEvent>& out, std::size_t i) {
    const auto& st = *steps_[i];
    const std::string id = st.id() + std::string{k_compensate_suffix};
    const std::uint32_t attempt = ++attempts_[id];
    compensation_in_flight_ = true;
    auto input = render_input(st.compensate(), id, nullptr);
    if (!input) {
      fail_step(out, id, st.compensate(), input.error(), st.id(), attempt);
      return;
    }
    schedule(out, id, attempt, st.compensate(), *input, st.id());
  }

  void begin_compensation(std::vector<v1::ExecEvent>& out, const std::string& failed_step,
                          const std::string& reason) {
    phase_ = phase::compensating;
    failed_step_ = failed_step;
    reason_ = reason;
    auto& c = *out.emplace_back().mutable_compensating();
    c.set_step_id(failed_step);
    c.set_reason(reason);
    // queue_ is popped from the back: the newest completed step is undone first.
    for (std::size_t i = 0; i < done_; ++i)
      if (has_compensation(i)) queue_.push_back(i);
    for (auto it = queue_.rbegin(); it != queue_.rend(); ++it)
      c.add_steps(steps_[*it]->id() + std::string{k_compensate_suffix});
  }

  void finish_forward(std::vector<v1::ExecEvent>& out) {
    nlohmann::json o = nlohmann::json::object();
    if (!ir().outputs_json().empty()) {
      auto tmpl = nlohmann::json::parse(ir().outputs_json(), nullptr, false);
      auto r = render(tmpl, scope());
      if (!r) {
        // The saga cannot give its result: it is undone like any other failure.
        begin_compensation(out, {}, "plan outputs: " + r.error().message());
        return;
      }
      o = std::move(*r);
    } else {
      for (const auto* st : steps_)
        if (const auto* v = output_of(st->id())) o[st->id()] = *v;
    }
    complete(out, o);
  }

  void end_compensated(std::vector<v1::ExecEvent>& out) {
    std::string undone;
    for (const auto& id : compensated_)
      undone += (undone.empty() ? "" : ", ") + id;
    const std::string text =
        reason_ + "; the saga was compensated"
        + (undone.empty() ? std::string{" (nothing to undo)"} : " (undone: " + undone + ")");
    compensated_end_ = true;
    fail_execution(out, error{errc::internal, text}, failed_step_);
    out.back().mutable_exec_failed()->set_compensated(true);
  }

  [[nodiscard]] bool has_compensation(std::size_t i) const {
    const auto k = steps_[i]->compensate().kind();
    return k != v1::STEP_NONE && k != v1::STEP_KIND_UNSPECIFIED;
  }

  /// The saga step a step id belongs to, and whether it is its compensation.
  [[nodiscard]] std::pair<std::size_t, bool> locate(const v1::StepScheduled& s) const {
    if (!s.parent_step().empty()) return {index_.at(s.parent_step()), true};
    return {index_.at(s.step_id()), false};
  }

  void on_success(const v1::StepScheduled& s, const nlohmann::json&) override {
    const auto [i, comp] = locate(s);
    if (!comp) inputs_[s.step_id()] = s.input_json(); // parsed when a template reads it
    results_.push_back({i, comp, true, {}});
  }

  void on_failure(const v1::StepScheduled& s, const v1::StepFailed& f) override {
    const auto [i, comp] = locate(s);
    results_.push_back(
        {i, comp, false,
         "step '" + s.step_id() + "' failed: " + f.error_kind() + ": " + f.message()});
  }

  [[nodiscard]] retry_rule retry_rule_for(const v1::StepScheduled& s) const override {
    if (!s.parent_step().empty()) return retry_rule::always; // a compensation
    return cancel_reason_.empty() ? retry_rule::policy : retry_rule::never;
  }

  [[nodiscard]] bool strict_fails_at_once() const override { return false; }

  /// "<execution>/<step>" for every attempt: a participant that deduplicates on the key applies
  /// a step (or a compensation) once, even when an attempt timed out after it was applied and
  /// the retry reaches it (on this node or another).
  [[nodiscard]] std::string key_for(const std::string& step_id, std::uint32_t) const override {
    return started().execution_id() + "/" + step_id;
  }

  std::optional<bool> on_cancel(const v1::ExecutionCanceled& c, std::string* why) override {
    if (phase_ == phase::compensating) return std::nullopt; // ends now, compensations left
    if (!cancel_reason_.empty()) {
      if (why != nullptr) *why = "already canceled: the saga compensates once its step ends";
      return false;
    }
    cancel_reason_ = "canceled by " + c.by() + (c.reason().empty() ? "" : ": " + c.reason());
    if (paused()) set_paused(false); // a canceled saga compensates now
    return true;
  }

  bool on_stuck(const v1::SagaStuck&, std::string* why) override {
    if (phase_ != phase::compensating) {
      if (why != nullptr)
        *why = "the saga is " + saga_state()
               + ", not compensating; only a compensating saga can be marked stuck";
      return false;
    }
    if (stuck_) {
      if (why != nullptr) *why = "the saga is already stuck";
      return false;
    }
    stuck_ = true;
    return true;
  }

  void on_resumed() override { stuck_ = false; }

  [[nodiscard]] const nlohmann::json* input_of(std::string_view id) const override {
    const std::string key{id};
    if (auto it = parsed_inputs_.find(key); it != parsed_inputs_.end()) return &it->second;
    auto it = inputs_.find(key);
    if (it == inputs_.end()) return nullptr;
    return &parsed_inputs_.emplace(key, parse_or_null(it->second)).first->second;
  }

  std::vector<const v1::SagaStep*> steps_;
  std::unordered_map<std::string, std::size_t> index_;
  phase phase_ = phase::forward;
  std::size_t done_ = 0; ///< forward steps completed (steps 0..done_-1)
  bool forward_in_flight_ = false;
  bool compensation_in_flight_ = false;
  std::deque<result> results_;
  std::vector<std::size_t> queue_;       ///< compensations left; the back runs next
  std::vector<std::string> compensated_; ///< steps undone, in the order they were
  std::unordered_map<std::string, std::uint32_t> attempts_; ///< compensation starts by step
  std::unordered_map<std::string, std::string> inputs_;     ///< ${steps.ID.input}, as journaled
  mutable std::unordered_map<std::string, nlohmann::json> parsed_inputs_; ///< those read so far
  std::string cancel_reason_;
  std::string failed_step_;
  std::string reason_;
  bool stuck_ = false;
  bool compensated_end_ = false;
};

} // namespace

std::unique_ptr<engine> make_saga_engine(std::shared_ptr<const v1::ExecutionStarted> s,
                                         error& err) {
  auto e = std::make_unique<saga_engine>(std::move(s), err);
  if (!e->ok_) return nullptr;
  return e;
}

} // namespace af::plan
