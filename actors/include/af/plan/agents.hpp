// The agent types a plan can name (`agent: NAME`): a registry from type name to factory, the
// built-in std.* agents, and the step protocol every plan agent speaks (af.v1.StepRequest in,
// af.v1.StepOutput or an error out; docs/planning.md, "Agents in plans").
#pragma once

#include "af/agent.hpp"
#include "af/error.hpp"

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace af::plan {

struct agent_type {
  std::function<std::unique_ptr<agent>()> factory;
  /// Instances af.exec spawns on first use, named NAME (one) or NAME#0..NAME#n-1 (several);
  /// steps are spread over them by a hash of the step's idempotency key.
  std::size_t instances = 1;
  /// Runs each instance on a thread of its own (agents whose handlers block, like std.ledger).
  bool detached = false;
  std::string description;
};

/// Name -> agent type. Names are non-empty and made of [A-Za-z0-9_.-]; adding a name twice is a
/// `conflict`. Not thread-safe: fill it before the node starts executions.
class agent_types {
public:
  status add(std::string name, agent_type t);
  template <class A, class... Ts>
  status add(std::string name, Ts&&... args) {
    agent_type t;
    t.factory = sup::agent_factory<A>(std::forward<Ts>(args)...);
    return add(std::move(name), std::move(t));
  }
  [[nodiscard]] const agent_type* find(std::string_view name) const;
  [[nodiscard]] std::vector<std::string> names() const;

private:
  std::map<std::string, agent_type, std::less<>> types_;
};

struct std_agent_options {
  /// Where std.ledger writes its `ledger` table: a store URL as `af db` takes it
  /// (sqlite:PATH or postgresql://...). Empty: std.ledger is not registered.
  std::string ledger_url;
};

/// Registers std.echo, std.sleep, std.fail, std.counter and (with a ledger URL) std.ledger.
status add_std_agents(agent_types& types, const std_agent_options& opts);

} // namespace af::plan
