// af.cluster.singletons (af/cluster/singleton.hpp): runs each registered singleton on the node
// that holds its lease `singleton/<id>` in the Raft metadata store, and routes `singleton/<id>`
// envelopes there. The lease rules are af.exec's (plan/lease_book.hpp): a singleton runs here
// only until (send time of its last granted request + ttl - margin), so it stops before the
// leader can grant the lease to another node.
#include "af/cluster/singleton.hpp"

#include "af/cluster/names.hpp"
#include "af/cluster/placement.hpp"
#include "af/metrics.hpp"
#include "af/v1/meta.pb.h"
#include "af/v1/placement.pb.h"
#include "af/v1/supervision.pb.h"
#include "plan/lease_book.hpp"

#include <algorithm>
#include <optional>
#include <set>

namespace af::cluster {

namespace {

std::string lease_key(const std::string& id) { return "singleton/" + id; }
std::string name_of(const std::string& id) { return std::string{k_singleton_kind} + "/" + id; }

std::int64_t to_ms(duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

class singletons_agent : public agent_base<singletons_agent> {
public:
  explicit singletons_agent(std::shared_ptr<const singleton_options> opts)
      : opts_(std::move(opts)),
        book_({opts_->lease_ttl, opts_->margin > duration::zero() ? opts_->margin
                                                                   : opts_->lease_ttl / 5}) {}

  static void define(handlers<singletons_agent>& h) {
    h.kind("af.cluster.singletons")
        .route(&singletons_agent::route)
        .on(&singletons_agent::on_tick)
        .on(&singletons_agent::on_handover)
        .on(&singletons_agent::on_status);
  }

  // A singleton that crashes is restarted here (it still holds the lease); a storm of crashes
  // escalates to this agent's supervisor.
  [[nodiscard]] sup::flags child_supervision() const override {
    sup::flags f;
    f.how = sup::strategy::dynamic;
    f.limits = {100, std::chrono::seconds(10)};
    return f;
  }

  [[nodiscard]] std::vector<std::string> routed_kinds() const override {
    return {std::string{k_singleton_kind}};
  }

  void on_start(context& ctx) override {
    owner_ = opts_->owner.empty() ? ctx.self().node : opts_->owner;
    const auto margin = opts_->margin > duration::zero() ? opts_->margin : opts_->lease_ttl / 5;
    renew_every_ = opts_->renew_every > duration::zero() ? opts_->renew_every
                                                         : (opts_->lease_ttl - margin) / 3;
    auto& m = ctx.metrics();
    auto c = [&](const char* name, const char* help, metric_labels l = {}) {
      auto r = m.counter(name, help, l);
      return r ? *r : counter_handle{};
    };
    started_ = c("af_singleton_starts_total", "Singletons started on this node (lease taken)");
    expired_ = c("af_singleton_lease_expirations_total",
                 "Singletons stopped here because their lease could not be renewed in time");
    if (auto g = m.gauge("af_singletons_running", "Singletons running on this node"))
      running_gauge_ = *g;
    ctx.log().info("singletons_started", {},
                   nlohmann::json{{"owner", owner_},
                                  {"singletons", opts_->singletons.size()},
                                  {"lease_ttl_ms", to_ms(opts_->lease_ttl)},
                                  {"renew_ms", to_ms(renew_every_)}});
    v1::SingletonTick t;
    t.set_renew(true);
    ctx.schedule(duration::zero(), t);
  }

  void on_stop(context& ctx) override {
    // Best effort when the node stops without a handover: the leases run out otherwise.
    for (const auto& id : book_.held_ids()) {
      v1::LeaseRelease rel;
      rel.set_key(lease_key(id));
      rel.set_owner(owner_);
      (void)ctx.tell(opts_->raft_agent, std::move(rel));
    }
  }

  // --- routing ----------------------------------------------------------------------------

  expected<agent_ref> route(context& ctx, const envelope& e) {
    const auto& name = e.receiver().name;
    auto vn = parse_virtual_name(name);
    if (!vn) return std::move(vn).error();
    if (!opts_->singletons.contains(vn->id)) {
      std::string known;
      for (const auto& [id, _] : opts_->singletons)
        known += (known.empty() ? "" : ", ") + id;
      return not_found_error("no singleton '" + vn->id + "' is registered on node '"
                             + ctx.self().node + "'"
                             + (known.empty() ? " (none are)" : " (registered: " + known + ")"));
    }
    if (running_.contains(vn->id)) {
      if (auto ref = ctx.lookup_registered(name)) return ref;
    }
    // One hop: an envelope another node routed here is not sent on again.
    const bool from_peer = e.headers().contains(std::string{k_routed_by_header});
    auto holder = holders_.find(vn->id);
    if (!from_peer && holder != holders_.end() && !holder->second.empty()
        && holder->second != owner_) {
      auto ref = ctx.lookup(address{holder->second, name});
      if (ref) return ref;
      return error{errc::transient, "singleton '" + vn->id + "' runs on node '" + holder->second
                                        + "', which cannot be reached: " + ref.error().message()};
    }
    return error{errc::transient, "singleton '" + vn->id + "' runs on no node known to '"
                                      + ctx.self().node
                                      + "' right now (its lease is being taken, or there is no "
                                        "Raft leader); retry"};
  }

  // --- leases -----------------------------------------------------------------------------

  void on_tick(context& ctx, const v1::SingletonTick& t) {
    const auto now = ctx.monotonic();
    if (check_at_ && now >= *check_at_) check_at_.reset();
    for (const auto& id : book_.expire(now)) {
      expired_.inc();
      ctx.log().warn("singleton_lease_expired", {},
                     nlohmann::json{{"singleton", name_of(id)}, {"owner", owner_}});
      stop_child(ctx, id, nullptr);
    }
    if (t.renew() && !handing_over_) {
      for (const auto& id : book_.renew_batch(now, opts_->singletons.size()))
        request(ctx, id, now);
      for (const auto& [id, _] : opts_->singletons)
        if (!book_.known(id) && !running_.contains(id)) {
          book_.acquiring(id);
          request(ctx, id, now);
        }
      v1::SingletonTick next;
      next.set_renew(true);
      ctx.schedule(renew_every_, next);
    }
    arm_check(ctx);
  }

  /// A LeaseAcquire for `id`: a first take or a renewal.
  void request(context& ctx, const std::string& id, duration sent) {
    v1::LeaseAcquire a;
    a.set_key(lease_key(id));
    a.set_owner(owner_);
    a.set_ttl_ms(static_cast<std::uint32_t>(to_ms(opts_->lease_ttl)));
    ctx.ask<v1::LeaseResult>(
        opts_->raft_agent, std::move(a), opts_->ask_timeout,
        [this, &ctx, id, sent](expected<v1::LeaseResult> r) {
          if (r && r->granted()) {
            holders_[id] = owner_;
            if (book_.granted(id, sent, ctx.monotonic())) {
              if (!running_.contains(id) && !handing_over_) start_child(ctx, id, r->epoch());
              arm_check(ctx);
            }
            return;
          }
          if (r) {
            holders_[id] = r->owner();
            if (running_.contains(id) && book_.known(id)) {
              // Another node holds it: it ran out at the leader before its deadline here.
              ctx.log().error("singleton_lease_lost", {},
                              nlohmann::json{{"singleton", name_of(id)}, {"holder", r->owner()}});
              book_.drop(id);
              stop_child(ctx, id, nullptr);
              return;
            }
          }
          book_.not_granted(id);
        });
  }

  void start_child(context& ctx, const std::string& id, std::uint64_t epoch) {
    const auto& spec = opts_->singletons.at(id);
    agent_options ao;
    ao.restart = sup::restart_policy::permanent;
    ao.detached = spec.detached;
    auto ref = ctx.spawn_erased(spec.factory, name_of(id), std::move(ao));
    if (!ref) {
      // Its previous instance may still be stopping: the next tick tries again (the lease
      // stays this node's meanwhile).
      ctx.log().warn("singleton_start_failed", {},
                     nlohmann::json{{"singleton", name_of(id)}, {"error", ref.error().to_string()}});
      return;
    }
    running_.insert(id);
    started_.inc();
    running_gauge_.set(static_cast<double>(running_.size()));
    ctx.log().info("singleton_started", {},
                   nlohmann::json{{"singleton", name_of(id)}, {"owner", owner_}, {"epoch", epoch}});
  }

  /// Stops the singleton `id` here; `done` (if any) runs once it is gone (or could not be
  /// stopped: then it is gone with this agent at the latest).
  void stop_child(context& ctx, const std::string& id, std::function<void()> done) {
    if (!running_.erase(id)) {
      if (done) done();
      return;
    }
    running_gauge_.set(static_cast<double>(running_.size()));
    ctx.log().info("singleton_stopped", {}, nlohmann::json{{"singleton", name_of(id)}});
    auto sup = ctx.lookup_registered("af.children." + ctx.name());
    if (!sup) {
      if (done) done();
      return;
    }
    v1::ChildCommand cmd;
    cmd.set_op(v1::ChildCommand::TERMINATE);
    cmd.set_id(name_of(id));
    ctx.ask<v1::ChildCommandResult>(
        *sup, std::move(cmd), opts_->ask_timeout,
        [&ctx, id, done = std::move(done)](expected<v1::ChildCommandResult> r) {
          if (!r && r.error().code() != errc::not_found)
            ctx.log().warn("singleton_stop_failed", {},
                           nlohmann::json{{"singleton", name_of(id)}, {"error", r.error().to_string()}});
          if (done) done();
        });
  }

  void arm_check(context& ctx) {
    auto next = book_.next_deadline();
    if (!next || (check_at_ && *check_at_ <= *next)) return;
    check_at_ = next;
    ctx.schedule(std::max(*next - ctx.monotonic(), duration::zero()), v1::SingletonTick{});
  }

  // --- handover and status ----------------------------------------------------------------

  /// Stops every singleton running here, then releases its lease, so that another node takes it
  /// at its next tick instead of after the lease ttl.
  void on_handover(context& ctx, const v1::SingletonHandover&,
                   responder<v1::SingletonHandoverResult> r) {
    handing_over_ = true;
    auto state = std::make_shared<handover>(std::move(r));
    const auto held = book_.held_ids();
    state->pending = held.size() + 1;
    auto finish = [state] {
      if (--state->pending == 0) state->r.reply(state->result);
    };
    for (const auto& id : held) {
      const bool was_running = running_.contains(id);
      stop_child(ctx, id, [this, &ctx, id, state, finish, was_running] {
        if (was_running) state->result.set_stopped(state->result.stopped() + 1);
        book_.drop(id);
        v1::LeaseRelease rel;
        rel.set_key(lease_key(id));
        rel.set_owner(owner_);
        ctx.ask<v1::LeaseResult>(opts_->raft_agent, std::move(rel), opts_->ask_timeout,
                                 [state, finish](expected<v1::LeaseResult> lr) {
                                   if (lr)
                                     state->result.set_released(state->result.released() + 1);
                                   else
                                     state->result.set_release_failed(
                                         state->result.release_failed() + 1);
                                   finish();
                                 });
      });
    }
    finish();
  }

  expected<v1::SingletonStatus> on_status(context& ctx, const v1::SingletonStatusRequest&) {
    v1::SingletonStatus s;
    s.set_node(ctx.self().node);
    for (const auto& [id, _] : opts_->singletons) {
      auto& st = *s.add_singletons();
      st.set_name(name_of(id));
      if (auto it = holders_.find(id); it != holders_.end()) st.set_owner(it->second);
      st.set_running_here(running_.contains(id));
    }
    return s;
  }

private:
  struct handover {
    explicit handover(responder<v1::SingletonHandoverResult> rr) : r(std::move(rr)) {}
    responder<v1::SingletonHandoverResult> r;
    v1::SingletonHandoverResult result;
    std::size_t pending = 0;
  };

  std::shared_ptr<const singleton_options> opts_;
  plan::lease_book book_;
  std::string owner_;
  duration renew_every_{};
  std::set<std::string> running_;
  std::map<std::string, std::string> holders_; ///< id -> the holder last seen ("" free)
  std::optional<duration> check_at_;
  bool handing_over_ = false;
  counter_handle started_, expired_;
  gauge_handle running_gauge_;
};

} // namespace

status validate(const singleton_options& o) {
  for (const auto& [id, spec] : o.singletons) {
    if (auto vn = parse_virtual_name(name_of(id)); !vn)
      return validation_error("singleton '" + id + "': " + vn.error().message());
    if (!spec.factory) return validation_error("singleton '" + id + "': no factory");
  }
  if (o.lease_ttl <= duration::zero()) return validation_error("singletons: lease_ttl must be > 0");
  const auto margin = o.margin > duration::zero() ? o.margin : o.lease_ttl / 5;
  if (margin >= o.lease_ttl)
    return validation_error("singletons: margin must be less than lease_ttl");
  if (o.renew_every * 2 > o.lease_ttl - margin)
    return validation_error("singletons: renew_every must be at most half of lease_ttl - margin "
                            "(two renewals before a lease's local deadline)");
  if (o.ask_timeout <= duration::zero())
    return validation_error("singletons: ask_timeout must be > 0");
  return {};
}

sup::child_spec singletons_child(singleton_options opts) {
  auto shared = std::make_shared<const singleton_options>(std::move(opts));
  auto c = sup::agent_child<singletons_agent>(std::string{k_singletons_agent}, shared);
  c.system = true;
  return c;
}

} // namespace af::cluster
