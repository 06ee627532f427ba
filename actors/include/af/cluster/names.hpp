// The registered names of the cluster's system agents, the same on every node.
#pragma once

#include <string_view>

namespace af::cluster {

/// SWIM membership (af/cluster/membership.hpp).
inline constexpr std::string_view k_members_agent = "af.cluster.members";
/// The node's cluster transport (runtime; told PeerRoutes when membership learns endpoints).
inline constexpr std::string_view k_transport_agent = "af.cluster.transport";
/// The virtual-agent router (af/cluster/placement.hpp).
inline constexpr std::string_view k_placement_agent = "af.cluster.placement";
/// The Raft group member that keeps the cluster metadata (af/cluster/raft.hpp).
inline constexpr std::string_view k_raft_agent = "af.cluster.raft";

} // namespace af::cluster
