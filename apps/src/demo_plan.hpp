// The agent type and tools of the workflow demo (examples/plans/primes.yaml), registered by every
// node `af` starts.
#pragma once

#include "af/error.hpp"
#include "af/plan/agents.hpp"
#include "af/tool/registry.hpp"

namespace af::demo {

/// Registers demo.primes (1,000 instances), demo.split and demo.sum.
status add_demo_plan_agents(plan::agent_types& agents, tool::registry& tools);

} // namespace af::demo
