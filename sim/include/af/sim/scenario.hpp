// A simulation scenario: simulated nodes, the network between them, agent populations, faults
// and the invariants to check (docs/simulation.md, "Writing a scenario"). Loaded from YAML
// (`apiVersion: agentflow/v1`, `kind: Scenario`); every field has a default so small scenarios
// stay small.
#pragma once

#include "af/cluster/membership.hpp"
#include "af/cluster/raft.hpp"
#include "af/error.hpp"
#include "af/plan/executor.hpp"
#include "af/services.hpp"
#include "af/sim/kv_workload.hpp"
#include "af/sim/virtual_agents.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace af::sim {

using namespace std::chrono_literals;

/// How long a message takes on a link, drawn per message from the seeded RNG. Random latency is
/// what reorders messages.
struct latency_spec {
  enum class kind { constant, uniform, exponential };
  kind dist = kind::uniform;
  duration min = 1ms;   ///< constant: the latency; uniform: lower bound; exponential: added floor
  duration max = 10ms;  ///< uniform: upper bound
  duration mean = 5ms;  ///< exponential: mean of the part above `min`
};

/// One direction of a link between two nodes.
struct link_spec {
  latency_spec latency;
  double loss = 0;      ///< probability a message is dropped
  double duplicate = 0; ///< probability a message is delivered twice (independent latencies)
};

/// A link whose behaviour differs from the network's default: `from -> to` (and `to -> from`
/// when `both`).
struct link_override {
  std::string from;
  std::string to;
  bool both = true;
  link_spec link;
};

struct network_spec {
  link_spec defaults;
  std::vector<link_override> links;
};

/// `count` agents of `type`, named NAME-0 .. NAME-(count-1), placed round-robin over `nodes`
/// (every node when empty). The type comes from the same registry as `af run` (std.*, sim.*,
/// plugins); `params` is handed to the sim.* agents (other types ignore it).
struct population_spec {
  std::string type;
  std::string name;
  std::size_t count = 1;
  std::vector<std::string> nodes;
  nlohmann::json params = nlohmann::json::object();
  std::string where; ///< file:line:col of the entry, for errors
};

/// A scheduled fault, at a virtual time since the start.
struct fault_spec {
  enum class kind {
    crash,     ///< the node's actors die, unsynced writes are lost; restarted after `down_for`
               ///< (zero: stays down until a `restart` fault)
    restart,   ///< a crashed node starts again and recovers from its store
    partition, ///< messages between `groups` are dropped until a `heal` (or `heal_after`)
    heal,      ///< every partition ends
    skew,      ///< the node's clock runs `skew` ahead (negative: behind) of virtual time
    throw_in,  ///< the agent `agent` on `node` throws in its next handler
  };
  kind what = kind::crash;
  duration at{};
  std::string node;
  duration down_for{};
  std::vector<std::vector<std::string>> groups;
  duration heal_after{};
  duration skew{};
  std::string agent;
  std::string where;
};

/// Faults drawn from the seed: each rate is the expected count per virtual minute (a Poisson
/// process); zero turns that fault off.
struct random_faults_spec {
  double crash_per_minute = 0;
  duration down_for = 5s;
  double partition_per_minute = 0;
  duration partition_for = 5s;
  double throw_per_minute = 0;
};

/// Durable workflows to run (scenario 3): `count` executions of `plan`, spread round-robin over
/// the nodes, started `interval` apart.
struct workflow_spec {
  std::string plan; ///< path of a plan YAML (relative to the scenario file)
  std::size_t count = 0;
  duration interval = 100ms;
  nlohmann::json inputs = nlohmann::json::object();
  std::string where;
};

// --- cluster membership (SWIM) ---------------------------------------------------------------

/// Nodes that join the cluster at `at` (the i-th of them at at + i * every) through `seeds`.
struct cluster_join_spec {
  duration at{};
  duration every{};
  std::vector<std::string> nodes; ///< filled from `nodes: all` with the nodes no entry names
  std::vector<std::string> seeds; ///< empty: the node starts the cluster (or waits to be joined)
  std::string where;
};

/// `cluster:`: the membership agent (af.cluster.members) on every node, with these options and
/// this join plan. Nodes no join entry names join at 0 through the first node.
struct cluster_spec {
  bool enabled = false;
  /// `profile: membership`: nodes run only the membership agent as a system service (no
  /// journal, audit or executions), so 1,000-member scenarios stay cheap.
  bool membership_only = false;
  cluster::swim_options swim;
  std::vector<cluster_join_spec> joins;
};

// --- Raft (the metadata group) -------------------------------------------------------------------

/// `raft:`: the Raft agent (af.cluster.raft) on the member nodes (their journals keep its log),
/// watched by the Raft invariants on every run (election safety, log matching, leader
/// completeness, state-machine safety), and an optional writer load on each member.
struct raft_spec {
  bool enabled = false;
  cluster::raft_options options; ///< options.members: the initial voters (declared nodes)
  /// Puts per second a `sim.raft_writer` on each member sends to its local af.cluster.raft
  /// (0: no load), over `keys` distinct keys.
  double writes_per_second = 0;
  std::uint32_t keys = 16;
};

// --- execution ownership (takeover of a dead node's work) -------------------------------------

/// `ownership:`: every node's journal is one shared store (as one PostgreSQL database would be)
/// and each node's af.exec runs an execution only under its lease in the Raft metadata store
/// (needs `raft:` with every node a member), taking over the executions whose owner's lease
/// expired. Enables the `exec_single_owner` invariant.
struct ownership_spec {
  bool enabled = false;
  plan::exec_ownership options; ///< options.enabled is set; options.owner stays empty (node name)
};

struct scenario {
  std::string name;
  std::string file;             ///< where it was loaded from ("" when built in code)
  duration run_for = 60s;       ///< virtual duration of the workload and faults
  duration drain = 30s;         ///< after run_for: no new faults, nodes restarted, work finishes
  std::vector<std::string> nodes{"n1"};
  network_spec network;
  std::vector<population_spec> populations;
  std::vector<fault_spec> faults;
  random_faults_spec random_faults;
  std::vector<workflow_spec> workflows;
  cluster_spec cluster;
  raft_spec raft;
  ownership_spec ownership;
  /// Key-value clients of the Raft group (kv_workload.hpp); needs `raft`.
  kv_clients_spec kv_clients;
  /// Names of the checks to run at the end (see invariants.hpp): tasks_answered_once,
  /// tree_recovers, no_actor_leak, executions_complete, ledger_exactly_once, members_agree,
  /// crashed_members_dead, virtual_exactly_once, linearizable (added by kv_clients).
  std::vector<std::string> invariants;
  /// Virtual agents placed across the nodes (virtual_agents.hpp); off when it lists no kinds.
  virtual_agents_spec virtual_agents;
};

/// Reads and validates a scenario file. Errors name file:line:column and what was expected;
/// unknown keys are errors.
[[nodiscard]] expected<scenario> load_scenario(const std::string& path);
/// The same from text; `file` labels errors and resolves relative plan paths.
[[nodiscard]] expected<scenario> parse_scenario(std::string_view yaml, const std::string& file);

/// "250ms", "2s", "1m", "1h", "1500us", "10ns" (an integer or decimal and a unit).
[[nodiscard]] expected<duration> parse_duration(std::string_view text);

} // namespace af::sim
