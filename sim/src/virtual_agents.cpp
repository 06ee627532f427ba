// The simulator's virtual-agent section (virtual_agents.hpp): placement on every node over a
// scripted membership agent, a client load of counter adds, and the book that counts duplicate
// activations and checks the exactly-once effect of the writes against the shared journal.
#include "virtual_agents.hpp"

#include "af/cluster/counter.hpp"
#include "af/cluster/placement.hpp"
#include "af/metrics.hpp"
#include "af/store/journal.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/placement.pb.h"
#include "shared_store.hpp"
#include "world.hpp"

#include <set>
#include <sstream>

namespace af::sim::detail {

namespace {

v1::MemberState state_of(const std::string& s) {
  if (s == "alive") return v1::MEMBER_ALIVE;
  if (s == "suspect") return v1::MEMBER_SUSPECT;
  if (s == "left") return v1::MEMBER_LEFT;
  return v1::MEMBER_DEAD;
}

/// A scripted membership agent, registered as af.cluster.members on every simulated node: a
/// test double with the SWIM agent's protocol (MembershipSubscribe -> MembersReply, then
/// MembershipEvent tells; MembersRequest) whose failure detector is an oracle with a delay: a
/// node that is down is declared dead after a delay drawn per (observer, episode), and alive
/// again when it is up. The real SWIM agent (af/cluster/membership) replaces it once it runs in
/// the simulator; placement does not know the difference.
class scripted_members : public agent_base<scripted_members> {
public:
  scripted_members(world* w, const virtual_agents_spec* spec) : w_(w), spec_(spec) {}

  static void define(handlers<scripted_members>& h) {
    h.kind("sim.scripted_members")
        .on(&scripted_members::on_subscribe)
        .on(&scripted_members::on_unsubscribe)
        .on(&scripted_members::on_request)
        .on(&scripted_members::on_tick);
  }

  void on_start(context& ctx) override {
    self_name_ = ctx.self().node;
    for (const auto& name : w_->scen().nodes) {
      const auto* n = w_->find_node(name);
      auto& m = members_[name];
      m.set_node(name);
      m.set_state(n != nullptr && n->up() ? v1::MEMBER_ALIVE : v1::MEMBER_DEAD);
      m.set_incarnation(1);
    }
    view_ = 1;
    ctx.schedule(k_tick, v1::PlacementTick{});
  }

  expected<v1::MembersReply> on_subscribe(context&, const v1::MembershipSubscribe& s) {
    subscribers_.insert(s.subscriber());
    return reply();
  }
  void on_unsubscribe(context&, const v1::MembershipUnsubscribe& s) {
    subscribers_.erase(s.subscriber());
  }
  expected<v1::MembersReply> on_request(context&, const v1::MembersRequest&) { return reply(); }

  void on_tick(context& ctx, const v1::PlacementTick&) {
    const auto now = ctx.monotonic();
    const auto& self = ctx.self().node;
    for (const auto& d : spec_->declarations)
      if (d.at <= now && !applied_.contains(&d)) {
        applied_.insert(&d);
        if (d.node == self) continue; // a node's own view keeps itself (so views disagree)
        scripted_.insert(d.node);
        set(ctx, d.node, state_of(d.state));
      }
    for (const auto& name : w_->scen().nodes) {
      if (name == self || scripted_.contains(name)) continue;
      const auto* n = w_->find_node(name);
      const bool up = n != nullptr && n->up();
      auto& m = members_[name];
      if (!up && m.state() == v1::MEMBER_ALIVE) {
        auto [it, fresh] = down_since_.try_emplace(name, now);
        if (fresh) {
          const auto span = static_cast<std::uint64_t>(
              std::max<std::int64_t>((spec_->detect_max - spec_->detect_min).count(), 0));
          delay_[name] =
              spec_->detect_min + duration{static_cast<std::int64_t>(ctx.rng().uniform(span + 1))};
        }
        if (now - it->second >= delay_[name]) set(ctx, name, v1::MEMBER_DEAD);
      } else if (up) {
        down_since_.erase(name);
        if (m.state() != v1::MEMBER_ALIVE) set(ctx, name, v1::MEMBER_ALIVE);
      }
    }
    ctx.schedule(k_tick, v1::PlacementTick{});
  }

private:
  static constexpr duration k_tick = std::chrono::milliseconds(100);

  v1::MembersReply reply() const {
    v1::MembersReply r;
    r.set_self(self_name_);
    for (const auto& [name, m] : members_)
      *r.add_members() = m;
    r.set_view_version(view_);
    return r;
  }

  void set(context& ctx, const std::string& node, v1::MemberState st) {
    auto& m = members_[node];
    if (m.node().empty()) m.set_node(node);
    if (m.state() == st) return;
    v1::MembershipEvent ev;
    ev.set_previous(m.state());
    if (st == v1::MEMBER_ALIVE && m.state() != v1::MEMBER_UNKNOWN)
      m.set_incarnation(m.incarnation() + 1); // it came back
    m.set_state(st);
    *ev.mutable_member() = m;
    ev.set_view_version(++view_);
    ctx.log().info("sim_membership_changed", "scripted membership",
                   {{"member", node}, {"state", v1::MemberState_Name(st)}});
    for (const auto& s : subscribers_)
      (void)ctx.tell(s, ev);
  }

  world* w_;
  const virtual_agents_spec* spec_;
  std::string self_name_;
  std::map<std::string, v1::Member> members_;
  std::uint64_t view_ = 0;
  std::set<std::string> subscribers_;
  std::map<std::string, duration> down_since_, delay_;
  std::set<const membership_declaration*> applied_;
  std::set<std::string> scripted_;
};

/// One add every `client_interval` to a random id of a random kind, until the end of the
/// workload; a failed add is tried again (same op id: at most once in the journal) twice.
class virtual_client : public agent_base<virtual_client> {
public:
  virtual_client(world* w, virtual_book* book) : w_(w), book_(book) {}

  static void define(handlers<virtual_client>& h) {
    h.kind("sim.virtual_client").on(&virtual_client::on_tick);
  }

  void on_start(context& ctx) override {
    ctx.schedule(w_->scen().virtual_agents.client_interval, v1::PlacementTick{});
  }

  void on_tick(context& ctx, const v1::PlacementTick&) {
    const auto& spec = w_->scen().virtual_agents;
    if (ctx.monotonic() >= w_->scen().run_for) return; // the drain only finishes work
    const auto& kind = spec.kinds[ctx.rng().uniform(spec.kinds.size())];
    const auto name = kind + "/" + std::to_string(ctx.rng().uniform(spec.ids));
    const auto op = ctx.self().node + "-" + std::to_string(++book_->next_op);
    ++book_->counts.adds_sent;
    send(ctx, name, op, 0);
    ctx.schedule(spec.client_interval, v1::PlacementTick{});
  }

private:
  void send(context& ctx, const std::string& name, const std::string& op, int attempt) {
    v1::CounterAdd add;
    add.set_op_id(op);
    add.set_amount(1);
    ctx.ask<v1::CounterValue>(name, std::move(add), w_->scen().virtual_agents.client_timeout,
                              [this, &ctx, name, op, attempt](expected<v1::CounterValue> r) {
                                if (r) {
                                  book_->acked[op] = name;
                                  ++book_->counts.adds_acked;
                                  // Every add is 1, so a counter whose state was reloaded has value
                                  // == version.
                                  if (r->value() != static_cast<std::int64_t>(r->version()))
                                    ++book_->counts.stale_replies;
                                  return;
                                }
                                if (attempt < 2 && r.error().code() != errc::validation) {
                                  send(ctx, name, op, attempt + 1);
                                  return;
                                }
                                ++book_->counts.adds_failed;
                              });
  }

  world* w_;
  virtual_book* book_;
};

std::uint64_t metric_sum(const af::metrics& m, std::string_view family) {
  std::istringstream text{m.serialize_text()};
  std::uint64_t sum = 0;
  for (std::string line; std::getline(text, line);)
    if (line.starts_with(family) && line.size() > family.size()
        && (line[family.size()] == '{' || line[family.size()] == ' '))
      sum += static_cast<std::uint64_t>(std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr));
  return sum;
}

} // namespace

std::vector<sup::child_spec> virtual_agent_services(world& w, sim_node& n, virtual_book& book) {
  std::vector<sup::child_spec> out;
  const auto& spec = w.scen().virtual_agents;
  store::journal_options jo;
  jo.blocking = false;
  jo.open = [disk = book.cluster_disk]() -> expected<std::unique_ptr<store::backend>> {
    return std::unique_ptr<store::backend>{std::make_unique<shared_store>(disk)};
  };
  auto j = store::journal_child(std::move(jo));
  j.id = std::string{k_cluster_journal};
  out.push_back(std::move(j));

  // With a `cluster:` section the real SWIM agent is af.cluster.members; otherwise the scripted
  // double stands in for it.
  if (!w.cluster()) {
    auto members =
        sup::agent_child<scripted_members>(std::string{cluster::k_members_agent}, &w, &spec);
    out.push_back(std::move(members));
  }

  cluster::placement_options po;
  cluster::counter_options co;
  co.journal = std::string{k_cluster_journal};
  co.journal_timeout = std::chrono::seconds(1);
  for (const auto& k : spec.kinds)
    po.kinds[k] = cluster::counter_kind(co);
  po.idle_timeout = spec.idle_timeout;
  po.tick = std::chrono::milliseconds(250);
  po.ask_timeout = std::chrono::seconds(1);
  po.on_activate = [w = &w, b = &book](const std::string& node, const std::string& name) {
    // Another node holding an activation of the same name at this virtual time: a duplicate.
    for (const auto& other : w->scen().nodes) {
      if (other == node) continue;
      const auto* o = w->find_node(other);
      if (o != nullptr && o->up() && o->core()->registry.find(name)) {
        // The first few in the timeline; the report counts them all.
        if (++b->counts.duplicate_activations <= 5)
          w->note("duplicate activation of " + name + " on " + node + " (also on " + other + ")");
        break;
      }
    }
  };
  (void)n;
  out.push_back(cluster::placement_child(std::move(po)));
  return out;
}

std::function<std::unique_ptr<agent>()> virtual_client_factory(world& w, virtual_book& book) {
  return [w = &w, b = &book]() -> std::unique_ptr<agent> {
    return std::make_unique<virtual_client>(w, b);
  };
}

void finish_virtual_report(world& w, virtual_book& book) {
  auto& c = book.counts;
  c.activations = c.deactivations = c.forwards = c.fenced_appends = 0;
  for (const auto& name : w.scen().nodes) {
    const auto& m = w.find_node(name)->metrics();
    c.activations += metric_sum(m, "af_placement_activations_total");
    c.deactivations += metric_sum(m, "af_placement_deactivations_total");
    c.forwards += metric_sum(m, "af_placement_forwards_total");
    c.fenced_appends += metric_sum(m, "af_counter_fenced_total");
  }
  // The journal against the book: op ids written more than once, acknowledged ops missing.
  std::map<std::string, std::uint32_t> seen;
  c.events_in_journal = 0;
  std::string after;
  for (;;) {
    auto streams = book.cluster_disk->list_streams("agent/", "", after, 500);
    if (!streams || streams->empty()) break;
    for (const auto& s : *streams) {
      std::uint64_t from = 1;
      for (;;) {
        auto evs = book.cluster_disk->read(s.stream, from, 1000);
        if (!evs || evs->empty()) break;
        for (const auto& e : *evs) {
          ++c.events_in_journal;
          v1::CounterEvent ce;
          if (ce.ParseFromString(e.payload)) ++seen[ce.op_id()];
          from = e.version + 1;
        }
      }
      after = s.stream;
    }
  }
  c.ops_written_twice = 0;
  for (const auto& [op, n] : seen)
    if (n > 1) ++c.ops_written_twice;
  c.acked_ops_missing = 0;
  for (const auto& [op, name] : book.acked)
    if (!seen.contains(op)) ++c.acked_ops_missing;
}

invariant_result virtual_exactly_once(const virtual_book& book, duration now) {
  const auto& c = book.counts;
  invariant_result r{"virtual_exactly_once", true, {}, now};
  r.detail = std::to_string(c.adds_acked) + " adds acknowledged, "
             + std::to_string(c.events_in_journal) + " events in the journal, "
             + std::to_string(c.duplicate_activations) + " duplicate activations, "
             + std::to_string(c.fenced_appends) + " fenced appends";
  if (c.ops_written_twice > 0 || c.acked_ops_missing > 0 || c.stale_replies > 0) {
    r.ok = false;
    r.detail += "; " + std::to_string(c.ops_written_twice) + " ops written twice, "
                + std::to_string(c.acked_ops_missing) + " acknowledged ops missing, "
                + std::to_string(c.stale_replies) + " replies from a state not reloaded";
  }
  return r;
}

} // namespace af::sim::detail
