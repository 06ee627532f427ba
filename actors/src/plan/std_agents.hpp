// Private: the agent types add_std_agents registers, for std_agents.cpp and std_ledger.cpp.
#pragma once

#include "af/plan/agents.hpp"

#include <string>

namespace af::plan::detail {

/// std.ledger writing to `ledger_url` (detached: its handlers block on SQL). Errors: a URL that
/// is not sqlite:PATH, a path or postgresql://... (`validation`).
[[nodiscard]] expected<agent_type> ledger_agent_type(const std::string& ledger_url);

} // namespace af::plan::detail
