// af.exec: starts executors (one supervised child agent per execution, named "exec/<id>"),
// resumes unfinished executions when the node starts, answers `af exec` (list, show, control,
// replay) and spawns the agent types and tool invokers plans name, on first use.
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"

#include "af/hash.hpp"

#include "af/cluster/names.hpp"
#include "af/metrics.hpp"
#include "af/store/journal.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/meta.pb.h"
#include "af/v1/store.pb.h"
#include "plan/executor.hpp"
#include "plan/lease_book.hpp"
#include "plan/replay.hpp"

#include <algorithm>
#include <cctype>
#include <deque>
#include <optional>
#include <set>
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
        .on(&exec_manager::on_resume)
        .on(&exec_manager::on_lease_tick)
        .on(&exec_manager::on_scan)
        .on(&exec_manager::on_fenced)
        .on(&exec_manager::on_membership)
        .on(&exec_manager::on_handover)
        .on(&exec_manager::on_handover_check);
  }

  [[nodiscard]] sup::flags child_supervision() const override {
    sup::flags f;
    // Dynamic: an executor that stopped for good (its execution ended, or it was told to stop)
    // is forgotten, so the same execution can get an executor again later (a resume after its
    // lease came back, a start of an ended id) instead of the supervisor refusing the name.
    f.how = sup::strategy::dynamic;
    f.limits.max_restarts = 1000; // executors recover by replay; one bad execution must not
    f.limits.period = std::chrono::seconds(10); // take all the others down with it
    return f;
  }

  void on_start(context& ctx) override {
    resuming_ = shared_->opts.resume;
    if (shared_->opts.ownership.enabled) {
      start_ownership(ctx);
      return;
    }
    if (resuming_) ctx.schedule(duration::zero(), v1::ExecResume{});
  }

  void on_resume(context& ctx, const v1::ExecResume&) {
    resume_again_ = false;
    if (handover_) return; // stopping: nothing more starts here
    if (own_) {
      run_scan(ctx); // with ownership, resuming is taking the leases of this node's executions
      return;
    }
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
                        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-'
                               || c == '_' || c == '.';
                      });
      if (!ok) {
        r.fail(validation_error("start: execution id '" + id
                                + "': expected at most 128 of "
                                  "[A-Za-z0-9_.-]"));
        return;
      }
    }
    const std::string id = m.execution_id().empty() ? ctx.next_id().to_string() : m.execution_id();
    if (auto it = infos_.find(id); it != infos_.end() && ended(it->second.status())) {
      answer({r, m.plan().hash()}, it->second);
      return;
    }
    if (handover_) {
      r.fail(stopping_error("start: execution " + id));
      return;
    }
    auto shared_start = borrow_start(ctx, m, id, std::move(*inputs));
    if (own_ && !live_.contains(id) && !own_->book.holds(id, ctx.monotonic())
        && shared_->opts.ownership.planted_bug != exec_planted_bug::skip_lease_check) {
      // Only the holder of the execution's lease runs it: take the lease first (a fresh id's
      // lease is free), or hand the request to the node that holds it.
      acquire(ctx, id, [this, &ctx, id, r, shared_start](const lease_outcome& o) mutable {
        if (o.granted) {
          start_owned(ctx, id, *shared_start, std::move(r), shared_start);
          return;
        }
        if (!o.holder.empty() && o.holder != own_->owner) {
          forward_start(ctx, o.holder, *shared_start, std::move(r));
          return;
        }
        r.fail(error{errc::transient, "start: execution " + id + ": cannot take its lease "
                                          + lease_of(id) + ": " + o.why});
      });
      return;
    }
    start_owned(ctx, id, *shared_start, std::move(r), shared_start);
  }

  /// The request with its id and resolved inputs set, sharing the request's plan instead of
  /// copying it (with_borrowed_plan; ~2.5 us of CPU per step of a 10,000-step chain): the plan is
  /// immutable once sent, and a copy of the request's envelope keeps it alive.
  static std::shared_ptr<const v1::StartExecution> borrow_start(context& ctx,
                                                                const v1::StartExecution& m,
                                                                const std::string& id,
                                                                std::string inputs) {
    const envelope* cur = ctx.current();
    if (cur == nullptr || cur->payload_as<v1::StartExecution>() != &m) {
      auto copy = std::make_shared<v1::StartExecution>(m);
      copy->set_inputs_json(std::move(inputs));
      copy->set_execution_id(id);
      return copy;
    }
    // Every field of StartExecution but the plan, which is borrowed.
    auto start = with_borrowed_plan<v1::StartExecution>(m.plan(), std::make_shared<envelope>(*cur));
    start->set_inputs_json(std::move(inputs));
    start->set_mode(m.mode());
    start->set_by(m.by());
    start->set_wait(m.wait());
    start->set_execution_id(id);
    return start;
  }

  /// Starts (or attaches to) an execution this node may run.
  void start_owned(context& ctx, const std::string& id, const v1::StartExecution& m,
                   responder<v1::ExecutionInfo> r,
                   std::shared_ptr<const v1::StartExecution> start) {
    (m.wait() ? end_waiters_ : start_waiters_)[id].push_back({r, m.plan().hash()});
    if (live_.contains(id)) {
      if (!m.wait()) resolve_start(id);
      return;
    }
    spawn(ctx, id, std::move(start));
  }

  void on_update(context& ctx, const v1::ExecutorUpdate& u) {
    const auto& info = u.info();
    const std::string id = info.execution_id();
    if (own_ && !live_.contains(id)) return; // from an executor told to stop: not ours now
    infos_[id] = info;
    resolve_start(id);
    if (!ended(info.status())) return;
    live_.erase(id);
    if (own_) release(ctx, id);
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

  void show_from_journal(context& ctx, const v1::ExecutionRef& m, responder<v1::ExecutionInfo> r) {
    const std::string id = m.execution_id();
    read_all(ctx, id, 1, {},
             [id, r, steps = m.steps()](context&, expected<std::vector<v1::ExecEvent>> ev,
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
    if (own_ && !live_.contains(id) && !infos_.contains(id)) {
      // The execution may run on another node of the cluster: its lease says which.
      v1::LeaseGet g;
      g.set_key(lease_of(id));
      ctx.ask<v1::LeaseResult>(cluster::k_raft_agent, std::move(g),
                               shared_->opts.ownership.ask_timeout,
                               [this, &ctx, m, r, id](expected<v1::LeaseResult> l) mutable {
                                 if (l && l->granted() && l->owner() != own_->owner) {
                                   forward_control(ctx, l->owner(), m, std::move(r));
                                   return;
                                 }
                                 control_here(ctx, m, std::move(r));
                               });
      return;
    }
    control_here(ctx, m, std::move(r));
  }

  void control_here(context& ctx, const v1::ExecControl& m, responder<v1::ExecutionInfo> r) {
    const std::string id = m.execution_id();
    if (!live_.contains(id) && resuming_) {
      // The node is still resuming the store's unfinished executions: this one may be among them.
      after_resume_.push_back(
          [this, m, r](context& c) mutable { control_here(c, m, std::move(r)); });
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
        auto made = ctx.spawn_erased(
            [n = m.target(), tt = *t] { return tool::make_invoker(n, tt); }, name, o);
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
  // ---- ownership (docs/consensus.md, "Takeover of a dead node's work") -----------------------

  struct ownership_state {
    ownership_state(const exec_ownership& o, std::string name)
        : book({o.lease_ttl, o.margin}), owner(std::move(name)) {}
    lease_book book;
    std::string owner;
    bool subscribing = false;
    bool scanning = false;
    bool scan_again = false;          ///< another scan was asked for while one ran
    bool listing_done = false;        ///< the current scan's listing came back
    bool pass_complete = false;       ///< the current scan's listing reached the last stream
    std::size_t scan_pending = 0;     ///< lease requests of the current scan still out
    std::size_t scan_resumed = 0;     ///< executors the current scan spawned
    std::string scan_after;           ///< where the next scan's listing continues
    std::optional<duration> check_at; ///< a deadline check is scheduled for then
    std::set<std::string> missing;    ///< live executions whose executor was not found
    counter_handle takeovers, expirations, lost, fenced, renew_failed, scan_errors;
    gauge_handle held;
  };

  struct lease_outcome {
    bool granted = false;
    std::string holder; ///< who holds the lease when it was not granted (empty: unknown)
    std::string why;    ///< why it was not granted
  };
  using lease_done = std::function<void(const lease_outcome&)>;

  [[nodiscard]] const exec_ownership& own_opts() const { return shared_->opts.ownership; }

  static std::int64_t to_ms(duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  }

  void start_ownership(context& ctx) {
    const auto& o = own_opts();
    own_.emplace(o, o.owner.empty() ? ctx.self().node : o.owner);
    auto& m = ctx.metrics();
    auto c = [&](const char* name, const char* help, metric_labels l = {}) {
      auto r = m.counter(name, help, l);
      return r ? *r : counter_handle{};
    };
    own_->takeovers = c("af_exec_takeovers_total",
                        "Executions this node took over after their owner's lease expired");
    own_->expirations = c("af_exec_lease_expirations_total",
                          "Executions stopped here because their lease could not be renewed in "
                          "time");
    own_->lost = c("af_exec_leases_lost_total",
                   "Renewals refused because another node held the lease (a clock or pause "
                   "beyond the margin)");
    own_->fenced = c("af_exec_fenced_total",
                     "Executors stopped because the journal refused their append (another "
                     "node appended first)");
    own_->renew_failed = c("af_exec_lease_renewals_failed_total",
                           "Lease renewals that got no answer or an error (no Raft leader, "
                           "no majority)");
    own_->scan_errors =
        c("af_exec_takeover_scan_errors_total", "Takeover scans or lease reads that failed");
    if (auto g = m.gauge("af_exec_leases_held", "Execution leases this node holds"))
      own_->held = *g;
    ctx.log().info("exec_ownership", {},
                   nlohmann::json{{"owner", own_->owner},
                                  {"lease_ttl_ms", to_ms(o.lease_ttl)},
                                  {"renew_ms", to_ms(o.renew_every)},
                                  {"margin_ms", to_ms(o.margin)},
                                  {"scan_ms", to_ms(o.scan_every)}});
    if (resuming_) {
      v1::ExecTakeoverScan s;
      s.set_periodic(true);
      ctx.schedule(duration::zero(), s);
    }
    v1::ExecLeaseTick t;
    t.set_renew(true);
    ctx.schedule(o.renew_every, t);
  }

  /// Takes (or renews) the lease of `id`; `done` learns whether this node holds it now.
  void acquire(context& ctx, const std::string& id, lease_done done) {
    own_->book.acquiring(id);
    const auto sent = ctx.monotonic();
    v1::LeaseAcquire a;
    a.set_key(lease_of(id));
    a.set_owner(own_->owner);
    a.set_ttl_ms(static_cast<std::uint32_t>(to_ms(own_opts().lease_ttl)));
    ctx.ask<v1::LeaseResult>(
        cluster::k_raft_agent, std::move(a), own_opts().ask_timeout,
        [this, &ctx, id, sent, done = std::move(done)](expected<v1::LeaseResult> r) {
          lease_outcome o;
          const auto now = ctx.monotonic();
          if (r && r->granted()) {
            o.granted = own_->book.granted(id, sent, now);
            if (o.granted)
              arm_check(ctx);
            else
              o.why = "granted " + std::to_string(to_ms(now - sent))
                      + " ms after the request: too late to run it safely";
          } else {
            own_->book.not_granted(id);
            if (r) {
              o.holder = r->owner();
              o.why = r->owner().empty() ? "not grantable yet (a new Raft leader waits until the "
                                           "leases granted before it have run out)"
                                         : "held by node " + r->owner();
              own_->book.held_elsewhere(id, r->owner(), std::chrono::milliseconds{r->ttl_left_ms()},
                                        now);
            } else {
              o.why = r.error().to_string();
            }
          }
          own_->held.set(static_cast<double>(own_->book.held_count()));
          done(o);
        });
  }

  void on_lease_tick(context& ctx, const v1::ExecLeaseTick& t) {
    if (!own_) return;
    const auto now = ctx.monotonic();
    if (own_->check_at && now >= *own_->check_at) own_->check_at.reset();
    stop_expired(ctx, now);
    if (t.renew() && !handover_) {
      // One batch: every held lease, the earliest deadline first; each reply moves its
      // deadline to (this send time + ttl - margin).
      for (const auto& id : own_->book.renew_batch(now, own_opts().renew_max))
        renew(ctx, id, now);
      v1::ExecLeaseTick next;
      next.set_renew(true);
      ctx.schedule(own_opts().renew_every, next);
    }
    own_->held.set(static_cast<double>(own_->book.held_count()));
    arm_check(ctx);
  }

  void renew(context& ctx, const std::string& id, duration sent) {
    v1::LeaseAcquire a;
    a.set_key(lease_of(id));
    a.set_owner(own_->owner);
    a.set_ttl_ms(static_cast<std::uint32_t>(to_ms(own_opts().lease_ttl)));
    ctx.ask<v1::LeaseResult>(
        cluster::k_raft_agent, std::move(a), own_opts().ask_timeout,
        [this, &ctx, id, sent](expected<v1::LeaseResult> r) {
          if (r && r->granted()) {
            if (own_->book.granted(id, sent, ctx.monotonic())) arm_check(ctx);
            return;
          }
          if (r) {
            // Another node holds it: the lease ran out at the leader before its deadline here
            // (this node's clock ran slow, or it paused for longer than the margin).
            if (!own_->book.known(id)) return; // stopped at its deadline already
            ctx.log().error("exec_lease_lost", {},
                            nlohmann::json{{"execution_id", id}, {"holder", r->owner()}});
            own_->lost.inc();
            own_->book.drop(id);
            relinquish(ctx, id, "its lease is held by node " + r->owner());
            return;
          }
          own_->book.not_granted(id);
          own_->renew_failed.inc();
          ctx.log().debug("exec_lease_renew_failed", {},
                          nlohmann::json{{"execution_id", id}, {"error", r.error().to_string()}});
        });
  }

  /// Stops the executors whose lease deadline has come: the lease may run out at the leader
  /// soon, and another node may then take the execution.
  void stop_expired(context& ctx, duration now) {
    for (const auto& id : own_->book.expire(now)) {
      own_->expirations.inc();
      if (own_opts().planted_bug == exec_planted_bug::ignore_deadline) continue;
      ctx.log().warn("exec_lease_expired", {},
                     nlohmann::json{{"execution_id", id}, {"owner", own_->owner}});
      relinquish(ctx, id, "its lease could not be renewed in time");
    }
  }

  /// Stops the executor of `id` without ending the execution (its journal stays as it is).
  void relinquish(context& ctx, const std::string& id, const std::string& reason,
                  bool handover = false) {
    if (!live_.contains(id)) return;
    live_.erase(id);
    infos_.erase(id);
    v1::ExecRelinquish m;
    m.set_reason(reason);
    m.set_handover(handover);
    (void)ctx.tell(stream_of(id), std::move(m));
    fail_waiters(id, error{errc::transient, "execution " + id + " stopped running on node "
                                                + own_->owner + ": " + reason});
  }

  /// Schedules a deadline check at the earliest deadline (unless one comes before it).
  void arm_check(context& ctx) {
    auto next = own_->book.next_deadline();
    if (!next || (own_->check_at && *own_->check_at <= *next)) return;
    own_->check_at = next;
    ctx.schedule(std::max(*next - ctx.monotonic(), duration::zero()), v1::ExecLeaseTick{});
  }

  /// Frees the lease of `id` at the leader; `done` (if any) learns whether that was confirmed.
  void release(context& ctx, const std::string& id, std::function<void(bool)> done = {}) {
    own_->book.drop(id);
    own_->held.set(static_cast<double>(own_->book.held_count()));
    v1::LeaseRelease rel;
    rel.set_key(lease_of(id));
    rel.set_owner(own_->owner);
    // An unreleased lease just expires: only a handover waits for this.
    ctx.ask<v1::LeaseResult>(
        cluster::k_raft_agent, std::move(rel), own_opts().ask_timeout,
        [&ctx, id, done = std::move(done)](expected<v1::LeaseResult> r) {
          if (!r)
            ctx.log().debug("exec_lease_release_failed", {},
                            nlohmann::json{{"execution_id", id}, {"error", r.error().to_string()}});
          if (done) done(static_cast<bool>(r));
        });
  }

  // ---- handover before the node stops ---------------------------------------------------------

  struct handover_state {
    duration started{};
    duration deadline{};                 ///< past it, executors still running keep their leases
    std::vector<std::string> stopping;   ///< executors told to stop, not gone yet
    std::set<std::string> running;       ///< executors that did not stop by the deadline
    std::size_t releases_pending = 0;
    bool done = false;
    v1::ExecHandoverResult result;
    std::vector<responder<v1::ExecHandoverResult>> waiters;
  };

  [[nodiscard]] error stopping_error(const std::string& what) const {
    return error{errc::transient, what + ": node " + (own_ ? own_->owner : std::string{"(this)"})
                                      + " is stopping and hands its executions over; "
                                        "submit to another node"};
  }

  /// Stops taking executions, stops the executors (each once its append in flight is back) and
  /// releases their leases, so that another node takes them at once (docs/consensus.md).
  void on_handover(context& ctx, const v1::ExecHandover&, responder<v1::ExecHandoverResult> r) {
    if (handover_) {
      if (handover_->done)
        r.reply(handover_->result);
      else
        handover_->waiters.push_back(std::move(r));
      return;
    }
    handover_.emplace();
    auto& h = *handover_;
    h.waiters.push_back(std::move(r));
    h.started = ctx.monotonic();
    // Waiting longer than a lease lasts is pointless: by then it has run out anyway.
    h.deadline = h.started + (own_ ? own_opts().lease_ttl : shared_->opts.journal_timeout);
    const std::vector<std::string> ids(live_.begin(), live_.end());
    ctx.log().info("exec_handover_started", {},
                   nlohmann::json{{"executions", ids.size()},
                                  {"leases_held", own_ ? own_->book.held_count() : 0}});
    for (const auto& id : ids) {
      relinquish(ctx, id, "the node is stopping: handed over", true);
      h.stopping.push_back(id);
    }
    fail_all_waiters(stopping_error("execution"));
    handover_check(ctx);
  }

  void on_handover_check(context& ctx, const v1::ExecHandoverCheck&) {
    if (handover_ && !handover_->done) handover_check(ctx);
  }

  void handover_check(context& ctx) {
    auto& h = *handover_;
    const auto now = ctx.monotonic();
    std::erase_if(h.stopping, [&](const std::string& id) {
      if (ctx.lookup(stream_of(id))) return false;
      h.result.set_stopped(h.result.stopped() + 1);
      return true;
    });
    // A renewal still on its way could land after the release and take the lease back.
    bool renewing = false;
    if (own_)
      for (const auto& id : own_->book.held_ids())
        renewing = renewing || own_->book.in_flight(id);
    if ((!h.stopping.empty() || renewing) && now < h.deadline) {
      ctx.schedule(std::chrono::milliseconds{5}, v1::ExecHandoverCheck{});
      return;
    }
    h.running.insert(h.stopping.begin(), h.stopping.end());
    h.result.set_still_running(static_cast<std::uint32_t>(h.running.size()));
    if (own_) {
      for (const auto& id : own_->book.held_ids()) {
        if (h.running.contains(id)) continue; // its executor may still append: keep the lease
        ++h.releases_pending;
        release(ctx, id, [this, &ctx](bool ok) {
          auto& hh = *handover_;
          if (ok)
            hh.result.set_released(hh.result.released() + 1);
          else
            hh.result.set_release_failed(hh.result.release_failed() + 1);
          if (--hh.releases_pending == 0) handover_done(ctx);
        });
      }
    }
    if (h.releases_pending == 0) handover_done(ctx);
  }

  void handover_done(context& ctx) {
    auto& h = *handover_;
    h.done = true;
    h.result.set_elapsed_ms(to_ms(ctx.monotonic() - h.started));
    ctx.log().info("exec_handover", {},
                   nlohmann::json{{"stopped", h.result.stopped()},
                                  {"released", h.result.released()},
                                  {"release_failed", h.result.release_failed()},
                                  {"still_running", h.result.still_running()},
                                  {"elapsed_ms", h.result.elapsed_ms()}});
    for (auto& w : h.waiters)
      w.reply(h.result);
    h.waiters.clear();
  }

  void fail_all_waiters(const error& e) {
    std::vector<std::string> ids;
    for (const auto* m : {&start_waiters_, &end_waiters_})
      for (const auto& [id, _] : *m)
        ids.push_back(id);
    for (const auto& id : ids)
      fail_waiters(id, e);
  }

  void on_fenced(context& ctx, const v1::ExecFenced& f) {
    const std::string id = f.execution_id();
    live_.erase(id);
    infos_.erase(id);
    fail_waiters(id, error{errc::transient, "execution " + id + ": " + f.error()});
    if (!own_) return;
    own_->fenced.inc();
    // Whether this node still owns it is the lease's call: the next scan asks, and resumes it
    // from the journal (as it now is) if so.
    own_->book.drop(id);
    ctx.schedule(std::chrono::milliseconds{100}, v1::ExecTakeoverScan{});
  }

  void on_membership(context& ctx, const v1::MembershipEvent& e) {
    if (!own_ || e.member().state() == v1::MEMBER_ALIVE || e.member().node() == own_->owner) return;
    // A member left or failed: its executions are worth asking about now (they can be taken
    // only once their lease has expired at the leader, whatever membership says).
    own_->book.owner_gone(e.member().node(), ctx.monotonic());
    run_scan(ctx);
  }

  void subscribe(context& ctx) {
    if (own_->subscribing) return;
    auto ref = ctx.lookup(cluster::k_members_agent);
    if (!ref) return; // no membership on this node (yet): the periodic scan still finds the work
    own_->subscribing = true;
    v1::MembershipSubscribe sub;
    sub.set_subscriber(std::string{k_exec_agent});
    ctx.ask<v1::MembersReply>(*ref, std::move(sub), own_opts().ask_timeout,
                              [this, &ctx](expected<v1::MembersReply> r) {
                                own_->subscribing = false;
                                if (!r) return;
                                for (const auto& m : r->members())
                                  if (m.state() != v1::MEMBER_ALIVE && m.node() != own_->owner)
                                    own_->book.owner_gone(m.node(), ctx.monotonic());
                              });
  }

  void on_scan(context& ctx, const v1::ExecTakeoverScan& s) {
    if (!own_) return;
    if (s.periodic()) {
      v1::ExecTakeoverScan next;
      next.set_periodic(true);
      ctx.schedule(own_opts().scan_every, next);
      // Membership may have restarted (and forgotten its subscribers): subscribing is
      // idempotent.
      subscribe(ctx);
      check_live(ctx);
      own_->book.prune(ctx.monotonic() - 10 * own_opts().lease_ttl);
    }
    run_scan(ctx);
  }

  /// An executor that is gone without telling (its supervisor refused it: the name of its
  /// predecessor was still on the books, or it was stopped from outside) would keep its
  /// execution "live" here forever: seen missing at two scans in a row, it is forgotten, and the
  /// next scan takes the lease again and spawns a new one.
  void check_live(context& ctx) {
    std::set<std::string> missing;
    for (const auto& id : live_)
      if (!ctx.lookup(stream_of(id))) missing.insert(id);
    for (const auto& id : missing) {
      if (!own_->missing.contains(id)) continue;
      ctx.log().warn("exec_executor_missing", {}, nlohmann::json{{"execution_id", id}});
      live_.erase(id);
      infos_.erase(id);
      own_->book.drop(id);
    }
    own_->missing = std::move(missing);
  }

  /// Lists unfinished executions this node does not run and asks for the lease of at most
  /// scan_max of them; the listing goes on from there at the next scan.
  void run_scan(context& ctx) {
    if (!resuming_ && !shared_->opts.resume) return;
    if (handover_) return; // stopping: takes no execution
    if (own_->scanning) {
      own_->scan_again = true;
      return;
    }
    own_->scanning = true;
    own_->listing_done = false;
    own_->pass_complete = false;
    own_->scan_pending = 0;
    own_->scan_resumed = 0;
    v1::ListStreamsRequest req;
    req.set_prefix("exec/");
    req.set_after(own_->scan_after);
    req.set_max(1000);
    req.set_all_tenants(true);
    ctx.ask<v1::ListStreamsResult>(
        store::k_journal_agent, std::move(req), shared_->opts.journal_timeout,
        [this, &ctx](expected<v1::ListStreamsResult> r) {
          own_->listing_done = true;
          if (!r) {
            // The journal may still be opening its store: the next scan tries again.
            own_->scan_errors.inc();
            ctx.log().warn("exec_takeover_scan_failed", {},
                           nlohmann::json{{"error", r.error().to_string()}});
            scan_maybe_done(ctx);
            return;
          }
          const auto now = ctx.monotonic();
          std::size_t asked = 0;
          bool truncated = false;
          std::string upto = own_->scan_after;
          for (const auto& si : r->streams()) {
            const std::string id = si.stream().substr(5);
            const bool candidate = si.finished_at_ns() == 0 && !live_.contains(id)
                                   && !own_->book.known(id) && own_->book.may_try(id, now);
            if (candidate && asked == own_opts().scan_max) {
              truncated = true; // bounded: the next scan starts here
              break;
            }
            upto = si.stream();
            if (!candidate) continue;
            ++asked;
            ++own_->scan_pending;
            consider(ctx, id);
          }
          ctx.log().debug("exec_takeover_scan", {},
                          nlohmann::json{{"streams", r->streams_size()},
                                         {"asked", asked},
                                         {"after", own_->scan_after}});
          if (truncated || r->streams_size() == 1000) {
            own_->scan_after = upto;
            own_->scan_again = true; // go on at once, one bounded scan after the other
          } else {
            own_->scan_after.clear();
            own_->pass_complete = true;
          }
          scan_maybe_done(ctx);
        });
  }

  /// Asks who holds the lease of `id`; takes it when it is free, expired, or this node's.
  void consider(context& ctx, const std::string& id) {
    if (own_opts().planted_bug == exec_planted_bug::skip_lease_check) {
      spawn(ctx, id, nullptr);
      ++own_->scan_resumed;
      scan_reply(ctx);
      return;
    }
    v1::LeaseGet g;
    g.set_key(lease_of(id));
    ctx.ask<v1::LeaseResult>(
        cluster::k_raft_agent, std::move(g), own_opts().ask_timeout,
        [this, &ctx, id](expected<v1::LeaseResult> r) {
          const auto now = ctx.monotonic();
          if (!r) {
            own_->scan_errors.inc();
            ctx.log().debug("exec_lease_read_failed", {},
                            nlohmann::json{{"execution_id", id}, {"error", r.error().to_string()}});
            scan_reply(ctx);
            return;
          }
          if (r->granted() && r->owner() != own_->owner) {
            own_->book.held_elsewhere(id, r->owner(), std::chrono::milliseconds{r->ttl_left_ms()},
                                      now);
            scan_reply(ctx);
            return;
          }
          // Free or expired (its last holder may still be named), or held by this node (it
          // restarted under the same name): take it.
          std::string previous = r->granted() ? own_->owner : r->owner();
          if (previous.empty()) previous = own_->book.last_owner(id);
          acquire(ctx, id, [this, &ctx, id, previous](const lease_outcome& o) {
            if (o.granted && !live_.contains(id)) {
              if (!previous.empty() && previous != own_->owner) {
                own_->takeovers.inc();
                ctx.log().info("exec_taken_over", {},
                               nlohmann::json{{"execution_id", id},
                                              {"previous_owner", previous},
                                              {"owner", own_->owner}});
              }
              spawn(ctx, id, nullptr);
              ++own_->scan_resumed;
            }
            scan_reply(ctx);
          });
        });
  }

  void scan_reply(context& ctx) {
    if (own_->scan_pending > 0) --own_->scan_pending;
    scan_maybe_done(ctx);
  }

  void scan_maybe_done(context& ctx) {
    if (!own_->listing_done || own_->scan_pending > 0 || !own_->scanning) return;
    own_->scanning = false;
    if (own_->scan_resumed > 0)
      ctx.log().info("exec_resumed", {}, nlohmann::json{{"executions", own_->scan_resumed}});
    if (own_->pass_complete && resuming_) finish_resume(ctx);
    if (std::exchange(own_->scan_again, false)) run_scan(ctx);
  }

  /// Hands a start to the node that holds the execution's lease.
  void forward_start(context& ctx, const std::string& holder, const v1::StartExecution& m,
                     responder<v1::ExecutionInfo> r) {
    auto ref = ctx.lookup(address{holder, std::string{k_exec_agent}});
    if (!ref) {
      r.fail(error{errc::transient, "start: execution " + m.execution_id() + " runs on node "
                                        + holder
                                        + ", which cannot be reached: " + ref.error().message()});
      return;
    }
    const auto timeout = m.wait() ? shared_->opts.step_timeout : shared_->opts.journal_timeout;
    ctx.ask<v1::ExecutionInfo>(*ref, m, timeout, [r](expected<v1::ExecutionInfo> i) mutable {
      if (i)
        r.reply(std::move(i).value());
      else
        r.fail(std::move(i).error());
    });
  }

  void forward_control(context& ctx, const std::string& holder, const v1::ExecControl& m,
                       responder<v1::ExecutionInfo> r) {
    auto ref = ctx.lookup(address{holder, std::string{k_exec_agent}});
    if (!ref) {
      r.fail(error{errc::transient, "execution " + m.execution_id() + " runs on node " + holder
                                        + ", which cannot be reached: " + ref.error().message()});
      return;
    }
    ctx.ask<v1::ExecutionInfo>(*ref, m, shared_->opts.journal_timeout,
                               [r](expected<v1::ExecutionInfo> i) mutable {
                                 if (i)
                                   r.reply(std::move(i).value());
                                 else
                                   r.fail(std::move(i).error());
                               });
  }

  void finish_resume(context& ctx) {
    resuming_ = false;
    auto waiting = std::move(after_resume_);
    after_resume_.clear();
    for (auto& f : waiting)
      f(ctx);
  }

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
    if (handover_) {
      // A lease granted while the node hands over (an acquire that was on its way): give it
      // back rather than start an executor that is about to be stopped.
      fail_waiters(id, stopping_error("execution " + id));
      if (own_ && own_->book.known(id)) release(ctx, id);
      return;
    }
    agent_options o;
    o.restart = sup::restart_policy::transient;
    const bool resume = !start;
    auto ref = ctx.spawn_erased(sup::agent_factory<executor>(shared_, id, std::move(start)),
                                stream_of(id), o);
    if (!ref) {
      // The lease stays with this node at the leader; the next scan takes it again (a renewal)
      // and spawns the executor then.
      if (own_) own_->book.drop(id);
      if (resume && ref.error().code() == errc::conflict) {
        // A resume while the executor of a previous af.exec instance still stops (its name is
        // still bound): list again shortly; the stream is resumed once the name is free.
        ctx.log().warn("exec_resume_later", {},
                       nlohmann::json{{"execution_id", id}, {"error", ref.error().to_string()}});
        if (!resume_again_) {
          resume_again_ = true;
          ctx.schedule(std::chrono::milliseconds{100}, v1::ExecResume{});
        }
        return;
      }
      ctx.log().error("exec_spawn_failed", {},
                      nlohmann::json{{"execution_id", id}, {"error", ref.error().to_string()}});
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
            ctx.log().warn("exec_resume_retry", {},
                           nlohmann::json{{"error", r.error().to_string()}});
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
          finish_resume(ctx);
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
  bool resuming_ = false;     ///< the unfinished executions of the store are being spawned
  bool resume_again_ = false; ///< a resume is scheduled (an executor's name was still taken)
  std::vector<std::function<void(context&)>> after_resume_; ///< controls that wait for that
  std::set<std::string> live_;
  std::map<std::string, v1::ExecutionInfo> infos_;
  std::deque<std::string> finished_;
  std::unordered_map<std::string, std::vector<waiter>> start_waiters_;
  std::unordered_map<std::string, std::vector<waiter>> end_waiters_;
  std::unordered_map<std::string, v1::EnsureAgentResult> spawned_;
  std::optional<ownership_state> own_; ///< with exec_options::ownership.enabled
  std::optional<handover_state> handover_; ///< the node is stopping (ExecHandover)
};

} // namespace

status validate(const exec_ownership& o) {
  if (!o.enabled) return {};
  auto positive = [](duration d, const char* name) -> status {
    if (d <= duration::zero())
      return validation_error(std::string{"exec ownership: "} + name + " must be positive");
    return {};
  };
  for (auto [d, name] : {std::pair{o.lease_ttl, "lease_ttl"},
                         {o.renew_every, "renew_every"},
                         {o.scan_every, "scan_every"},
                         {o.ask_timeout, "ask_timeout"}})
    if (auto st = positive(d, name); !st) return st;
  if (o.margin < duration::zero() || o.margin >= o.lease_ttl)
    return validation_error("exec ownership: margin must be at least 0 and less than lease_ttl");
  // Two renewals fit in the time a grant is good for here: one lost renewal (a leader
  // election) does not stop the node's executions.
  if (o.renew_every * 2 > o.lease_ttl - o.margin)
    return validation_error("exec ownership: renew_every must be at most half of lease_ttl - "
                            "margin (two renewals before a lease's local deadline)");
  if (o.lease_ttl > std::chrono::hours(24))
    return validation_error("exec ownership: lease_ttl must be at most 24 h");
  if (o.scan_max == 0 || o.renew_max == 0)
    return validation_error("exec ownership: scan_max and renew_max must be positive");
  return {};
}

sup::child_spec exec_child(exec_options opts) {
  auto shared = std::make_shared<exec_shared>();
  shared->opts = std::move(opts);
  sup::child_spec spec;
  spec.id = std::string{k_exec_agent};
  spec.restart = sup::restart_policy::permanent;
  spec.system = true;
  spec.make_agent =
      sup::agent_factory<exec_manager>(std::shared_ptr<const exec_shared>{std::move(shared)});
  return spec;
}

} // namespace af::plan
