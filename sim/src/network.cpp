// The simulated network (world.hpp): per-link loss, duplication and latency drawn from the seed,
// partitions, and asks whose replies travel back over the reverse link.
#include "caf_glue.hpp"
#include "world.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/sec.hpp>

#include <cmath>

namespace af::sim::detail {

network::network(world& w, const network_spec& spec, std::uint64_t seed)
    : world_(w), spec_(spec), rng_(seed) {
  for (const auto& o : spec.links) {
    links_[{o.from, o.to}] = o.link;
    if (o.both) links_[{o.to, o.from}] = o.link;
  }
}

const link_spec& network::link(const std::string& from, const std::string& to) const {
  auto it = links_.find({from, to});
  return it == links_.end() ? spec_.defaults : it->second;
}

duration network::latency(const link_spec& l) {
  const auto& m = l.latency;
  switch (m.dist) {
    case latency_spec::kind::constant:
      return m.min;
    case latency_spec::kind::uniform: {
      const auto span =
          static_cast<std::uint64_t>(std::max<std::int64_t>((m.max - m.min).count(), 0));
      return m.min + duration{static_cast<std::int64_t>(rng_.uniform(span + 1))};
    }
    case latency_spec::kind::exponential: {
      const double u = 1.0 - rng_.uniform01(); // (0, 1]
      const double extra = -std::log(u) * static_cast<double>(m.mean.count());
      return m.min + duration{static_cast<std::int64_t>(std::min(extra, 3.6e12))};
    }
  }
  return m.min;
}

bool network::cut(const std::string& from, const std::string& to) const {
  return !cut_.empty() && cut_.contains({from, to});
}

void network::partition(const std::vector<std::vector<std::string>>& groups) {
  for (std::size_t i = 0; i < groups.size(); ++i)
    for (std::size_t j = 0; j < groups.size(); ++j)
      if (i != j)
        for (const auto& a : groups[i])
          for (const auto& b : groups[j])
            cut_.insert({a, b});
}

void network::heal() { cut_.clear(); }

void network::release(std::uint64_t ask) {
  if (ask == 0) return;
  auto it = asks_.find(ask);
  if (it != asks_.end() && --it->second.live == 0) asks_.erase(it);
}

void network::on_send(caf::event_based_actor* self, envelope e) {
  flight f;
  if (self->current_message_id().is_request()) {
    f.ask = ++next_ask_;
    asks_.emplace(f.ask, pending_ask{self->make_response_promise(), 0});
  }
  const auto from = e.sender().node;
  const auto to = e.receiver().node;
  f.env = std::move(e);
  launch(self, from, to, std::move(f));
}

void network::launch(caf::event_based_actor* self, const std::string& from, const std::string& to,
                     flight f) {
  ++sent;
  const auto& l = link(from, to);
  // Both draws happen whatever the outcome, so a partition does not shift later draws.
  const bool lost = l.loss > 0 && rng_.uniform01() < l.loss;
  const bool twice = l.duplicate > 0 && rng_.uniform01() < l.duplicate;
  const auto* dst = world_.find_node(to);
  if (lost || cut(from, to) || dst == nullptr || !dst->up()) {
    ++dropped;
    if (f.ask != 0 && asks_[f.ask].live == 0) asks_.erase(f.ask); // the asker times out
    return;
  }
  const int copies = twice ? 2 : 1;
  if (twice) ++duplicated;
  for (int i = 0; i < copies; ++i) {
    const auto id = ++next_id_;
    const auto d = latency(l);
    if (f.ask != 0) ++asks_[f.ask].live;
    in_flight_.emplace(id, i + 1 < copies ? f : std::move(f));
    self->delayed_send(self, std::chrono::duration_cast<caf::timespan>(d), deliver_atom::value,
                       id);
  }
}

void network::on_deliver(caf::event_based_actor* self, std::uint64_t id) {
  auto it = in_flight_.find(id);
  if (it == in_flight_.end()) return;
  auto f = std::move(it->second);
  in_flight_.erase(it);
  arrive(self, std::move(f));
}

void network::arrive(caf::event_based_actor* self, flight f) {
  // A reply goes from the asked node back to the asker's.
  const auto& from = f.reply ? f.env.receiver().node : f.env.sender().node;
  const auto& to = f.reply ? f.env.sender().node : f.env.receiver().node;
  auto* dst = world_.find_node(to);
  // A partition that began, or a crash that happened, while the message was on the wire.
  if (cut(from, to) || dst == nullptr || !dst->up()) {
    ++dropped;
    release(f.ask);
    return;
  }
  if (f.reply) {
    auto it = asks_.find(f.ask);
    if (it == asks_.end()) return; // a copy of a reply already delivered
    auto rp = std::move(it->second.rp);
    asks_.erase(it);
    if (f.err)
      rp.deliver(f.err);
    else
      rp.deliver(std::move(f.answer));
    return;
  }
  // By name through the node's lookup, as a real node's transport does: a virtual name
  // (`Kind/id`) reaches the node's virtual router.
  auto found = dst->core()->lookup(f.env.receiver().name);
  caf::actor_control_block* target = found ? found->ctrl() : nullptr;
  if (target == nullptr) {
    ++dropped;
    if (f.ask != 0 && asks_.contains(f.ask)) {
      // The asker hears "the agent has stopped" back over the reverse link.
      flight back;
      back.reply = true;
      back.ask = f.ask;
      back.env = std::move(f.env);
      back.err = caf::make_error(caf::sec::request_receiver_down);
      ++asks_[back.ask].live; // held while the request copy is let go and the reply launched
      release(back.ask);
      launch(self, to, from, back);
      release(back.ask);
    }
    return;
  }
  auto actor = caf::actor_cast<caf::actor>(target);
  if (f.ask == 0) {
    self->send(actor, std::move(f.env));
    return;
  }
  if (!asks_.contains(f.ask)) return; // answered already through another copy
  auto request = f.env;
  const auto ask = f.ask;
  auto reply_back = [this, self, ask, env = std::move(f.env)](envelope* answer, caf::error* err) {
    flight back;
    back.reply = true;
    back.ask = ask;
    back.env = env;
    if (answer != nullptr) back.answer = std::move(*answer);
    if (err != nullptr) back.err = std::move(*err);
    if (asks_.contains(ask)) launch(self, env.receiver().node, env.sender().node, std::move(back));
    release(ask);
  };
  self->request(actor, caf::infinite, std::move(request))
      .then([reply_back](envelope& answer) mutable { reply_back(&answer, nullptr); },
            [reply_back](caf::error& err) mutable { reply_back(nullptr, &err); });
}

} // namespace af::sim::detail
