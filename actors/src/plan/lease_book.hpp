// Private: the execution leases af.exec holds or watches, without actors, so the safety rules can
// be unit-tested: a lease is held locally until the send time of its last granted request plus
// the ttl minus a margin (so it ends here before the Raft leader can give it to another node),
// renewals go in batches, late or out-of-order grants never extend a lease that already ran out,
// and leases of other nodes are asked about again only when they could have expired.
#pragma once

#include "af/services.hpp"

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace af::plan {

class lease_book {
public:
  /// All times are readings of this node's monotonic clock.
  struct timing {
    duration ttl{};
    duration margin{};
  };

  explicit lease_book(timing t) : t_(t) {}

  // --- leases of this node ---------------------------------------------------------------------

  /// A first LeaseAcquire for `id` is on its way (no-op when the lease is known already).
  void acquiring(const std::string& id);
  /// The LeaseAcquire (first or renewal) for `id` that was sent at `sent` was granted: the lease
  /// is held until sent + ttl - margin, or longer if an earlier grant said so (replies can come
  /// out of order). False, and nothing held, when `id` is not in the book (it ran out or was
  /// dropped meanwhile: a grant that comes back late never revives it) or when that deadline has
  /// passed at `now`.
  bool granted(const std::string& id, duration sent, duration now);
  /// A request for `id` came back without a grant (an error, a timeout): a pending first acquire
  /// is dropped; a held lease keeps its deadline and may be renewed again.
  void not_granted(const std::string& id);
  /// Forgets `id` (released, lost to another node, the execution ended).
  void drop(const std::string& id);

  /// Held at `now`: granted and before its deadline.
  [[nodiscard]] bool holds(const std::string& id, duration now) const;
  /// Known: held, or a first acquire in flight.
  [[nodiscard]] bool known(const std::string& id) const { return mine_.contains(id); }
  [[nodiscard]] std::optional<duration> deadline(const std::string& id) const;
  [[nodiscard]] std::size_t held_count() const;
  /// Every lease held (granted, whatever its deadline), in key order.
  [[nodiscard]] std::vector<std::string> held_ids() const;
  /// Whether a request for `id` (a first acquire or a renewal) is still on its way.
  [[nodiscard]] bool in_flight(const std::string& id) const;

  /// The renewals to send at `now`: held leases with no renewal in flight, the earliest deadline
  /// first, at most `max`; they are marked in flight.
  std::vector<std::string> renew_batch(duration now, std::size_t max);
  /// The leases whose deadline has come at `now`, removed from the book: their executors must
  /// stop now.
  std::vector<std::string> expire(duration now);
  /// The earliest deadline of a held lease (when to look again), if any.
  [[nodiscard]] std::optional<duration> next_deadline() const;

  // --- leases held by other nodes -------------------------------------------------------------

  /// `owner` holds `id` with `ttl_left` (in the leader's clock) when asked at `now`: asking again
  /// before it could have expired is pointless. An empty `owner` (a refusal that names no
  /// holder) keeps the holder seen before.
  void held_elsewhere(const std::string& id, const std::string& owner, duration ttl_left,
                      duration now);
  /// Whether to ask about `id` at `now` (never asked, or its holder's lease may have run out).
  [[nodiscard]] bool may_try(const std::string& id, duration now) const;
  /// The holder `id` was last seen with (empty: never seen held by another node).
  [[nodiscard]] std::string last_owner(const std::string& id) const;
  /// `node` left or died (membership): its executions are worth asking about at once (the lease
  /// still decides whether they can be taken).
  void owner_gone(const std::string& node, duration now);
  /// Forgets what is known of other nodes' leases not asked about since before `before`.
  void prune(duration before);

private:
  struct mine {
    std::optional<duration> deadline; ///< empty: the first acquire is still on its way
    bool renewing = false;
  };
  struct theirs {
    std::string owner;
    duration retry_at{};
    duration seen_at{};
  };
  timing t_;
  std::map<std::string, mine> mine_;
  std::map<std::string, theirs> theirs_;
};

} // namespace af::plan
