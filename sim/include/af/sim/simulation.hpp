// Running a scenario: one CAF actor system on one thread under CAF's test coordinator, a seeded
// choice of the next actor to run, virtual time that jumps to the next timer when nothing can
// run, several simulated nodes and the simulated network between them (docs/simulation.md).
#pragma once

#include "af/error.hpp"
#include "af/plan/agents.hpp"
#include "af/sim/kv_workload.hpp"
#include "af/sim/scenario.hpp"
#include "af/tool/registry.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace af::sim {

/// The outcome of one invariant.
struct invariant_result {
  std::string name;
  bool ok = true;
  std::string detail;   ///< what was found (counts; the first violation)
  duration at{};        ///< virtual time of the first violation (or of the check)
  bool checked = true;  ///< false when the run stopped (--until) before it could be checked
};

/// One crash of a cluster member and how long membership took to notice it, in protocol periods
/// after the crash (-1: never).
struct crash_detection {
  std::string node;
  duration at{};
  double first_detect_periods = -1; ///< until the first member suspected (or declared) it dead
  double all_dead_periods = -1;     ///< until every live member's view had it dead (or forgot it)
  bool restarted = false;           ///< the node came back before every view had it dead
};

/// Cluster membership figures (scenarios with `cluster:`).
struct membership_figures {
  std::uint64_t members = 0;
  double period_seconds = 0;
  /// From the last planned join until the last joiners were alive in every live member's view.
  double join_converge_periods = -1;
  bool converged_at_end = false;
  std::vector<crash_detection> crashes;
  /// Live members declared dead (or, less severe, suspected) while reachable from the member
  /// whose view changed (no partition within the suspicion window): distinct (member,
  /// incarnation) declarations, and the view changes they caused over all members.
  std::uint64_t false_dead = 0;
  std::uint64_t false_suspect = 0;
  std::uint64_t false_dead_views = 0;
  std::uint64_t false_suspect_views = 0;
  std::uint64_t member_periods = 0; ///< protocol periods run, summed over members
  std::uint64_t messages = 0;       ///< SWIM messages sent (pings, acks, ping-reqs, joins, ...)
  std::uint64_t state_changes = 0;  ///< view changes, summed over members
  [[nodiscard]] double messages_per_member_period() const;
  [[nodiscard]] double false_dead_rate() const; ///< false_dead / member_periods
  [[nodiscard]] nlohmann::json to_json() const;
};

/// Raft figures (scenarios with `raft:`).
struct raft_figures {
  std::uint64_t members = 0;
  std::uint64_t leaders_elected = 0; ///< terms won (became_leader), over the whole run
  std::uint64_t max_term = 0;
  std::uint64_t commit_index = 0;    ///< the highest index a leader committed
  std::uint64_t applied_entries = 0; ///< distinct log indices applied by some member
  std::uint64_t snapshots_installed = 0;
  std::uint64_t recoveries = 0;      ///< agent starts that recovered from the journal
  std::uint64_t leader_crashes = 0;
  /// Each crash of the leader -> the next leader elected, in virtual milliseconds.
  std::vector<double> elect_after_crash_ms;
  /// The writer load (raft.writes_per_second): puts sent to the local member, answered ok,
  /// answered with an error or not in time (no leader, leader changes, crashes).
  std::uint64_t writes_sent = 0, writes_acked = 0, writes_failed = 0;
  [[nodiscard]] nlohmann::json to_json() const;
};

/// Execution ownership figures (scenarios with `ownership:`), over every node and incarnation.
struct ownership_figures {
  std::uint64_t executor_starts = 0;   ///< executors that started running an execution
  std::uint64_t takeovers = 0;         ///< executions taken over from another node's lease
  std::uint64_t lease_expirations = 0; ///< executors stopped at their lease's local deadline
  std::uint64_t leases_lost = 0;       ///< renewals refused: another node held the lease
  std::uint64_t fenced = 0;            ///< executors stopped by a refused append
  std::uint64_t overlaps = 0;          ///< executor starts while another node ran the execution
  std::uint64_t max_owners = 0;        ///< most nodes running one execution at once
  [[nodiscard]] nlohmann::json to_json() const;
};

/// What a run prints (`af sim run`): the trace hash identifies the run's whole schedule.
struct report {
  std::string scenario;
  std::uint64_t seed = 0;
  std::string trace_hash;     ///< hex SHA-256 over (receiver, envelope hash, virtual time)
  duration virtual_time{};    ///< virtual time when the run ended
  bool stopped_early = false; ///< --until was reached
  std::uint64_t delivered = 0;   ///< envelopes handled by agents
  std::uint64_t network_sent = 0;  ///< envelopes that entered the simulated network
  std::uint64_t dropped = 0;     ///< lost on a link, to a partition or to a down node
  std::uint64_t duplicated = 0;  ///< extra copies the network delivered
  std::uint64_t crashes = 0;
  std::uint64_t restarts = 0;
  /// Children the nodes' supervisors restarted (af_supervisor_restarts_total, all nodes and
  /// incarnations): how much a crash storm made the trees work.
  std::uint64_t supervisor_restarts = 0;
  std::uint64_t agents = 0;      ///< agents spawned at the start (populations)
  double wall_seconds = 0;
  double deliveries_per_second = 0; ///< delivered / wall_seconds
  std::vector<invariant_result> invariants;
  std::vector<std::string> timeline; ///< faults as they happened: "12.500s crash n2"
  std::optional<membership_figures> membership; ///< scenarios with `cluster:`
  std::optional<raft_figures> raft;             ///< scenarios with `raft:`
  std::optional<ownership_figures> ownership;   ///< scenarios with `ownership:`
  std::optional<kv_figures> kv;                 ///< scenarios with `kv_clients:`
  /// Set when the scenario has a virtual_agents section.
  std::optional<virtual_agents_report> virtual_agents;

  [[nodiscard]] bool ok() const;
  /// The first failing invariant, or nullptr.
  [[nodiscard]] const invariant_result* first_failure() const;
  [[nodiscard]] nlohmann::json to_json() const;
  /// The human report `af sim run` prints.
  [[nodiscard]] std::string to_text() const;
};

/// Progress of a long run, for a terminal line (called every few thousand deliveries).
struct progress {
  duration virtual_time{};
  duration run_until{};
  std::uint64_t delivered = 0;
  double wall_seconds = 0;
};

struct run_options {
  std::uint64_t seed = 1;
  /// Stop at this virtual time (debugging): invariants that need the end are reported as
  /// not checked.
  std::optional<duration> until;
  /// Write every delivered envelope as one JSON line here.
  std::string trace_file;
  /// Agent types beyond the built-in ones (std.*, sim.*): plugins, a user's own binary.
  std::shared_ptr<const plan::agent_types> agents;
  std::shared_ptr<const tool::registry> tools;
  std::function<void(const progress&)> on_progress;
  /// Where node logs go ("" = discarded): JSON lines of every simulated node.
  std::string log_file;
  /// Write the kv clients' history here (JSON lines, docs/simulation.md); the scenario needs a
  /// kv_clients section.
  std::string history_file;
};

/// Runs `sc` with `opts.seed`. An error means the scenario could not run (an unknown agent type,
/// a plan that does not compile); a run whose invariant failed returns a report with !ok().
[[nodiscard]] expected<report> run(const scenario& sc, const run_options& opts);

/// The command line that replays a seed: `af sim run FILE --seed N`.
[[nodiscard]] std::string replay_command(const scenario& sc, std::uint64_t seed);

} // namespace af::sim
