// Private: the agent types add_std_agents registers, for std_agents.cpp and std_ledger.cpp.
#pragma once

#include "af/plan/agents.hpp"
#include "plan/ledger_db.hpp"

#include <functional>
#include <memory>

#include <string>

namespace af::plan::detail {

/// std.ledger writing to `ledger_url` (detached: its handlers block on SQL). Errors: a URL that
/// is not sqlite:PATH, a path or postgresql://... (`validation`).
[[nodiscard]] expected<agent_type> ledger_agent_type(const std::string& ledger_url);

/// Opens the ledger std.ledger writes to (on start, and again after a transient failure).
using ledger_opener = std::function<expected<std::unique_ptr<ledger_db>>()>;

/// std.ledger over any ledger: the simulator's in-memory table, for one. Not detached.
[[nodiscard]] agent_type ledger_agent_type(ledger_opener open, std::string shown);

} // namespace af::plan::detail
