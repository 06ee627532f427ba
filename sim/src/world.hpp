// Private: the simulator's moving parts. One `world` per run: the CAF actor system under the test
// coordinator, the virtual clock, the simulated nodes, the network between them, the trace, and
// the faults the scenario schedules.
#pragma once

#include "af/plan/agents.hpp"
#include "af/sim/scenario.hpp"
#include "af/sim/simulation.hpp"
#include "af/store/backend.hpp"
#include "node_core.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <openssl/evp.h>

#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace af::sim::detail {

class world;
struct sim_state;
class cluster_book;
class raft_book;
class exec_owner_book;
struct kv_book;
struct virtual_book;

using fault_atom = caf::atom_constant<caf::atom("sim_fault")>;
using deliver_atom = caf::atom_constant<caf::atom("sim_dlv")>;

/// A node's view of virtual time: the test coordinator's clock since the start of the run, from
/// a fixed epoch, plus the node's skew (wall time only; intervals are never skewed).
class sim_clock final : public af::clock {
public:
  sim_clock(const caf::detail::test_actor_clock& caf_clock, time_point epoch)
      : caf_(caf_clock), t0_(caf_clock.current_time), epoch_(epoch) {}
  [[nodiscard]] time_point now() const override { return epoch_ + monotonic() + skew_; }
  [[nodiscard]] duration monotonic() const override {
    return std::chrono::duration_cast<duration>(caf_.current_time - t0_);
  }
  void set_skew(duration d) { skew_ = d; }
  [[nodiscard]] duration skew() const { return skew_; }

private:
  const caf::detail::test_actor_clock& caf_;
  caf::actor_clock::time_point t0_;
  time_point epoch_;
  duration skew_{};
};

/// The trace: SHA-256 over (receiver node, receiver name, envelope hash, virtual time) of every
/// envelope an agent is handed, in order; optionally one JSON line per delivery.
class tracer final : public af::detail::delivery_observer {
public:
  tracer(const sim_clock& clock, const std::string& file);
  ~tracer() override;
  tracer(const tracer&) = delete;
  tracer& operator=(const tracer&) = delete;
  void delivered(const address& receiver, const envelope& e) override;
  [[nodiscard]] std::string hex();
  [[nodiscard]] std::uint64_t count() const { return count_; }
  [[nodiscard]] bool file_ok() const { return !file_ || file_->good(); }

private:
  const sim_clock& clock_;
  EVP_MD_CTX* ctx_;
  std::uint64_t count_ = 0;
  std::string buf_;
  std::unique_ptr<std::ofstream> file_;
  std::string result_;
};

/// The simulated network: every envelope for an agent on another node goes through the one
/// network actor, which drops, duplicates and delays it per the link's model and the
/// partitions in force, and carries replies back the same way.
class network {
public:
  network(world& w, const network_spec& spec, std::uint64_t seed);

  /// An envelope (a tell, or an ask whose reply the network owes) sent to another node.
  void on_send(caf::event_based_actor* self, envelope e);
  void on_deliver(caf::event_based_actor* self, std::uint64_t id);

  /// Cuts every link between nodes of different groups (nodes in no group keep their links).
  void partition(const std::vector<std::vector<std::string>>& groups);
  void heal();
  [[nodiscard]] bool cut(const std::string& from, const std::string& to) const;

  std::uint64_t sent = 0, dropped = 0, duplicated = 0;

private:
  struct flight {
    envelope env;       ///< the tell or ask as sent (a reply travels back along its ends)
    std::uint64_t ask = 0; ///< nonzero: the ask whose promise the network holds
    bool reply = false; ///< carries `answer` (or `err`) back to the asker
    envelope answer;
    caf::error err;
  };
  /// An ask in the network: its promise, and how many copies of it (request, CAF request at
  /// the receiver, reply) are still somewhere; at zero without a reply, the asker times out.
  struct pending_ask {
    caf::response_promise rp;
    std::uint32_t live = 0;
  };
  const link_spec& link(const std::string& from, const std::string& to) const;
  duration latency(const link_spec& l);
  /// Sends `f` from -> to: dropped, or delivered once or twice after the link's latency.
  void launch(caf::event_based_actor* self, const std::string& from, const std::string& to,
              flight f);
  void arrive(caf::event_based_actor* self, flight f);
  void release(std::uint64_t ask);

  world& world_;
  network_spec spec_;
  std::map<std::pair<std::string, std::string>, link_spec> links_;
  std::set<std::pair<std::string, std::string>> cut_;
  af::rng rng_;
  std::uint64_t next_id_ = 0;
  std::uint64_t next_ask_ = 0;
  std::unordered_map<std::uint64_t, flight> in_flight_;
  std::unordered_map<std::uint64_t, pending_ask> asks_;
};

/// One simulated node: its services, store ("disk": survives crashes), supervision tree and
/// population; crash() kills every actor of the current incarnation, start() makes a new one
/// that recovers from the store.
class sim_node {
public:
  sim_node(world& w, std::string name);
  ~sim_node();

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] bool up() const { return up_; }
  [[nodiscard]] af::detail::node_core* core() const { return core_.get(); }
  [[nodiscard]] sim_clock& clock() { return *clock_; }
  [[nodiscard]] const std::shared_ptr<store::memory_backend>& disk() const { return disk_; }
  /// The names of the population agents placed on this node.
  [[nodiscard]] const std::vector<std::string>& population_names() const { return names_; }

  void add_population_child(sup::child_spec c);
  status start();
  void crash();
  /// Live actors of every past incarnation (must reach zero: a crash leaves nothing behind).
  [[nodiscard]] std::size_t zombies() const;
  [[nodiscard]] std::uint64_t incarnation() const { return incarnation_; }
  /// The node's metrics (kept across incarnations, as a scrape history would be).
  [[nodiscard]] const af::metrics& metrics() const { return *metrics_; }

private:
  world& world_;
  std::string name_;
  std::shared_ptr<sim_clock> clock_;
  std::unique_ptr<af::metrics> metrics_;
  std::shared_ptr<store::memory_backend> disk_;
  std::unique_ptr<af::detail::node_core> core_;
  std::vector<std::unique_ptr<af::detail::node_core>> past_;
  std::vector<sup::child_spec> population_;
  std::vector<std::string> names_;
  agent_ref root_;
  bool up_ = false;
  std::uint64_t incarnation_ = 0;
};

/// The engine of one run.
class world {
public:
  world(const scenario& sc, const run_options& opts);
  ~world();
  world(const world&) = delete;
  world& operator=(const world&) = delete;

  expected<report> run();

  // --- for the parts ---------------------------------------------------------------------
  [[nodiscard]] caf::actor_system& system() { return *sys_; }
  [[nodiscard]] caf::scheduler::test_coordinator& sched() { return *sched_; }
  [[nodiscard]] const caf::detail::test_actor_clock& caf_clock() const;
  [[nodiscard]] duration elapsed() const;
  [[nodiscard]] sim_node* find_node(std::string_view name);
  [[nodiscard]] tracer& trace() { return *trace_; }
  [[nodiscard]] network& net() { return *net_; }
  [[nodiscard]] const caf::actor& net_actor() const { return net_actor_; }
  [[nodiscard]] std::uint64_t draw_seed() { return seeds_.next_u64(); }
  [[nodiscard]] const scenario& scen() const { return sc_; }
  [[nodiscard]] const run_options& opts() const { return opts_; }
  [[nodiscard]] sim_state& state() { return *state_; }
  /// The node's system services (journal, audit writer, executions) over its disk.
  [[nodiscard]] std::vector<sup::child_spec> system_services(sim_node& n);
  [[nodiscard]] const std::shared_ptr<log_backend>& log_sink() const { return log_; }
  /// Cluster membership bookkeeping (scenario `cluster:`), or null.
  [[nodiscard]] cluster_book* cluster() const { return cluster_.get(); }
  /// The Raft group's bookkeeping (scenario `raft:`), or null.
  [[nodiscard]] raft_book* raft() const { return raft_.get(); }
  /// Execution ownership bookkeeping (scenario `ownership:`), or null.
  [[nodiscard]] exec_owner_book* exec_owners() const { return exec_owners_.get(); }
  /// The store every node's journal shares with `ownership:` (null: each node's own disk).
  [[nodiscard]] const std::shared_ptr<store::memory_backend>& shared_disk() const {
    return shared_disk_;
  }
  /// Applies scheduled fault `i` (called by the director actor at its virtual time).
  void apply_fault(std::size_t i);
  /// The root supervisor of `n`'s incarnation `inc` exited: unless the simulator crashed the
  /// node itself, the node gave up; it is restarted a second later.
  void on_root_exit(sim_node& n, std::uint64_t inc, const std::string& why);
  void note(std::string what);

private:
  status build();
  void schedule_faults();
  /// Schedules `f` at its virtual time (now, if that has passed).
  void add_fault(fault_spec f);
  /// Runs until virtual time `limit` or until nothing is left to do; false when --until hit.
  bool run_until(duration limit);
  void start_drain();
  std::vector<invariant_result> check_invariants(bool complete);

  scenario sc_;
  run_options opts_;
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  af::rng pick_;  ///< which runnable actor goes next
  af::rng seeds_; ///< seeds of everything else, drawn in a fixed order
  af::rng fault_rng_; ///< ids of the messages that deliver injected throws
  std::unique_ptr<sim_clock> clock_;
  std::unique_ptr<tracer> trace_;
  std::unique_ptr<network> net_;
  caf::actor net_actor_;
  caf::actor director_;
  std::vector<std::unique_ptr<sim_node>> nodes_;
  std::vector<fault_spec> faults_;
  std::unique_ptr<sim_state> state_;
  std::unique_ptr<virtual_book> virtual_; ///< spec.virtual_agents (virtual_agents.hpp), or null
  std::shared_ptr<const plan::agent_types> types_;
  std::shared_ptr<log_backend> log_;
  std::vector<std::string> timeline_;
  std::uint64_t crashes_ = 0, restarts_ = 0, agents_ = 0, gave_up_ = 0;
  std::shared_ptr<cluster_book> cluster_;
  std::shared_ptr<raft_book> raft_;
  std::shared_ptr<exec_owner_book> exec_owners_;
  std::shared_ptr<store::memory_backend> shared_disk_; ///< with `ownership:` (a shared database)
  std::unique_ptr<kv_book> kv_;                  ///< spec.kv_clients (kv_clients.hpp), or null
  std::optional<invariant_result> linearizable_; ///< the kv history's check, made at the end
  bool draining_ = false;
  std::size_t fault_generation_ = 0; ///< faults of an older generation are ignored (drain)
};

} // namespace af::sim::detail
