// Replaying an execution's recorded events through the engine: recovery after a crash rebuilds
// the state this way, and `af exec replay` uses it to check that the planner (or a changed plan)
// makes the same decisions for the recorded history.
#pragma once

#include "plan/engine.hpp"

#include <memory>
#include <string>
#include <vector>

namespace af::plan {

struct replay_result {
  std::unique_ptr<engine> eng;  ///< the state after the last recorded event
  bool compatible = true;
  std::string divergence;       ///< the first divergence, when not compatible
  std::size_t events_checked = 0;
  std::string recorded_hash;    ///< SHA-256 over the recorded events (hex)
  std::string replay_hash;      ///< over the events the replay saw and decided (hex)
  /// Decisions the replay made after the recorded history ended (an unfinished execution):
  /// recovery appends them before acting on them.
  std::vector<v1::ExecEvent> pending;
};

/// Replays `recorded` (it starts with ExecutionStarted). With `plan`, the execution's plan is
/// replaced by it first (the compatibility check of a plan change). Decisions are compared with
/// the recorded ones byte for byte; a recorded input is fed to the engine as it was.
[[nodiscard]] expected<replay_result> replay(const std::vector<v1::ExecEvent>& recorded,
                                             const v1::PlanIR* plan = nullptr);

} // namespace af::plan
