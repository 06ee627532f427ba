// Private: exit reasons in CAF terms and what a supervisor makes of them. An agent's crash, its
// `fail(error)`, a kill and a child supervisor's escalation are all abnormal; a normal exit and a
// requested shutdown are not (a transient child is restarted only after an abnormal one).
#pragma once

#include "af/error.hpp"

#include <caf/error.hpp>

#include <string>

namespace af::sup::detail {

/// The exit reason of an agent that called `ctx.fail(e)`: an af error category carrying `e`.
[[nodiscard]] caf::error fail_reason(const af::error& e);

/// The exit reason of an agent whose handler threw.
[[nodiscard]] caf::error crash_reason(const std::string& what);

/// The exit reason of a supervisor that gave up (restart intensity exceeded).
[[nodiscard]] caf::error escalated_reason(const std::string& what);

struct exit_info {
  bool abnormal = false;
  /// A bounded label for metrics: normal, shutdown, exception, fail, killed, escalated,
  /// start_failed, abnormal.
  std::string label;
  /// For logs and the tree: "exception: kaboom", "fail: transient: db down", ...
  std::string text;
};

[[nodiscard]] exit_info classify(const caf::error& reason);

/// True when `reason` is an escalation.
[[nodiscard]] bool is_escalation(const caf::error& reason);

} // namespace af::sup::detail
