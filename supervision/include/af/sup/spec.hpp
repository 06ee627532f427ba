// What a supervision tree is made of: child specs (id, how to start, restart policy, shutdown
// timeout) and supervisor specs (strategy, restart intensity, backoff). See docs/supervision.md.
#pragma once

#include "af/error.hpp"
#include "af/services.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace caf {
class actor;
class actor_system;
} // namespace caf

namespace af {
class agent;
} // namespace af

namespace af::sup {

/// When a child that exited is started again (OTP's restart types).
enum class restart_policy : std::uint8_t {
  permanent, ///< always
  transient, ///< only after an abnormal exit (a crash, `fail()`, a kill, an escalation)
  temporary, ///< never; the child is forgotten when it exits
};

/// Which children restart when one fails.
enum class strategy : std::uint8_t {
  one_for_one,  ///< only the failed child
  one_for_all,  ///< all children: the others stop (reverse start order), then all start again
  rest_for_one, ///< the failed child and the children started after it
  dynamic,      ///< children started on demand (OTP's simple_one_for_one): one_for_one restarts,
                ///< children stop concurrently, and a restarted supervisor starts with none
};

[[nodiscard]] std::string_view to_string(restart_policy p) noexcept;
[[nodiscard]] std::string_view to_string(strategy s) noexcept;
[[nodiscard]] expected<restart_policy> parse_restart_policy(std::string_view name);
[[nodiscard]] expected<strategy> parse_strategy(std::string_view name);

/// A shutdown timeout that never expires (the default for child supervisors, which need the
/// time to stop their own children).
inline constexpr duration infinity = duration::max();

/// Restart intensity: more than `max_restarts` restarts within `period` and the supervisor gives
/// up: it stops all its children and exits with an `escalated` reason. OTP's defaults.
struct intensity {
  std::uint32_t max_restarts = 3;
  duration period = std::chrono::seconds(5);
};

/// Delay before restarting one child: the first restart is immediate; the n-th consecutive one
/// waits a uniformly random time in [0, min(cap, base * 2^(n-2))] ("full jitter", from the
/// node's RNG). A child that stays up for `reset_after` starts counting again from zero.
struct backoff {
  duration base = std::chrono::milliseconds(10);
  duration cap = std::chrono::seconds(5);
  duration reset_after = std::chrono::seconds(5);

  /// The delay before the `consecutive`-th restart (1 = first), drawn from `r`.
  [[nodiscard]] duration delay(std::uint32_t consecutive, af::rng& r) const;
};

/// How a supervisor reacts to failures; also what an agent declares for its own children.
struct flags {
  strategy how = strategy::one_for_one;
  intensity limits{};
  backoff delay{};
};

struct supervisor_spec;

/// What a supervisor starts: an agent, a nested supervisor, or a raw CAF actor (system services
/// that are not agents). Exactly one of `make_agent`, `sup` and `make_actor` is set.
struct child_spec {
  /// Unique within its supervisor. For an agent it is also the name it is registered under.
  std::string id;
  restart_policy restart = restart_policy::permanent;
  /// How long a stopping child may take before it is killed; `infinity` waits forever.
  duration shutdown = std::chrono::seconds(5);

  /// Makes a fresh agent for every (re)start. Returning null fails the start.
  std::function<std::unique_ptr<agent>()> make_agent;
  std::string tenant; ///< the agent's tenant (empty: the node's default)

  std::shared_ptr<const supervisor_spec> sup;

  /// Spawns the actor (not yet started children of its own must be its business).
  std::function<expected<caf::actor>(caf::actor_system&)> make_actor;
  std::string actor_kind = "actor"; ///< shown in the tree for raw actors

  /// Names starting with "af." are reserved for the node's own children.
  bool system = false;
  /// Runs the agent on a thread of its own: for I/O agents whose handlers block (the journal,
  /// the audit writer). Not deterministic under the simulator, which swaps them out.
  bool detached = false;

  [[nodiscard]] bool is_agent() const noexcept { return static_cast<bool>(make_agent); }
  [[nodiscard]] bool is_supervisor() const noexcept { return sup != nullptr; }
  [[nodiscard]] bool is_actor() const noexcept { return static_cast<bool>(make_actor); }
  /// "agent", "supervisor" or "actor".
  [[nodiscard]] std::string_view type_name() const noexcept;
};

/// A supervisor: a registered name, how it reacts to failures, and its children in start order
/// (for `dynamic`, usually none: children arrive through start_child).
struct supervisor_spec {
  std::string name;
  flags policy{};
  std::vector<child_spec> children;
};

/// Checks ids (non-empty, unique), that each child has exactly one way to start, and the
/// intensity/backoff values; the error names the supervisor and the child at fault.
[[nodiscard]] status validate(const supervisor_spec& s);

namespace detail {
/// How agent_factory keeps one constructor argument: a copy, or a reference for lvalues that
/// cannot be copied.
template <class T>
using kept_arg_t = std::conditional_t<
    std::is_lvalue_reference_v<T> && !std::is_copy_constructible_v<std::decay_t<T>>,
    std::reference_wrapper<std::remove_reference_t<T>>, std::decay_t<T>>;
} // namespace detail

/// Makes fresh instances of `A` from copies of `args` (lvalue arguments that cannot be copied,
/// like a `std::ostream&`, are kept by reference and must outlive the agent).
template <class A, class... Ts>
std::function<std::unique_ptr<agent>()> agent_factory(Ts&&... args) {
  using kept = std::tuple<detail::kept_arg_t<Ts&&>...>;
  return [tup = kept(std::forward<Ts>(args)...)]() -> std::unique_ptr<agent> {
    return std::apply([](const auto&... a) { return std::make_unique<A>(a...); }, tup);
  };
}

/// A child spec for an agent of class `A` registered as `name`.
template <class A, class... Ts>
child_spec agent_child(std::string name, Ts&&... args) {
  child_spec c;
  c.id = std::move(name);
  c.make_agent = agent_factory<A>(std::forward<Ts>(args)...);
  return c;
}

/// A child spec for a nested supervisor (permanent, shutdown `infinity`).
[[nodiscard]] child_spec supervisor_child(supervisor_spec s);

/// A child spec for a raw CAF actor.
[[nodiscard]] child_spec actor_child(std::string id,
                                     std::function<expected<caf::actor>(caf::actor_system&)> f,
                                     std::string kind = "actor");

} // namespace af::sup
