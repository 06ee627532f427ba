// SWIM gossip membership: the options of the membership agent every node runs as the system
// child `af.cluster.members`, and the child spec that starts it (docs/cluster.md, "Membership").
#pragma once

#include "af/cluster/names.hpp"
#include "af/services.hpp"
#include "af/sup/spec.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace af::v1 {
class Member;
} // namespace af::v1

namespace af::cluster {


/// Sees every change of a membership agent's view (the simulator measures convergence and
/// detection times with it). Called inside the agent's handlers: keep it cheap, never block.
class membership_observer {
public:
  virtual ~membership_observer() = default;
  /// The agent on `self` started with a view holding only itself.
  virtual void view_reset(const std::string& self) = 0;
  /// `self`'s view of `member.node()` changed from `previous` (MEMBER_UNKNOWN: first seen;
  /// MEMBER_UNKNOWN as member.state(): forgotten after the retention time).
  virtual void changed(const std::string& self, const v1::Member& member, int previous) = 0;
  /// One protocol period began on `self`.
  virtual void period(const std::string& self) = 0;
  /// `self` sent one SWIM message (a ping, ack, ping-req, join, gossip).
  virtual void sent(const std::string& self) = 0;
};

/// SWIM's knobs. The defaults suit a LAN (or the simulator's default 1-10 ms links).
struct swim_options {
  /// One probe per period; detection and dissemination times are counted in periods.
  duration period = std::chrono::seconds(1);
  /// How long the direct ping may take before indirect probes start. Must be < period.
  duration ping_timeout = std::chrono::milliseconds(300);
  /// Members asked to ping the target indirectly when the direct ping timed out.
  std::uint32_t indirect_probes = 3;
  /// Suspicion timeout = suspicion_mult * log10(n + 1) * period, bounded below by
  /// suspicion_min and above by suspicion_max (n: members alive or suspect).
  double suspicion_mult = 4.0;
  duration suspicion_min = std::chrono::seconds(2);
  duration suspicion_max = std::chrono::seconds(60);
  /// λ: each update is piggy-backed at most ceil(λ · log10(n + 1)) times by each member.
  double retransmit_mult = 4.0;
  /// Members told pending updates each period in a message of their own (besides the updates
  /// piggy-backed on pings and acks); sent only while there is something to tell.
  std::uint32_t gossip_fanout = 1;
  /// Updates carried by one message at most (keeps every message bounded).
  std::uint32_t max_piggyback = 20;
  /// Where to join: node names (simulator) or "@host:port" (real nodes: the transport resolves
  /// them). Empty: this node starts a cluster of its own and waits to be joined.
  std::vector<std::string> seeds;
  /// This node's transport endpoint ("host:port"), gossiped so others can connect to it.
  std::string advertise;
  /// Waits this long after start before joining (the simulator's join plan).
  duration join_delay{};
  /// Join attempts through the seeds (one seed per attempt, in turn) back off from
  /// join_backoff_min, doubling up to join_backoff_max, with jitter, until a seed answers.
  duration join_backoff_min = std::chrono::milliseconds(500);
  duration join_backoff_max = std::chrono::seconds(10);
  /// How long a join attempt waits for the seed's answer.
  duration join_timeout = std::chrono::seconds(2);
  /// Every this many periods, one member believed dead (or a seed not in the view) is pinged: a
  /// healed partition merges again without an operator.
  std::uint32_t reconnect_every = 5;
  /// Every this many periods, the whole view is exchanged with one random member (push-pull
  /// anti-entropy): piggy-backed gossip is probabilistic, and this bounds how long a member can
  /// stay unaware of another. 0 turns it off.
  std::uint32_t sync_every = 20;
  /// Dead and left members are forgotten after this time.
  duration dead_retention = std::chrono::seconds(120);
  /// Members told directly of a graceful leave (then gossip carries it).
  std::uint32_t leave_fanout = 3;
  /// Instrumentation (the simulator); null in production.
  std::shared_ptr<membership_observer> observer;
};

/// The membership agent as a system child (`af.cluster.members`, permanent): add it to the
/// node's system services.
[[nodiscard]] sup::child_spec membership_child(swim_options opts);

/// Checks the options (timeouts positive, ping_timeout < period, ...): a validation error
/// naming the option.
[[nodiscard]] status validate(const swim_options& opts);

} // namespace af::cluster
