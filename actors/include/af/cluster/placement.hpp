// Virtual agents: an address `Kind/id` is owned by the live member that rendezvous hashing of the
// name picks; the placement agent (af.cluster.placement) of each node routes such names there and
// activates them on demand on the owner (docs/cluster.md, "Placement").
#pragma once

#include "af/agent.hpp"
#include "af/cluster/names.hpp"
#include "af/error.hpp"
#include "af/sup/spec.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace af::cluster {


/// Makes the agent of one virtual id, on the node that activates it. Called for every activation
/// (a fresh object each time: an event-sourced agent reloads its state in on_start).
using kind_factory =
    std::function<std::unique_ptr<agent>(const std::string& kind, const std::string& id)>;

struct placement_options {
  /// The virtual kinds this node can activate: `Kind` -> factory. Kind names are non-empty, hold
  /// no '/' and do not start with "af." (activations are ordinary agents named `Kind/id`).
  std::map<std::string, kind_factory> kinds;
  /// An activation that received nothing for this long is stopped (zero: never).
  duration idle_timeout = std::chrono::minutes(5);
  /// How often idle activations are looked for, and the membership subscription is checked.
  /// An activation this node does not own in its own view (made for a peer whose view
  /// disagreed) is stopped after 4 ticks without messages.
  duration tick = std::chrono::seconds(1);
  /// Activations at most on this node; an envelope that would make one more is refused with
  /// `quota` (a flood of ids must not exhaust the node).
  std::size_t max_activations = 100'000;
  /// Timeout of the placement agent's own asks (membership subscription, stopping an
  /// activation). Forwarded envelopes keep the asker's own timeout.
  duration ask_timeout = std::chrono::seconds(5);
  /// Members in state SUSPECT keep their ids (true) or lose them at once (false). Keeping them
  /// avoids moving activations on every suspicion that is refuted.
  bool suspects_keep_ownership = true;
  /// The membership agent to subscribe to; without one, this node is the whole view.
  std::string members_agent = std::string{k_members_agent};
  /// Observer for the simulator's duplicate-activation count: called on this node's placement
  /// agent right after it activated `name`. Null on real nodes.
  std::function<void(const std::string& node, const std::string& name)> on_activate;
};

/// The placement agent's child spec (a system child of af.sup.system; it claims the kinds with
/// context::route_kinds, so the node hands it every `Kind/id` name of those kinds).
[[nodiscard]] sup::child_spec placement_child(placement_options opts);

/// A virtual name split in its parts.
struct virtual_name {
  std::string kind;
  std::string id;
};

/// Checks and splits `Kind/id`: kind [A-Za-z0-9._-], 1..64 bytes, not "af."; id 1..200 bytes of
/// printable ASCII. `validation` naming what was wrong otherwise.
[[nodiscard]] expected<virtual_name> parse_virtual_name(std::string_view name);

/// The rendezvous score of `member` for `key`: the first 8 bytes (big-endian) of
/// SHA-256(member || 0x00 || key). The same on every node, build and platform.
[[nodiscard]] std::uint64_t placement_score(std::string_view member, std::string_view key);

/// The member with the highest score for `key` (ties: the smaller name); "" when `members` is
/// empty. Removing a member moves only the keys it owned.
[[nodiscard]] std::string owner_of(std::string_view key, const std::vector<std::string>& members);

} // namespace af::cluster
