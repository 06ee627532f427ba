// af.exec: starts executors (one supervised child agent per execution, named "exec/<id>"),
// resumes unfinished executions when the node starts, answers `af exec` (list, show, control,
// replay) and spawns the agent types and tool invokers plans name, on first use.
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"

#include "af/hash.hpp"

#include "af/store/journal.hpp"
#include "af/v1/store.pb.h"
#include "plan/executor.hpp"
#include "plan/replay.hpp"

#include <algorithm>
#include <cctype>
#include <deque>
#include <unordered_map>

namespace af::plan {

namespace {

constexpr std::size_t k_finished_kept = 10000;

bool ended(v1::ExecStatus s) {
  return s == v1::EXEC_COMPLETED || s == v1::EXEC_FAILED || s == v1::EXEC_CANCELED;
}


class exec_manager : public agent_base<exec_manager> {
public:
  explicit exec_manager(std::shared_ptr<const exec_shared> shared) : shared_(std::move(shared)) {}

  static void define(handlers<exec_manager>& h) {
    h.kind("af.exec")
        .on(&exec_manager::on_start_execution)
        .on(&exec_manager::on_update)
        .on(&exec_manager::on_show)
        .on(&exec_manager::on_list)
        .on(&exec_manager::on_control)
        .on(&exec_manager::on_replay)
        .on(&exec_manager::on_ensure)
        .on(&exec_manager::on_resume);
  }

  [[nodiscard]] sup::flags child_supervision() const override {
    sup::flags f;
    f.limits.max_restarts = 1000; // executors recover by replay; one bad execution must not
    f.limits.period = std::chrono::seconds(10); // take all the others down with it
    return f;
  }

  void on_start(context& ctx) override {
    resuming_ = shared_->opts.resume;
    if (resuming_) ctx.schedule(duration::zero(), v1::ExecResume{});
  }

  void on_resume(context& ctx, const v1::ExecResume&) {
    resume_again_ = false;
    list_page(ctx, {});
  }

  void on_start_execution(context& ctx, const v1::StartExecution& m,
                          responder<v1::ExecutionInfo> r) {
    if (m.plan().type() == v1::PLAN_TYPE_UNSPECIFIED) {
      r.fail(validation_error("start: the request carries no compiled plan"));
      return;
    }
    if (m.mode() == v1::EXEC_DRY_RUN) {
      r.fail(validation_error("start: a dry run starts no execution (af run --mode dry-run "
                              "prints the schedule)"));
      return;
    }
    auto inputs = resolve_inputs(m.plan(), m.inputs_json());
    if (!inputs) {
      r.fail(inputs.error());
      return;
    }
    if (!m.execution_id().empty()) {
      // Ids become stream names and idempotency keys (ID/STEP/ATTEMPT): no '/', nothing odd.
      const auto& id = m.execution_id();
      const bool ok = id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
      });
      if (!ok) {
        r.fail(validation_error("start: execution id '" + id + "': expected at most 128 of "
                                "[A-Za-z0-9_.-]"));
        return;
      }
    }
    v1::StartExecution start = m;
    start.set_inputs_json(*inputs);
    const std::string id = m.execution_id().empty() ? ctx.next_id().to_string() : m.execution_id();
    start.set_execution_id(id);
    if (auto it = infos_.find(id); it != infos_.end() && ended(it->second.status())) {
      answer({r, m.plan().hash()}, it->second);
      return;
    }
    (m.wait() ? end_waiters_ : start_waiters_)[id].push_back({r, m.plan().hash()});
    if (live_.contains(id)) {
      if (!m.wait()) resolve_start(id);
      return;
    }
    spawn(ctx, id, std::make_shared<const v1::StartExecution>(std::move(start)));
  }

  void on_update(context&, const v1::ExecutorUpdate& u) {
    const auto& info = u.info();
    const std::string id = info.execution_id();
    infos_[id] = info;
    resolve_start(id);
    if (!ended(info.status())) return;
    live_.erase(id);
    if (auto it = end_waiters_.find(id); it != end_waiters_.end()) {
      for (auto& w : it->second)
        answer(w, info);
      end_waiters_.erase(it);
    }
    finished_.push_back(id);
    while (finished_.size() > k_finished_kept) {
      infos_.erase(finished_.front());
      finished_.pop_front();
    }
  }

  void on_show(context& ctx, const v1::ExecutionRef& m, responder<v1::ExecutionInfo> r) {
    if (live_.contains(m.execution_id())) {
      ctx.ask<v1::ExecutionInfo>(stream_of(m.execution_id()), m, shared_->opts.journal_timeout,
                                 [this, &ctx, m, r](expected<v1::ExecutionInfo> i) mutable {
                                   if (i) {
                                     r.reply(std::move(i).value());
                                     return;
                                   }
                                   // The executor stopped in between (it ended): the journal
                                   // has its whole story.
                                   show_from_journal(ctx, m, std::move(r));
                                 });
      return;
    }
    show_from_journal(ctx, m, std::move(r));
  }

  void show_from_journal(context& ctx, const v1::ExecutionRef& m,
                         responder<v1::ExecutionInfo> r) {
    const std::string id = m.execution_id();
    read_all(ctx, id, 1, {}, [id, r, steps = m.steps()](context&,
                                                        expected<std::vector<v1::ExecEvent>> ev,
                                                        std::int64_t last_ns) mutable {
      if (!ev) {
        r.fail(std::move(ev).error());
        return;
      }
      auto rep = replay(*ev);
      if (!rep) {
        r.fail(rep.error());
        return;
      }
      auto info = summary(id, *rep->eng, ev->size(), steps);
      if (rep->eng->finished()) info.set_ended_at_ns(last_ns);
      r.reply(std::move(info));
    });
  }

  /// Lists from the journal (so ended executions from before a restart and executions of an
  /// embedded `af exec list` appear), with the live state of those this node runs.
  void on_list(context& ctx, const v1::ListExecutions& m, responder<v1::ExecutionList> r) {
    v1::ListStreamsRequest req;
    req.set_prefix("exec/");
    req.set_max(m.max() > 0 ? m.max() : 1000);
    req.set_all_tenants(true);
    ctx.ask<v1::ListStreamsResult>(
        store::k_journal_agent, std::move(req), shared_->opts.journal_timeout,
        [this, &ctx, all = m.all(), r](expected<v1::ListStreamsResult> l) mutable {
          if (!l) {
            r.fail(std::move(l).error());
            return;
          }
          struct gather {
            explicit gather(responder<v1::ExecutionList> rr) : r(std::move(rr)) {}
            v1::ExecutionList out;
            std::size_t waiting = 0;
            responder<v1::ExecutionList> r;
          };
          auto g = std::make_shared<gather>(r);
          for (const auto& si : l->streams()) {
            const std::string id = si.stream().substr(5);
            if (auto it = infos_.find(id); it != infos_.end()) {
              if (all || !ended(it->second.status())) *g->out.add_executions() = it->second;
              continue;
            }
            if (!all && si.finished_at_ns() != 0) continue;
            auto* info = g->out.add_executions();
            info->set_execution_id(id);
            info->set_tenant(si.tenant());
            info->set_version(si.version());
            info->set_status(v1::EXEC_RUNNING);
            if (si.finished_at_ns() != 0) info->set_ended_at_ns(si.finished_at_ns());
            const int at = g->out.executions_size() - 1;
            // The first event names the plan; the last one, for an ended stream, how it ended.
            std::vector<std::uint64_t> versions{1};
            if (si.finished_at_ns() != 0 && si.version() > 1) versions.push_back(si.version());
            for (auto v : versions) {
              ++g->waiting;
              v1::ReadRequest rr;
              rr.set_stream(si.stream());
              rr.set_from_version(v);
              rr.set_max(1);
              ctx.ask<v1::ReadResult>(
                  store::k_journal_agent, std::move(rr), shared_->opts.journal_timeout,
                  [g, at](expected<v1::ReadResult> rd) {
                    if (!rd)
                      g->out.mutable_executions(at)->set_error("cannot read its stream: "
                                                               + rd.error().to_string());
                    if (rd && rd->events_size() == 1)
                      if (auto e = event_from(rd->events(0).type(), rd->events(0).payload()))
                        describe_from(*e, *g->out.mutable_executions(at));
                    if (--g->waiting == 0) g->r.reply(std::move(g->out));
                  });
            }
          }
          if (g->waiting == 0) g->r.reply(std::move(g->out));
        });
  }

  void on_control(context& ctx, const v1::ExecControl& m, responder<v1::ExecutionInfo> r) {
    const std::string id = m.execution_id();
    if (!live_.contains(id) && resuming_) {
      // The node is still resuming the store's unfinished executions: this one may be among them.
      after_resume_.push_back([this, m, r](context& c) mutable { on_control(c, m, std::move(r)); });
      return;
    }
    if (!live_.contains(id)) {
      auto it = infos_.find(id);
      if (it != infos_.end())
        r.fail(error{errc::conflict, "execution " + id + " has ended"});
      else
        r.fail(not_found_error("execution " + id + " is not running on this node"));
      return;
    }
    ctx.ask<v1::ExecutionInfo>(stream_of(id), m, shared_->opts.journal_timeout,
                               [r](expected<v1::ExecutionInfo> i) mutable {
                                 if (i)
                                   r.reply(std::move(i).value());
                                 else
                                   r.fail(std::move(i).error());
                               });
  }

  void on_replay(context& ctx, const v1::ReplayRequest& m, responder<v1::ReplayReport> r) {
    const std::string id = m.execution_id();
    read_all(ctx, id, 1, {},
             [m, r](context&, expected<std::vector<v1::ExecEvent>> ev, std::int64_t) mutable {
               if (!ev) {
                 r.fail(std::move(ev).error());
                 return;
               }
               auto rep = replay(*ev, m.has_plan() ? &m.plan() : nullptr);
               if (!rep) {
                 r.fail(rep.error());
                 return;
               }
               v1::ReplayReport out;
               out.set_compatible(rep->compatible);
               out.set_events_checked(rep->events_checked);
               out.set_divergence(rep->divergence);
               out.set_recorded_hash(rep->recorded_hash);
               out.set_replay_hash(rep->replay_hash);
               r.reply(std::move(out));
             });
  }

  expected<v1::EnsureAgentResult> on_ensure(context& ctx, const v1::EnsureAgent& m) {
    const bool tool = m.kind() == v1::STEP_TOOL;
    const std::string key = (tool ? "tool:" : "agent:") + m.target();
    if (auto it = spawned_.find(key); it != spawned_.end()) return it->second;
    v1::EnsureAgentResult res;
    if (tool) {
      const auto* t = shared_->opts.tools->find(m.target());
      if (t == nullptr)
        return not_found_error("no tool '" + m.target() + "' is registered with this node"
                               + known(shared_->opts.tools->names()));
      const std::string name = tool::invoker_name(m.target());
      if (!ctx.lookup(name)) {
        agent_options o;
        o.detached = t->detached;
        auto made = ctx.spawn_erased([n = m.target(), tt = *t] { return tool::make_invoker(n, tt); },
                                     name, o);
        if (!made) return std::move(made).error();
      }
      res.add_names(name);
    } else {
      if (ctx.lookup(m.target())) {
        res.add_names(m.target());
      } else {
        const auto* t = shared_->opts.agents->find(m.target());
        if (t == nullptr)
          return not_found_error("no agent '" + m.target()
                                 + "': no live agent has that name and no agent type is "
                                   "registered under it"
                                 + known(shared_->opts.agents->names()));
        const std::size_t n = std::max<std::size_t>(1, t->instances);
        for (std::size_t i = 0; i < n; ++i) {
          const std::string name = n == 1 ? m.target() : m.target() + "#" + std::to_string(i);
          if (!ctx.lookup(name)) {
            agent_options o;
            o.detached = t->detached;
            auto made = ctx.spawn_erased(t->factory, name, o);
            if (!made) return std::move(made).error();
          }
          res.add_names(name);
        }
      }
    }
    spawned_[key] = res;
    return res;
  }

private:
  /// What a stream's first event (the plan) or last event (how it ended) says of an execution
  /// (the two are read in either order).
  static void describe_from(const v1::ExecEvent& e, v1::ExecutionInfo& i) {
    if (e.has_started()) {
      i.set_plan_name(e.started().plan().name());
      i.set_plan_hash(e.started().plan().hash());
      i.set_mode(e.started().mode());
      i.set_started_at_ns(e.started().started_at_ns());
      if (e.started().plan().type() == v1::PLAN_SAGA && i.saga_state().empty())
        i.set_saga_state(i.status() == v1::EXEC_COMPLETED ? "completed"
                         : i.status() == v1::EXEC_RUNNING ? "running"
                                                          : "stuck");
    } else if (e.has_exec_completed()) {
      i.set_status(v1::EXEC_COMPLETED);
      if (!i.saga_state().empty()) i.set_saga_state("completed");
    } else if (e.has_exec_failed()) {
      i.set_status(v1::EXEC_FAILED);
      i.set_error(e.exec_failed().error_kind() + ": " + e.exec_failed().message());
      if (e.exec_failed().compensated())
        i.set_saga_state("compensated");
      else if (!i.saga_state().empty())
        i.set_saga_state("stuck"); // a saga that ended with steps left to undo
    } else if (e.has_canceled()) {
      i.set_status(v1::EXEC_CANCELED);
      if (!i.saga_state().empty()) i.set_saga_state("stuck"); // canceled while compensating
    }
  }

  /// A start request waiting for its execution, with the hash of the plan it asked to run.
  struct waiter {
    responder<v1::ExecutionInfo> r;
    std::string plan_hash;
  };

  /// Answers a start: an id that already names an execution of another plan is a conflict, never
  /// a silent attach to work the caller did not ask for.
  static void answer(waiter w, const v1::ExecutionInfo& info) {
    if (!info.plan_hash().empty() && !w.plan_hash.empty() && info.plan_hash() != w.plan_hash) {
      w.r.fail(error{errc::conflict, "execution " + info.execution_id()
                                         + " already exists and runs plan '" + info.plan_name()
                                         + "' " + to_hex(info.plan_hash()).substr(0, 12)
                                         + "; start this plan under another id"});
      return;
    }
    w.r.reply(info);
  }

  static std::string known(const std::vector<std::string>& names) {
    if (names.empty()) return " (none are registered)";
    std::string s;
    for (const auto& n : names)
      s += (s.empty() ? "" : ", ") + n;
    return " (registered: " + s + ")";
  }

  /// `start` is shared by every instance the executor's restarts create (null: a resume).
  void spawn(context& ctx, const std::string& id, std::shared_ptr<const v1::StartExecution> start) {
    agent_options o;
    o.restart = sup::restart_policy::transient;
    const bool resume = !start;
    auto ref = ctx.spawn_erased(sup::agent_factory<executor>(shared_, id, std::move(start)),
                                stream_of(id), o);
    if (!ref) {
      if (resume && ref.error().code() == errc::conflict) {
        // A resume while the executor of a previous af.exec instance still stops (its name is
        // still bound): list again shortly; the stream is resumed once the name is free.
        ctx.log().warn("exec_resume_later", {}, nlohmann::json{{"execution_id", id},
                                                              {"error", ref.error().to_string()}});
        if (!resume_again_) {
          resume_again_ = true;
          ctx.schedule(std::chrono::milliseconds{100}, v1::ExecResume{});
        }
        return;
      }
      ctx.log().error("exec_spawn_failed", {}, nlohmann::json{{"execution_id", id},
                                                              {"error", ref.error().to_string()}});
      fail_waiters(id, ref.error());
      return;
    }
    live_.insert(id);
  }

  void resolve_start(const std::string& id) {
    auto it = start_waiters_.find(id);
    if (it == start_waiters_.end()) return;
    auto info = infos_.find(id);
    if (info == infos_.end()) return;
    for (auto& w : it->second)
      answer(w, info->second);
    start_waiters_.erase(it);
  }

  void fail_waiters(const std::string& id, const error& e) {
    for (auto* m : {&start_waiters_, &end_waiters_}) {
      auto it = m->find(id);
      if (it == m->end()) continue;
      for (auto& w : it->second)
        w.r.fail(e);
      m->erase(it);
    }
  }

  void list_page(context& ctx, std::string after) {
    v1::ListStreamsRequest req;
    req.set_prefix("exec/");
    req.set_after(after);
    req.set_max(1000);
    req.set_all_tenants(true);
    ctx.ask<v1::ListStreamsResult>(
        store::k_journal_agent, std::move(req), shared_->opts.journal_timeout,
        [this, &ctx](expected<v1::ListStreamsResult> r) {
          if (!r) {
            // The journal may still be opening its store: try again shortly.
            ctx.log().warn("exec_resume_retry", {}, nlohmann::json{{"error", r.error().to_string()}});
            ctx.schedule(std::chrono::milliseconds{500}, v1::ExecResume{});
            return;
          }
          std::size_t resumed = 0;
          for (const auto& s : r->streams()) {
            if (s.finished_at_ns() != 0) continue;
            const std::string id = s.stream().substr(5);
            if (live_.contains(id)) continue;
            spawn(ctx, id, nullptr);
            ++resumed;
          }
          if (resumed > 0)
            ctx.log().info("exec_resumed", {}, nlohmann::json{{"executions", resumed}});
          if (r->streams_size() == 1000) {
            list_page(ctx, r->streams(999).stream());
            return;
          }
          resuming_ = false;
          auto waiting = std::move(after_resume_);
          after_resume_.clear();
          for (auto& f : waiting)
            f(ctx);
        });
  }

  /// Called with the stream's events and the commit time of the last one.
  using events_cb =
      std::function<void(context&, expected<std::vector<v1::ExecEvent>>, std::int64_t)>;

  void read_all(context& ctx, const std::string& id, std::uint64_t from,
                std::vector<v1::ExecEvent> acc, events_cb done, std::int64_t last_ns = 0) {
    v1::ReadRequest rr;
    rr.set_stream(stream_of(id));
    rr.set_from_version(from);
    rr.set_max(1000);
    ctx.ask<v1::ReadResult>(
        store::k_journal_agent, std::move(rr), shared_->opts.journal_timeout,
        [this, &ctx, id, from, acc = std::move(acc), done,
         last_ns](expected<v1::ReadResult> r) mutable {
          if (!r) {
            done(ctx, std::move(r).error(), 0);
            return;
          }
          for (const auto& se : r->events()) {
            last_ns = se.committed_at_ns();
            auto e = event_from(se.type(), se.payload());
            if (!e) {
              done(ctx,
                   validation_error("execution " + id + ": journal event "
                                    + std::to_string(se.version()) + ": " + e.error().message()),
                   0);
              return;
            }
            acc.push_back(std::move(e).value());
          }
          const std::uint64_t next = from + static_cast<std::uint64_t>(r->events_size());
          if (r->events_size() > 0 && next <= r->stream_version()) {
            read_all(ctx, id, next, std::move(acc), std::move(done), last_ns);
            return;
          }
          if (acc.empty()) {
            done(ctx, not_found_error("no execution " + id + " in the store"), 0);
            return;
          }
          done(ctx, std::move(acc), last_ns);
        });
  }

  static v1::ExecutionInfo summary(const std::string& id, const engine& e, std::size_t events,
                                   bool with_steps) {
    v1::ExecutionInfo i;
    i.set_execution_id(id);
    i.set_status(e.status());
    i.set_plan_name(e.started().plan().name());
    i.set_plan_hash(e.started().plan().hash());
    i.set_mode(e.started().mode());
    i.set_steps_total(e.steps().size());
    i.set_steps_completed(e.steps_completed());
    i.set_steps_failed(e.steps_failed());
    i.set_steps_in_flight(e.in_flight().size());
    i.set_outputs_json(e.outputs_json());
    i.set_error(e.error_text());
    i.set_started_at_ns(e.started().started_at_ns());
    i.set_version(events);
    i.set_tenant(e.started().plan().tenant());
    if (e.started().plan().type() == v1::PLAN_SAGA) i.set_saga_state(e.saga_state());
    if (!with_steps) return i;
    for (const auto& [sid, v] : e.steps()) {
      auto& s = *i.add_steps();
      s.set_step_id(sid);
      s.set_state(v.state);
      s.set_attempt(v.attempt);
      s.set_output_json(v.output_json);
      s.set_error(v.error);
    }
    return i;
  }

  std::shared_ptr<const exec_shared> shared_;
  bool resuming_ = false; ///< the unfinished executions of the store are being spawned
  bool resume_again_ = false; ///< a resume is scheduled (an executor's name was still taken)
  std::vector<std::function<void(context&)>> after_resume_; ///< controls that wait for that
  std::set<std::string> live_;
  std::map<std::string, v1::ExecutionInfo> infos_;
  std::deque<std::string> finished_;
  std::unordered_map<std::string, std::vector<waiter>> start_waiters_;
  std::unordered_map<std::string, std::vector<waiter>> end_waiters_;
  std::unordered_map<std::string, v1::EnsureAgentResult> spawned_;
};

} // namespace

sup::child_spec exec_child(exec_options opts) {
  auto shared = std::make_shared<exec_shared>();
  shared->opts = std::move(opts);
  sup::child_spec spec;
  spec.id = std::string{k_exec_agent};
  spec.restart = sup::restart_policy::permanent;
  spec.system = true;
  spec.make_agent = sup::agent_factory<exec_manager>(
      std::shared_ptr<const exec_shared>{std::move(shared)});
  return spec;
}

} // namespace af::plan
