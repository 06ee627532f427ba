// Private: the built-in simulation agents (sim.worker, sim.client, sim.submitter) and the
// oracle state the run keeps beside the simulated nodes: which tasks were issued and how each
// ended, which executions were started, the shared `ledger` table. The oracle is the test's
// notebook, not actor state: it survives node crashes by design.
#pragma once

#include "af/agent.hpp"
#include "af/plan/agents.hpp"
#include "af/sim/scenario.hpp"
#include "af/v1/plan.pb.h"
#include "plan/ledger_db.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace af::sim::detail {

/// What happened to the tasks sim.client agents issued.
struct task_book {
  struct task {
    std::int64_t value = 0;
    std::uint32_t answers = 0;
    std::uint32_t failures = 0;
    std::uint32_t attempts = 0;
    bool wrong = false;
  };
  std::unordered_map<std::string, task> tasks;
  /// Per client: tasks issued so far (a restarted client goes on from there).
  std::unordered_map<std::string, std::uint64_t> issued;
  std::uint64_t answered = 0, failed = 0, wrong = 0, twice = 0;
  std::string first_problem;
  duration first_problem_at{};

  void problem(duration at, std::string what);
};

/// The `ledger` table every simulated node's std.ledger writes to: an external database that
/// no node crash touches. Primary key: the step's idempotency key.
struct memory_ledger {
  std::map<std::string, plan::detail::ledger_row> rows;
  std::uint64_t duplicates = 0;
};

/// Executions the run started, per node, and the plan they run.
struct workflow_book {
  struct execution {
    std::string node;
    std::string plan_name;
    std::vector<std::string> ledger_steps; ///< dag steps and saga actions that call std.ledger
    bool saga = false;
    std::vector<std::string> ledger_compensations; ///< saga steps undone by a std.ledger call
  };
  std::map<std::string, execution> executions; ///< by execution id
};

struct sim_state {
  /// Population name -> the addresses of its agents, in index order.
  std::map<std::string, std::vector<address>> populations;
  task_book tasks;
  /// sim.client name -> its tasks still waiting for an answer.
  std::map<std::string, std::set<std::string>> client_outstanding;
  std::shared_ptr<memory_ledger> ledger = std::make_shared<memory_ledger>();
  workflow_book workflows;
  /// Virtual time since the start (for the books).
  std::function<duration()> elapsed;
};

/// The factory of one population's agents: sim.* types get the population's params and the
/// run's oracle; other types come from `types` (params ignored). `validation` error for an
/// unknown type or bad params, naming the population.
[[nodiscard]] expected<std::function<std::unique_ptr<agent>()>>
population_factory(const population_spec& p, sim_state& st, const plan::agent_types& types);

/// sim.submitter for one node: starts the executions of `plans` assigned to that node (ids
/// "wf-<node>-<n>"), again after a restart (starting an execution is idempotent by id).
struct submission {
  std::string execution_id;
  std::shared_ptr<const v1::PlanIR> plan;
  std::string inputs_json;
  duration at{};
};
[[nodiscard]] std::function<std::unique_ptr<agent>()>
submitter_factory(std::vector<submission> mine);

/// The std.ledger of the simulation: writes `ledger` (no SQL, no thread of its own).
[[nodiscard]] plan::agent_type memory_ledger_type(std::shared_ptr<memory_ledger> ledger);

/// Registers sim.worker and sim.client names (so `af sim` can list them) — their factories
/// need a population and are made by population_factory.
[[nodiscard]] bool is_sim_type(std::string_view type);

} // namespace af::sim::detail
