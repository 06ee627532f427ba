// Private: SWIM's bookkeeping without actors, so it can be unit-tested: the members table with
// incarnations and the SWIM precedence rules, refutation, the suspicion timeout, the gossip
// buffer with bounded retransmissions, and forgetting dead members.
#pragma once

#include "af/cluster/membership.hpp"
#include "af/services.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace af::cluster {

/// The values of af.v1.MemberState (unknown: not in the view).
enum class member_state : std::uint8_t { unknown = 0, alive = 1, suspect = 2, dead = 3, left = 4 };

[[nodiscard]] std::string_view to_string(member_state s) noexcept;
/// Alive or suspect: still a member (a suspect is probed and may refute).
[[nodiscard]] constexpr bool is_live(member_state s) noexcept {
  return s == member_state::alive || s == member_state::suspect;
}

struct member_entry {
  std::string node;
  std::string endpoint;
  member_state state = member_state::alive;
  std::uint64_t incarnation = 0;
  time_point since{}; ///< when this view last changed the entry's state
  friend bool operator==(const member_entry& a, const member_entry& b) {
    return a.node == b.node && a.endpoint == b.endpoint && a.state == b.state
           && a.incarnation == b.incarnation;
  }
};

/// One change of the view: the entry after it, and the state before (unknown: first seen).
/// An entry whose state is `unknown` was forgotten.
struct state_change {
  member_entry now;
  member_state previous = member_state::unknown;
};

/// True when `update` supersedes `current` for the same member (SWIM's precedence: a higher
/// incarnation wins; at the same incarnation alive < suspect < dead < left). An update of a
/// higher incarnation overrides even dead: only the member itself raises its incarnation, so a
/// higher one proves it is running again (a restarted node rejoining under the same name).
[[nodiscard]] bool supersedes(const member_entry& update, const member_entry& current) noexcept;

class swim_state {
public:
  swim_state(std::string self, std::string endpoint, swim_options opts, time_point now);

  [[nodiscard]] const member_entry& self() const { return members_.at(self_); }
  [[nodiscard]] const std::map<std::string, member_entry>& members() const { return members_; }
  [[nodiscard]] const member_entry* find(const std::string& node) const;
  /// Members alive or suspect, this node included.
  [[nodiscard]] std::size_t live_count() const { return live_; }
  /// Live members other than this node, in name order.
  [[nodiscard]] std::vector<std::string> live_others() const;
  /// Dead (not left) members, in name order.
  [[nodiscard]] std::vector<std::string> dead_members() const;
  [[nodiscard]] std::uint64_t version() const { return version_; }
  [[nodiscard]] bool left() const { return self().state == member_state::left; }

  /// Merges one update heard from gossip. An update about this node that says it is suspect,
  /// dead or left (at an incarnation not below its own) is refuted: the incarnation is raised
  /// above it and the new alive entry gossiped. Returns the change, if the view changed.
  std::optional<state_change> apply(const member_entry& update, time_point now);
  /// This node's probe of `node` failed: alive -> suspect at its current incarnation.
  std::optional<state_change> suspect(const std::string& node, time_point now);
  /// The suspicion of `node` at `incarnation` ran out: suspect -> dead (nothing if it refuted
  /// meanwhile).
  std::optional<state_change> confirm_dead(const std::string& node, std::uint64_t incarnation,
                                           time_point now);
  /// This node's endpoint became known (the transport bound an ephemeral port): the entry is
  /// re-issued at a higher incarnation so the new endpoint supersedes the old one everywhere.
  std::optional<state_change> set_endpoint(std::string endpoint, time_point now);
  /// A graceful leave: this node becomes LEFT (gossiped like any update).
  std::optional<state_change> leave(time_point now);
  /// Dead and left members older than the retention time are forgotten.
  std::vector<state_change> expire(time_point now);

  /// Suspicion timeout for the current cluster size: mult * log10(n + 1) * period, bounded.
  [[nodiscard]] duration suspicion_timeout() const;
  /// How many times one member piggy-backs an update: ceil(λ · log10(n + 1)), at least 1.
  [[nodiscard]] std::uint32_t retransmit_limit() const;

  /// Up to `max` updates to piggy-back on one message, least transmitted (then newest) first;
  /// each counts as one transmission and leaves the buffer at the retransmit limit.
  std::vector<member_entry> take_gossip(std::size_t max);
  [[nodiscard]] std::size_t gossip_pending() const { return queue_.size(); }
  /// How many times `node`'s pending update was sent so far (nullopt when none is pending).
  [[nodiscard]] std::optional<std::uint32_t> transmits(const std::string& node) const;

private:
  using queue_key = std::tuple<std::uint32_t, std::uint64_t, std::string>;
  /// Stores `e` (replacing any entry), keeps the live count, queues it for gossip.
  state_change set(member_entry e, time_point now);
  void enqueue(const member_entry& e);

  std::string self_;
  swim_options opts_;
  std::map<std::string, member_entry> members_;
  std::size_t live_ = 0;
  std::size_t gone_ = 0; ///< dead or left entries (expire has work only when nonzero)
  std::uint64_t version_ = 0;
  // The gossip buffer: (transmits, newest-first order, node) -> the entry to send.
  std::set<queue_key> queue_;
  std::map<std::string, queue_key> queued_;
  std::uint64_t order_ = ~std::uint64_t{0};
};

} // namespace af::cluster
