// Private: the supervisor actor and the CAF messages only supervisors and the runtime exchange.
// Public requests (tree, which/count children, child commands) arrive as envelopes, like any
// agent's; starting a child carries closures, so it is a local CAF message.
#pragma once

#include "af/agent.hpp"
#include "af/sup/spec.hpp"

#include <caf/actor_control_block.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <memory>
#include <optional>

namespace af::detail {
struct node_core;
} // namespace af::detail

namespace af::sup::detail {

using spec_ptr = std::shared_ptr<const child_spec>;

/// The outcome of a start_child request.
struct start_reply {
  std::optional<agent_ref> ref;
  std::optional<af::error> err;
};

using start_atom = caf::atom_constant<caf::atom("sup_start")>;
using adopt_atom = caf::atom_constant<caf::atom("sup_adopt")>;
using restart_atom = caf::atom_constant<caf::atom("sup_rst")>;
using kill_atom = caf::atom_constant<caf::atom("sup_kill")>;

/// The kind the registry records for supervisors (the node's agent count skips them).
inline constexpr std::string_view k_supervisor_kind = "af.supervisor";

/// The registered name of the supervisor an agent starts for the children it spawns.
[[nodiscard]] std::string children_supervisor_name(std::string_view agent_name);

/// Spawns a supervisor for `spec` registered under `spec->name` (names starting with "af." only
/// when `system`); it starts its children before it handles its first message.
[[nodiscard]] expected<agent_ref> spawn_supervisor(af::detail::node_core& core,
                                                   std::shared_ptr<const supervisor_spec> spec,
                                                   bool system);

} // namespace af::sup::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(af::sup::detail::spec_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(af::sup::detail::start_reply)
