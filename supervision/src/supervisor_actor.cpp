// The supervisor: starts its children in order, watches them with CAF monitors, restarts them
// by strategy with backoff, gives up (escalates) past its restart intensity, and stops children
// in reverse start order, killing those that overrun their shutdown timeout.
//
// Everything that waits (stopping a group, a backoff delay, a kill timer) is asynchronous: the
// supervisor keeps handling messages. At most one stop operation runs at a time; failures that
// arrive meanwhile are queued and handled after it, as OTP handles them after its synchronous
// terminate calls.
#include "supervisor_actor.hpp"

#include "af/v1/supervision.pb.h"
#include "agent_host.hpp"
#include "caf_glue.hpp"
#include "exit_reason.hpp"
#include "node_core.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduled_actor.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace af::sup::detail {

namespace {

using af::detail::node_core;

enum class child_state : std::uint8_t { running, restarting, stopping, stopped };

std::string_view to_string(child_state s) {
  switch (s) {
  case child_state::running:
    return "running";
  case child_state::restarting:
    return "restarting";
  case child_state::stopping:
    return "stopping";
  case child_state::stopped:
    break;
  }
  return "stopped";
}

constexpr std::uint32_t k_default_tree_children = 1000;
constexpr auto k_subtree_timeout = std::chrono::seconds(5);
/// Restart and exit lines per second a supervisor writes before it only counts them (OTP's
/// crash reports collapse the restart rate; ours must not).
constexpr double k_log_lines_per_second = 50;

struct child {
  spec_ptr spec;
  caf::strong_actor_ptr actor; // null unless running or stopping
  child_state state = child_state::stopped;
  std::uint64_t gen = 0; // incremented on every start
  std::uint64_t restarts = 0;
  std::uint32_t consecutive = 0; // failures without a stable period, for the backoff
  duration started_at{};
  std::string kind; // the agent kind, the supervisor strategy, or the actor kind
  std::string last_exit;
};

/// A stop of some children, sequential (reverse start order) or all at once, then `then`.
struct stop_op {
  std::uint64_t id = 0;
  std::vector<std::uint64_t> order;
  std::size_t next = 0;
  bool parallel = false;
  std::unordered_set<std::uint64_t> waiting;
  std::vector<std::string> killed;
  std::function<void(std::vector<std::string> killed)> then;
};

class supervisor final : public caf::event_based_actor {
public:
  supervisor(caf::actor_config& cfg, node_core* core, std::shared_ptr<const supervisor_spec> spec)
      : caf::event_based_actor(cfg), core_(core), spec_(std::move(spec)),
        rng_(core->svc.random->next_u64()), self_addr_{core->node_name, spec_->name} {
    log_tokens_ = k_log_lines_per_second;
    if (auto h = core_->metrics->counter("af_supervisor_escalations_total",
                                         "Supervisors that exceeded their restart intensity",
                                         {{"supervisor", label_of_self()}}))
      escalations_metric_ = *h;
    // Bound before the actor can run (see agent_host).
    core_->registry.bind(spec_->name, caf::strong_actor_ptr{ctrl()});
    set_down_handler([this](caf::down_msg& m) { on_down(m); });
    set_exit_handler([this](caf::exit_msg& m) { on_exit_request(m); });
  }

  const char* name() const override { return "af.supervisor"; }

  caf::behavior make_behavior() override {
    core_->log.debug("supervisor_started", "supervisor " + spec_->name + " started",
                     {{"supervisor", spec_->name},
                      {"strategy", std::string{to_string(spec_->policy.how)}},
                      {"children", spec_->children.size()}});
    for (const auto& c : spec_->children)
      add_child(std::make_shared<const child_spec>(c));
    // Start in order; a child that fails to start is handled like one that crashed.
    std::vector<std::uint64_t> all;
    for (auto& [pos, c] : children_)
      all.push_back(pos);
    for (auto pos : all) {
      if (shutting_down_) break;
      auto it = children_.find(pos);
      if (it == children_.end() || it->second.state == child_state::running) continue;
      if (auto r = start(pos); !r) {
        on_start_failed(pos, r.error());
      }
    }
    return {
        [this](const envelope& e) -> caf::result<envelope> { return on_envelope(e); },
        [this](start_atom, const spec_ptr& s) -> start_reply { return on_start_child(s); },
        [this](adopt_atom, const spec_ptr& s, const caf::strong_actor_ptr& a) { adopt(s, a); },
        [this](restart_atom, std::uint64_t token) { on_restart_timer(token); },
        [this](kill_atom, std::uint64_t op_id, std::uint64_t pos) { on_kill_timer(op_id, pos); },
    };
  }

  void on_exit() override {
    // Killed (untrappable) or exiting: no child may outlive its supervisor.
    for (auto& [pos, c] : children_)
      if (c.actor) caf::anon_send_exit(c.actor, caf::exit_reason::kill);
    children_.clear();
    core_->registry.erase(spec_->name, ctrl());
  }

private:
  // --- bookkeeping --------------------------------------------------------------------------

  std::string label_of_self() const {
    // Agents' own children supervisors are many; one label for all keeps cardinality bounded.
    return spec_->name.starts_with("af.children.") ? "af.children" : spec_->name;
  }

  std::uint64_t add_child(spec_ptr s) {
    auto pos = next_pos_++;
    child c;
    c.spec = std::move(s);
    if (c.spec->is_supervisor())
      c.kind = std::string{to_string(c.spec->sup->policy.how)};
    else if (c.spec->is_actor())
      c.kind = c.spec->actor_kind;
    by_id_[c.spec->id] = pos;
    children_.emplace(pos, std::move(c));
    return pos;
  }

  void remove_child(std::uint64_t pos) {
    auto it = children_.find(pos);
    if (it == children_.end()) return;
    if (it->second.actor) by_actor_.erase(it->second.actor.get());
    auto id = by_id_.find(it->second.spec->id);
    if (id != by_id_.end() && id->second == pos) by_id_.erase(id);
    children_.erase(it);
  }

  bool is_dynamic() const { return spec_->policy.how == strategy::dynamic; }

  duration now() const { return core_->svc.clk->monotonic(); }

  counter_handle restart_counter(const child& c, const std::string& reason) {
    // Dynamic children and agents' children are labelled by kind: thousands of agents must not
    // mean thousands of series.
    const bool by_kind = is_dynamic() || spec_->name.starts_with("af.children.");
    const std::string& child_label = by_kind ? c.kind : c.spec->id;
    auto key = child_label + '\x1f' + reason;
    auto it = restart_metrics_.find(key);
    if (it != restart_metrics_.end()) return it->second;
    auto h = core_->metrics->counter(
        "af_supervisor_restarts_total", "Children restarted",
        {{"supervisor", label_of_self()}, {"child", child_label}, {"reason", reason}});
    counter_handle ch = h ? *h : counter_handle{};
    restart_metrics_.emplace(std::move(key), ch);
    return ch;
  }

  /// Restart and exit lines are rate-limited per supervisor; the count of lines left out is
  /// carried on the next line written.
  bool log_budget() {
    auto t = now();
    auto elapsed = std::chrono::duration<double>(t - log_refill_).count();
    log_refill_ = t;
    log_tokens_ = std::min(k_log_lines_per_second, log_tokens_ + elapsed * k_log_lines_per_second);
    if (log_tokens_ < 1) {
      ++log_suppressed_;
      return false;
    }
    log_tokens_ -= 1;
    return true;
  }

  nlohmann::json base_fields(const child& c) const {
    nlohmann::json j = {{"supervisor", spec_->name},
                        {"child", c.spec->id},
                        {"type", std::string{c.spec->type_name()}},
                        {"kind", c.kind}};
    return j;
  }

  // --- starting -------------------------------------------------------------------------------

  expected<caf::strong_actor_ptr> spawn_child(child& c) {
    const auto& s = *c.spec;
    if (s.is_agent()) {
      std::unique_ptr<agent> a;
      try {
        a = s.make_agent();
      } catch (const std::exception& ex) {
        return error{errc::internal, "agent factory of '" + s.id + "' threw: " + ex.what()};
      }
      if (!a)
        return error{errc::internal,
                     "agent '" + s.id
                         + "' cannot be restarted: it was spawned from an instance, "
                           "not a factory"};
      c.kind = a->handler_table().kind;
      af::detail::spawn_options o;
      o.tenant = s.tenant;
      o.system = s.system;
      o.detached = s.detached;
      o.restarts = c.restarts;
      o.last_exit = c.last_exit;
      auto ref = core_->spawn(std::move(a), s.id, std::move(o));
      if (!ref) return ref.error();
      return caf::strong_actor_ptr{ref->ctrl()};
    }
    if (s.is_supervisor()) {
      auto ref = spawn_supervisor(*core_, s.sup, s.system);
      if (!ref) return ref.error();
      return caf::strong_actor_ptr{ref->ctrl()};
    }
    if (s.is_actor()) {
      expected<caf::actor> a = error{errc::internal, "no factory"};
      try {
        a = s.make_actor(*core_->sys);
      } catch (const std::exception& ex) {
        return error{errc::internal, "actor factory of '" + s.id + "' threw: " + ex.what()};
      }
      if (!a) return a.error();
      return caf::actor_cast<caf::strong_actor_ptr>(*a);
    }
    return error{errc::validation, "child '" + s.id + "' has no way to start"};
  }

  status start(std::uint64_t pos) {
    auto& c = children_.at(pos);
    auto a = spawn_child(c);
    if (!a) return a.error();
    watch(pos, c, std::move(*a));
    return {};
  }

  void watch(std::uint64_t pos, child& c, caf::strong_actor_ptr a) {
    monitor(a);
    by_actor_[a.get()] = pos;
    c.actor = std::move(a);
    c.state = child_state::running;
    ++c.gen;
    c.started_at = now();
  }

  void on_start_failed(std::uint64_t pos, const error& e) {
    auto& c = children_.at(pos);
    c.state = child_state::stopped;
    exit_info ex{true, "start_failed", "start_failed: " + e.to_string()};
    core_->log.error("child_start_failed", ex.text, base_fields(c));
    handle_exit(pos, ex);
  }

  start_reply on_start_child(const spec_ptr& s) {
    start_reply out;
    if (shutting_down_) {
      out.err = error{errc::transient, "supervisor '" + spec_->name + "' is shutting down"};
      return out;
    }
    if (s->id.empty()) {
      out.err = validation_error("start_child: the child id must not be empty");
      return out;
    }
    if (by_id_.contains(s->id)) {
      out.err = error{errc::conflict,
                      "supervisor '" + spec_->name + "' already has a child '" + s->id + "'"};
      return out;
    }
    auto pos = add_child(s);
    auto& c = children_.at(pos);
    auto a = spawn_child(c);
    if (!a) {
      remove_child(pos);
      out.err = a.error();
      return out;
    }
    out.ref = agent_ref{a->get(), af::address{core_->node_name, s->id}};
    watch(pos, c, std::move(*a));
    return out;
  }

  /// A child the caller already spawned (node.spawn, ctx.spawn: synchronous for the caller).
  /// If it died before this message, monitoring it reports its exit at once.
  void adopt(const spec_ptr& s, const caf::strong_actor_ptr& a) {
    if (!a) return;
    if (shutting_down_ || by_id_.contains(s->id)) {
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
      return;
    }
    auto pos = add_child(s);
    auto& c = children_.at(pos);
    if (s->is_agent()) {
      auto e = core_->registry.kind_of(s->id);
      c.kind = e.empty() ? "agent" : e;
    }
    watch(pos, c, a);
  }

  // --- failures -------------------------------------------------------------------------------

  void on_down(caf::down_msg& m) {
    auto it = by_actor_.find(m.source.get());
    if (it == by_actor_.end()) return; // a subtree request's target, or a stale child
    auto pos = it->second;
    by_actor_.erase(it);
    auto& c = children_.at(pos);
    c.actor = nullptr;
    auto ex = classify(m.reason);
    c.last_exit = ex.text;
    if (op_ && op_->waiting.erase(pos) > 0) {
      c.state = child_state::stopped;
      op_progress(pos);
      return;
    }
    c.state = child_state::stopped;
    if (op_ || shutting_down_) {
      // Handled after the running stop operation, unless the child was started again by then.
      queued_.push_back([this, pos, gen = c.gen, ex] {
        auto ci = children_.find(pos);
        if (ci != children_.end() && ci->second.gen == gen && !ci->second.actor)
          handle_exit(pos, ex);
      });
      return;
    }
    handle_exit(pos, ex);
  }

  bool should_restart(const child& c, const exit_info& ex) const {
    switch (c.spec->restart) {
    case restart_policy::permanent:
      return true;
    case restart_policy::transient:
      return ex.abnormal;
    case restart_policy::temporary:
      break;
    }
    return false;
  }

  /// Records one restart; false when that exceeds the intensity.
  bool note_restart() {
    const auto& lim = spec_->policy.limits;
    auto t = now();
    restart_times_.push_back(t);
    while (!restart_times_.empty() && t - restart_times_.front() > lim.period)
      restart_times_.pop_front();
    return restart_times_.size() <= lim.max_restarts;
  }

  void handle_exit(std::uint64_t pos, const exit_info& ex) {
    if (shutting_down_) return;
    auto& c = children_.at(pos);
    if (!should_restart(c, ex)) {
      if (log_budget()) {
        auto f = base_fields(c);
        f["reason"] = ex.text;
        f["restart"] = std::string{to_string(c.spec->restart)};
        f["suppressed"] = std::exchange(log_suppressed_, 0);
        core_->log.info("child_exited", "child " + c.spec->id + " exited; not restarted", f);
      }
      if (is_dynamic() || c.spec->restart == restart_policy::temporary) remove_child(pos);
      return;
    }
    if (!note_restart()) {
      escalate(c, ex);
      return;
    }
    if (ex.label == "escalated") ++escalations_;
    ++total_restarts_;
    ++c.restarts;
    restart_counter(c, ex.label).inc();
    if (now() - c.started_at >= spec_->policy.delay.reset_after) c.consecutive = 0;
    ++c.consecutive;
    auto delay = spec_->policy.delay.delay(c.consecutive, rng_);
    if (log_budget()) {
      auto f = base_fields(c);
      f["reason"] = ex.text;
      f["restarts"] = c.restarts;
      f["delay_ms"] = std::chrono::duration<double, std::milli>(delay).count();
      f["suppressed"] = std::exchange(log_suppressed_, 0);
      core_->log.warn("child_restarting",
                      "child " + c.spec->id + " exited (" + ex.text + "); restarting", f);
    }

    std::vector<std::uint64_t> group;
    switch (spec_->policy.how) {
    case strategy::one_for_one:
    case strategy::dynamic:
      group = {pos};
      break;
    case strategy::one_for_all:
      for (auto& [p, other] : children_)
        group.push_back(p);
      break;
    case strategy::rest_for_one:
      for (auto it = children_.find(pos); it != children_.end(); ++it)
        group.push_back(it->first);
      break;
    }
    c.state = child_state::restarting;
    for (auto p : group)
      if (p != pos && children_.at(p).spec->restart != restart_policy::temporary)
        ++children_.at(p).restarts;
    std::vector<std::uint64_t> to_stop;
    for (auto it = group.rbegin(); it != group.rend(); ++it)
      if (*it != pos && children_.at(*it).actor) to_stop.push_back(*it);
    if (to_stop.empty()) {
      schedule_start(std::move(group), delay);
      return;
    }
    begin_stop(std::move(to_stop), false,
               [this, group = std::move(group), delay, pos](std::vector<std::string>) mutable {
                 // Temporary children stopped for a group restart are not started again.
                 std::vector<std::uint64_t> keep;
                 for (auto p : group) {
                   auto it = children_.find(p);
                   if (it == children_.end()) continue;
                   if (p != pos && it->second.spec->restart == restart_policy::temporary
                       && it->second.state == child_state::stopped && !it->second.actor) {
                     remove_child(p);
                     continue;
                   }
                   keep.push_back(p);
                 }
                 schedule_start(std::move(keep), delay);
               });
  }

  void schedule_start(std::vector<std::uint64_t> group, duration delay) {
    if (shutting_down_) return;
    for (auto p : group)
      if (auto it = children_.find(p); it != children_.end() && !it->second.actor)
        it->second.state = child_state::restarting;
    if (delay <= duration::zero()) {
      start_group(group);
      return;
    }
    auto token = next_token_++;
    pending_starts_.emplace(token, std::move(group));
    delayed_send(this, std::chrono::duration_cast<std::chrono::microseconds>(delay),
                 restart_atom::value, token);
  }

  void on_restart_timer(std::uint64_t token) {
    auto it = pending_starts_.find(token);
    if (it == pending_starts_.end()) return;
    auto group = std::move(it->second);
    pending_starts_.erase(it);
    if (op_) {
      queued_.push_back([this, group = std::move(group)] { start_group(group); });
      return;
    }
    start_group(group);
  }

  void start_group(const std::vector<std::uint64_t>& group) {
    if (shutting_down_) return;
    for (auto p : group) {
      auto it = children_.find(p);
      if (it == children_.end() || it->second.actor || it->second.state != child_state::restarting)
        continue;
      if (auto r = start(p); !r) {
        // The rest of the group stays in `restarting`; the failure's own restart covers it.
        on_start_failed(p, r.error());
        return;
      }
    }
  }

  void escalate(child& c, const exit_info& ex) {
    escalations_metric_.inc();
    auto why = "supervisor '" + spec_->name + "' exceeded "
               + std::to_string(spec_->policy.limits.max_restarts) + " restarts in "
               + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    spec_->policy.limits.period)
                                    .count())
               + " ms (last: child '" + c.spec->id + "', " + ex.text + ")";
    auto f = base_fields(c);
    f["reason"] = ex.text;
    f["max_restarts"] = spec_->policy.limits.max_restarts;
    core_->log.error("supervisor_escalated", why, f);
    shutdown(escalated_reason(why));
  }

  // --- stopping -------------------------------------------------------------------------------

  void begin_stop(std::vector<std::uint64_t> order, bool parallel,
                  std::function<void(std::vector<std::string>)> then) {
    op_.emplace();
    op_->id = next_op_++;
    op_->order = std::move(order);
    op_->parallel = parallel;
    op_->then = std::move(then);
    if (parallel) {
      duration longest{};
      for (auto p : op_->order) {
        auto& c = children_.at(p);
        if (!c.actor) continue;
        c.state = child_state::stopping;
        op_->waiting.insert(p);
        caf::anon_send_exit(c.actor, caf::exit_reason::user_shutdown);
        longest = std::max(longest, c.spec->shutdown);
      }
      if (op_->waiting.empty()) {
        finish_op();
        return;
      }
      if (longest != infinity)
        delayed_send(this, std::chrono::duration_cast<std::chrono::microseconds>(longest),
                     kill_atom::value, op_->id, std::uint64_t{~0ULL});
      return;
    }
    step_op();
  }

  void step_op() {
    while (op_->next < op_->order.size()) {
      auto p = op_->order[op_->next];
      auto it = children_.find(p);
      if (it == children_.end() || !it->second.actor) {
        ++op_->next;
        continue;
      }
      auto& c = it->second;
      c.state = child_state::stopping;
      op_->waiting.insert(p);
      caf::anon_send_exit(c.actor, caf::exit_reason::user_shutdown);
      if (c.spec->shutdown != infinity)
        delayed_send(this, std::chrono::duration_cast<std::chrono::microseconds>(c.spec->shutdown),
                     kill_atom::value, op_->id, p);
      return;
    }
    finish_op();
  }

  void op_progress(std::uint64_t pos) {
    if (op_->parallel) {
      if (op_->waiting.empty()) finish_op();
      return;
    }
    if (op_->next < op_->order.size() && op_->order[op_->next] == pos) {
      ++op_->next;
      step_op();
    }
  }

  void on_kill_timer(std::uint64_t op_id, std::uint64_t pos) {
    if (!op_ || op_->id != op_id) return;
    std::vector<std::uint64_t> victims;
    if (pos == ~0ULL)
      victims.assign(op_->waiting.begin(), op_->waiting.end());
    else if (op_->waiting.contains(pos))
      victims.push_back(pos);
    for (auto p : victims) {
      auto& c = children_.at(p);
      if (!c.actor) continue;
      op_->killed.push_back(c.spec->id);
      auto f = base_fields(c);
      f["shutdown_ms"] = std::chrono::duration<double, std::milli>(c.spec->shutdown).count();
      core_->log.warn("child_killed",
                      "child " + c.spec->id + " did not stop within its shutdown timeout; killed",
                      f);
      caf::anon_send_exit(c.actor, caf::exit_reason::kill);
    }
  }

  void finish_op() {
    auto op = std::move(*op_);
    op_.reset();
    if (op.then) op.then(std::move(op.killed));
    // Work that arrived during the operation; it may start another one.
    while (!op_ && !queued_.empty()) {
      auto f = std::move(queued_.front());
      queued_.pop_front();
      f();
    }
  }

  /// Stops every child (reverse start order; all at once for dynamic) and exits with `reason`.
  void shutdown(caf::error reason) {
    if (shutting_down_) return;
    shutting_down_ = true;
    pending_starts_.clear();
    auto go = [this, reason = std::move(reason)]() mutable {
      std::vector<std::uint64_t> order;
      for (auto it = children_.rbegin(); it != children_.rend(); ++it)
        order.push_back(it->first);
      begin_stop(std::move(order), is_dynamic(),
                 [this, reason = std::move(reason)](std::vector<std::string> killed) mutable {
                   if (!killed.empty()) {
                     nlohmann::json names = killed;
                     core_->log.warn("supervisor_killed_children",
                                     "supervisor " + spec_->name + " had to kill "
                                         + std::to_string(killed.size()) + " children",
                                     {{"supervisor", spec_->name}, {"killed", names}});
                   }
                   quit(std::move(reason));
                 });
    };
    if (op_) {
      queued_.clear();
      queued_.push_back(std::move(go));
      return;
    }
    queued_.clear();
    go();
  }

  void on_exit_request(caf::exit_msg& m) {
    // The parent (or the node) asks this supervisor to stop: children first.
    shutdown(m.reason ? m.reason : caf::make_error(caf::exit_reason::user_shutdown));
  }

  // --- requests -------------------------------------------------------------------------------

  envelope reply(const envelope& req, std::shared_ptr<const google::protobuf::Message> m) {
    return core_->make_reply(self_addr_, req, std::move(m), rng_);
  }

  envelope reply_error(const envelope& req, const error& e) {
    return reply(req, af::detail::error_payload(e));
  }

  caf::result<envelope> on_envelope(const envelope& e) {
    if (const auto* t = e.payload_as<v1::TreeRequest>()) return on_tree(e, *t);
    if (const auto* w = e.payload_as<v1::WhichChildrenRequest>()) {
      auto out = std::make_shared<v1::WhichChildrenResult>();
      std::uint64_t n = 0;
      for (auto& [pos, c] : children_) {
        if (w->max_children() != 0 && n >= w->max_children()) {
          out->set_omitted(out->omitted() + 1);
          continue;
        }
        fill_info(*out->add_children(), c);
        ++n;
      }
      return reply(e, out);
    }
    if (e.payload_as<v1::CountChildrenRequest>() != nullptr) {
      auto out = std::make_shared<v1::ChildCounts>();
      for (auto& [pos, c] : children_) {
        out->set_specs(out->specs() + 1);
        if (c.actor) out->set_active(out->active() + 1);
        if (c.spec->is_supervisor())
          out->set_supervisors(out->supervisors() + 1);
        else
          out->set_workers(out->workers() + 1);
      }
      return reply(e, out);
    }
    if (const auto* cmd = e.payload_as<v1::ChildCommand>()) return on_command(e, *cmd);
    return reply_error(e, validation_error("supervisor '" + spec_->name
                                           + "' has no handler for payload type '"
                                           + e.payload_type_name() + "'"));
  }

  void fill_info(v1::ChildInfo& out, const child& c) const {
    out.set_id(c.spec->id);
    out.set_type(std::string{c.spec->type_name()});
    out.set_kind(c.kind);
    out.set_restart(std::string{to_string(c.spec->restart)});
    out.set_state(std::string{to_string(c.state)});
    out.set_restarts(c.restarts);
    out.set_last_exit(c.last_exit);
  }

  caf::result<envelope> on_tree(const envelope& e, const v1::TreeRequest& t) {
    auto tree = std::make_shared<v1::SupervisorTree>();
    tree->set_name(spec_->name);
    tree->set_strategy(std::string{to_string(spec_->policy.how)});
    tree->set_max_restarts(spec_->policy.limits.max_restarts);
    tree->set_period_seconds(std::chrono::duration<double>(spec_->policy.limits.period).count());
    tree->set_restarts(total_restarts_);
    tree->set_escalations(escalations_);
    const auto limit = t.max_children() != 0 ? t.max_children() : k_default_tree_children;
    // Subtrees to fetch: running child supervisors, and agents that supervise children.
    std::vector<std::pair<int, caf::strong_actor_ptr>> subs;
    for (auto& [pos, c] : children_) {
      if (static_cast<std::uint32_t>(tree->children_size()) >= limit) {
        tree->set_omitted(tree->omitted() + 1);
        continue;
      }
      auto& info = *tree->add_children();
      fill_info(info, c);
      if (!c.actor) continue;
      if (c.spec->is_supervisor())
        subs.emplace_back(tree->children_size() - 1, c.actor);
      else if (c.spec->is_agent())
        if (auto cs = core_->registry.find(children_supervisor_name(c.spec->id)))
          subs.emplace_back(tree->children_size() - 1, std::move(cs));
    }
    if (subs.empty()) return reply(e, tree);
    auto rp = make_response_promise<envelope>();
    auto remaining = std::make_shared<std::size_t>(subs.size());
    auto done = [this, rp, tree, remaining, e]() mutable {
      if (--*remaining == 0) rp.deliver(reply(e, tree));
    };
    v1::TreeRequest sub_req;
    sub_req.set_max_children(limit);
    for (auto& [idx, actor] : subs) {
      auto msg = std::make_shared<v1::TreeRequest>(sub_req);
      auto to = af::address{core_->node_name, tree->children(idx).id()};
      auto env =
          core_->make_envelope(self_addr_, to, msg, &e, e.logical_ts() + 1, e.tenant(), rng_);
      request(caf::actor_cast<caf::actor>(actor), k_subtree_timeout, std::move(env))
          .then(
              [tree, idx = idx, done](const envelope& r) mutable {
                auto* sub = tree->mutable_children(idx)->mutable_subtree();
                if (const auto* st = r.payload_as<v1::SupervisorTree>())
                  *sub = *st;
                else
                  sub->set_error("unexpected reply " + r.payload_type_name());
                done();
              },
              [tree, idx = idx, done](caf::error& err) mutable {
                tree->mutable_children(idx)->mutable_subtree()->set_error(to_string(err));
                done();
              });
    }
    return rp;
  }

  caf::result<envelope> on_command(const envelope& e, const v1::ChildCommand& cmd) {
    auto it = by_id_.find(cmd.id());
    if (it == by_id_.end())
      return reply_error(
          e, not_found_error("supervisor '" + spec_->name + "' has no child '" + cmd.id() + "'"));
    auto pos = it->second;
    auto& c = children_.at(pos);
    auto result = [&](std::string state, std::vector<std::string> killed = {}) {
      auto out = std::make_shared<v1::ChildCommandResult>();
      out->set_id(cmd.id());
      out->set_state(std::move(state));
      for (auto& k : killed)
        out->add_killed(std::move(k));
      return out;
    };
    switch (cmd.op()) {
    case v1::ChildCommand::TERMINATE: {
      if (!c.actor) {
        // A child waiting for its backoff restart is stopped by cancelling the restart.
        c.state = child_state::stopped;
        if (is_dynamic() || c.spec->restart == restart_policy::temporary) remove_child(pos);
        return reply(e, result("stopped"));
      }
      if (op_)
        return reply_error(e, error{errc::transient,
                                    "supervisor '" + spec_->name + "' is busy restarting; retry"});
      auto rp = make_response_promise<envelope>();
      auto id = cmd.id();
      begin_stop({pos}, false, [this, rp, e, pos, id](std::vector<std::string> killed) mutable {
        auto ci = children_.find(pos);
        std::string state = "stopped";
        if (ci != children_.end()
            && (is_dynamic() || ci->second.spec->restart == restart_policy::temporary)) {
          remove_child(pos);
          state = "deleted";
        }
        auto out = std::make_shared<v1::ChildCommandResult>();
        out->set_id(id);
        out->set_state(state);
        for (auto& k : killed)
          out->add_killed(k);
        rp.deliver(reply(e, out));
      });
      return rp;
    }
    case v1::ChildCommand::RESTART: {
      if (is_dynamic())
        return reply_error(e, validation_error("restart_child: supervisor '" + spec_->name
                                               + "' is dynamic; start the child again"));
      if (c.actor)
        return reply_error(e, error{errc::conflict, "restart_child: child '" + cmd.id()
                                                        + "' is running; terminate it first"});
      if (auto r = start(pos); !r) return reply_error(e, r.error());
      return reply(e, result("running"));
    }
    case v1::ChildCommand::DELETE: {
      if (c.actor)
        return reply_error(e, error{errc::conflict, "delete_child: child '" + cmd.id()
                                                        + "' is running; terminate it first"});
      remove_child(pos);
      return reply(e, result("deleted"));
    }
    default:
      break;
    }
    return reply_error(e, validation_error("unknown child command"));
  }

  node_core* core_;
  std::shared_ptr<const supervisor_spec> spec_;
  af::rng rng_;
  af::address self_addr_;
  std::map<std::uint64_t, child> children_; // key: start position
  std::unordered_map<const caf::actor_control_block*, std::uint64_t> by_actor_;
  std::unordered_map<std::string, std::uint64_t> by_id_;
  std::uint64_t next_pos_ = 0;
  std::deque<duration> restart_times_;
  std::uint64_t total_restarts_ = 0;
  std::uint64_t escalations_ = 0;
  std::optional<stop_op> op_;
  std::uint64_t next_op_ = 1;
  std::deque<std::function<void()>> queued_;
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> pending_starts_;
  std::uint64_t next_token_ = 1;
  bool shutting_down_ = false;
  std::unordered_map<std::string, counter_handle> restart_metrics_;
  counter_handle escalations_metric_;
  double log_tokens_ = 0;
  duration log_refill_{};
  std::uint64_t log_suppressed_ = 0;
};

} // namespace

std::string children_supervisor_name(std::string_view agent_name) {
  return "af.children." + std::string{agent_name};
}

expected<agent_ref> spawn_supervisor(node_core& core, std::shared_ptr<const supervisor_spec> spec,
                                     bool system) {
  if (auto v = validate(*spec); !v) return v.error();
  const auto& name = spec->name;
  if (!system && name.starts_with("af."))
    return validation_error("supervisor name '" + name + "': the prefix 'af.' is reserved");
  if (auto r = core.registry.reserve(name, std::string{k_supervisor_kind}); !r) return r.error();
  auto actor = core.sys->spawn<supervisor>(&core, spec);
  auto ptr = caf::actor_cast<caf::strong_actor_ptr>(actor);
  return agent_ref{ptr.get(), address{core.node_name, name}};
}

} // namespace af::sup::detail
