// Private: the simulator's side of cluster membership (scenario `cluster:`). Starts the SWIM
// agent on every simulated node with the node's join plan, watches every view change through
// the agent's observer hook, and turns that into the report's membership figures (convergence,
// detection times, false positives, load) and the membership invariants.
#pragma once

#include "af/cluster/membership.hpp"
#include "af/sim/scenario.hpp"
#include "af/sim/simulation.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace af::sim::detail {

class world;

class cluster_book final : public cluster::membership_observer,
                           public std::enable_shared_from_this<cluster_book> {
public:
  cluster_book(world& w, const scenario& sc);

  /// The membership child of node `name` for the incarnation starting now.
  [[nodiscard]] sup::child_spec service(const std::string& name);

  // --- from the world ------------------------------------------------------------------------
  void node_up(const std::string& name);
  void node_down(const std::string& name, bool crash);
  /// A partition began (true) or every partition ended (false).
  void partition_changed(bool active);
  [[nodiscard]] bool partitioned() const { return partitioned_; }
  /// The drain begins (before crashed nodes are restarted): crashed_members_dead is judged now.
  void drain_begins(duration now);

  // --- observer (called inside the membership agents) --------------------------------------------
  void view_reset(const std::string& self) override;
  void changed(const std::string& self, const v1::Member& member, int previous) override;
  void period(const std::string&) override { ++periods_; }
  void sent(const std::string&) override { ++messages_; }

  [[nodiscard]] membership_figures figures() const;
  [[nodiscard]] invariant_result members_agree(duration now) const;
  [[nodiscard]] invariant_result crashed_members_dead(duration now) const;

private:
  struct crash_record {
    std::size_t node = 0;
    duration at{};
    duration first_detect{-1};
    duration all_dead{-1};
    bool restarted = false;
  };
  [[nodiscard]] std::size_t index(const std::string& name) const;
  [[nodiscard]] bool good(std::size_t v) const;
  void set_state(std::size_t v, std::size_t m, std::uint8_t s);
  void refresh_good(std::size_t v, bool before);
  void check_converged();
  void check_joined(duration now);
  void deactivate(std::size_t v);

  world& world_;
  cluster_spec spec_;
  std::vector<std::string> names_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::vector<duration> join_at_;
  std::vector<std::vector<std::string>> seeds_;
  duration last_join_{};
  std::vector<std::size_t> last_joiners_; ///< the nodes whose join is the last one planned
  // views_[v][m]: viewer v's state of member m (af.v1.MemberState values; 0 = not in the view).
  std::vector<std::vector<std::uint8_t>> views_;
  std::vector<bool> up_, active_;
  std::vector<duration> up_since_;
  std::vector<std::uint32_t> live_up_, live_down_; ///< per viewer: live entries of up/down nodes
  std::vector<std::uint32_t> seen_live_by_;        ///< per member: active viewers that see it live
  std::size_t n_up_ = 0, n_active_ = 0, n_good_ = 0;
  bool converged_ = false;
  duration converged_since_{-1};
  duration join_converged_{-1};
  std::vector<crash_record> crashes_;
  std::vector<std::int64_t> open_crash_; ///< per node: its unfinished crash record, or -1
  duration last_partition_change_{-1};
  duration fp_window_{};
  bool partitioned_ = false;
  std::uint64_t periods_ = 0, messages_ = 0, false_dead_views_ = 0, false_suspect_views_ = 0;
  /// Distinct (member, incarnation) pairs falsely declared dead / suspected.
  std::set<std::pair<std::size_t, std::uint64_t>> false_dead_, false_suspect_;
  std::uint64_t state_changes_ = 0;
  std::optional<invariant_result> dead_at_drain_;
};

} // namespace af::sim::detail
