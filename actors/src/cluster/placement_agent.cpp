// The placement agent (af.cluster.placement): the node's router for virtual names `Kind/id`.
// It keeps a membership view, forwards a name to its owner (one hop), activates the names this
// node owns, and stops activations that went idle or that a view change gave to another member.
#include "af/cluster/placement.hpp"

#include "af/metrics.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/placement.pb.h"
#include "af/v1/supervision.pb.h"

#include <algorithm>
#include <map>
#include <set>

namespace af::cluster {

namespace {

class placement_agent : public agent_base<placement_agent> {
public:
  explicit placement_agent(std::shared_ptr<const placement_options> opts)
      : opts_(std::move(opts)) {}

  static void define(handlers<placement_agent>& h) {
    h.kind("af.cluster.placement")
        .route(&placement_agent::route)
        .on(&placement_agent::on_tick)
        .on(&placement_agent::on_event)
        .on(&placement_agent::on_status);
  }

  // Activations are temporary children: one that crashes or stops itself is not restarted;
  // the next envelope for its name activates it again (an event-sourced one reloads). A storm of
  // crashes still escalates to this agent's own supervisor.
  [[nodiscard]] sup::flags child_supervision() const override {
    sup::flags f;
    f.how = sup::strategy::dynamic;
    f.limits = {1000, std::chrono::seconds(10)};
    return f;
  }

  // Claimed at spawn (so a lookup right after the node started cannot miss them), and again in
  // on_start, which reports an error.
  [[nodiscard]] std::vector<std::string> routed_kinds() const override {
    std::vector<std::string> kinds;
    for (const auto& [k, f] : opts_->kinds)
      if (parse_virtual_name(k + "/x") && f) kinds.push_back(k);
    return kinds;
  }

  void on_start(context& ctx) override {
    self_node_ = ctx.self().node;
    members_ = {self_node_};
    auto& m = ctx.metrics();
    auto c = [&](const char* name, const char* help, metric_labels l = {}) {
      auto r = m.counter(name, help, l);
      return r ? *r : counter_handle{};
    };
    activations_total_ = c("af_placement_activations_total", "Virtual agents activated here");
    disputed_ = c("af_placement_disputed_activations_total",
                  "Activations for an envelope forwarded by a peer although this node's view "
                  "names another owner (views in disagreement: a possible duplicate)");
    forwards_ =
        c("af_placement_forwards_total", "Envelopes forwarded to the owner on another node");
    idle_ = c("af_placement_deactivations_total", "Activations stopped", {{"reason", "idle"}});
    moved_ = c("af_placement_deactivations_total", "Activations stopped", {{"reason", "moved"}});
    view_changes_ = c("af_placement_view_changes_total", "Membership views that changed owners");
    for (const char* r : {"validation", "not_found", "transient", "quota", "internal"})
      refused_[r] =
          c("af_placement_refused_total", "Envelopes for virtual names refused", {{"reason", r}});
    if (auto g = m.gauge("af_placement_active", "Virtual agents active here")) active_ = *g;

    std::vector<std::string> kinds;
    for (const auto& [k, f] : opts_->kinds) {
      if (auto ok = parse_virtual_name(k + "/x"); !ok || !f) {
        auto e = validation_error("placement: kind '" + k
                                  + "': " + (f ? ok.error().message() : std::string{"no factory"}));
        ctx.log().error("placement_unavailable", e.message());
        ctx.fail(e);
        return;
      }
      kinds.push_back(k);
    }
    if (auto st = ctx.route_kinds(kinds); !st) {
      ctx.log().error("placement_unavailable", st.error().message());
      ctx.fail(st.error());
      return;
    }
    subscribe(ctx);
    ctx.schedule(opts_->tick, v1::PlacementTick{});
    ctx.log().info(
        "placement_started", "routing virtual agents",
        {{"kinds", kinds},
         {"idle_timeout_ms",
          std::chrono::duration_cast<std::chrono::milliseconds>(opts_->idle_timeout).count()}});
  }

  void on_stop(context&) override { active_.set(0); }

  // --- routing ----------------------------------------------------------------------------

  expected<agent_ref> route(context& ctx, const envelope& e) {
    const auto& name = e.receiver().name;
    auto vn = parse_virtual_name(name);
    if (!vn) return refuse(ctx, std::move(vn).error(), "validation");
    auto kind = opts_->kinds.find(vn->kind);
    if (kind == opts_->kinds.end())
      return refuse(
          ctx,
          not_found_error("no virtual agent kind '" + vn->kind + "' on node '" + self_node_ + "'"),
          "not_found");
    // Placing with a view of this node alone while the membership agent is about to answer
    // would activate ids that other members own.
    if (subscribing_ && !view_known_)
      return refuse(ctx,
                    error{errc::transient, "placement on node '" + self_node_
                                               + "' is waiting for its membership view; retry"},
                    "transient");
    // One hop: an envelope another node's router forwarded (it carries k_routed_by_header) is
    // activated here whatever this node's view says, so views in disagreement can never
    // bounce it around.
    const bool from_peer = e.headers().contains(std::string{k_routed_by_header});
    const auto owner = owner_of(name, members_);
    if (!from_peer && !owner.empty() && owner != self_node_) {
      auto ref = ctx.lookup(address{owner, name});
      if (!ref) return refuse(ctx, error{errc::transient, ref.error().message()}, "transient");
      forwards_.inc();
      return ref;
    }
    if (stopping_.contains(name))
      return refuse(ctx,
                    error{errc::transient, "virtual agent '" + name + "' on node '" + self_node_
                                               + "' is being deactivated; retry"},
                    "transient");
    if (auto it = active_names_.find(name); it != active_names_.end()) {
      if (auto ref = ctx.lookup_registered(name)) {
        it->second = ctx.monotonic();
        return ref;
      }
      // It crashed or stopped itself (a temporary child): activated again below.
      active_names_.erase(it);
      active_.set(static_cast<double>(active_names_.size()));
    }
    return activate(ctx, kind->second, *vn, name, from_peer && owner != self_node_);
  }

  expected<agent_ref> activate(context& ctx, const kind_factory& make, const virtual_name& vn,
                               const std::string& name, bool disputed) {
    if (active_names_.size() >= opts_->max_activations)
      return refuse(ctx,
                    error{errc::quota,
                          "node '" + self_node_ + "' holds " + std::to_string(active_names_.size())
                              + " activations (placement max_activations); '" + name + "' refused"},
                    "quota");
    agent_options ao;
    ao.restart = sup::restart_policy::temporary;
    auto ref = ctx.spawn_erased([make, vn] { return make(vn.kind, vn.id); }, name, std::move(ao));
    if (!ref) {
      auto code = ref.error().code();
      return refuse(ctx,
                    error{code == errc::conflict ? errc::transient : code,
                          "activating '" + name + "' on node '" + self_node_
                              + "' failed: " + ref.error().message()},
                    code == errc::conflict ? "transient" : "internal");
    }
    active_names_[name] = ctx.monotonic();
    activations_total_.inc();
    if (disputed) disputed_.inc();
    active_.set(static_cast<double>(active_names_.size()));
    ctx.log().info("virtual_agent_activated", "activated",
                   {{"name", name},
                    {"kind", vn.kind},
                    {"disputed", disputed},
                    {"view_version", view_version_}});
    if (opts_->on_activate) opts_->on_activate(self_node_, name);
    return ref;
  }

  expected<agent_ref> refuse(context& ctx, error e, const char* reason) {
    refused_[reason].inc();
    (void)ctx;
    return e; // the host logs route_refused and answers an ask with it
  }

  // --- idle activations and the membership subscription ----------------------------------

  void on_tick(context& ctx, const v1::PlacementTick&) {
    if (opts_->idle_timeout > duration::zero()) {
      const auto now = ctx.monotonic();
      std::vector<std::string> idle;
      for (const auto& [name, last] : active_names_)
        if (now - last >= opts_->idle_timeout) idle.push_back(name);
      for (const auto& name : idle)
        deactivate(ctx, name, "idle");
    }
    // Activations made for a peer whose view named this node, which this node's view does not:
    // once the peers stop sending, the owner in this view is the only one left.
    {
      const auto now = ctx.monotonic();
      std::vector<std::string> disowned;
      for (const auto& [name, last] : active_names_)
        if (now - last >= 4 * opts_->tick && owner_of(name, members_) != self_node_)
          disowned.push_back(name);
      for (const auto& name : disowned)
        deactivate(ctx, name, "moved");
    }
    // A membership agent that started after this one, or restarted (a new subscription is
    // needed: the old one died with it).
    auto members = ctx.lookup_registered(opts_->members_agent);
    if (members && !(*members == subscribed_to_) && !subscribing_) subscribe(ctx);
    ctx.schedule(opts_->tick, v1::PlacementTick{});
  }

  void subscribe(context& ctx) {
    auto members = ctx.lookup_registered(opts_->members_agent);
    if (!members) return; // no membership agent (yet): this node alone is the view
    subscribing_ = true;
    v1::MembershipSubscribe sub;
    sub.set_subscriber(ctx.name());
    auto target = *members;
    ctx.ask<v1::MembersReply>(target, std::move(sub), opts_->ask_timeout,
                              [this, &ctx, target](expected<v1::MembersReply> r) {
                                subscribing_ = false;
                                if (!r) {
                                  ctx.log().warn("placement_subscribe_failed", r.error().message(),
                                                 {{"members_agent", opts_->members_agent}});
                                  return; // tried again on the next tick
                                }
                                subscribed_to_ = target;
                                view_known_ = true;
                                states_.clear();
                                for (const auto& m : r->members())
                                  states_[m.node()] = m.state();
                                view_version_ = r->view_version();
                                apply_view(ctx);
                              });
  }

  void on_event(context& ctx, const v1::MembershipEvent& ev) {
    if (ev.view_version() != 0 && ev.view_version() < view_version_) return; // stale
    states_[ev.member().node()] = ev.member().state();
    view_version_ = std::max(view_version_, ev.view_version());
    apply_view(ctx);
  }

  bool live(v1::MemberState s) const {
    return s == v1::MEMBER_ALIVE || (s == v1::MEMBER_SUSPECT && opts_->suspects_keep_ownership);
  }

  void apply_view(context& ctx) {
    std::vector<std::string> alive;
    for (const auto& [node, st] : states_)
      if (live(st)) alive.push_back(node);
    if (alive.empty()) alive.push_back(self_node_); // nobody else known: place here
    if (alive == members_) return;
    members_ = std::move(alive);
    view_changes_.inc();
    ctx.log().info("placement_view_changed", "members changed",
                   {{"members", members_}, {"view_version", view_version_}});
    // Exactly one activation per id per view: what this node no longer owns stops here.
    std::vector<std::string> moved;
    for (const auto& [name, last] : active_names_)
      if (owner_of(name, members_) != self_node_) moved.push_back(name);
    for (const auto& name : moved)
      deactivate(ctx, name, "moved");
  }

  void deactivate(context& ctx, const std::string& name, const char* reason) {
    active_names_.erase(name);
    active_.set(static_cast<double>(active_names_.size()));
    (reason == std::string_view{"idle"} ? idle_ : moved_).inc();
    ctx.log().info("virtual_agent_deactivated", reason, {{"name", name}, {"reason", reason}});
    // The activations live under this agent's children supervisor (ctx.spawn).
    auto sup = ctx.lookup_registered("af.children." + ctx.name());
    if (!sup) return; // gone with its children
    stopping_.insert(name);
    v1::ChildCommand cmd;
    cmd.set_op(v1::ChildCommand::TERMINATE);
    cmd.set_id(name);
    ctx.ask<v1::ChildCommandResult>(
        *sup, std::move(cmd), opts_->ask_timeout,
        [this, &ctx, name](expected<v1::ChildCommandResult> r) {
          stopping_.erase(name);
          if (!r && r.error().code() != errc::not_found)
            ctx.log().warn("virtual_agent_stop_failed", r.error().message(), {{"name", name}});
        });
  }

  expected<v1::PlacementStatus> on_status(context&, const v1::PlacementStatusRequest&) {
    v1::PlacementStatus s;
    s.set_node(self_node_);
    for (const auto& [name, last] : active_names_)
      s.add_activations(name);
    for (const auto& m : members_)
      s.add_members(m);
    s.set_view_version(view_version_);
    for (const auto& name : stopping_)
      s.add_stopping(name);
    return s;
  }

private:
  std::shared_ptr<const placement_options> opts_;
  std::string self_node_;
  std::vector<std::string> members_;              ///< live members, sorted
  std::map<std::string, v1::MemberState> states_; ///< the membership view by node
  std::uint64_t view_version_ = 0;
  agent_ref subscribed_to_;
  bool subscribing_ = false;
  bool view_known_ = false;
  std::map<std::string, duration> active_names_; ///< activation -> last envelope routed to it
  std::set<std::string> stopping_;
  counter_handle activations_total_, disputed_, forwards_, idle_, moved_, view_changes_;
  std::map<std::string, counter_handle> refused_;
  gauge_handle active_;
};

} // namespace

sup::child_spec placement_child(placement_options opts) {
  auto shared = std::make_shared<const placement_options>(std::move(opts));
  auto c = sup::agent_child<placement_agent>(std::string{k_placement_agent}, shared);
  c.system = true;
  return c;
}

} // namespace af::cluster
