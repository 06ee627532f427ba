// The execution leases af.exec holds or watches (lease_book.hpp).
#include "plan/lease_book.hpp"

#include <algorithm>

namespace af::plan {

void lease_book::acquiring(const std::string& id) { mine_.try_emplace(id); }

bool lease_book::granted(const std::string& id, duration sent, duration now) {
  auto it = mine_.find(id);
  if (it == mine_.end()) return false;
  it->second.renewing = false;
  const duration until = sent + t_.ttl - t_.margin;
  if (!it->second.deadline) {
    if (until <= now) {
      // Granted, but so late that the lease may run out at the leader before this node could
      // use it: not held (a later acquire asks again).
      mine_.erase(it);
      return false;
    }
    it->second.deadline = until;
  } else {
    // Already running out: a late grant cannot make the executor stopped at the deadline
    // safe to run again (expire() removes such leases before it is called).
    if (*it->second.deadline <= now) return false;
    it->second.deadline = std::max(*it->second.deadline, until);
  }
  theirs_.erase(id);
  return true;
}

void lease_book::not_granted(const std::string& id) {
  auto it = mine_.find(id);
  if (it == mine_.end()) return;
  if (!it->second.deadline) {
    mine_.erase(it);
    return;
  }
  it->second.renewing = false;
}

void lease_book::drop(const std::string& id) { mine_.erase(id); }

bool lease_book::holds(const std::string& id, duration now) const {
  auto it = mine_.find(id);
  return it != mine_.end() && it->second.deadline && now < *it->second.deadline;
}

std::optional<duration> lease_book::deadline(const std::string& id) const {
  auto it = mine_.find(id);
  if (it == mine_.end()) return std::nullopt;
  return it->second.deadline;
}

std::size_t lease_book::held_count() const {
  return static_cast<std::size_t>(
      std::count_if(mine_.begin(), mine_.end(), [](const auto& e) { return e.second.deadline; }));
}

std::vector<std::string> lease_book::held_ids() const {
  std::vector<std::string> out;
  for (const auto& [id, m] : mine_)
    if (m.deadline) out.push_back(id);
  return out;
}

bool lease_book::in_flight(const std::string& id) const {
  auto it = mine_.find(id);
  return it != mine_.end() && (!it->second.deadline || it->second.renewing);
}

std::vector<std::string> lease_book::renew_batch(duration now, std::size_t max) {
  std::vector<std::pair<duration, const std::string*>> due;
  for (const auto& [id, m] : mine_)
    if (m.deadline && !m.renewing && now < *m.deadline) due.emplace_back(*m.deadline, &id);
  std::sort(due.begin(), due.end(), [](const auto& a, const auto& b) {
    return a.first < b.first || (a.first == b.first && *a.second < *b.second);
  });
  if (due.size() > max) due.resize(max);
  std::vector<std::string> out;
  out.reserve(due.size());
  for (const auto& [d, id] : due) {
    mine_[*id].renewing = true;
    out.push_back(*id);
  }
  return out;
}

std::vector<std::string> lease_book::expire(duration now) {
  std::vector<std::string> out;
  for (auto it = mine_.begin(); it != mine_.end();) {
    if (it->second.deadline && *it->second.deadline <= now) {
      out.push_back(it->first);
      it = mine_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::optional<duration> lease_book::next_deadline() const {
  std::optional<duration> out;
  for (const auto& [id, m] : mine_)
    if (m.deadline && (!out || *m.deadline < *out)) out = m.deadline;
  return out;
}

void lease_book::held_elsewhere(const std::string& id, const std::string& owner, duration ttl_left,
                                duration now) {
  auto& t = theirs_[id];
  // A refusal may name no holder (an expired lease a new Raft leader does not give away yet):
  // keep the holder seen before, the one a takeover names.
  if (!owner.empty()) t.owner = owner;
  t.seen_at = now;
  // The holder renews before its lease runs out, so asking earlier than this learns nothing.
  t.retry_at = now + std::max(ttl_left, duration::zero());
}

bool lease_book::may_try(const std::string& id, duration now) const {
  auto it = theirs_.find(id);
  return it == theirs_.end() || it->second.retry_at <= now;
}

std::string lease_book::last_owner(const std::string& id) const {
  auto it = theirs_.find(id);
  return it == theirs_.end() ? std::string{} : it->second.owner;
}

void lease_book::owner_gone(const std::string& node, duration now) {
  for (auto& [id, t] : theirs_)
    if (t.owner == node) t.retry_at = std::min(t.retry_at, now);
}

void lease_book::prune(duration before) {
  std::erase_if(theirs_, [before](const auto& e) { return e.second.seen_at < before; });
}

} // namespace af::plan
