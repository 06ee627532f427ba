// Private: the simulator's virtual-agent section (af/sim/virtual_agents.hpp): the services it
// adds to every node (placement, a scripted membership agent, the cluster's shared journal), the
// client load, and the book the run keeps to count duplicate activations and check that every
// acknowledged write landed exactly once.
#pragma once

#include "af/agent.hpp"
#include "af/sim/simulation.hpp"
#include "af/store/backend.hpp"
#include "af/sup/spec.hpp"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace af::sim::detail {

class world;
class sim_node;

/// The name of the journal every node's counters write to: one database the whole simulated
/// cluster shares (as PostgreSQL or one SQLite file would be), untouched by node crashes.
inline constexpr std::string_view k_cluster_journal = "sim.cluster_journal";

/// The run's notebook for virtual agents (the oracle: it survives node crashes by design).
struct virtual_book {
  std::shared_ptr<store::memory_backend> cluster_disk;
  std::uint64_t next_op = 0;
  std::map<std::string, std::string> acked; ///< op id -> virtual name, of acknowledged adds
  virtual_agents_report counts;
};

/// The children that make `n` a placement node: the shared journal, the scripted membership
/// agent and af.cluster.placement (appended to af.sup.system, in that order).
[[nodiscard]] std::vector<sup::child_spec> virtual_agent_services(world& w, sim_node& n,
                                                                  virtual_book& book);

/// The client load of one node (a population child named "sim.virtual_client").
[[nodiscard]] std::function<std::unique_ptr<agent>()> virtual_client_factory(world& w,
                                                                             virtual_book& book);

/// Fills the report's counts (metrics of every node, the shared journal against the book).
void finish_virtual_report(world& w, virtual_book& book);

/// The `virtual_exactly_once` invariant over a finished book.
[[nodiscard]] invariant_result virtual_exactly_once(const virtual_book& book, duration now);

} // namespace af::sim::detail
