// Raft consensus for cluster metadata: the options of the Raft agent every member node runs as
// the system child `af.cluster.raft`, the replicated key-value store it keeps (meta.proto:
// get / put / compare-and-set / leases), and the observer the simulator checks Raft's safety
// properties with (docs/consensus.md).
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

namespace af::cluster {

/// Sees what a Raft agent does (the simulator's invariants: election safety, log matching,
/// leader completeness, state-machine safety). Called inside the agent's handlers, after the
/// change is durable in the journal: keep it cheap, never block.
class raft_observer {
public:
  virtual ~raft_observer() = default;
  /// The agent on `self` started (fresh or after a crash) with this durable state: its log holds
  /// entries (snapshot_index, last_index]; entries up to snapshot_index are in its snapshot.
  virtual void recovered(const std::string& self, std::uint64_t term,
                         std::uint64_t snapshot_index, std::uint64_t last_index) = 0;
  /// `self` became leader of `term`.
  virtual void became_leader(const std::string& self, std::uint64_t term) = 0;
  /// `self` durably holds the entry (index, term) whose command has this digest (SHA-256 of its
  /// serialized bytes), replacing whatever it held at that index and above (a conflicting suffix
  /// is dropped first: truncated() is called before).
  virtual void appended(const std::string& self, std::uint64_t index, std::uint64_t term,
                        const std::string& digest) = 0;
  /// `self` dropped its log entries from `from_index` on (a conflict with the leader's log).
  virtual void truncated(const std::string& self, std::uint64_t from_index) = 0;
  /// `self` replaced its log up to `index` by a snapshot installed from the leader.
  virtual void snapshot_installed(const std::string& self, std::uint64_t index,
                                  std::uint64_t term) = 0;
  /// `self`, as leader of `term`, advanced its commit index to `index`.
  virtual void committed(const std::string& self, std::uint64_t term, std::uint64_t index) = 0;
  /// `self` applied the committed entry (index, term, digest) to its state machine.
  virtual void applied(const std::string& self, std::uint64_t index, std::uint64_t term,
                       const std::string& digest) = 0;
};

/// The knobs of one Raft group member. The defaults suit a LAN (or the simulator's 1-10 ms
/// links).
struct raft_options {
  /// The group's name: its journal streams are "raft/<group>/<node>/..." so members can share
  /// one store (PostgreSQL) without clashing.
  std::string group = "meta";
  /// The initial voters (node names, this node included) when no membership is in the journal
  /// yet. Later changes go through RaftAddMember / RaftRemoveMember and are replicated.
  std::vector<std::string> members;
  /// A follower that hears no leader for a random time in [min, max) becomes a candidate.
  duration election_timeout_min = std::chrono::milliseconds(150);
  duration election_timeout_max = std::chrono::milliseconds(300);
  /// How often a leader sends AppendEntries (empty ones are heartbeats).
  duration heartbeat = std::chrono::milliseconds(50);
  /// Entries sent in one AppendEntries at most, and AppendEntries in flight per follower at most
  /// (pipelining).
  std::uint32_t max_batch = 256;
  std::uint32_t max_inflight = 8;
  /// A snapshot is taken (and the log before it compacted) every this many applied entries.
  std::uint64_t snapshot_every = 10000;
  /// How long a forwarded client command or a read may wait (for a leader, a commit).
  duration request_timeout = std::chrono::seconds(5);
  /// A leader that hears from no majority for election_timeout_max steps down, and a follower
  /// that hears a leader ignores candidates (a partitioned or removed member cannot depose a
  /// healthy leader). Off only for tests that drive elections by hand.
  bool check_quorum = true;
  /// Test only (a planted bug the simulator must catch): grants every vote request of the
  /// current term, so two candidates can both win one term.
  bool unsafe_double_vote = false;
  /// Instrumentation (the simulator); null in production.
  std::shared_ptr<raft_observer> observer;
};

/// The Raft agent as a system child (`af.cluster.raft`, permanent), after the journal.
[[nodiscard]] sup::child_spec raft_child(raft_options opts);

/// Checks the options (timeouts positive, min < max, heartbeat < min, members non-empty, ...):
/// a validation error naming the option.
[[nodiscard]] status validate(const raft_options& opts);

} // namespace af::cluster
