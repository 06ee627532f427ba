// Private: the agent types add_std_agents registers, for std_agents.cpp and std_ledger.cpp.
#pragma once

#include "af/plan/agents.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace af::plan::detail {

/// std.ledger writing to `ledger_url` (detached: its handlers block on SQL). Errors: a URL that
/// is not sqlite:PATH, a path or postgresql://... (`validation`).
[[nodiscard]] expected<agent_type> ledger_agent_type(const std::string& ledger_url);

/// "250ms", "2s", "1.5s", "3m", "1h" or "0" as milliseconds (rounded); nullopt when malformed.
[[nodiscard]] std::optional<std::int64_t> parse_duration_ms(std::string_view text);

} // namespace af::plan::detail
