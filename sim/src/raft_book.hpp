// Private: the simulator's side of the Raft group (scenario `raft:`). Starts af.cluster.raft on
// every member node, watches every durable change through the agent's raft_observer hook, and
// checks Raft's safety properties as they happen (election safety, log matching, leader
// completeness, state-machine safety), plus the report's `raft` figures.
#pragma once

#include "af/cluster/raft.hpp"
#include "af/sim/scenario.hpp"
#include "af/sim/simulation.hpp"
#include "af/sup/spec.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace af::sim::detail {

class world;

/// What the writer load saw (shared with the writers, which outlive no run).
struct raft_write_counts {
  std::uint64_t sent = 0, acked = 0, failed = 0;
};

class raft_book final : public cluster::raft_observer,
                        public std::enable_shared_from_this<raft_book> {
public:
  raft_book(world& w, const scenario& sc);

  [[nodiscard]] bool member(const std::string& node) const;
  /// The Raft child of node `name` for the incarnation starting now.
  [[nodiscard]] sup::child_spec service(const std::string& name);
  /// The writer load on a member node (null when the scenario asks for none).
  [[nodiscard]] std::optional<sup::child_spec> writer(const std::string& name) const;

  // --- from the world ------------------------------------------------------------------------
  void node_up(const std::string& name);
  void node_down(const std::string& name, bool crash);

  // --- observer (called inside the Raft agents, after their writes are durable) ----------------
  void recovered(const std::string& self, std::uint64_t term, std::uint64_t snapshot_index,
                 std::uint64_t last_index) override;
  void became_leader(const std::string& self, std::uint64_t term) override;
  void appended(const std::string& self, std::uint64_t index, std::uint64_t term,
                const std::string& digest) override;
  void truncated(const std::string& self, std::uint64_t from_index) override;
  void snapshot_installed(const std::string& self, std::uint64_t index,
                          std::uint64_t term) override;
  void committed(const std::string& self, std::uint64_t term, std::uint64_t index) override;
  void applied(const std::string& self, std::uint64_t index, std::uint64_t term,
               const std::string& digest) override;

  [[nodiscard]] raft_figures figures() const;
  /// raft_election_safety, raft_log_matching, raft_leader_completeness,
  /// raft_state_machine_safety.
  [[nodiscard]] std::vector<invariant_result> invariants(duration now) const;

private:
  struct slot {
    std::uint64_t term = 0;
    std::string digest;
    friend bool operator==(const slot&, const slot&) = default;
  };
  struct node_view {
    std::map<std::uint64_t, slot> log; ///< its durable log as observed (beyond its snapshot)
    std::map<std::uint64_t, slot> before_crash; ///< the log when it last went down
    std::uint64_t snapshot_index = 0;
    std::uint64_t committed_seen = 0; ///< as leader: commit index last reported
    bool up = false;
  };
  struct violation {
    std::uint64_t count = 0;
    std::string first;
    duration at{};
  };
  void violate(violation& v, std::string what);
  [[nodiscard]] std::string slot_text(std::uint64_t index, const slot& s) const;

  world& world_;
  raft_spec spec_;
  std::map<std::string, node_view> nodes_;
  std::map<std::uint64_t, std::string> leader_of_term_;
  /// (index, term) -> the digest and the term of the entry before it (0: unknown/none).
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::pair<std::string, std::uint64_t>> seen_;
  std::map<std::uint64_t, slot> committed_; ///< every entry a leader reported committed
  std::map<std::uint64_t, slot> applied_;   ///< what was applied at each index (first seen)
  violation election_, matching_, completeness_, state_machine_;
  std::uint64_t leaders_ = 0, max_term_ = 0, max_commit_ = 0, snapshots_ = 0, leader_crashes_ = 0,
                recoveries_ = 0;
  std::string leader_; ///< the leader of the highest term seen
  duration leader_crashed_at_{-1};
  std::vector<double> elect_ms_;
  std::shared_ptr<raft_write_counts> writes_ = std::make_shared<raft_write_counts>();
};

} // namespace af::sim::detail
