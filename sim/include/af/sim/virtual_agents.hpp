// The simulator's virtual-agent section (`spec.virtual_agents`): placement agents on every node,
// a client load asking random ids of the event-sourced counter kind, and what the run counted
// (duplicate activations, exactly-once effect of the writes).
#pragma once

#include "af/services.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace af::sim {

/// A membership change the scripted membership agent announces on every node at `at`.
struct membership_declaration {
  duration at{};
  std::string node;
  std::string state; ///< alive | suspect | dead | left
};

struct virtual_agents_spec {
  /// Kinds of the counter type registered on every node ("" list: the section is off).
  std::vector<std::string> kinds;
  std::size_t ids = 20; ///< the client load picks ids 0 .. ids-1
  duration client_interval = std::chrono::milliseconds(50); ///< one add per client per interval
  duration client_timeout = std::chrono::seconds(2);
  std::vector<std::string> client_nodes; ///< one client on each (empty: every node)
  duration idle_timeout = std::chrono::seconds(10);
  /// Membership (until the SWIM agent runs in the simulator): every node's scripted membership
  /// agent declares a crashed node dead after a delay drawn per (observer, node) in
  /// [detect_min, detect_max], and alive again once it restarted; different delays are what
  /// make views disagree for a while.
  duration detect_min = std::chrono::milliseconds(500);
  duration detect_max = std::chrono::seconds(2);
  std::vector<membership_declaration> declarations;
};

/// What the run counted (report::virtual_agents).
struct virtual_agents_report {
  std::uint64_t activations = 0;
  /// An activation made while another node held one of the same name (same virtual time).
  std::uint64_t duplicate_activations = 0;
  std::uint64_t deactivations = 0;
  std::uint64_t forwards = 0;
  std::uint64_t fenced_appends = 0; ///< counter appends the journal refused (stale version)
  std::uint64_t adds_sent = 0, adds_acked = 0, adds_failed = 0;
  std::uint64_t events_in_journal = 0;
  std::uint64_t ops_written_twice = 0; ///< op ids found more than once in a stream (must be 0)
  std::uint64_t acked_ops_missing = 0; ///< acknowledged adds not in the journal (must be 0)
  std::uint64_t stale_replies = 0;     ///< replies whose value != version (state not reloaded)
};

} // namespace af::sim
