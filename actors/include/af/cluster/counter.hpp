// An event-sourced virtual agent kind: a counter whose state is the journal stream
// `agent/<Kind>/<id>`. Adds are appended with the journal's expected version, so when two
// activations of one id exist during churn only appends made from the latest state land.
#pragma once

#include "af/cluster/placement.hpp"

#include <chrono>
#include <string>

namespace af::cluster {

struct counter_options {
  /// The journal agent holding the streams. For the state to follow an id to a new owner, every
  /// node's journal must reach the same store (store.url on a shared database or file).
  std::string journal = "af.journal";
  duration journal_timeout = std::chrono::seconds(5);
  /// Appends retried after a conflict (the state is reloaded before each retry).
  int max_conflict_retries = 3;
};

/// The journal stream of virtual agent `kind/id`.
[[nodiscard]] std::string counter_stream(const std::string& kind, const std::string& id);

/// The factory to register under a kind in placement_options::kinds. The agent answers
/// v1.CounterAdd and v1.CounterGet with v1.CounterValue (proto/af/v1/placement.proto); an add
/// whose op_id was applied before is answered with `duplicate` and not written again.
[[nodiscard]] kind_factory counter_kind(counter_options opts = {});

} // namespace af::cluster
