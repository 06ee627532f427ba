// Private: the node's actor scheduler when scheduler.policy is "stealing": CAF's work stealing
// with its hand-off from foreign threads fixed (see caf_scheduler.cpp).
#pragma once

namespace caf {
class actor_system;
class actor_system_config;
} // namespace caf

namespace af::detail {

/// Makes the actor system built from `cfg` use our work-stealing scheduler instead of CAF's own.
/// Reads the same settings (scheduler.max-threads, work-stealing.*).
void use_work_stealing_scheduler(caf::actor_system_config& cfg);

/// True when `sys` runs on that scheduler.
[[nodiscard]] bool uses_work_stealing_scheduler(caf::actor_system& sys);

} // namespace af::detail
