// The executor of one execution: an event-sourced agent (see af/plan/executor.hpp). It feeds
// step results and interventions to the engine, appends them with the engine's decisions to the
// execution's stream, and only after the append acts: dispatches steps (with their idempotency
// keys), sets timers, tells agents to stop, replies to the operator.
#pragma once

#include "af/agent.hpp"
#include "af/plan/executor.hpp"
#include "af/v1/audit.pb.h"
#include "af/v1/exec.pb.h"
#include "plan/engine.hpp"

#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace af::plan {

/// A new, empty `M` whose `plan` field is `plan` itself, not a copy (a 10,000-step plan is about
/// 1 MB of Protobuf; copying and freeing it cost microseconds per step of such a chain). `owner`
/// keeps the plan alive as long as the message; the deleter takes the plan back before the
/// message is deleted. The plan must not change meanwhile.
template <class M>
std::shared_ptr<M> with_borrowed_plan(const v1::PlanIR& plan, std::shared_ptr<const void> owner) {
  std::shared_ptr<M> m(new M(), [owner = std::move(owner)](M* p) {
    (void)p->unsafe_arena_release_plan();
    delete p;
  });
  m->unsafe_arena_set_allocated_plan(const_cast<v1::PlanIR*>(&plan));
  return m;
}

/// What every executor of a node shares (read-only after start).
struct exec_shared {
  exec_options opts;
};

class executor : public agent_base<executor> {
public:
  /// `start` is set for a new execution; a restarted executor (or one resumed at node start)
  /// has none and recovers from its stream (a start whose stream exists recovers too).
  executor(std::shared_ptr<const exec_shared> shared, std::string execution_id,
           std::shared_ptr<const v1::StartExecution> start);

  static void define(handlers<executor>& h);

  void on_start(context& ctx) override;
  void on_stop(context& ctx) override;
  void recover(context& ctx, const restart_info& info) override;

  void on_start_request(context& ctx, const v1::StartExecution& m, responder<v1::ExecutionInfo> r);
  void on_info(context& ctx, const v1::ExecutionRef& m, responder<v1::ExecutionInfo> r);
  void on_control(context& ctx, const v1::ExecControl& m, responder<v1::ExecutionInfo> r);
  void on_step_due(context& ctx, const v1::StepDue& m);
  void on_wait_elapsed(context& ctx, const v1::WaitElapsed& m);
  void on_approval_expired(context& ctx, const v1::ApprovalExpired& m);
  /// af.exec no longer holds the execution's lease: stop at once, append nothing.
  void on_relinquish(context& ctx, const v1::ExecRelinquish& m);

  /// The summary `af exec show` prints (with steps when `with_steps`).
  [[nodiscard]] v1::ExecutionInfo info(bool with_steps) const;

private:
  struct batch {
    std::vector<v1::ExecEvent> events;
    std::vector<std::size_t> acts;        ///< decisions in `events` to act on after the commit
    std::vector<v1::ExecEvent> decisions; ///< to act on after them (not journaled again)
    std::vector<std::function<void(context&, const error*)>> on_commit;
    /// The journal payload of the ExecutionStarted in `events`, which carries only the plan's
    /// name and hash there (the plan can be megabytes: serialized once, never copied).
    std::string started_payload;
  };

  void begin(context& ctx);
  void load(context& ctx, std::uint64_t from, std::vector<v1::ExecEvent> events);
  void resume_from(context& ctx, std::vector<v1::ExecEvent> events);
  /// Takes an input: feeds the engine, queues it with the decisions it causes. False: ignored.
  bool take(context& ctx, v1::ExecEvent e);
  void decide(context& ctx);
  void flush(context& ctx);
  /// A batch is durable: audits its outcomes, answers its waiters and (with `act_on`) acts on
  /// its decisions. A handover commits without acting: the next owner acts from the journal.
  void committed(context& ctx, batch b, bool act_on = true);
  void act(context& ctx, const v1::ExecEvent& d);
  void dispatch(context& ctx, const v1::StepScheduled& s);
  void call_agent(context& ctx, const v1::StepScheduled& s, const std::vector<std::string>& names);
  /// An agent's step failed: a timeout tells the agent to stop; an agent that stopped during
  /// the step makes the attempt retryable.
  /// Ends an executor whose stream had already ended, as recorded (no second audit).
  void end_as_recorded(context& ctx);
  /// Answers the requests that came before the state was loaded.
  void run_deferred(context& ctx);
  /// The execution id of a sub-plan step's child: PARENT.STEP.ATTEMPT.
  [[nodiscard]] std::string child_id(const v1::StepScheduled& s) const;
  /// Cancels a sub-plan step's child execution through af.exec.
  void cancel_child(context& ctx, const v1::StepScheduled& s, std::string reason);
  /// What a step's reply needs of its StepScheduled (a copy of it, call and input included,
  /// cost a dozen allocations per step).
  struct attempt_ref {
    std::string step_id;
    std::uint32_t attempt = 0;
    std::string idempotency_key;
  };
  void step_failed_at(context& ctx, const attempt_ref& s, const agent_ref& agent, error e);
  /// Whether the step's call names another node (`node:`).
  [[nodiscard]] static bool is_remote(context& ctx, const v1::StepScheduled& s);
  /// The key of targets_ for the step's agent or tool invoker: "NAME" here, "NODE/NAME" there.
  [[nodiscard]] static std::string target_key(context& ctx, const v1::StepScheduled& s);
  /// An instance `name` of the step's target, on this node or the one the call names.
  [[nodiscard]] static expected<agent_ref> step_agent(context& ctx, const v1::StepScheduled& s,
                                                      const std::string& name);
  void step_result(context& ctx, const v1::StepScheduled& s, expected<std::string> output) {
    step_result(ctx, s.step_id(), s.attempt(), std::move(output));
  }
  void step_result(context& ctx, const std::string& step_id, std::uint32_t attempt,
                   expected<std::string> output);
  /// Queues an audit record; records queued while a commit is handled go in one message.
  void audit(context& ctx, std::string_view action, std::string_view actor,
             std::initializer_list<std::pair<std::string_view, std::string>> details);
  void send_audit(context& ctx);
  void ended(context& ctx);
  void notify(context& ctx);

  std::shared_ptr<const exec_shared> shared_;
  std::string id_;
  std::string stream_;
  std::string actor_; ///< "exec:ID", the actor of the records the executor audits itself
  std::shared_ptr<const v1::StartExecution> start_; ///< shared with the restart factory
  std::unique_ptr<engine> engine_;
  std::uint64_t version_ = 0;
  bool ready_ = false; ///< the state is loaded (inputs before that wait)
  bool appending_ = false;
  batch next_;
  std::map<std::string, std::vector<std::string>, std::less<>> targets_; ///< resolved agents
  std::vector<responder<v1::ExecutionInfo>> waiters_;
  std::vector<std::function<void(context&)>> deferred_; ///< requests that came before ready_
  std::int64_t started_at_ns_ = 0;
  std::int64_t ended_at_ns_ = 0;
  bool stopping_ = false;
  bool handing_over_ = false; ///< told to stop once the append in flight is back (a handover)
  bool creating_ = false; ///< the first append of a new execution is on its way
  bool ended_before_ = false;
  bool end_committed_ = false; ///< the event that ended the execution is durable  ///< the stream
                               ///< had already ended when this executor loaded it
  std::int64_t last_commit_ns_ = 0; ///< commit time of the last event loaded from the journal
  v1::AuditAppend audit_;           ///< records not yet sent (see audit)
  /// The last message told to af.audit, kept until the next one (see send_audit).
  std::shared_ptr<const v1::AuditAppend> audit_sent_;
  std::string told_saga_state_; ///< the saga state af.exec was last told (notify)
  bool audit_held_ = false;     ///< committed() is running: its records go together
};

} // namespace af::plan
