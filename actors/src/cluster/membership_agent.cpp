// The SWIM membership agent (af.cluster.members): probes one member per period (direct ping,
// then k indirect pings), suspects and declares dead, refutes, piggy-backs gossip, joins through
// seeds, leaves gracefully, and tells subscribers and the transport what changed. All protocol
// bookkeeping lives in swim_state; this file is the messaging around it.
#include "af/agent.hpp"
#include "af/cluster/membership.hpp"
#include "af/metrics.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/gossip.pb.h"
#include "cluster/swim_state.hpp"

#include <google/protobuf/empty.pb.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>

namespace af::cluster {

namespace {

v1::Member to_proto(const member_entry& e) {
  v1::Member m;
  m.set_node(e.node);
  m.set_endpoint(e.endpoint);
  m.set_state(static_cast<v1::MemberState>(e.state));
  m.set_incarnation(e.incarnation);
  return m;
}

/// A Member from the wire, or an error naming what is wrong with it.
expected<member_entry> from_proto(const v1::Member& m, std::string_view where) {
  if (m.node().empty())
    return validation_error(std::string{where} + ": member without a node name");
  if (m.node().size() > 255)
    return validation_error(std::string{where} + ": member node name longer than 255 bytes");
  const auto s = static_cast<int>(m.state());
  if (s < 1 || s > 4)
    return validation_error(std::string{where} + ": member '" + m.node() + "' has state "
                            + std::to_string(s) + "; expected ALIVE, SUSPECT, DEAD or LEFT");
  member_entry e;
  e.node = m.node();
  e.endpoint = m.endpoint();
  e.state = static_cast<member_state>(s);
  e.incarnation = m.incarnation();
  return e;
}

/// Per-node state that outlives one instance of the agent (not the node): the members last
/// seen alive, so that a restarted agent finds the cluster again without seeds.
struct membership_shared {
  swim_options opts;
  std::vector<std::string> last_live;
};

class membership_agent : public agent_base<membership_agent> {
public:
  explicit membership_agent(std::shared_ptr<membership_shared> shared)
      : shared_(std::move(shared)), opts_(shared_->opts) {}

  static void define(handlers<membership_agent>& h) {
    h.kind("af.cluster.members")
        .on(&membership_agent::on_ping)
        .on(&membership_agent::on_ping_req)
        .on(&membership_agent::on_join)
        .on(&membership_agent::on_gossip)
        .on(&membership_agent::on_leave)
        .on(&membership_agent::on_peer_lost)
        .on(&membership_agent::on_tick)
        .on(&membership_agent::on_join_tick)
        .on(&membership_agent::on_suspicion_timeout)
        .on(&membership_agent::on_members)
        .on(&membership_agent::on_subscribe)
        .on(&membership_agent::on_unsubscribe);
  }

  void recover(context&, const restart_info&) override {
    // A restarted instance knows nobody: the members its predecessor saw join it back.
    for (const auto& n : shared_->last_live)
      if (std::find(opts_.seeds.begin(), opts_.seeds.end(), n) == opts_.seeds.end())
        opts_.seeds.push_back(n);
    opts_.join_delay = duration::zero();
  }

  void on_start(context& ctx) override {
    self_ = ctx.self().node;
    state_ = std::make_unique<swim_state>(self_, opts_.advertise, opts_, ctx.now());
    setup_metrics(ctx);
    if (opts_.observer) {
      opts_.observer->view_reset(self_);
      opts_.observer->changed(self_, to_proto(state_->self()), 0);
    }
    count_state(member_state::alive, +1);
    // Nodes start at different moments; a random phase keeps their probes from bunching up.
    const auto phase = duration{static_cast<std::int64_t>(ctx.rng().uniform(
        static_cast<std::uint64_t>(std::max<std::int64_t>(opts_.period.count(), 1))))};
    ctx.schedule(phase, v1::SwimTick{});
    // Without a configured endpoint, ask the node's transport which one it advertises (an
    // ephemeral cluster.listen port is known only once it is bound), then join with it.
    if (opts_.advertise.empty()) {
      if (auto t = ctx.lookup(k_transport_agent)) {
        ctx.ask<v1::TransportInfo>(
            *t, v1::TransportInfoRequest{}, opts_.join_timeout,
            [this, &ctx](expected<v1::TransportInfo> info) {
              if (info && !info->endpoint().empty()) {
                if (auto c = state_->set_endpoint(info->endpoint(), ctx.now())) changed(ctx, *c);
              } else if (!info) {
                ctx.log().warn("member_endpoint_unknown",
                               "the transport did not say its endpoint: " + info.error().message());
              }
              start_joining(ctx);
            });
        return;
      }
    }
    start_joining(ctx);
  }

  void start_joining(context& ctx) {
    if (!opts_.seeds.empty()) {
      v1::SwimJoinTick t;
      t.set_attempt(0);
      ctx.schedule(opts_.join_delay, t);
    } else {
      joined_ = join_due_ = true; // the first node of a cluster: others join it
    }
  }

  // No leave in on_stop: the hook also runs when a supervisor restarts the agent and when the
  // simulator kills a node, neither of which is a departure. A node shutting down asks
  // SwimLeave first (and waits about a period for the gossip to go out).

private:
  // --- incoming protocol messages -------------------------------------------------------------

  expected<v1::SwimAck> on_ping(context& ctx, const v1::SwimPing& p) {
    auto from = accept_from(ctx, p.from(), "SwimPing");
    if (!from) return from.error();
    merge(ctx, p.updates(), "SwimPing");
    maybe_resync(ctx, *from);
    v1::SwimAck ack;
    *ack.mutable_from() = to_proto(state_->self());
    ack.set_seq(p.seq());
    fill_updates(*ack.mutable_updates(), *from);
    count_sent(ctx, "ack");
    return ack;
  }

  void on_ping_req(context& ctx, const v1::SwimPingReq& r, responder<v1::SwimAck> reply) {
    auto from = accept_from(ctx, r.from(), "SwimPingReq");
    if (!from) return reply.fail(from.error());
    merge(ctx, r.updates(), "SwimPingReq");
    maybe_resync(ctx, *from);
    if (r.target().empty() || r.target() == self_) {
      refuse(ctx, "SwimPingReq", "target '" + r.target() + "' is empty or this node");
      return reply.fail(validation_error("SwimPingReq: target '" + r.target()
                                         + "' is empty or the asked node itself"));
    }
    auto ref = ctx.lookup(address{r.target(), std::string{k_members_agent}});
    if (!ref) return reply.fail(ref.error());
    v1::SwimPing ping;
    *ping.mutable_from() = to_proto(state_->self());
    ping.set_seq(r.seq());
    fill_updates(*ping.mutable_updates(), r.target());
    count_sent(ctx, "ping");
    ctx.ask<v1::SwimAck>(*ref, std::move(ping), opts_.ping_timeout,
                         [this, &ctx, reply](expected<v1::SwimAck> ack) mutable {
                           if (!ack) return reply.fail(ack.error());
                           take_ack(ctx, *ack);
                           count_sent(ctx, "ack");
                           reply.reply(std::move(*ack));
                         });
  }

  expected<v1::SwimJoinReply> on_join(context& ctx, const v1::SwimJoin& j) {
    auto from = accept_from(ctx, j.from(), "SwimJoin");
    if (!from) return from.error();
    merge(ctx, j.members(), "SwimJoin");
    v1::SwimJoinReply out;
    *out.mutable_from() = to_proto(state_->self());
    add_view(*out.mutable_members(), *from);
    count_sent(ctx, "join_reply");
    return out;
  }

  void on_gossip(context& ctx, const v1::SwimGossip& g) {
    auto from = accept_from(ctx, g.from(), "SwimGossip");
    if (!from) return;
    merge(ctx, g.updates(), "SwimGossip");
    maybe_resync(ctx, *from);
  }

  expected<v1::MembersReply> on_leave(context& ctx, const v1::SwimLeave&) {
    if (!state_->left()) leave(ctx);
    return members_reply();
  }

  /// A hint from this node's transport: the connection to a member was lost. Probe it now
  /// instead of at its turn; suspicion still needs the direct and indirect probes to fail.
  void on_peer_lost(context& ctx, const v1::PeerLost& p) {
    const auto* e = state_->find(p.node());
    if (e == nullptr || p.node() == self_ || !is_live(e->state) || state_->left()) return;
    if (probe_.active && !probe_.acked) return; // a probe is under way; this one waits its turn
    probe(ctx, p.node());
  }

  expected<v1::MembersReply> on_members(context&, const v1::MembersRequest&) {
    return members_reply();
  }

  expected<v1::MembersReply> on_subscribe(context& ctx, const v1::MembershipSubscribe& s) {
    if (s.subscriber().empty()) {
      refuse(ctx, "MembershipSubscribe", "empty subscriber name");
      return validation_error("MembershipSubscribe: subscriber must name an agent on this node");
    }
    subscribers_.insert(s.subscriber());
    return members_reply();
  }

  void on_unsubscribe(context&, const v1::MembershipUnsubscribe& s) {
    subscribers_.erase(s.subscriber());
  }

  // --- timers ---------------------------------------------------------------------------------

  void on_tick(context& ctx, const v1::SwimTick&) {
    ctx.schedule(opts_.period, v1::SwimTick{});
    if (state_->left()) return;
    ++period_;
    if (opts_.observer) opts_.observer->period(self_);
    // The probe of the period that just ended: no ack, direct or indirect, means suspect.
    if (probe_.active && !probe_.acked) fail_probe(ctx);
    probe_.active = false;
    for (auto& c : state_->expire(ctx.now()))
      changed(ctx, c);
    // Not before the join plan says so: reconnect also contacts seeds.
    if (opts_.reconnect_every > 0 && period_ % opts_.reconnect_every == 0 && join_due_)
      reconnect(ctx);
    if (opts_.sync_every > 0 && joined_ && period_ % opts_.sync_every == 0) sync(ctx);
    if (auto target = next_target(ctx)) probe(ctx, *target);
    gossip(ctx);
    // What a restarted instance of this agent joins through (see recover).
    if (period_ % 10 == 1) shared_->last_live = random_live(ctx, 5, {});
  }

  void on_join_tick(context& ctx, const v1::SwimJoinTick& t) {
    join_due_ = true;
    if (joined_ || state_->left() || opts_.seeds.empty()) return;
    // One seed per attempt, in turn; this node's own name is not a seed.
    std::string seed;
    for (std::size_t i = 0; i < opts_.seeds.size() && seed.empty(); ++i) {
      const auto& s = opts_.seeds[(t.attempt() + i) % opts_.seeds.size()];
      if (s != self_) seed = s;
    }
    if (seed.empty()) {
      joined_ = true; // the only seed is this node: it starts the cluster
      return;
    }
    send_join(ctx, seed, [this, &ctx, attempt = t.attempt()](bool ok) {
      if (ok || joined_) {
        joined_ = true;
        return;
      }
      // Exponential backoff with full jitter, from the node's RNG.
      const auto shift = std::min<std::uint32_t>(attempt, 16);
      auto cap = opts_.join_backoff_min * (std::int64_t{1} << shift);
      cap = std::min(cap, opts_.join_backoff_max);
      const auto wait = opts_.join_backoff_min / 2
                        + duration{static_cast<std::int64_t>(ctx.rng().uniform(
                            static_cast<std::uint64_t>(std::max<std::int64_t>(cap.count(), 1))))};
      ctx.log().info("swim_join_retry", "no seed answered; retrying",
                     {{"attempt", attempt + 1}, {"wait_ms", wait.count() / 1'000'000}});
      v1::SwimJoinTick next;
      next.set_attempt(attempt + 1);
      ctx.schedule(wait, next);
    });
  }

  void on_suspicion_timeout(context& ctx, const v1::SwimSuspicionTimeout& t) {
    if (auto c = state_->confirm_dead(t.node(), t.incarnation(), ctx.now())) changed(ctx, *c);
  }

  // --- probing --------------------------------------------------------------------------------

  /// Round-robin over a shuffled list of the live members, reshuffled every cycle (SWIM's
  /// bound on the time to the first probe of a failed member).
  std::optional<std::string> next_target(context& ctx) {
    for (int round = 0; round < 2; ++round) {
      while (order_pos_ < order_.size()) {
        const auto& n = order_[order_pos_++];
        const auto* e = state_->find(n);
        if (e != nullptr && is_live(e->state)) return n;
      }
      order_ = state_->live_others();
      std::shuffle(order_.begin(), order_.end(), ctx.rng());
      order_pos_ = 0;
      if (order_.empty()) return std::nullopt;
    }
    return std::nullopt;
  }

  /// A member that became live goes to a random place in what is left of this cycle (SWIM's
  /// random insertion): waiting for the next cycle would leave newcomers under-probed and their
  /// failures slow to detect.
  void add_to_probe_order(context& ctx, const std::string& node) {
    order_.push_back(node);
    const auto left = order_.size() - order_pos_;
    std::swap(order_.back(), order_[order_pos_ + ctx.rng().uniform(left)]);
  }

  void probe(context& ctx, const std::string& target) {
    auto ref = ctx.lookup(address{target, std::string{k_members_agent}});
    probe_ = {++seq_, target, true, false};
    if (!ref) return; // no route: the period ends without an ack
    v1::SwimPing ping;
    *ping.mutable_from() = to_proto(state_->self());
    ping.set_seq(probe_.seq);
    fill_updates(*ping.mutable_updates(), target);
    count_sent(ctx, "ping");
    ctx.ask<v1::SwimAck>(*ref, std::move(ping), opts_.ping_timeout,
                         [this, &ctx, seq = probe_.seq](expected<v1::SwimAck> ack) {
                           if (ack) {
                             take_ack(ctx, *ack);
                             if (probe_.seq == seq && !probe_.acked) {
                               probe_.acked = true;
                               probes_ack_.inc();
                             }
                             return;
                           }
                           if (probe_.seq == seq && !probe_.acked) indirect(ctx);
                         });
  }

  /// The direct ping went unanswered: ask k other members to ping the target.
  void indirect(context& ctx) {
    const auto helpers = random_live(ctx, opts_.indirect_probes, probe_.target);
    const auto wait = std::max(opts_.period - opts_.ping_timeout, opts_.ping_timeout);
    probe_.indirect_pending = 0;
    for (const auto& h : helpers) {
      auto ref = ctx.lookup(address{h, std::string{k_members_agent}});
      if (!ref) continue;
      ++probe_.indirect_pending;
      v1::SwimPingReq req;
      *req.mutable_from() = to_proto(state_->self());
      req.set_target(probe_.target);
      req.set_seq(probe_.seq);
      fill_updates(*req.mutable_updates(), h);
      count_sent(ctx, "ping_req");
      ctx.ask<v1::SwimAck>(*ref, std::move(req), wait,
                           [this, &ctx, seq = probe_.seq](expected<v1::SwimAck> ack) {
                             if (!ack) {
                               // Every path failed: no need to wait for the period's end.
                               if (probe_.seq == seq && probe_.active && !probe_.acked
                                   && --probe_.indirect_pending == 0)
                                 fail_probe(ctx);
                               return;
                             }
                             take_ack(ctx, *ack);
                             if (probe_.seq == seq && !probe_.acked) {
                               probe_.acked = true;
                               probes_indirect_.inc();
                             }
                           });
    }
    // No member to ask (a two-member cluster): the direct ping was the only path.
    if (probe_.indirect_pending == 0) fail_probe(ctx);
  }

  /// The probe of `probe_.target` failed on every path: suspect it now (SWIM waits for the
  /// period's end only while some path may still answer).
  void fail_probe(context& ctx) {
    probe_.active = false;
    probes_failed_.inc();
    if (auto c = state_->suspect(probe_.target, ctx.now())) changed(ctx, *c);
  }

  /// Up to `k` distinct live members other than this node and `except`, drawn at random from
  /// the probe order (which holds every live member; O(k), not O(n), per call).
  std::vector<std::string> random_live(context& ctx, std::size_t k, const std::string& except) {
    std::vector<std::string> out;
    if (k == 0) return out;
    if (order_.size() <= 4 * k + 8) {
      auto all = state_->live_others();
      all.erase(std::remove(all.begin(), all.end(), except), all.end());
      std::shuffle(all.begin(), all.end(), ctx.rng());
      if (all.size() > k) all.resize(k);
      return all;
    }
    for (std::size_t tries = 0; tries < 8 * k && out.size() < k; ++tries) {
      const auto& n = order_[ctx.rng().uniform(order_.size())];
      const auto* e = state_->find(n);
      if (n == except || n == self_ || e == nullptr || !is_live(e->state)) continue;
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
    }
    return out;
  }

  /// Pending updates also go out on their own to a few random members each period (besides
  /// riding on pings and acks): dissemination then keeps pace with suspicions in large clusters.
  void gossip(context& ctx) {
    if (opts_.gossip_fanout == 0 || state_->gossip_pending() == 0) return;
    for (const auto& p : random_live(ctx, opts_.gossip_fanout, probe_.target)) {
      auto ref = ctx.lookup(address{p, std::string{k_members_agent}});
      if (!ref) continue;
      v1::SwimGossip g;
      *g.mutable_from() = to_proto(state_->self());
      fill_updates(*g.mutable_updates(), p);
      count_sent(ctx, "gossip");
      ctx.tell(*ref, std::move(g));
    }
  }

  /// Every few periods: ping one member believed dead, or join a seed not in the view, so two
  /// sides of a healed partition find each other again.
  void reconnect(context& ctx) {
    auto candidates = state_->dead_members();
    for (const auto& s : opts_.seeds) {
      if (s == self_) continue;
      const auto* e = state_->find(s);
      const bool host_port = !s.empty() && s.front() == '@';
      if ((host_port && state_->live_count() == 1)
          || (!host_port && (e == nullptr || !is_live(e->state))))
        if (std::find(candidates.begin(), candidates.end(), s) == candidates.end())
          candidates.push_back(s);
    }
    if (candidates.empty()) return;
    const auto& target = candidates[ctx.rng().uniform(candidates.size())];
    if (state_->find(target) == nullptr) {
      send_join(ctx, target, [](bool) {});
      return;
    }
    auto ref = ctx.lookup(address{target, std::string{k_members_agent}});
    if (!ref) return;
    v1::SwimPing ping;
    *ping.mutable_from() = to_proto(state_->self());
    ping.set_seq(++seq_);
    fill_updates(*ping.mutable_updates(), target);
    count_sent(ctx, "ping");
    ctx.ask<v1::SwimAck>(*ref, std::move(ping), opts_.ping_timeout,
                         [this, &ctx](expected<v1::SwimAck> ack) {
                           if (ack) take_ack(ctx, *ack);
                         });
  }

  /// Push-pull with one random live member: each side merges the other's whole view.
  void sync(context& ctx) {
    const auto peer = random_live(ctx, 1, {});
    if (peer.empty()) return;
    send_join(
        ctx, peer.front(), [](bool) {}, true);
  }

  template <class F>
  void send_join(context& ctx, const std::string& seed, F done, bool push = false) {
    auto ref = ctx.lookup(address{seed, std::string{k_members_agent}});
    if (!ref) {
      done(false);
      return;
    }
    v1::SwimJoin j;
    *j.mutable_from() = to_proto(state_->self());
    if (push) add_view(*j.mutable_members(), seed);
    count_sent(ctx, push ? "sync" : "join");
    ctx.ask<v1::SwimJoinReply>(
        *ref, std::move(j), opts_.join_timeout,
        [this, &ctx, seed, push, done = std::move(done)](expected<v1::SwimJoinReply> r) mutable {
          if (!r) {
            if (push) return;
            ctx.log().info("swim_join_failed", "seed did not answer",
                           {{"seed", seed}, {"error", r.error().to_string()}});
            done(false);
            return;
          }
          if (auto f = from_proto(r->from(), "SwimJoinReply.from"); f) apply(ctx, *f);
          merge(ctx, r->members(), "SwimJoinReply");
          if (!push)
            ctx.log().info("swim_joined", "joined the cluster",
                           {{"seed", seed}, {"members", state_->live_count()}});
          done(true);
        });
  }

  // --- gossip ---------------------------------------------------------------------------------

  void take_ack(context& ctx, const v1::SwimAck& ack) {
    auto from = accept_from(ctx, ack.from(), "SwimAck");
    if (!from) return;
    merge(ctx, ack.updates(), "SwimAck");
    maybe_resync(ctx, *from);
  }

  /// The piggy-back for a message to `to`: this node's own entry, `to`'s entry when this node
  /// believes it suspect or dead (so it can refute), then the freshest updates.
  void fill_updates(google::protobuf::RepeatedPtrField<v1::Member>& out, const std::string& to) {
    *out.Add() = to_proto(state_->self());
    if (const auto* e = state_->find(to); e != nullptr && e->state != member_state::alive)
      *out.Add() = to_proto(*e);
    for (auto& e : state_->take_gossip(opts_.max_piggyback))
      if (e.node != self_ && e.node != to) *out.Add() = to_proto(e);
  }

  /// The view for a join or sync with `peer`: the live members, and `peer`'s own entry whatever
  /// its state (a restarted node learns it was declared dead and refutes). Dead and left entries
  /// of others stay out: a full exchange would bring back members already forgotten.
  void add_view(google::protobuf::RepeatedPtrField<v1::Member>& out, const std::string& peer) {
    for (const auto& [name, e] : state_->members())
      if (is_live(e.state) || name == peer) *out.Add() = to_proto(e);
  }

  /// Checks the sender's self entry and merges it; an error refuses the message.
  expected<std::string> accept_from(context& ctx, const v1::Member& from, std::string_view what) {
    auto e = from_proto(from, std::string{what} + ".from");
    if (!e) {
      refuse(ctx, what, e.error().message());
      return e.error();
    }
    apply(ctx, *e);
    return e->node;
  }

  void merge(context& ctx, const google::protobuf::RepeatedPtrField<v1::Member>& updates,
             std::string_view what) {
    for (const auto& m : updates) {
      // Most of a full view (a join or sync) is known already: skip those entries without
      // building anything (1,000-member views make this the hot path).
      if (const auto* cur = state_->find(m.node()); cur != nullptr && m.node() != self_) {
        const auto s = static_cast<int>(m.state());
        if (s >= 1 && s <= 4 && (m.endpoint().empty() || !cur->endpoint.empty())) {
          member_entry probe_entry;
          probe_entry.state = static_cast<member_state>(s);
          probe_entry.incarnation = m.incarnation();
          if (!supersedes(probe_entry, *cur)) continue;
        }
      }
      auto e = from_proto(m, std::string{what} + ".updates");
      if (!e) {
        refuse(ctx, what, e.error().message());
        continue;
      }
      apply(ctx, *e);
    }
  }

  void apply(context& ctx, const member_entry& e) {
    auto c = state_->apply(e, ctx.now());
    if (!c) return;
    // Declared dead (or left) while running: a restarted node, or one cut off by a partition.
    // After refuting, fetch the whole view from whoever told it (resync).
    if (e.node == self_ && !is_live(e.state)) resync_ = true;
    changed(ctx, *c);
  }

  void maybe_resync(context& ctx, const std::string& from) {
    if (!resync_ || from == self_) return;
    resync_ = false;
    send_join(ctx, from, [](bool) {});
  }

  void refuse(context& ctx, std::string_view what, const std::string& why) {
    rejected_.inc();
    ctx.log().warn("swim_message_refused", why, {{"message", std::string{what}}});
  }

  void leave(context& ctx) {
    auto c = state_->leave(ctx.now());
    if (!c) return;
    changed(ctx, *c);
    const auto peers = random_live(ctx, opts_.leave_fanout, {});
    for (const auto& p : peers) {
      auto ref = ctx.lookup(address{p, std::string{k_members_agent}});
      if (!ref) continue;
      v1::SwimGossip g;
      *g.mutable_from() = to_proto(state_->self());
      fill_updates(*g.mutable_updates(), p);
      count_sent(ctx, "gossip");
      ctx.tell(*ref, std::move(g));
    }
    ctx.log().info("swim_left", "left the cluster", {{"told", peers.size()}});
  }

  // --- the view changed -----------------------------------------------------------------------

  void changed(context& ctx, const state_change& c) {
    const auto& e = c.now;
    if (e.state == member_state::suspect && c.previous != member_state::suspect) {
      v1::SwimSuspicionTimeout t;
      t.set_node(e.node);
      t.set_incarnation(e.incarnation);
      ctx.schedule(state_->suspicion_timeout(), t);
    }
    if (e.state != c.previous) {
      if (ctx.log().enabled(log_level::info))
        ctx.log().info("member_state_changed", {},
                       {{"member", e.node},
                        {"from", std::string{to_string(c.previous)}},
                        {"to", std::string{to_string(e.state)}},
                        {"incarnation", e.incarnation},
                        {"view_version", state_->version()}});
      count_state(c.previous, -1);
      count_state(e.state, +1);
      if (is_live(e.state) != is_live(c.previous)) {
        if (is_live(e.state) && e.node != self_) add_to_probe_order(ctx, e.node);
      }
    }
    const auto m = to_proto(e);
    if (opts_.observer) opts_.observer->changed(self_, m, static_cast<int>(c.previous));
    if (!subscribers_.empty()) {
      v1::MembershipEvent ev;
      *ev.mutable_member() = m;
      ev.set_previous(static_cast<v1::MemberState>(c.previous));
      ev.set_view_version(state_->version());
      for (auto it = subscribers_.begin(); it != subscribers_.end();) {
        if (auto s = ctx.tell(*it, ev); !s) {
          ctx.log().info("swim_subscriber_gone", "subscriber no longer exists; removed",
                         {{"subscriber", *it}});
          it = subscribers_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (!e.endpoint.empty() && e.node != self_) {
      if (auto t = ctx.lookup(k_transport_agent)) {
        v1::PeerRoutes routes;
        *routes.add_members() = m;
        ctx.tell(*t, std::move(routes));
      }
    }
  }

  v1::MembersReply members_reply() const {
    v1::MembersReply r;
    r.set_self(self_);
    for (const auto& [name, e] : state_->members())
      *r.add_members() = to_proto(e);
    r.set_view_version(state_->version());
    return r;
  }

  // --- metrics --------------------------------------------------------------------------------

  void setup_metrics(context& ctx) {
    auto& m = ctx.metrics();
    auto probes = [&](const char* outcome) {
      auto c = m.counter("af_swim_probes_total", "SWIM probes by outcome", {{"outcome", outcome}});
      return c ? *c : counter_handle{};
    };
    probes_ack_ = probes("ack");
    probes_indirect_ = probes("indirect_ack");
    probes_failed_ = probes("failed");
    if (auto c =
            m.counter("af_swim_rejected_total", "SWIM messages or updates refused as malformed"))
      rejected_ = *c;
    for (auto s :
         {member_state::alive, member_state::suspect, member_state::dead, member_state::left})
      if (auto g = m.gauge("af_cluster_members", "Members in this node's view by state",
                           {{"state", std::string{to_string(s)}}}))
        gauges_[static_cast<int>(s)] = *g;
  }

  void count_sent(context& ctx, const char* type) {
    if (opts_.observer) opts_.observer->sent(self_);
    auto it = sent_.find(type);
    if (it == sent_.end()) {
      auto c = ctx.metrics().counter("af_swim_messages_total", "SWIM messages sent by type",
                                     {{"type", type}});
      it = sent_.emplace(type, c ? *c : counter_handle{}).first;
    }
    it->second.inc();
  }

  void count_state(member_state s, int delta) {
    if (s == member_state::unknown) return;
    auto& n = counts_[static_cast<int>(s)];
    n += delta;
    if (auto it = gauges_.find(static_cast<int>(s)); it != gauges_.end())
      it->second.set(static_cast<double>(n));
  }

  struct probe_state {
    std::uint64_t seq = 0;
    std::string target;
    bool active = false;
    bool acked = false;
    std::size_t indirect_pending = 0; ///< ping-reqs not answered yet
  };

  std::shared_ptr<membership_shared> shared_;
  swim_options opts_;
  std::string self_;
  std::unique_ptr<swim_state> state_;
  bool joined_ = false;
  bool resync_ = false;
  bool join_due_ = false; ///< the join delay has passed
  std::uint64_t period_ = 0;
  std::uint64_t seq_ = 0;
  probe_state probe_;
  std::vector<std::string> order_;
  std::size_t order_pos_ = 0;
  std::set<std::string> subscribers_;
  counter_handle probes_ack_, probes_indirect_, probes_failed_, rejected_;
  std::map<std::string, counter_handle> sent_;
  std::map<int, gauge_handle> gauges_;
  std::map<int, std::int64_t> counts_;
};

} // namespace

status validate(const swim_options& o) {
  auto bad = [](const std::string& what) {
    return status{validation_error("cluster.swim." + what)};
  };
  if (o.period <= duration::zero()) return bad("period: must be > 0");
  if (o.ping_timeout <= duration::zero() || o.ping_timeout >= o.period)
    return bad("ping_timeout: must be > 0 and below the period");
  if (o.suspicion_mult <= 0) return bad("suspicion_mult: must be > 0");
  if (o.suspicion_min <= duration::zero()) return bad("suspicion_min: must be > 0");
  if (o.suspicion_max < o.suspicion_min) return bad("suspicion_max: must be >= suspicion_min");
  if (o.retransmit_mult <= 0) return bad("retransmit_mult: must be > 0");
  if (o.max_piggyback == 0) return bad("max_piggyback: must be >= 1");
  if (o.join_backoff_min <= duration::zero() || o.join_backoff_max < o.join_backoff_min)
    return bad("join_backoff: min must be > 0 and <= max");
  if (o.join_timeout <= duration::zero()) return bad("join_timeout: must be > 0");
  if (o.dead_retention <= duration::zero()) return bad("dead_retention: must be > 0");
  if (o.join_delay < duration::zero()) return bad("join_delay: must be >= 0");
  for (const auto& s : o.seeds)
    if (s.empty()) return bad("seeds: empty seed");
  return {};
}

sup::child_spec membership_child(swim_options opts) {
  auto shared = std::make_shared<membership_shared>();
  shared->opts = std::move(opts);
  sup::child_spec spec;
  spec.id = std::string{k_members_agent};
  spec.restart = sup::restart_policy::permanent;
  spec.system = true;
  spec.make_agent = [shared] { return std::make_unique<membership_agent>(shared); };
  return spec;
}

} // namespace af::cluster
