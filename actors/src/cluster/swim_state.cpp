// SWIM's bookkeeping (swim_state.hpp): precedence, refutation, suspicion, the gossip buffer.
#include "cluster/swim_state.hpp"

#include <algorithm>
#include <cmath>

namespace af::cluster {

namespace {

/// At one incarnation, later states win: alive < suspect < dead < left.
int rank(member_state s) noexcept {
  switch (s) {
  case member_state::alive:
    return 0;
  case member_state::suspect:
    return 1;
  case member_state::dead:
    return 2;
  case member_state::left:
    return 3;
  case member_state::unknown:
    break;
  }
  return -1;
}

double log_size(std::size_t n) { return std::log10(static_cast<double>(n) + 1.0); }

} // namespace

std::string_view to_string(member_state s) noexcept {
  switch (s) {
  case member_state::alive:
    return "alive";
  case member_state::suspect:
    return "suspect";
  case member_state::dead:
    return "dead";
  case member_state::left:
    return "left";
  case member_state::unknown:
    break;
  }
  return "unknown";
}

bool supersedes(const member_entry& update, const member_entry& current) noexcept {
  if (update.incarnation != current.incarnation) return update.incarnation > current.incarnation;
  return rank(update.state) > rank(current.state);
}

swim_state::swim_state(std::string self, std::string endpoint, swim_options opts, time_point now)
    : self_(std::move(self)), opts_(std::move(opts)) {
  member_entry me;
  me.node = self_;
  me.endpoint = std::move(endpoint);
  me.state = member_state::alive;
  me.since = now;
  members_.emplace(self_, me);
  live_ = 1;
}

std::optional<state_change> swim_state::set_endpoint(std::string endpoint, time_point now) {
  auto me = self();
  if (me.endpoint == endpoint) return std::nullopt;
  me.endpoint = std::move(endpoint);
  ++me.incarnation;
  return set(std::move(me), now);
}

const member_entry* swim_state::find(const std::string& node) const {
  auto it = members_.find(node);
  return it == members_.end() ? nullptr : &it->second;
}

std::vector<std::string> swim_state::live_others() const {
  std::vector<std::string> out;
  out.reserve(live_);
  for (const auto& [name, e] : members_)
    if (name != self_ && is_live(e.state)) out.push_back(name);
  return out;
}

std::vector<std::string> swim_state::dead_members() const {
  std::vector<std::string> out;
  if (gone_ == 0) return out;
  for (const auto& [name, e] : members_)
    if (e.state == member_state::dead) out.push_back(name);
  return out;
}

state_change swim_state::set(member_entry e, time_point now) {
  state_change c;
  auto it = members_.find(e.node);
  if (it != members_.end()) {
    c.previous = it->second.state;
    if (is_live(c.previous))
      --live_;
    else
      --gone_;
    if (e.state != c.previous)
      e.since = now;
    else
      e.since = it->second.since;
    if (e.endpoint.empty()) e.endpoint = it->second.endpoint;
    it->second = e;
  } else {
    e.since = now;
    members_.emplace(e.node, e);
  }
  if (is_live(e.state))
    ++live_;
  else
    ++gone_;
  ++version_;
  enqueue(e);
  c.now = std::move(e);
  return c;
}

void swim_state::enqueue(const member_entry& e) {
  if (auto it = queued_.find(e.node); it != queued_.end()) {
    queue_.erase(it->second);
    queued_.erase(it);
  }
  queue_key k{0, order_--, e.node};
  queue_.insert(k);
  queued_.emplace(e.node, std::move(k));
}

std::optional<state_change> swim_state::apply(const member_entry& update, time_point now) {
  if (update.node.empty() || update.state == member_state::unknown) return std::nullopt;
  if (update.node == self_) {
    auto me = self();
    if (me.state == member_state::left) return std::nullopt; // leaving: nothing to refute
    if (update.state == member_state::alive) {
      // An older instance of this node gossiped a higher incarnation: go above it, or the
      // cluster keeps the old instance's entry.
      if (update.incarnation <= me.incarnation) return std::nullopt;
      me.incarnation = update.incarnation + 1;
    } else {
      if (update.incarnation < me.incarnation) return std::nullopt; // already refuted
      me.incarnation = update.incarnation + 1;
    }
    return set(std::move(me), now);
  }
  auto it = members_.find(update.node);
  if (it != members_.end()) {
    if (!supersedes(update, it->second)) {
      // Not newer, but it may name an endpoint this view lacks.
      if (it->second.endpoint.empty() && !update.endpoint.empty()) {
        it->second.endpoint = update.endpoint;
        ++version_;
        state_change c{it->second, it->second.state};
        return c;
      }
      return std::nullopt;
    }
  }
  member_entry e = update;
  return set(std::move(e), now);
}

std::optional<state_change> swim_state::suspect(const std::string& node, time_point now) {
  auto it = members_.find(node);
  if (node == self_ || it == members_.end() || it->second.state != member_state::alive)
    return std::nullopt;
  auto e = it->second;
  e.state = member_state::suspect;
  return set(std::move(e), now);
}

std::optional<state_change> swim_state::confirm_dead(const std::string& node,
                                                     std::uint64_t incarnation, time_point now) {
  auto it = members_.find(node);
  if (node == self_ || it == members_.end() || it->second.state != member_state::suspect
      || it->second.incarnation != incarnation)
    return std::nullopt;
  auto e = it->second;
  e.state = member_state::dead;
  return set(std::move(e), now);
}

std::optional<state_change> swim_state::leave(time_point now) {
  auto me = self();
  if (me.state == member_state::left) return std::nullopt;
  me.state = member_state::left;
  return set(std::move(me), now);
}

std::vector<state_change> swim_state::expire(time_point now) {
  std::vector<state_change> out;
  if (gone_ == 0) return out;
  for (auto it = members_.begin(); it != members_.end();) {
    const auto& e = it->second;
    if (it->first != self_ && !is_live(e.state) && now - e.since >= opts_.dead_retention) {
      state_change c;
      c.previous = e.state;
      c.now = e;
      c.now.state = member_state::unknown;
      if (auto q = queued_.find(it->first); q != queued_.end()) {
        queue_.erase(q->second);
        queued_.erase(q);
      }
      --gone_;
      ++version_;
      it = members_.erase(it);
      out.push_back(std::move(c));
    } else {
      ++it;
    }
  }
  return out;
}

duration swim_state::suspicion_timeout() const {
  const double periods = opts_.suspicion_mult * log_size(live_);
  auto t = std::chrono::duration_cast<duration>(std::chrono::duration<double, std::nano>(
      periods * static_cast<double>(opts_.period.count())));
  return std::clamp(t, opts_.suspicion_min, std::max(opts_.suspicion_min, opts_.suspicion_max));
}

std::uint32_t swim_state::retransmit_limit() const {
  const double v = std::ceil(opts_.retransmit_mult * log_size(live_));
  return std::max<std::uint32_t>(1, static_cast<std::uint32_t>(v));
}

std::vector<member_entry> swim_state::take_gossip(std::size_t max) {
  std::vector<member_entry> out;
  if (queue_.empty() || max == 0) return out;
  const auto limit = retransmit_limit();
  std::vector<queue_key> again;
  while (out.size() < max && !queue_.empty()) {
    auto k = *queue_.begin();
    queue_.erase(queue_.begin());
    const auto& node = std::get<2>(k);
    out.push_back(members_.at(node));
    const auto n = std::get<0>(k) + 1;
    if (n >= limit) {
      queued_.erase(node);
    } else {
      queue_key next{n, std::get<1>(k), node};
      queued_[node] = next;
      again.push_back(std::move(next));
    }
  }
  // Reinserted after the loop, so one message never carries the same update twice.
  for (auto& k : again)
    queue_.insert(std::move(k));
  return out;
}

std::optional<std::uint32_t> swim_state::transmits(const std::string& node) const {
  auto it = queued_.find(node);
  if (it == queued_.end()) return std::nullopt;
  return std::get<0>(it->second);
}

} // namespace af::cluster
