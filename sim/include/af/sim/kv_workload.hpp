// The simulator's key-value client workload (`spec.kv_clients`, docs/simulation.md): sequential
// clients that put, get and compare-and-set keys of the Raft metadata store (af.cluster.raft)
// through the members, while faults strike; their history is checked for linearizability
// (linearizability.hpp) and written by `af sim run --history`.
#pragma once

#include "af/services.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace af::sim {

struct kv_clients_spec {
  bool enabled = false;
  std::uint32_t clients = 5;
  std::uint32_t ops_per_client = 100;
  std::uint32_t keys = 3; ///< keys k0 .. k(keys-1)
  /// One attempt's timeout; an operation gets up to `attempts` attempts (the same session
  /// seq), each on another member, `backoff` apart; after the last it is recorded without a
  /// return (its outcome is unknown).
  duration timeout = std::chrono::seconds(1);
  std::uint32_t attempts = 3;
  duration backoff = std::chrono::milliseconds(50);
  /// A client's pause between two operations.
  duration think = std::chrono::milliseconds(20);
  /// Relative weights of the operations.
  double put = 0.4, get = 0.4, cas = 0.2;
  /// Nodes the clients run on, client i on nodes[i mod size] (empty: every node).
  std::vector<std::string> nodes;
  /// Test knob: gets read the contacted member's local replica (MetaGet.stale_ok), which is not
  /// linearizable, so the `linearizable` invariant must catch it.
  bool stale_reads = false;
};

/// What the workload did (report::kv).
struct kv_figures {
  std::uint32_t clients = 0;
  std::uint64_t ops = 0;      ///< operations issued
  std::uint64_t returned = 0; ///< with a known outcome
  std::uint64_t unknown = 0;  ///< without a return (every attempt failed, or a client crash)
  std::uint64_t puts = 0, gets = 0, cas = 0, cas_ok = 0;
  std::uint64_t attempts = 0; ///< asks sent (first tries and retries)
  std::uint64_t retried = 0;  ///< operations that needed more than one attempt
  std::uint64_t keys = 0;
  std::uint64_t check_states = 0; ///< configurations the linearizability search visited
};

} // namespace af::sim
