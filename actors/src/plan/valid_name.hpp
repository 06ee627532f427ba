// Private: the one rule for names of agent types and tools ([A-Za-z0-9_.-]+), shared by
// af::plan::agent_types and af::tool::registry.
#pragma once

#include "af/error.hpp"

#include <string>
#include <string_view>

namespace af::plan::detail {

/// `what` names the registry in the message ("agent type", "tool").
[[nodiscard]] inline status check_name(std::string_view what, std::string_view name) {
  if (name.empty()) return validation_error(std::string{what} + " name: must not be empty");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                    || c == '_' || c == '.' || c == '-';
    if (!ok)
      return validation_error(std::string{what} + " name '" + std::string{name}
                              + "': only letters, digits, '_', '.' and '-' are allowed");
  }
  return {};
}

} // namespace af::plan::detail
