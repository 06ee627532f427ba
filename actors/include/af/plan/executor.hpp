// Durable execution: the node's executions agent (af.exec) and the executor it runs per
// execution. Every decision and every step result is appended to the execution's journal stream
// ("exec/<id>") before it takes effect; on start, af.exec resumes every unfinished execution by
// replaying its stream (docs/planning.md, "Durable execution").
#pragma once

#include "af/error.hpp"
#include "af/plan/agents.hpp"
#include "af/sup/spec.hpp"
#include "af/tool/registry.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace af::plan {

/// The name af.exec is registered under.
inline constexpr std::string_view k_exec_agent = "af.exec";

/// The journal stream of an execution.
[[nodiscard]] std::string stream_of(std::string_view execution_id);

/// The owner lease of an execution in the cluster metadata store ("exec/<id>", af.cluster.raft).
[[nodiscard]] std::string lease_of(std::string_view execution_id);

/// Sees which node's executor is running which execution (the simulator's `exec_single_owner`
/// check). Called inside the executor's hooks: keep it cheap, never block.
class exec_observer {
public:
  virtual ~exec_observer() = default;
  /// The executor of `execution_id` on `node` started: it will append to the execution's stream
  /// and act on it (with ownership on, only after af.exec took the execution's lease).
  virtual void running(const std::string& node, const std::string& execution_id) = 0;
  /// That executor stopped (the execution ended, its lease ran out, its append was fenced, it
  /// crashed, or the node stops).
  virtual void stopped(const std::string& node, const std::string& execution_id) = 0;
};

/// Test-only faults for the simulator to prove that `exec_single_owner` catches them. Never set
/// them outside tests.
enum class exec_planted_bug {
  none,
  skip_lease_check, ///< runs executions whatever LeaseAcquire answered
  ignore_deadline,  ///< keeps running executions whose lease could not be renewed in time
};

/// Execution ownership in a cluster whose nodes share one store (docs/consensus.md, "Takeover
/// of a dead node's work"): af.exec runs an execution only while it holds the execution's lease
/// in af.cluster.raft; it renews its leases in batches, stops an executor whose lease it could
/// not renew before the lease can expire in the Raft leader's clock, and takes over unfinished
/// executions whose lease expired (their owner died or lost the majority).
struct exec_ownership {
  bool enabled = false;
  /// The lease owner: this node's name (empty: the node's name, as af.exec sees it).
  std::string owner;
  /// Lease time to live, counted by the Raft leader from when it applies a grant.
  duration lease_ttl = std::chrono::seconds(10);
  /// How often the held leases are renewed (one batch of LeaseAcquire per tick).
  duration renew_every = std::chrono::seconds(3);
  /// Safety margin for clock drift and pauses: a lease is held locally until (send time of the
  /// last granted acquire or renewal) + lease_ttl - margin, in this node's monotonic clock.
  duration margin = std::chrono::seconds(2);
  /// How often unfinished executions that no node of the cluster seems to run are looked for.
  duration scan_every = std::chrono::seconds(2);
  /// Lease requests (LeaseGet or LeaseAcquire) one scan sends at most.
  std::uint32_t scan_max = 64;
  /// Leases renewed in one batch at most (the earliest deadlines first).
  std::uint32_t renew_max = 1024;
  /// How long a request to af.cluster.raft may take.
  duration ask_timeout = std::chrono::seconds(2);
  /// Test only (see exec_planted_bug).
  exec_planted_bug planted_bug = exec_planted_bug::none;
};

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
  /// Leases and takeover in a cluster sharing one store (off: every unfinished execution in the
  /// store is this node's).
  exec_ownership ownership;
  /// Instrumentation (the simulator); null in production.
  std::shared_ptr<exec_observer> observer;
};

/// Checks the ownership options (positive durations, margin and renewal well inside the ttl): a
/// validation error naming the option.
[[nodiscard]] status validate(const exec_ownership& o);

/// The child spec to pass in node::options::system_services, after the journal and the audit
/// writer (it needs both).
[[nodiscard]] sup::child_spec exec_child(exec_options opts);

} // namespace af::plan
