// Cluster singletons: an agent that runs on at most one node of the cluster at a time, on the node
// that holds its lease in the Raft metadata store (docs/consensus.md, "Cluster singletons").
// Every node runs af.cluster.singletons, the router of the virtual names `singleton/<id>`: an
// envelope for one goes to the node that runs it, whichever node it was sent to.
#pragma once

#include "af/agent.hpp"
#include "af/error.hpp"
#include "af/sup/spec.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace af::cluster {

inline constexpr std::string_view k_singletons_agent = "af.cluster.singletons";
/// The virtual kind of singletons: `singleton/<id>` names the singleton `<id>`.
inline constexpr std::string_view k_singleton_kind = "singleton";

/// How to make one singleton, on the node that takes its lease (a fresh object each time it
/// starts there: a singleton that keeps state should keep it in the journal).
struct singleton_spec {
  std::function<std::unique_ptr<agent>()> factory;
  bool detached = false; ///< a thread of its own (blocking calls)
};

struct singleton_options {
  /// The singletons this node can run: id -> how to make it. Ids are 1..200 bytes of printable
  /// ASCII; every node that may run a singleton registers it under the same id.
  std::map<std::string, singleton_spec> singletons;
  /// The lease owner this node writes (empty: the node's name).
  std::string owner;
  /// The lease of singleton `<id>` is `singleton/<id>` in the metadata store, granted for this
  /// long and renewed every `renew_every` (zero: (ttl - margin) / 3). A singleton stops here at
  /// (send time of its last granted renewal + ttl - margin), before the lease can expire at the
  /// Raft leader (zero margin: ttl / 5), so two nodes never run it at once while clocks advance
  /// at rates within margin / ttl of each other.
  duration lease_ttl = std::chrono::seconds(10);
  duration margin = duration::zero();
  duration renew_every = duration::zero();
  /// Timeout of the lease requests and of stopping a singleton.
  duration ask_timeout = std::chrono::seconds(2);
  /// The Raft agent that answers LeaseAcquire / LeaseRelease.
  std::string raft_agent = "af.cluster.raft";
};

/// Checks the options: `validation` naming what was wrong.
[[nodiscard]] status validate(const singleton_options& o);

/// af.cluster.singletons: a system child that takes, renews and releases the singletons' leases,
/// runs those it holds as its children (named `singleton/<id>`) and routes `singleton/<id>`
/// envelopes to the node that runs each.
[[nodiscard]] sup::child_spec singletons_child(singleton_options opts);

} // namespace af::cluster
