// af::node: one AgentFlow node. Owns the CAF actor system, configuration, logger, metrics
// registry, name registry and the deterministic services; spawns agents and serves the control
// protocol (`af node status`) on its listen address.
#pragma once

#include "af/agent.hpp"
#include "af/config.hpp"
#include "af/error.hpp"
#include "af/log.hpp"
#include "af/metrics.hpp"
#include "af/services.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace af {

namespace v1 {
class NodeStatus;
class SupervisorTree;
} // namespace v1

namespace detail {
struct node_core;
} // namespace detail

/// The name the node's control agent is registered under.
inline constexpr std::string_view k_control_agent = "af.control";
/// The name of the node's cluster transport (when cluster.listen is set).
inline constexpr std::string_view k_cluster_transport = "af.cluster.transport";
/// The node's supervisors: the root, the system services (rest_for_one) and the agents (dynamic).
inline constexpr std::string_view k_root_supervisor = "af.sup.root";
inline constexpr std::string_view k_system_supervisor = "af.sup.system";
inline constexpr std::string_view k_agents_supervisor = "af.sup.agents";

class node {
public:
  struct options {
    af::config cfg = af::config::defaults();
    /// Services to use instead of the real ones (tests, the simulator).
    std::optional<af::services> svc;
    /// A log backend to use instead of the one the configuration describes.
    std::shared_ptr<log_backend> log;
    /// Services started under af.sup.system before the control agent, in this order (the
    /// journal, the audit writer): modules above the runtime plug in here. Their ids must start
    /// with "af." (they are system children).
    std::vector<sup::child_spec> system_services;
  };

  /// Starts a node: actor system, services, metrics (and the exposer when metrics.listen is
  /// set), the control agent, and the control endpoint when node.listen is set.
  [[nodiscard]] static expected<std::unique_ptr<node>> start(options opt);
  [[nodiscard]] static expected<std::unique_ptr<node>> start() { return start(options{}); }

  node(const node&) = delete;
  node& operator=(const node&) = delete;
  /// Shuts down (see shutdown()).
  ~node();

  [[nodiscard]] const std::string& name() const;
  [[nodiscard]] const af::config& cfg() const;
  [[nodiscard]] const af::services& svc() const;
  [[nodiscard]] const logger& log() const;
  [[nodiscard]] af::metrics& metrics();
  [[nodiscard]] duration uptime() const;

  // --- agents --------------------------------------------------------------------------------
  /// Spawns an agent of class `A` under the node's agents supervisor (af.sup.agents):
  /// transient by default, restarted from copies of `args` after a crash.
  template <class A, class... Ts>
  expected<agent_ref> spawn(std::string name, Ts&&... args) {
    return spawn_agent(sup::agent_factory<A>(std::forward<Ts>(args)...), std::move(name), {});
  }
  template <class A, class... Ts>
  expected<agent_ref> spawn_with(agent_options opts, std::string name, Ts&&... args) {
    return spawn_agent(sup::agent_factory<A>(std::forward<Ts>(args)...), std::move(name),
                       std::move(opts));
  }
  expected<agent_ref> spawn_agent(std::function<std::unique_ptr<agent>()> factory, std::string name,
                                  agent_options opts = {});
  /// Spawns an existing instance. It cannot be made again, so it is supervised as `temporary`
  /// (never restarted); prefer spawn<A> or a factory.
  expected<agent_ref> spawn_agent(std::unique_ptr<agent> a, std::string name,
                                  std::string tenant = {});
  /// Starts any child (an agent, a nested supervisor, a raw actor) under the agents supervisor.
  expected<agent_ref> start_child(sup::child_spec spec);
  [[nodiscard]] expected<agent_ref> lookup(std::string_view name) const;
  /// Live agents, not counting the node's own system agents (names starting with "af.") and
  /// supervisors.
  [[nodiscard]] std::size_t agent_count() const;
  /// Live CAF actors of the node (agents, supervisors, system actors): for leak checks.
  [[nodiscard]] std::size_t actor_count() const;
  /// Stops an agent (a normal exit) and waits until it is gone.
  status stop_agent(const agent_ref& ref);

  // --- messaging from outside any agent (CLI, tests, main): these block the calling thread ----
  template <class Msg>
  void tell(const agent_ref& to, Msg msg) {
    tell_erased(to, std::make_shared<const Msg>(std::move(msg)));
  }
  template <class Reply, class Msg>
  expected<Reply> ask(const agent_ref& to, Msg msg, duration timeout) {
    return detail::unpack_reply<Reply>(
        ask_erased(to, std::make_shared<const Msg>(std::move(msg)), timeout));
  }
  template <class Reply, class Msg>
  expected<Reply> ask(std::string_view name, Msg msg, duration timeout) {
    auto ref = lookup(name);
    if (!ref) return std::move(ref).error();
    return ask<Reply>(*ref, std::move(msg), timeout);
  }
  void tell_erased(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg);
  expected<envelope> ask_erased(const agent_ref& to,
                                std::shared_ptr<const google::protobuf::Message> msg,
                                duration timeout, std::string tenant = {});

  // --- endpoints and control -------------------------------------------------------------------
  /// Publishes the control agent on "host:port" (port 0: ephemeral); returns the bound port.
  expected<std::uint16_t> listen(const std::string& host_port);
  [[nodiscard]] std::uint16_t listen_port() const;
  /// The port the cluster transport listens on (cluster.listen), or 0 without one.
  [[nodiscard]] std::uint16_t cluster_port() const;
  /// Serves Prometheus metrics on "host:port"; returns the bound port.
  expected<std::uint16_t> serve_metrics(const std::string& host_port);
  /// Re-reads the feature flags from the configuration file (SIGHUP, or a control message).
  status reload_features();
  [[nodiscard]] v1::NodeStatus node_status() const;

  // --- supervision ---------------------------------------------------------------------------
  /// The live supervision tree from the root (af.sup.root); `max_children` per supervisor.
  [[nodiscard]] expected<v1::SupervisorTree> tree(std::uint32_t max_children = 0,
                                                  duration timeout = std::chrono::seconds(10));
  /// Set when the root supervisor gave up (restart intensity exceeded all the way up): the node
  /// then stops itself, and `af node start` exits non-zero.
  [[nodiscard]] std::optional<error> failure() const;
  /// Blocks until the node stops (root supervisor gone) or `timeout` passes; true if stopped.
  bool wait_stopped(duration timeout);

  /// Stops the supervision tree in order (agents, then system services; each child gets its
  /// shutdown timeout), closes the endpoints and waits for all actors. Idempotent.
  void shutdown();

  /// Internal: the runtime state shared with supervisors and agent hosts.
  [[nodiscard]] detail::node_core& core();

  struct impl;

private:
  explicit node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace af
