// Private: the simulator's side of execution ownership (scenario `ownership:`): the observer every
// node's af.exec reports executor starts and stops to, which keeps which node is running which
// execution and checks `exec_single_owner` at every change, and the figures of the report.
#pragma once

#include "af/plan/executor.hpp"
#include "af/sim/simulation.hpp"

#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace af::sim::detail {

class world;

class exec_owner_book final : public plan::exec_observer {
public:
  explicit exec_owner_book(world& w) : world_(w) {}

  // --- observer (called inside the executors' hooks) --------------------------------------------
  void running(const std::string& node, const std::string& execution_id) override;
  void stopped(const std::string& node, const std::string& execution_id) override;

  // --- from the world ------------------------------------------------------------------------
  /// `node` crashed: its executors died with it (their stop hooks run later, or not at all).
  void node_down(const std::string& node);

  /// No execution ever had executors running on two nodes at the same virtual time.
  [[nodiscard]] invariant_result single_owner(duration now) const;
  /// The report's figures: the book's counts and the nodes' af_exec_* metrics.
  [[nodiscard]] ownership_figures figures() const;

private:
  world& world_;
  std::map<std::string, std::set<std::string>, std::less<>> active_; ///< execution -> nodes
  std::uint64_t starts_ = 0, overlaps_ = 0, max_owners_ = 0;
  std::string first_;
  duration first_at_{};
};

} // namespace af::sim::detail
