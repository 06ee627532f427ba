// The agent authoring API: an agent is a class with typed Protobuf handlers and lifecycle hooks;
// its context gives time, randomness, ids, logging, metrics, tell/ask and spawn. Each agent runs
// as one CAF event-based actor, but nothing here exposes CAF (docs/agents.md teaches it).
#pragma once

#include "af/envelope.hpp"
#include "af/error.hpp"
#include "af/log.hpp"
#include "af/services.hpp"
#include "af/sup/spec.hpp"

#include <google/protobuf/message.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace caf {
class actor_control_block;
} // namespace caf

namespace af {

class agent;
class context;
class metrics;
class node;

namespace detail {
class agent_host;
class reply_state;
} // namespace detail

/// A resolved handle to a live (or once-live) agent. Cheap to copy. Sending to an agent that has
/// stopped fails the ask with `not_found`; a tell to it is dropped and counted.
class agent_ref {
public:
  agent_ref() noexcept = default;
  agent_ref(caf::actor_control_block* ctrl, address addr) noexcept; // takes a new reference
  agent_ref(const agent_ref& other) noexcept;
  agent_ref(agent_ref&& other) noexcept;
  agent_ref& operator=(agent_ref other) noexcept;
  ~agent_ref();

  [[nodiscard]] bool valid() const noexcept { return ctrl_ != nullptr; }
  [[nodiscard]] const address& addr() const noexcept { return addr_; }
  [[nodiscard]] const std::string& name() const noexcept { return addr_.name; }
  /// The underlying CAF control block (for the runtime's own CAF glue).
  [[nodiscard]] caf::actor_control_block* ctrl() const noexcept { return ctrl_; }

  friend bool operator==(const agent_ref& a, const agent_ref& b) noexcept {
    return a.ctrl_ == b.ctrl_;
  }

private:
  caf::actor_control_block* ctrl_ = nullptr;
  address addr_;
};

/// The reply side of an ask handled asynchronously. Reply once; a responder dropped without a
/// reply answers the asker with an `internal` error, so an ask never waits for nothing.
template <class Reply>
class responder {
public:
  explicit responder(std::shared_ptr<detail::reply_state> st) : st_(std::move(st)) {}
  void reply(Reply r);
  void fail(error e);
  /// False for a tell (nobody waits) or after the reply was sent.
  [[nodiscard]] bool pending() const;

private:
  std::shared_ptr<detail::reply_state> st_;
};

namespace detail {

/// Sends one reply for the message being handled (no-op when it was a tell).
class reply_state {
public:
  virtual ~reply_state() = default;
  virtual void deliver(std::shared_ptr<const google::protobuf::Message> msg) = 0;
  virtual void fail(error e) = 0;
  [[nodiscard]] virtual bool pending() const = 0;
};

using erased_handler =
    std::function<void(agent&, context&, const envelope&, const std::shared_ptr<reply_state>&)>;

/// Chooses where an envelope addressed to another name goes (see handlers::route).
using erased_router = std::function<expected<agent_ref>(agent&, context&, const envelope&)>;

/// One table per agent class, built once from the class's `define`.
struct handler_table {
  std::string kind;
  std::unordered_map<const google::protobuf::Descriptor*, erased_handler> by_type;
  erased_router router; ///< empty: envelopes for other names are refused
};

/// The type-erased reply callback of an ask.
using reply_callback = std::function<void(expected<envelope>)>;

template <class Reply>
expected<Reply> unpack_reply(expected<envelope>&& r);

} // namespace detail

/// The header a router's host adds to an envelope it readdresses to another node: the name of
/// the routing node (so that the router there knows the envelope was routed once already).
inline constexpr std::string_view k_routed_by_header = "af-routed-by";

/// Declares an agent class's handlers: `h.kind("demo.worker").on(&worker::on_task);`.
/// A handler is a member function of one of these shapes:
///   void          f(context&, const Msg&)                      -- tell; an ask gets Empty back
///   expected<R>   f(context&, const Msg&)                      -- replies R or an error
///   void          f(context&, const Msg&, responder<R>)        -- replies later
template <class Self>
class handlers {
public:
  explicit handlers(detail::handler_table& t) : t_(t) {}

  handlers& kind(std::string name) {
    t_.kind = std::move(name);
    return *this;
  }

  template <class Msg>
  handlers& on(void (Self::*fn)(context&, const Msg&));
  template <class Msg, class R>
  handlers& on(expected<R> (Self::*fn)(context&, const Msg&));
  template <class Msg, class R>
  handlers& on(void (Self::*fn)(context&, const Msg&, responder<R>));

  /// Declares this agent a router: an envelope it receives whose receiver name is not its own
  /// (the node hands it the virtual names it claimed with context::route_kinds) is passed to
  /// `fn`, and delegated to the agent it returns (local, or remote through
  /// `ctx.lookup(address)`), readdressed to that agent: the reply goes straight back to the
  /// asker. An error is the reply of an ask, and a logged, counted refusal for a tell.
  handlers& route(expected<agent_ref> (Self::*fn)(context&, const envelope&)) {
    t_.router = [fn](agent& a, context& ctx, const envelope& e) {
      return (static_cast<Self&>(a).*fn)(ctx, e);
    };
    return *this;
  }

private:
  template <class Msg>
  void add(detail::erased_handler h) {
    t_.by_type[Msg::descriptor()] = std::move(h);
  }
  detail::handler_table& t_;
};

/// What a restarted agent is told before its first message (see agent::recover).
struct restart_info {
  std::uint64_t restarts = 0; ///< how many times this child has been restarted, this one included
  std::string last_exit;      ///< why the previous instance exited ("exception: ...", "fail: ...")
};

/// How an agent is supervised when spawned (node.spawn, ctx.spawn).
struct agent_options {
  std::string tenant; ///< empty: the spawner's tenant (the node's default for node.spawn)
  /// transient: restarted after a crash, `fail()` or a kill, not after `stop()` or a shutdown.
  sup::restart_policy restart = sup::restart_policy::transient;
  duration shutdown = std::chrono::seconds(5); ///< time to stop before it is killed
  /// Runs the agent on a thread of its own: for agents whose handlers block on I/O (SQL, a
  /// blocking tool). Not deterministic under the simulator.
  bool detached = false;
};

/// Base of every agent. Derive from `agent_base<Self>` rather than from this directly.
class agent {
public:
  virtual ~agent() = default;
  /// Runs on a restarted instance (a fresh object made by the agent's factory) before
  /// on_start. The default keeps the fresh state; event-sourced agents replay their journal here.
  virtual void recover(context&, const restart_info&) {}
  /// How the children this agent spawns (ctx.spawn) are supervised. They live under a
  /// supervisor the agent owns; when it exceeds its intensity, the agent fails (escalation).
  [[nodiscard]] virtual sup::flags child_supervision() const { return {}; }
  /// The virtual kinds this agent routes (it must declare a router, see handlers::route). They
  /// are claimed when the agent is spawned, before it runs, as its name is bound then: no
  /// lookup made after the spawn can miss them. context::route_kinds claims them later.
  [[nodiscard]] virtual std::vector<std::string> routed_kinds() const { return {}; }
  /// Runs before the first message.
  virtual void on_start(context&) {}
  /// Runs when the agent stops for any reason (its state is discarded afterwards).
  virtual void on_stop(context&) {}
  [[nodiscard]] virtual const detail::handler_table& handler_table() const = 0;
};

/// CRTP base: `class worker : public af::agent_base<worker> { static void
/// define(handlers<worker>&); }`.
template <class Self>
class agent_base : public agent {
public:
  [[nodiscard]] const detail::handler_table& handler_table() const final { return table(); }
  static const detail::handler_table& table() {
    static const detail::handler_table t = [] {
      detail::handler_table tab;
      tab.kind = "agent";
      handlers<Self> h{tab};
      Self::define(h);
      return tab;
    }();
    return t;
  }
};

/// What an agent's handlers see: the node's services, its own identity and messaging.
/// Valid only inside the agent's own handlers and hooks (it is not thread-safe).
class context {
public:
  explicit context(detail::agent_host* host) noexcept : host_(host) {}

  // --- identity and services -------------------------------------------------------------
  [[nodiscard]] const address& self() const;
  [[nodiscard]] const std::string& name() const { return self().name; }
  [[nodiscard]] const std::string& kind() const;
  [[nodiscard]] agent_ref self_ref() const;
  [[nodiscard]] time_point now() const;
  /// The node's clock (virtual under the simulator), for helpers such as sup::retry_policy and
  /// sup::circuit_breaker that keep time themselves.
  [[nodiscard]] const af::clock& clock() const;
  [[nodiscard]] duration monotonic() const;
  [[nodiscard]] af::rng& rng();
  [[nodiscard]] ulid next_id();
  /// The node's logger, bound to the current message's trace, tenant and correlation ids.
  [[nodiscard]] logger log() const;
  [[nodiscard]] af::metrics& metrics() const;
  /// The envelope being handled, or nullptr in on_start/on_stop.
  [[nodiscard]] const envelope* current() const;
  /// The tenant of the current message, else the agent's own tenant.
  [[nodiscard]] const std::string& tenant() const;
  [[nodiscard]] af::node& this_node() const;
  /// False under the simulator, which runs every agent on its one thread for determinism (and
  /// hosts no af::node): an agent may hand blocking work to a thread of its own only when true.
  [[nodiscard]] bool threads_allowed() const;

  // --- messaging --------------------------------------------------------------------------
  [[nodiscard]] expected<agent_ref> lookup(std::string_view name) const;
  /// An agent by node and name: on this node, or on another node the runtime can reach (under
  /// the simulator, through its simulated network). `not_found` when there is no way there.
  [[nodiscard]] expected<agent_ref> lookup(const address& where) const;
  /// The agent registered under `name` on this node, never the virtual router: for the router
  /// itself, which would otherwise be handed its own names back.
  [[nodiscard]] expected<agent_ref> lookup_registered(std::string_view name) const;
  /// Makes this agent (which must declare a router, see handlers::route) the node's router for
  /// virtual names `Kind/id` of these kinds: lookups of such names on this node (local asks and
  /// envelopes arriving from other nodes) reach it, until it stops. `conflict` when another
  /// live agent routes them already; `validation` for a kind that is empty or holds a '/'.
  status route_kinds(std::vector<std::string> kinds);

  /// Fire and forget. Fails only when the name is unknown.
  template <class Msg>
  status tell(std::string_view name, Msg msg) {
    auto ref = lookup(name);
    if (!ref) return std::move(ref).error();
    tell(*ref, std::move(msg));
    return {};
  }
  template <class Msg>
  void tell(const agent_ref& to, Msg msg) {
    tell_erased(to, std::make_shared<const Msg>(std::move(msg)));
  }

  /// Delivers `msg` to this agent after `delay` (node time: virtual under the simulator), as a
  /// tell from itself: timers, retries after a backoff, periodic work.
  template <class Msg>
  void schedule(duration delay, Msg msg) {
    schedule_erased(delay, std::make_shared<const Msg>(std::move(msg)));
  }

  /// Asks `to` and calls `on_reply(expected<Reply>)` later, in this agent, with the typed reply,
  /// the error the receiver answered, `timeout` when no reply came in time, or `not_found`.
  /// Never blocks the agent.
  template <class Reply, class Msg, class F>
  void ask(const agent_ref& to, Msg msg, duration timeout, F&& on_reply) {
    ask_erased(to, std::make_shared<const Msg>(std::move(msg)), timeout,
               [f = std::forward<F>(on_reply)](expected<envelope> r) mutable {
                 f(detail::unpack_reply<Reply>(std::move(r)));
               });
  }
  /// By name: an unknown name calls `on_reply` with `not_found` at once, before ask returns
  /// (every other outcome arrives later, as a message).
  template <class Reply, class Msg, class F>
  void ask(std::string_view name, Msg msg, duration timeout, F&& on_reply) {
    auto ref = lookup(name);
    if (!ref) {
      on_reply(expected<Reply>{std::move(ref).error()});
      return;
    }
    ask<Reply>(*ref, std::move(msg), timeout, std::forward<F>(on_reply));
  }
  /// With the node's default timeout (agent.ask_timeout_ms).
  template <class Reply, class Msg, class F>
  void ask(const agent_ref& to, Msg msg, F&& on_reply) {
    ask<Reply>(to, std::move(msg), default_timeout(), std::forward<F>(on_reply));
  }
  template <class Reply, class Msg, class F>
  void ask(std::string_view name, Msg msg, F&& on_reply) {
    ask<Reply>(name, std::move(msg), default_timeout(), std::forward<F>(on_reply));
  }

  /// Spawns a child agent registered under `name` on this node, supervised by a supervisor this
  /// agent owns (see agent::child_supervision): restarted from copies of `args` when it
  /// crashes, stopped when this agent stops.
  template <class A, class... Ts>
  expected<agent_ref> spawn(std::string name, Ts&&... args) {
    return spawn_erased(sup::agent_factory<A>(std::forward<Ts>(args)...), std::move(name), {});
  }
  template <class A, class... Ts>
  expected<agent_ref> spawn_with(agent_options opts, std::string name, Ts&&... args) {
    return spawn_erased(sup::agent_factory<A>(std::forward<Ts>(args)...), std::move(name),
                        std::move(opts));
  }

  /// Stops this agent after the current message (a normal exit).
  void stop();
  /// Stops this agent with an error (an abnormal exit a supervisor will see).
  void fail(error reason);

  [[nodiscard]] duration default_timeout() const;

  // Type-erased entry points behind the templates above.
  void tell_erased(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg);
  void schedule_erased(duration delay, std::shared_ptr<const google::protobuf::Message> msg);
  void ask_erased(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg,
                  duration timeout, detail::reply_callback cb);
  expected<agent_ref> spawn_erased(std::function<std::unique_ptr<agent>()> factory,
                                   std::string name, agent_options opts);

private:
  detail::agent_host* host_;
};

// --- template implementations ------------------------------------------------------------

namespace detail {
/// Builds the af.v1.Error payload for an error reply.
[[nodiscard]] std::shared_ptr<const google::protobuf::Message> error_payload(const error& e);
/// A google.protobuf.Empty, the reply to an ask whose handler returns nothing.
[[nodiscard]] std::shared_ptr<const google::protobuf::Message> empty_payload();
/// If `e` carries an af.v1.Error, the error it names.
[[nodiscard]] bool error_from_envelope(const envelope& e, error& out);

template <class Reply>
expected<Reply> unpack_reply(expected<envelope>&& r) {
  if (!r) return std::move(r).error();
  const envelope& e = *r;
  if (const auto* p = e.payload_as<Reply>()) return *p;
  error err{errc::internal, {}};
  if (error_from_envelope(e, err)) return err;
  return error{errc::validation, "reply from '" + e.sender().to_string() + "' has payload type '"
                                     + e.payload_type_name() + "', expected '"
                                     + Reply::descriptor()->full_name() + "'"};
}
} // namespace detail

template <class Reply>
void responder<Reply>::reply(Reply r) {
  st_->deliver(std::make_shared<const Reply>(std::move(r)));
}

template <class Reply>
void responder<Reply>::fail(error e) {
  st_->fail(std::move(e));
}

template <class Reply>
bool responder<Reply>::pending() const {
  return st_->pending();
}

template <class Self>
template <class Msg>
handlers<Self>& handlers<Self>::on(void (Self::*fn)(context&, const Msg&)) {
  add<Msg>([fn](agent& a, context& ctx, const envelope& e,
                const std::shared_ptr<detail::reply_state>& rs) {
    (static_cast<Self&>(a).*fn)(ctx, *e.payload_as<Msg>());
    if (rs->pending()) rs->deliver(detail::empty_payload());
  });
  return *this;
}

template <class Self>
template <class Msg, class R>
handlers<Self>& handlers<Self>::on(expected<R> (Self::*fn)(context&, const Msg&)) {
  add<Msg>([fn](agent& a, context& ctx, const envelope& e,
                const std::shared_ptr<detail::reply_state>& rs) {
    auto r = (static_cast<Self&>(a).*fn)(ctx, *e.payload_as<Msg>());
    if (!rs->pending()) return;
    if (r)
      rs->deliver(std::make_shared<const R>(std::move(r).value()));
    else
      rs->fail(std::move(r).error());
  });
  return *this;
}

template <class Self>
template <class Msg, class R>
handlers<Self>& handlers<Self>::on(void (Self::*fn)(context&, const Msg&, responder<R>)) {
  add<Msg>([fn](agent& a, context& ctx, const envelope& e,
                const std::shared_ptr<detail::reply_state>& rs) {
    (static_cast<Self&>(a).*fn)(ctx, *e.payload_as<Msg>(), responder<R>{rs});
  });
  return *this;
}

} // namespace af
