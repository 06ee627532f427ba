// The planning engine: a deterministic state machine per execution. It takes inputs (step
// results, pause, resume, cancel) and decides (steps to schedule, retries, the end), for DAG, FSM
// and behavior-tree plans. It never reads a clock and never sends anything: the durable executor
// appends its decisions to the journal and only then acts on them, and recovery and `af exec
// replay` feed the recorded inputs back through the same code (see replay.hpp).
#pragma once

#include "af/error.hpp"
#include "af/v1/exec.pb.h"
#include "plan/expr.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace af::plan {

/// What `af exec show` lists per step.
struct step_view {
  std::string state; ///< scheduled|completed|failed|retrying|skipped
  std::uint32_t attempt = 0;
  std::string output_json;
  std::string error;
};

class engine {
public:
  virtual ~engine() = default;
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// The engine for the plan an execution started with. The engine shares it, immutable: the
  /// plan IR of a large execution is megabytes, so it is neither copied nor scanned per step.
  [[nodiscard]] static expected<std::unique_ptr<engine>>
  make(std::shared_ptr<const v1::ExecutionStarted> started);
  /// The same from a copy of `started`.
  [[nodiscard]] static expected<std::unique_ptr<engine>> make(const v1::ExecutionStarted& started);

  /// Takes an input. Returns false when it is ignored (a duplicate or late step result, a pause
  /// of a paused execution, anything after the end), with the reason in `why`.
  bool input(const v1::ExecEvent& e, std::string* why = nullptr);

  /// Ends the execution as failed for a reason outside the plan (a recovery whose replay
  /// diverged): appends ExecutionFailed to `out` and abandons the steps in flight.
  void abort(std::vector<v1::ExecEvent>& out, const error& e) { fail_execution(out, e, {}); }

  /// The decisions due now, already applied to the state: the caller appends them, in order,
  /// before acting on them. Nothing while paused or after the end.
  [[nodiscard]] std::vector<v1::ExecEvent> decide();

  /// Steps whose results no longer matter (a finished parallel node's other children, a timed-out
  /// subtree, everything on cancel or failure): the executor tells their agents to stop.
  [[nodiscard]] std::vector<v1::StepScheduled> take_abandoned();

  [[nodiscard]] v1::ExecStatus status() const noexcept { return status_; }
  [[nodiscard]] bool finished() const noexcept {
    return status_ == v1::EXEC_COMPLETED || status_ == v1::EXEC_FAILED
           || status_ == v1::EXEC_CANCELED;
  }
  [[nodiscard]] const v1::ExecutionStarted& started() const noexcept { return *started_; }
  /// Dispatched steps without a result yet, by step id.
  [[nodiscard]] const std::map<std::string, v1::StepScheduled>& in_flight() const noexcept {
    return in_flight_;
  }
  [[nodiscard]] const std::map<std::string, step_view>& steps() const noexcept { return views_; }
  [[nodiscard]] std::uint64_t steps_completed() const noexcept { return completed_; }
  [[nodiscard]] std::uint64_t steps_failed() const noexcept { return failed_; }
  [[nodiscard]] const std::string& outputs_json() const noexcept { return outputs_json_; }
  [[nodiscard]] const std::string& error_text() const noexcept { return error_; }
  /// A saga's state (running|compensating|stuck|completed|compensated); empty for other types.
  [[nodiscard]] virtual std::string saga_state() const { return {}; }

  /// The idempotency key of a step attempt: "<execution_id>/<step_id>/<attempt>".
  [[nodiscard]] static std::string key_of(std::string_view execution_id, std::string_view step_id,
                                          std::uint32_t attempt);

protected:
  explicit engine(std::shared_ptr<const v1::ExecutionStarted> started);

  // --- what each plan type implements -----------------------------------------------------
  /// Appends the decisions due now (called by decide() when running and not paused).
  virtual void plan(std::vector<v1::ExecEvent>& out) = 0;
  /// A step succeeded (after the base recorded its output).
  virtual void on_success(const v1::StepScheduled& s, const nlohmann::json& output) = 0;
  /// A step failed for good (no attempts left, or an error that is not retried).
  virtual void on_failure(const v1::StepScheduled& s, const v1::StepFailed& f) = 0;

  // --- what a plan type may change (sagas do) -------------------------------------------------
  /// How a failed attempt is treated: per the call's retry policy and the mode, retried whatever
  /// the error and the mode (a saga's compensations), or not retried at all.
  enum class retry_rule : unsigned char { policy, always, never };
  [[nodiscard]] virtual retry_rule retry_rule_for(const v1::StepScheduled&) const {
    return retry_rule::policy;
  }
  /// Strict mode: whether a step that fails for good fails the execution at once (false: the
  /// plan type hears of it as in auto mode; a saga compensates).
  [[nodiscard]] virtual bool strict_fails_at_once() const { return true; }
  /// A cancel: nullopt ends the execution now (the default); true: the plan type takes it and
  /// ends the execution itself later; false: ignored, with the reason in `why`.
  virtual std::optional<bool> on_cancel(const v1::ExecutionCanceled&, std::string*) {
    return std::nullopt;
  }
  /// `af exec stuck`: true pauses the execution (the plan type marks itself stuck); false
  /// refuses it with the reason in `why`.
  virtual bool on_stuck(const v1::SagaStuck&, std::string* why) {
    if (why != nullptr) *why = "only a saga that is compensating can be marked stuck";
    return false;
  }
  /// The execution was resumed (after a pause or a stuck mark).
  virtual void on_resumed() {}
  /// The idempotency key of a step attempt: key_of(execution, step, attempt) by default; a saga
  /// gives every attempt of a step one key, so that a retry after a timeout whose attempt was
  /// applied anyway is recognized by the participant.
  [[nodiscard]] virtual std::string key_for(const std::string& step_id,
                                            std::uint32_t attempt) const {
    return key_of(started_->execution_id(), step_id, attempt);
  }
  /// `${steps.ID.input}`: the rendered input of step ID, or nullptr (only sagas keep them).
  [[nodiscard]] virtual const nlohmann::json* input_of(std::string_view) const { return nullptr; }

  // --- helpers for the plan types ------------------------------------------------------------
  /// Schedules a step attempt: appends StepScheduled and tracks it in flight.
  void schedule(std::vector<v1::ExecEvent>& out, const std::string& step_id,
                std::uint32_t attempt, const v1::Call& call, const nlohmann::json& input,
                const std::string& parent, const nlohmann::json* item = nullptr,
                std::int64_t delay_ms = 0);
  /// Renders a call's input template (a call of the plan: its template is parsed once and kept
  /// when `reuse`; a call rendered once, like a DAG step without for_each, passes false and its
  /// parsed template is not kept); a failure is a validation error naming the step.
  [[nodiscard]] expected<nlohmann::json> render_input(const v1::Call& call,
                                                      const std::string& step_id,
                                                      const nlohmann::json* item,
                                                      bool reuse = true) const;
  /// A failure decided by the engine itself (a bad reference, a for_each that is no list).
  void fail_step(std::vector<v1::ExecEvent>& out, const std::string& step_id, const v1::Call& call,
                 const error& e, const std::string& parent, std::uint32_t attempt = 1);
  void complete(std::vector<v1::ExecEvent>& out, const nlohmann::json& outputs);
  void fail_execution(std::vector<v1::ExecEvent>& out, const error& e, const std::string& step);
  /// Abandons a step in flight (its result will be ignored).
  void abandon(const std::string& step_id);
  [[nodiscard]] expr_scope scope(const nlohmann::json* item = nullptr) const;
  [[nodiscard]] const nlohmann::json& inputs() const noexcept { return inputs_; }
  [[nodiscard]] bool strict() const noexcept { return started_->mode() == v1::EXEC_STRICT; }
  /// Sets the output `${steps.ID.output}` reads.
  void set_output(const std::string& id, nlohmann::json v) { outputs_[id] = std::move(v); }
  [[nodiscard]] const nlohmann::json* output_of(std::string_view id) const;
  [[nodiscard]] const v1::PlanIR& ir() const noexcept { return started_->plan(); }
  void view(const std::string& step_id, std::string state, std::uint32_t attempt,
            std::string output_json = {}, std::string error = {});

  /// Strict mode: the first failed step, which fails the execution at the next decide().
  [[nodiscard]] bool strict_failed() const noexcept { return strict_failure_.has_value(); }
  [[nodiscard]] bool paused() const noexcept { return paused_; }
  /// Pauses or resumes from inside the plan type (a saga that marks itself stuck, a cancel
  /// that resumes a paused saga so that it compensates).
  void set_paused(bool p) noexcept {
    paused_ = p;
    status_ = p ? v1::EXEC_PAUSED : v1::EXEC_RUNNING;
  }

private:
  void retry_or_fail(const v1::StepScheduled& s, const v1::StepFailed& f);
  /// A step failed for good: strict mode records it (the execution fails at once, no fsm
  /// `error` transition or bt fallback runs), otherwise the planner hears of it.
  void step_failed(const v1::StepScheduled& s, const v1::StepFailed& f);

  std::optional<error> strict_failure_;
  std::string strict_step_;

  std::shared_ptr<const v1::ExecutionStarted> started_;
  nlohmann::json inputs_;
  /// Parsed input templates by call (calls of started_'s plan, which outlives the engine's use).
  mutable std::unordered_map<const v1::Call*, nlohmann::json> templates_;
  v1::ExecStatus status_ = v1::EXEC_RUNNING;
  bool paused_ = false;
  std::map<std::string, v1::StepScheduled> in_flight_;
  std::map<std::string, nlohmann::json, std::less<>> outputs_;
  std::map<std::string, step_view> views_;
  /// Failed attempts to retry: the failed StepScheduled and the backoff.
  std::deque<std::pair<v1::StepScheduled, std::int64_t>> retries_;
  std::vector<v1::StepScheduled> abandoned_;
  std::uint64_t completed_ = 0;
  std::uint64_t failed_ = 0;
  std::string outputs_json_;
  std::string error_;
};

/// The backoff before attempt `next` (2, 3, ...) of a step: exponential from backoff_ms by
/// multiplier, capped, with deterministic jitter (±20 %, from a hash of the step's key).
[[nodiscard]] std::int64_t backoff_ms(const v1::RetryPolicy& p, std::uint32_t next,
                                      std::string_view key);

/// The journal type name of an event ("af.v1.StepScheduled") and its payload.
[[nodiscard]] std::string event_type(const v1::ExecEvent& e);
[[nodiscard]] std::string event_payload(const v1::ExecEvent& e);
/// Rebuilds an event from a journal row; an unknown type or a corrupt payload is a validation
/// error naming the type.
[[nodiscard]] expected<v1::ExecEvent> event_from(std::string_view type, std::string_view payload);
/// One line for humans ("StepScheduled step_id: \"b\" attempt: 1 ...").
[[nodiscard]] std::string describe(const v1::ExecEvent& e);
/// Decisions are what the engine produces; everything else is an input.
[[nodiscard]] bool is_decision(const v1::ExecEvent& e);

} // namespace af::plan
