// Durable execution: the node's executions agent (af.exec) and the executor it runs per
// execution. Every decision and every step result is appended to the execution's journal stream
// ("exec/<id>") before it takes effect; on start, af.exec resumes every unfinished execution by
// replaying its stream (docs/planning.md, "Durable execution").
#pragma once

#include "af/plan/agents.hpp"
#include "af/sup/spec.hpp"
#include "af/tool/registry.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace af::plan {

/// The name af.exec is registered under.
inline constexpr std::string_view k_exec_agent = "af.exec";

/// The journal stream of an execution.
[[nodiscard]] std::string stream_of(std::string_view execution_id);

struct exec_options {
  std::shared_ptr<const agent_types> agents = std::make_shared<agent_types>();
  std::shared_ptr<const tool::registry> tools = std::make_shared<tool::registry>();
  /// Resume every unfinished execution in the store when af.exec starts.
  bool resume = true;
  /// How long a step may run when its plan sets no timeout.
  duration step_timeout = std::chrono::hours(1);
  /// How long an executor waits for the journal before it gives up (and restarts).
  duration journal_timeout = std::chrono::seconds(60);
  /// Audit every step outcome (interventions and execution ends are always audited).
  bool audit_steps = true;
};

/// The child spec to pass in node::options::system_services, after the journal and the audit
/// writer (it needs both).
[[nodiscard]] sup::child_spec exec_child(exec_options opts);

} // namespace af::plan
