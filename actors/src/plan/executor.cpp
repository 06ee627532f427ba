#include "plan/executor.hpp"

#include "af/store/audit.hpp"
#include "af/store/journal.hpp"
#include "af/v1/audit.pb.h"
#include "af/v1/store.pb.h"
#include "plan/replay.hpp"

#include <set>
#include <utility>

namespace af::plan {

std::string stream_of(std::string_view execution_id) { return "exec/" + std::string{execution_id}; }

std::string lease_of(std::string_view execution_id) { return "exec/" + std::string{execution_id}; }

namespace {

/// FNV-1a: spreads steps over an agent type's instances the same way on every run.
std::uint64_t fnv(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::int64_t ns_of(time_point t) { return t.time_since_epoch().count(); }

bool dispatched_at_once(const v1::StepScheduled& s) {
  if (s.delay_ms() > 0) return false;
  const auto k = s.call().kind();
  return k == v1::STEP_AGENT || k == v1::STEP_TOOL || k == v1::STEP_PLAN || k == v1::STEP_WAIT;
}

std::string status_name(v1::ExecStatus s) {
  switch (s) {
  case v1::EXEC_RUNNING:
    return "running";
  case v1::EXEC_PAUSED:
    return "paused";
  case v1::EXEC_COMPLETED:
    return "completed";
  case v1::EXEC_FAILED:
    return "failed";
  case v1::EXEC_CANCELED:
    return "canceled";
  default:
    return "unknown";
  }
}

} // namespace

executor::executor(std::shared_ptr<const exec_shared> shared, std::string execution_id,
                   std::shared_ptr<const v1::StartExecution> start)
    : shared_(std::move(shared)), id_(std::move(execution_id)), stream_(stream_of(id_)),
      actor_("exec:" + id_), start_(std::move(start)) {}

void executor::define(handlers<executor>& h) {
  h.kind("af.executor")
      .on(&executor::on_info)
      .on(&executor::on_control)
      .on(&executor::on_step_due)
      .on(&executor::on_wait_elapsed)
      .on(&executor::on_approval_expired)
      .on(&executor::on_relinquish);
}

void executor::recover(context&, const restart_info&) {
  // A restarted executor that was asked to create its execution tries again: when the first
  // append landed after all, it meets a conflict and loads the stream (the stream is the truth).
}

void executor::on_start(context& ctx) {
  if (shared_->opts.observer) shared_->opts.observer->running(ctx.self().node, id_);
  if (!start_) {
    load(ctx, 1, {});
    return;
  }
  begin(ctx);
}

void executor::on_stop(context& ctx) {
  if (shared_->opts.observer) shared_->opts.observer->stopped(ctx.self().node, id_);
}

void executor::on_relinquish(context& ctx, const v1::ExecRelinquish& m) {
  if (stopping_ || handing_over_) return;
  if (m.handover() && appending_) {
    // A handover (the node is stopping, its lease still good): the append in flight comes back
    // first, so the next owner finds the journal as this executor left it and the commit's
    // outcomes are audited here; nothing of it is acted on (committed without act_on).
    handing_over_ = true;
    ctx.log().info("exec_relinquished", {},
                   nlohmann::json{{"execution_id", id_}, {"reason", m.reason()},
                                  {"appending", true}, {"handover", true}});
    return;
  }
  // Whatever is in flight (an append, steps) is left as it is: the node that takes the
  // execution over replays the journal and dispatches unfinished steps again with their keys;
  // an append of ours that lands late makes its first append conflict and reload.
  stopping_ = true;
  nlohmann::json what{{"execution_id", id_}, {"reason", m.reason()}, {"appending", appending_}};
  if (m.handover()) {
    what["handover"] = true;
    ctx.log().info("exec_relinquished", {}, std::move(what));
  } else {
    ctx.log().warn("exec_relinquished", {}, std::move(what));
  }
  ctx.stop();
}

void executor::begin(context& ctx) {
  // The started event borrows the start request's plan (copying and freeing it cost ~7 us per
  // step of a 10,000-step chain).
  auto started = with_borrowed_plan<v1::ExecutionStarted>(start_->plan(), start_);
  auto& st = *started;
  st.set_execution_id(id_);
  st.set_inputs_json(start_->inputs_json().empty() ? "{}" : start_->inputs_json());
  st.set_mode(start_->mode() == v1::EXEC_MODE_UNSPECIFIED ? v1::EXEC_AUTO : start_->mode());
  st.set_started_by(start_->by());
  st.set_started_at_ns(ns_of(ctx.now()));
  const auto dot = id_.rfind('.');
  if (start_->by().starts_with("exec:") && dot != std::string::npos) {
    st.set_parent_execution(start_->by().substr(5));
  }
  auto eng = engine::make(std::shared_ptr<const v1::ExecutionStarted>(started));
  if (!eng) {
    ctx.log().error("exec_invalid", {},
                    nlohmann::json{{"execution_id", id_}, {"error", eng.error().to_string()}});
    ctx.fail(eng.error());
    return;
  }
  engine_ = std::move(eng).value();
  started_at_ns_ = st.started_at_ns();
  ready_ = true;
  v1::ExecEvent first; // what committed() reads of it; the journal gets started_payload
  auto& head = *first.mutable_started();
  head.set_execution_id(id_);
  head.set_started_by(st.started_by());
  head.mutable_plan()->set_name(st.plan().name());
  head.mutable_plan()->set_hash(st.plan().hash());
  next_.started_payload = st.SerializeAsString();
  next_.events.push_back(std::move(first));
  decide(ctx);
  creating_ = true;
  flush(ctx);
}

void executor::load(context& ctx, std::uint64_t from, std::vector<v1::ExecEvent> events) {
  v1::ReadRequest rr;
  rr.set_stream(stream_);
  rr.set_from_version(from);
  rr.set_max(1000);
  ctx.ask<v1::ReadResult>(
      store::k_journal_agent, std::move(rr), shared_->opts.journal_timeout,
      [this, &ctx, from, events = std::move(events)](expected<v1::ReadResult> r) mutable {
        if (!r) {
          ctx.log().error("exec_load_failed", {},
                          nlohmann::json{{"execution_id", id_}, {"error", r.error().to_string()}});
          ctx.fail(r.error());
          return;
        }
        for (const auto& se : r->events()) {
          last_commit_ns_ = se.committed_at_ns();
          auto e = event_from(se.type(), se.payload());
          if (!e) {
            auto err =
                validation_error("execution " + id_ + ": journal event "
                                 + std::to_string(se.version()) + ": " + e.error().message());
            ctx.log().error("exec_corrupt", {},
                            nlohmann::json{{"execution_id", id_}, {"error", err.message()}});
            ctx.fail(err);
            return;
          }
          events.push_back(std::move(e).value());
        }
        const std::uint64_t next = from + static_cast<std::uint64_t>(r->events_size());
        if (r->events_size() > 0 && next <= r->stream_version()) {
          load(ctx, next, std::move(events));
          return;
        }
        if (events.empty()) {
          auto err = not_found_error("execution " + id_ + ": no events in stream " + stream_);
          ctx.log().error("exec_missing", {}, nlohmann::json{{"execution_id", id_}});
          ctx.fail(err);
          return;
        }
        version_ = r->stream_version();
        resume_from(ctx, std::move(events));
      });
}

void executor::resume_from(context& ctx, std::vector<v1::ExecEvent> events) {
  auto r = replay(events);
  if (!r) {
    ctx.fail(r.error());
    return;
  }
  started_at_ns_ = events.front().started().started_at_ns();
  engine_ = std::move(r->eng);
  ready_ = true;
  if (!r->compatible) {
    // The recorded history and this build's planner disagree: stop the execution rather than
    // act on a state that never was.
    ctx.log().error("exec_replay_diverged", {},
                    nlohmann::json{{"execution_id", id_}, {"divergence", r->divergence}});
    if (engine_->finished()) { // it ended; only its record of the end disagrees
      end_as_recorded(ctx);
      return;
    }
    std::vector<v1::ExecEvent> out;
    engine_->abort(out, error{errc::internal, "recovery: the replay diverged from the recorded "
                                              "history: "
                                                  + r->divergence});
    for (auto& e : out)
      next_.events.push_back(std::move(e));
    flush(ctx); // committed() sees the engine finished and ends the executor
    run_deferred(ctx);
    return;
  }
  ctx.log().info("exec_recovered", {},
                 nlohmann::json{{"execution_id", id_},
                                {"events", std::to_string(events.size())},
                                {"in_flight", std::to_string(engine_->in_flight().size())}});
  if (engine_->finished()) {
    // Started again under an id whose execution has ended (a submit with --id after a restart).
    end_as_recorded(ctx);
    return;
  }
  // Steps the replay decided now are dispatched after their commit; steps that were in flight at
  // the crash are dispatched again with the same idempotency key.
  std::set<std::string> fresh;
  for (auto& d : r->pending) {
    if (d.has_scheduled()) fresh.insert(d.scheduled().step_id());
    next_.acts.push_back(next_.events.size());
    next_.events.push_back(std::move(d));
  }
  for (const auto& [id, s] : engine_->in_flight())
    if (!fresh.contains(id)) {
      v1::ExecEvent e;
      *e.mutable_scheduled() = s;
      next_.decisions.push_back(std::move(e));
    }
  notify(ctx);
  if (next_.events.empty()) {
    batch b = std::move(next_);
    next_ = {};
    committed(ctx, std::move(b));
  } else {
    flush(ctx);
  }
  run_deferred(ctx);
}

void executor::end_as_recorded(context& ctx) {
  // It reports how it ended, when the journal says; its end was audited when it happened.
  ended_before_ = true;
  end_committed_ = true;
  ended_at_ns_ = last_commit_ns_;
  run_deferred(ctx);
  ended(ctx);
}

void executor::run_deferred(context& ctx) {
  auto waiting = std::move(deferred_);
  deferred_.clear();
  for (auto& f : waiting)
    f(ctx);
}

bool executor::take(context& ctx, v1::ExecEvent e) {
  std::string why;
  if (!engine_->input(e, &why)) {
    ctx.log().debug("exec_input_ignored", {}, nlohmann::json{{"execution_id", id_}, {"why", why}});
    return false;
  }
  next_.events.push_back(std::move(e));
  decide(ctx);
  return true;
}

void executor::decide(context& ctx) {
  for (auto& d : engine_->decide()) {
    const bool at_once = d.has_scheduled() && dispatched_at_once(d.scheduled());
    v1::ExecEvent s;
    if (at_once) {
      auto& ss = *s.mutable_step_started();
      ss.set_step_id(d.scheduled().step_id());
      ss.set_attempt(d.scheduled().attempt());
      ss.set_at_ns(ns_of(ctx.now()));
    }
    next_.acts.push_back(next_.events.size());
    next_.events.push_back(std::move(d));
    if (at_once) next_.events.push_back(std::move(s));
  }
}

void executor::flush(context& ctx) {
  if (appending_ || next_.events.empty()) return;
  batch b = std::move(next_);
  next_ = {};
  v1::AppendRequest req;
  req.set_stream(stream_);
  req.set_expected_version(version_);
  for (const auto& e : b.events) {
    auto* ne = req.add_events();
    ne->set_type(event_type(e));
    if (e.has_started() && !b.started_payload.empty())
      ne->set_payload(std::move(b.started_payload));
    else
      ne->set_payload(event_payload(e));
  }
  // The engine has taken every event of this batch and nothing after it: it has finished iff
  // this batch holds the end (an ExecutionCompleted/Failed, or a cancel that ended it).
  const bool finishes = engine_->finished();
  req.set_finish(finishes);
  appending_ = true;
  const std::size_t n = b.events.size();
  ctx.ask<v1::AppendResult>(
      store::k_journal_agent, std::move(req), shared_->opts.journal_timeout,
      [this, &ctx, b = std::move(b), n, finishes](expected<v1::AppendResult> r) mutable {
        appending_ = false;
        if (handing_over_) {
          // Stopping for a handover: audit what became durable, act on nothing, append no more.
          if (r) {
            version_ = r->last_version();
            if (finishes) end_committed_ = true;
            committed(ctx, std::move(b), false);
          } else {
            for (auto& f : b.on_commit)
              f(ctx, &r.error());
          }
          if (!stopping_) {
            stopping_ = true;
            ctx.stop();
          }
          return;
        }
        const bool creating = std::exchange(creating_, false);
        if (!r && creating && r.error().code() == errc::conflict) {
          // The stream exists: this id was started before (on this node, before a restart).
          // Starting it again attaches to that execution instead of creating another; af.exec
          // refuses the start when the recorded plan differs.
          ctx.log().info("exec_exists", {}, nlohmann::json{{"execution_id", id_}});
          start_.reset();
          engine_.reset();
          ready_ = false;
          for (auto& f : next_.on_commit)
            f(ctx, &r.error());
          next_ = {};
          load(ctx, 1, {});
          return;
        }
        if (!r && r.error().code() == errc::conflict && shared_->opts.ownership.enabled) {
          // Another node appended to the stream (it took the execution over while this node
          // still ran it, or this node took it over while the old owner's last append was on
          // its way): the journal refused this batch whole. Act on none of it and stop; af.exec
          // decides whether this node still owns the execution (then it resumes it afresh).
          ctx.log().warn("exec_fenced", {},
                         nlohmann::json{{"execution_id", id_},
                                        {"expected_version", version_},
                                        {"events", std::to_string(n)},
                                        {"error", r.error().to_string()}});
          for (auto& f : b.on_commit)
            f(ctx, &r.error());
          v1::ExecFenced fenced;
          fenced.set_execution_id(id_);
          fenced.set_error(r.error().to_string());
          (void)ctx.tell(k_exec_agent, std::move(fenced));
          stopping_ = true;
          ctx.stop();
          return;
        }
        if (!r) {
          // Nothing of this batch took effect; a restart recovers from what is durable (steps
          // whose results were lost here are dispatched again with the same keys).
          ctx.log().error("exec_append_failed", {},
                          nlohmann::json{{"execution_id", id_},
                                         {"events", std::to_string(n)},
                                         {"error", r.error().to_string()}});
          for (auto& f : b.on_commit)
            f(ctx, &r.error());
          ctx.fail(r.error());
          return;
        }
        version_ = r->last_version();
        if (finishes) end_committed_ = true;
        committed(ctx, std::move(b));
        flush(ctx);
      });
}

void executor::committed(context& ctx, batch b, bool act_on) {
  // The records of one commit (its step outcomes) go to af.audit in one message, chained in
  // this order, before anything of the commit takes effect (as one message each did).
  audit_held_ = true;
  for (const auto& e : b.events) {
    switch (e.event_case()) {
    case v1::ExecEvent::kStarted:
      notify(ctx);
      audit(
          ctx, "execution.started", e.started().started_by(),
          {{"plan", e.started().plan().name()}, {"plan_hash", to_hex(e.started().plan().hash())}});
      break;
    case v1::ExecEvent::kCompleted:
      if (shared_->opts.audit_steps || !e.completed().by().empty())
        audit(ctx, e.completed().by().empty() ? "step.completed" : "step.approved",
              e.completed().by().empty() ? std::string_view{actor_} : e.completed().by(),
              {{"step", e.completed().step_id()},
               {"attempt", std::to_string(e.completed().attempt())}});
      break;
    case v1::ExecEvent::kFailed:
      if (shared_->opts.audit_steps)
        audit(ctx, "step.failed", actor_,
              {{"step", e.failed().step_id()},
               {"attempt", std::to_string(e.failed().attempt())},
               {"error", e.failed().error_kind() + ": " + e.failed().message()}});
      break;
    case v1::ExecEvent::kPaused:
      audit(ctx, "execution.paused", e.paused().by(), {{"reason", e.paused().reason()}});
      notify(ctx);
      break;
    case v1::ExecEvent::kResumed:
      audit(ctx, "execution.resumed", e.resumed().by(), {});
      notify(ctx);
      break;
    case v1::ExecEvent::kCanceled:
      audit(ctx, "execution.canceled", e.canceled().by(), {{"reason", e.canceled().reason()}});
      break;
    case v1::ExecEvent::kCompensating:
      audit(ctx, "saga.compensating", "exec:" + id_,
            {{"step", e.compensating().step_id()}, {"reason", e.compensating().reason()}});
      break;
    case v1::ExecEvent::kStuck:
      audit(ctx, "saga.stuck", e.stuck().by(), {{"reason", e.stuck().reason()}});
      break;
    default:
      break;
    }
  }
  audit_held_ = false;
  // A saga that went on to compensate or got stuck (by an operator, or by a compensation that
  // cannot start): `af exec list` shows the state af.exec was told last. The end is told by
  // ended().
  if (!engine_->finished() && engine_->saga_state() != told_saga_state_) notify(ctx);
  send_audit(ctx);
  for (auto& f : b.on_commit)
    f(ctx, nullptr);
  if (!act_on) {
    if (end_committed_ && !stopping_) ended(ctx);
    return;
  }
  for (auto i : b.acts)
    act(ctx, b.events[i]);
  for (const auto& d : b.decisions)
    act(ctx, d);
  for (const auto& s : engine_->take_abandoned()) {
    if (s.call().kind() == v1::STEP_PLAN) {
      cancel_child(ctx, s,
                   engine_->finished() ? "the parent execution ended"
                                       : "the parent no longer needs the sub-plan");
      continue;
    }
    v1::StepCancel c;
    c.set_idempotency_key(s.idempotency_key());
    c.set_reason(engine_->finished() ? "the execution ended"
                                     : "the step's result is no longer needed");
    auto it = targets_.find(target_key(ctx, s));
    if (it != targets_.end() && !it->second.empty())
      if (auto ref = step_agent(ctx, s, it->second[fnv(s.idempotency_key()) % it->second.size()]))
        ctx.tell(*ref, c);
  }
  // Ends only once the ending event is durable: the engine may already have finished on inputs
  // of the next batch, which is appended after this one.
  if (end_committed_ && !stopping_) ended(ctx);
}

void executor::act(context& ctx, const v1::ExecEvent& d) {
  switch (d.event_case()) {
  case v1::ExecEvent::kScheduled: {
    if (engine_->finished()) return; // decided in the batch that ended the execution: abandoned
    const auto& s = d.scheduled();
    if (s.delay_ms() > 0) {
      v1::StepDue due;
      due.set_step_id(s.step_id());
      due.set_attempt(s.attempt());
      ctx.schedule(std::chrono::milliseconds{s.delay_ms()}, due);
      return;
    }
    dispatch(ctx, s);
    return;
  }
  case v1::ExecEvent::kRetried:
    if (shared_->opts.audit_steps)
      audit(ctx, "step.retry", actor_,
            {{"step", d.retried().step_id()},
             {"next_attempt", std::to_string(d.retried().next_attempt())},
             {"backoff_ms", std::to_string(d.retried().backoff_ms())}});
    return;
  default: // a StepFailed the planner made (a timeout) is audited with the batch in committed()
    return;
  }
}

void executor::dispatch(context& ctx, const v1::StepScheduled& s) {
  const auto& call = s.call();
  switch (call.kind()) {
  case v1::STEP_AGENT:
  case v1::STEP_TOOL: {
    const std::string key = target_key(ctx, s);
    if (auto it = targets_.find(key); it != targets_.end()) {
      call_agent(ctx, s, it->second);
      return;
    }
    const bool remote = is_remote(ctx, s);
    if (!remote && call.kind() == v1::STEP_AGENT && ctx.lookup(call.target())) {
      call_agent(ctx, s, targets_[key] = {call.target()});
      return;
    }
    // The instances of a registered type, spawned on first use by af.exec of the node that
    // runs the step (this one, or the one the call names).
    auto exec = remote ? ctx.lookup(address{call.node(), std::string{k_exec_agent}})
                       : ctx.lookup(k_exec_agent);
    if (!exec) {
      // No route to that node now (down, not joined yet): worth a retry.
      step_result(ctx, s, remote ? error{errc::transient, exec.error().message()} : exec.error());
      return;
    }
    v1::EnsureAgent ea;
    ea.set_target(call.target());
    ea.set_kind(call.kind());
    ctx.ask<v1::EnsureAgentResult>(
        *exec, std::move(ea), shared_->opts.journal_timeout,
        [this, &ctx, s, key](expected<v1::EnsureAgentResult> r) {
          if (!r) {
            step_result(ctx, s, std::move(r).error());
            return;
          }
          std::vector<std::string> names{r->names().begin(), r->names().end()};
          call_agent(ctx, s, targets_[key] = std::move(names));
        });
    return;
  }
  case v1::STEP_WAIT: {
    v1::WaitElapsed w;
    w.set_step_id(s.step_id());
    w.set_attempt(s.attempt());
    w.set_waited_ms(call.wait_ms());
    ctx.schedule(std::chrono::milliseconds{call.wait_ms()}, w);
    return;
  }
  case v1::STEP_APPROVAL:
    ctx.log().info("exec_approval_wait", {},
                   nlohmann::json{{"execution_id", id_}, {"step", s.step_id()}});
    if (call.timeout_ms() > 0) {
      v1::ApprovalExpired x;
      x.set_step_id(s.step_id());
      x.set_attempt(s.attempt());
      ctx.schedule(std::chrono::milliseconds{call.timeout_ms()}, x);
    }
    return;
  case v1::STEP_PLAN: {
    const auto& plan = engine_->started().plan();
    if (call.sub_plan() >= static_cast<std::uint32_t>(plan.sub_plans_size())) {
      step_result(ctx, s,
                  validation_error("step '" + s.step_id() + "': sub-plan "
                                   + std::to_string(call.sub_plan()) + " is not in the plan"));
      return;
    }
    v1::StartExecution child;
    *child.mutable_plan() = plan.sub_plans(static_cast<int>(call.sub_plan()));
    child.set_inputs_json(s.input_json());
    child.set_mode(engine_->started().mode());
    child.set_execution_id(child_id(s));
    child.set_by("exec:" + id_);
    child.set_wait(true);
    const auto timeout = call.timeout_ms() > 0 ? std::chrono::milliseconds{call.timeout_ms()}
                                               : shared_->opts.step_timeout;
    ctx.ask<v1::ExecutionInfo>(
        k_exec_agent, std::move(child), timeout, [this, &ctx, s](expected<v1::ExecutionInfo> r) {
          if (!r) {
            if (r.error().code() == errc::timeout)
              cancel_child(ctx, s, "the sub-plan step timed out");
            step_result(ctx, s, std::move(r).error());
            return;
          }
          if (r->status() == v1::EXEC_COMPLETED) {
            step_result(ctx, s, r->outputs_json());
            return;
          }
          step_result(ctx, s,
                      error{errc::internal, "sub-plan execution " + r->execution_id() + " "
                                                + status_name(r->status()) + ": " + r->error()});
        });
    return;
  }
  default:
    step_result(ctx, s, validation_error("step '" + s.step_id() + "' has no kind"));
  }
}

bool executor::is_remote(context& ctx, const v1::StepScheduled& s) {
  const auto& node = s.call().node();
  return !node.empty() && node != ctx.self().node;
}

std::string executor::target_key(context& ctx, const v1::StepScheduled& s) {
  const auto& c = s.call();
  const std::string name = c.kind() == v1::STEP_TOOL ? tool::invoker_name(c.target()) : c.target();
  return is_remote(ctx, s) ? c.node() + "/" + name : name;
}

expected<agent_ref> executor::step_agent(context& ctx, const v1::StepScheduled& s,
                                         const std::string& name) {
  if (is_remote(ctx, s)) return ctx.lookup(address{s.call().node(), name});
  return ctx.lookup(name);
}

std::string executor::child_id(const v1::StepScheduled& s) const {
  // A fan-out branch `step[3]` becomes `step.3`: execution ids are [A-Za-z0-9_.-], and step ids
  // have no '.', so the branch stays apart from the attempt.
  std::string step;
  step.reserve(s.step_id().size());
  for (const char c : s.step_id()) {
    if (c == '[')
      step += '.';
    else if (c != ']')
      step += c;
  }
  return id_ + "." + step + "." + std::to_string(s.attempt());
}

void executor::cancel_child(context& ctx, const v1::StepScheduled& s, std::string reason) {
  v1::ExecControl c;
  c.set_execution_id(child_id(s));
  c.set_op(v1::ExecControl::CANCEL);
  c.set_by("exec:" + id_);
  c.set_reason(std::move(reason));
  // A child that has ended (or never started) needs no cancel: the answer is not needed.
  ctx.ask<v1::ExecutionInfo>(k_exec_agent, std::move(c), shared_->opts.journal_timeout,
                             [](expected<v1::ExecutionInfo>) {});
}

void executor::call_agent(context& ctx, const v1::StepScheduled& s,
                          const std::vector<std::string>& names) {
  if (names.empty()) {
    step_result(
        ctx, s,
        not_found_error("step '" + s.step_id() + "': no agent '" + s.call().target() + "'"));
    return;
  }
  const auto& name = names[fnv(s.idempotency_key()) % names.size()];
  auto to = step_agent(ctx, s, name);
  if (!to) {
    step_failed_at(ctx, attempt_ref{s.step_id(), s.attempt(), s.idempotency_key()}, agent_ref{},
                   std::move(to).error());
    return;
  }
  v1::StepRequest req;
  req.set_execution_id(id_);
  req.set_step_id(s.step_id());
  req.set_attempt(s.attempt());
  req.set_idempotency_key(s.idempotency_key());
  req.set_input_json(s.input_json());
  req.set_plan_name(engine_->started().plan().name());
  const auto timeout = s.call().timeout_ms() > 0 ? std::chrono::milliseconds{s.call().timeout_ms()}
                                                 : shared_->opts.step_timeout;
  ctx.ask<v1::StepOutput>(
      *to, std::move(req), timeout,
      [this, &ctx, a = attempt_ref{s.step_id(), s.attempt(), s.idempotency_key()},
       ref = *to](expected<v1::StepOutput> r) {
        if (!r) {
          step_failed_at(ctx, a, ref, std::move(r).error());
          return;
        }
        step_result(ctx, a.step_id, a.attempt,
                    r->output_json().empty() ? std::string{"null"}
                                             : std::move(*r->mutable_output_json()));
      });
}

void executor::step_failed_at(context& ctx, const attempt_ref& s, const agent_ref& agent,
                              error e) {
  if (e.code() == errc::timeout) {
    // The agent may still be working on it: tell it to stop (the retry gets a new key).
    v1::StepCancel c;
    c.set_idempotency_key(s.idempotency_key);
    c.set_reason(e.message());
    if (agent.valid()) ctx.tell(agent, c);
  } else if (e.code() == errc::not_found) {
    // The agent was there at dispatch and stopped during the step (a crash its supervisor
    // restarts): the attempt may be retried like any transient failure.
    e = error{errc::transient, e.message()};
  }
  step_result(ctx, s.step_id, s.attempt, std::move(e));
}

void executor::step_result(context& ctx, const std::string& step_id, std::uint32_t attempt,
                           expected<std::string> output) {
  if (!ready_ || engine_->finished()) return;
  v1::ExecEvent e;
  if (output) {
    auto& c = *e.mutable_completed();
    c.set_step_id(step_id);
    c.set_attempt(attempt);
    c.set_output_json(std::move(output).value());
  } else {
    auto& f = *e.mutable_failed();
    f.set_step_id(step_id);
    f.set_attempt(attempt);
    f.set_error_kind(std::string{to_string(output.error().code())});
    f.set_message(output.error().message());
  }
  if (take(ctx, std::move(e))) flush(ctx);
}

void executor::on_step_due(context& ctx, const v1::StepDue& m) {
  if (!ready_ || engine_->finished()) return;
  auto it = engine_->in_flight().find(m.step_id());
  if (it == engine_->in_flight().end() || it->second.attempt() != m.attempt()) return;
  const v1::StepScheduled s = it->second;
  v1::ExecEvent e;
  auto& ss = *e.mutable_step_started();
  ss.set_step_id(s.step_id());
  ss.set_attempt(s.attempt());
  ss.set_at_ns(ns_of(ctx.now()));
  if (take(ctx, std::move(e))) flush(ctx);
  dispatch(ctx, s);
}

void executor::on_wait_elapsed(context& ctx, const v1::WaitElapsed& m) {
  if (!ready_ || engine_->finished()) return;
  auto it = engine_->in_flight().find(m.step_id());
  if (it == engine_->in_flight().end() || it->second.attempt() != m.attempt()) return;
  step_result(ctx, it->second, nlohmann::json{{"waited_ms", m.waited_ms()}}.dump());
}

void executor::on_approval_expired(context& ctx, const v1::ApprovalExpired& m) {
  if (!ready_ || engine_->finished()) return;
  auto it = engine_->in_flight().find(m.step_id());
  if (it == engine_->in_flight().end() || it->second.attempt() != m.attempt()) return;
  step_result(ctx, it->second,
              error{errc::timeout, "approval step '" + m.step_id() + "' was not approved within "
                                       + std::to_string(it->second.call().timeout_ms()) + " ms"});
}

void executor::on_info(context&, const v1::ExecutionRef& m, responder<v1::ExecutionInfo> r) {
  const bool steps = m.steps();
  if (!ready_) {
    deferred_.push_back([this, r, steps](context&) mutable { r.reply(info(steps)); });
    return;
  }
  r.reply(info(steps));
}

void executor::on_control(context& ctx, const v1::ExecControl& m, responder<v1::ExecutionInfo> r) {
  if (!ready_) {
    deferred_.push_back([this, m, r](context& c) { on_control(c, m, r); });
    return;
  }
  if (engine_->finished()) {
    r.fail(error{errc::conflict,
                 "execution " + id_ + " has ended (" + status_name(engine_->status()) + ")"});
    return;
  }
  const std::string by = m.by().empty() ? "unknown" : m.by();
  v1::ExecEvent e;
  switch (m.op()) {
  case v1::ExecControl::PAUSE:
    e.mutable_paused()->set_by(by);
    e.mutable_paused()->set_reason(m.reason());
    break;
  case v1::ExecControl::RESUME:
    e.mutable_resumed()->set_by(by);
    break;
  case v1::ExecControl::CANCEL:
    e.mutable_canceled()->set_by(by);
    e.mutable_canceled()->set_reason(m.reason());
    break;
  case v1::ExecControl::STUCK:
    e.mutable_stuck()->set_by(by);
    e.mutable_stuck()->set_reason(m.reason());
    break;
  case v1::ExecControl::APPROVE: {
    auto it = engine_->in_flight().find(m.step_id());
    if (it == engine_->in_flight().end() || it->second.call().kind() != v1::STEP_APPROVAL) {
      std::string waiting;
      for (const auto& [id, s] : engine_->in_flight())
        if (s.call().kind() == v1::STEP_APPROVAL) waiting += (waiting.empty() ? "" : ", ") + id;
      r.fail(not_found_error("execution " + id_ + ": step '" + m.step_id()
                             + "' is not waiting for approval (waiting: "
                             + (waiting.empty() ? "none" : waiting) + ")"));
      return;
    }
    auto& c = *e.mutable_completed();
    c.set_step_id(m.step_id());
    c.set_attempt(it->second.attempt());
    c.set_output_json(nlohmann::json{{"approved_by", by}, {"reason", m.reason()}}.dump());
    c.set_by(by);
    break;
  }
  default:
    r.fail(validation_error("execution " + id_ + ": unknown control operation"));
    return;
  }
  std::string why;
  if (!engine_->input(e, &why)) {
    r.fail(error{errc::conflict, "execution " + id_ + ": " + why});
    return;
  }
  next_.events.push_back(std::move(e));
  decide(ctx);
  next_.on_commit.push_back([this, r](context&, const error* err) mutable {
    if (err != nullptr)
      r.fail(*err);
    else
      r.reply(info(false));
  });
  flush(ctx);
}

void executor::audit(context& ctx, std::string_view action, std::string_view actor,
                     std::initializer_list<std::pair<std::string_view, std::string>> details) {
  auto& rec = audit_.has_record() ? *audit_.add_more() : *audit_.mutable_record();
  rec.set_actor(std::string{actor});
  rec.set_action(std::string{action});
  rec.set_subject(id_);
  auto& m = *rec.mutable_details();
  for (const auto& [k, v] : details)
    m.insert({std::string{k}, v});
  if (!audit_held_) send_audit(ctx);
}

void executor::send_audit(context& ctx) {
  if (!audit_.has_record()) return;
  // A tell: nothing here waits for the commit, and the writer logs every record it cannot
  // write (audit_record_dropped), so an ask would only add a reply and a timeout per record.
  // A node without an audit writer (tests, benchmarks) has nothing to tell.
  auto to = ctx.lookup(store::k_audit_agent);
  if (!to) {
    audit_.Clear();
    return;
  }
  // The executor keeps the message until it tells the next one: the writer (on another thread)
  // is done with it by then, so it is freed here, where it was allocated. Freed by the writer,
  // its ~20 allocations went back to this thread's malloc arena under the arena's lock, which
  // this thread took for its own mallocs at the same time (futex waits on both sides).
  audit_sent_ = std::make_shared<const v1::AuditAppend>(std::exchange(audit_, {}));
  ctx.tell_erased(*to, audit_sent_);
}

v1::ExecutionInfo executor::info(bool with_steps) const {
  v1::ExecutionInfo i;
  i.set_execution_id(id_);
  if (!engine_) {
    i.set_status(v1::EXEC_RUNNING);
    return i;
  }
  const auto& st = engine_->started();
  // The engine runs ahead of the journal by the batch being appended: an end is reported once
  // it is durable (ended() runs after its commit), so a caller that stops the node on seeing it
  // loses nothing.
  auto status = engine_->status();
  if ((status == v1::EXEC_COMPLETED || status == v1::EXEC_FAILED || status == v1::EXEC_CANCELED)
      && !end_committed_)
    status = v1::EXEC_RUNNING;
  i.set_status(status);
  i.set_plan_name(st.plan().name());
  i.set_plan_hash(st.plan().hash());
  i.set_mode(st.mode());
  i.set_steps_total(engine_->steps().size());
  i.set_steps_completed(engine_->steps_completed());
  i.set_steps_failed(engine_->steps_failed());
  i.set_steps_in_flight(engine_->in_flight().size());
  i.set_outputs_json(engine_->outputs_json());
  i.set_error(engine_->error_text());
  i.set_started_at_ns(started_at_ns_);
  i.set_ended_at_ns(ended_at_ns_);
  i.set_version(version_);
  i.set_tenant(st.plan().tenant());
  if (st.plan().type() == v1::PLAN_SAGA) {
    // A saga's end, like the status, is reported once it is durable: until then it is still
    // running (before completing) or compensating (before ending compensated or stuck).
    auto saga = engine_->saga_state();
    if (engine_->finished() && !end_committed_)
      saga = saga == "completed" ? "running" : "compensating";
    i.set_saga_state(std::move(saga));
  }
  if (with_steps)
    for (const auto& [id, v] : engine_->steps()) {
      auto& s = *i.add_steps();
      s.set_step_id(id);
      s.set_state(v.state);
      s.set_attempt(v.attempt);
      s.set_output_json(v.output_json);
      s.set_error(v.error);
    }
  return i;
}

void executor::notify(context& ctx) {
  v1::ExecutorUpdate u;
  *u.mutable_info() = info(false);
  told_saga_state_ = u.info().saga_state();
  (void)ctx.tell(k_exec_agent, std::move(u));
}

void executor::ended(context& ctx) {
  if (stopping_) return;
  stopping_ = true;
  if (!ended_before_) ended_at_ns_ = ns_of(ctx.now());
  const auto s = engine_ ? engine_->status() : v1::EXEC_FAILED;
  ctx.log().info("exec_ended", {},
                 nlohmann::json{{"execution_id", id_}, {"status", status_name(s)}});
  if (engine_ && !ended_before_ && (s == v1::EXEC_COMPLETED || s == v1::EXEC_FAILED))
    audit(ctx, s == v1::EXEC_COMPLETED ? "execution.completed" : "execution.failed", "exec:" + id_,
          {{"error", engine_->error_text()}});
  notify(ctx);
  ctx.stop();
}

} // namespace af::plan
