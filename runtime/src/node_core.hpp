// Private: what every agent host shares with its node: services, registry, metrics, logger and
// limits. Owned by af::node, which outlives every actor it spawns.
#pragma once

#include "af/agent.hpp"
#include "af/envelope.hpp"
#include "af/log.hpp"
#include "af/metrics.hpp"
#include "af/services.hpp"
#include "registry.hpp"

#include <caf/actor_control_block.hpp>
#include <caf/fwd.hpp>

#include <functional>

#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace af {
class node;
}

namespace af::detail {

class agent_host;

/// How an agent is spawned: its tenant, whether it may use the reserved "af." prefix, and
/// (for a restart) what its `recover` hook is told.
struct spawn_options {
  std::string tenant;
  bool system = false;
  std::uint64_t restarts = 0;
  std::string last_exit;
  bool detached = false; ///< a thread of its own (blocking I/O agents)
};

/// Sees every envelope an agent of the node handles, and every reply an agent's ask gets: the
/// simulator's trace. Called on the agent's own thread, before the handler runs.
class delivery_observer {
public:
  virtual ~delivery_observer() = default;
  virtual void delivered(const address& receiver, const envelope& e) = 0;
};

/// The metric handles of one (tenant, kind): looked up once per node, not per spawn.
struct agent_metric_handles {
  counter_handle handled, rejected, failed, sent;
  histogram_handle ask_duration;
};

struct node_core {
  std::string node_name;
  std::string default_tenant = "default";
  services svc;
  logger log;
  af::metrics* metrics = nullptr;
  name_registry registry;
  duration ask_timeout = std::chrono::seconds(5);
  decode_options decode;
  caf::actor_system* sys = nullptr;
  af::node* owner = nullptr; ///< null for a node the simulator hosts
  /// The simulator's trace hook (null on a real node).
  delivery_observer* observer = nullptr;
  /// Every agent runs on the shared scheduler, even those that ask for a thread of their own
  /// (the simulator: one thread, deterministic; its stores never block).
  bool cooperative = false;
  /// Resolves an agent on another node (the simulator's network; null: remote addresses are
  /// not reachable from this node).
  std::function<expected<agent_ref>(const address&)> remote;

  /// An agent that receives envelopes for virtual names (`Kind/id` of the kinds it claimed: the
  /// placement agent, af.cluster.singletons). The set of routers is replaced as a whole so that
  /// lookups on other threads read a consistent value.
  struct virtual_routing {
    std::string router;          ///< its registered name
    caf::strong_actor_ptr actor; ///< the router's actor
    std::vector<std::string> kinds;
  };
  /// Claims the virtual kinds for `router` (see context::route_kinds); `conflict` when a live
  /// other router claims one of them.
  status set_virtual_router(virtual_routing r);
  /// Drops the claim when `actor` still holds it (the router stopped).
  void clear_virtual_router(const caf::actor_control_block* actor);
  /// The agent registered under `name` here, bypassing the virtual router.
  [[nodiscard]] expected<agent_ref> lookup_registered(std::string_view name) const;

private:
  mutable std::shared_mutex routing_mtx_;
  std::shared_ptr<const std::vector<virtual_routing>> routing_;
  std::mutex crash_log_mtx_;
  double crash_log_tokens_ = 50;
  duration crash_log_refill_{};
  std::uint64_t crash_log_suppressed_ = 0;
  std::shared_mutex handles_mtx_;
  std::unordered_map<std::string, std::unique_ptr<agent_metric_handles>> handles_;

public:
  /// Spawns an agent host for `a`, registered as `name` (unsupervised: callers hand it to a
  /// supervisor). Names starting with "af." are reserved for the node's own agents (`system`).
  expected<agent_ref> spawn(std::unique_ptr<agent> a, std::string name, spawn_options opts);

  /// Makes an agent with `factory`, spawns it, and hands it to `supervisor` (which restarts it
  /// from the factory per `opts.restart`). Synchronous for the caller: the name is bound on return.
  expected<agent_ref> spawn_supervised(std::function<std::unique_ptr<agent>()> factory,
                                       std::string name, agent_options opts,
                                       const caf::strong_actor_ptr& supervisor,
                                       bool system = false);

  /// A node-wide rate limit for per-crash log lines (agent_crashed): a crash storm must not
  /// turn into a logging storm (the supervisor's restart lines and metrics carry the same
  /// facts). Returns how many lines were left out since the last one written, or nullopt when
  /// this line must be left out.
  std::optional<std::uint64_t> crash_log_slot();

  /// The cached metric handles of (tenant, kind).
  const agent_metric_handles& handles(const std::string& tenant, const std::string& kind);
  /// The agent registered under `name`; for a virtual name (`Kind/id` of a kind the node's
  /// virtual router claimed) the router, with the address name kept.
  [[nodiscard]] expected<agent_ref> lookup(std::string_view name) const;
  /// An agent on this node (`where.node` empty or this node's name) or, through `remote`, on
  /// another.
  [[nodiscard]] expected<agent_ref> lookup(const address& where) const;

  /// A new envelope from `from` to `to`, continuing the trace of `cause` when there is one.
  envelope make_envelope(const address& from, const address& to,
                         std::shared_ptr<const google::protobuf::Message> payload,
                         const envelope* cause, std::uint64_t lamport, const std::string& tenant,
                         af::rng& r);
  /// The reply to `request`.
  envelope make_reply(const address& from, const envelope& request,
                      std::shared_ptr<const google::protobuf::Message> payload, af::rng& r);
};

} // namespace af::detail
