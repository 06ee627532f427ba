// Private: the CAF actor that hosts one agent: decodes envelopes to typed handlers, replies,
// keeps the Lamport clock and trace context, and does the metric bookkeeping.
#pragma once

#include "af/agent.hpp"
#include "caf_glue.hpp"
#include "node_core.hpp"

#include <caf/actor_clock.hpp>
#include <caf/allowed_unsafe_message_type.hpp>

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

namespace af::detail {

/// Tells for one agent host, in the order they arrived, delivered as one CAF message: the
/// cluster transport's receive path (one mailbox element and one dispatch per batch instead of
/// per envelope). Local only, never serialized; the host handles each envelope as a tell.
struct envelope_batch {
  std::vector<envelope> items;
};

class agent_host : public envelope_actor::base {
public:
  agent_host(caf::actor_config& cfg, node_core* core, std::unique_ptr<agent> a, af::address addr,
             std::string tenant, std::uint64_t seed, restart_info restarted);

  behavior_type make_behavior() override;
  void on_exit() override;
  const char* name() const override { return "af.agent"; }

  // Used by af::context.
  node_core& core() { return *core_; }
  const af::address& addr() const { return addr_; }
  const std::string& kind() const { return table_->kind; }
  bool handler_table_router() const { return static_cast<bool>(table_->router); }
  const std::string& own_tenant() const { return tenant_; }
  af::rng& agent_rng() { return rng_; }
  const envelope* current() const { return current_; }
  void tell(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg);
  void schedule(duration delay, std::shared_ptr<const google::protobuf::Message> msg);
  void ask(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg,
           duration timeout, reply_callback cb);
  /// Spawns a child under this agent's own children supervisor (started on first use).
  expected<agent_ref> spawn_child(std::function<std::unique_ptr<agent>()> factory, std::string name,
                                  agent_options opts);
  void stop_self(caf::error reason);
  /// The simulator's "actor throws" fault: the next message this agent gets makes it throw
  /// `what` before its handler runs (a crash like any handler's exception).
  void inject_fault(std::string what) { injected_fault_ = std::move(what); }

  /// The node's control agent forwards envelopes addressed to other local agents.
  bool gateway = false;

private:
  caf::result<envelope> handle(const envelope& e);
  /// Handles each envelope of `b` as a tell, in order (the cluster transport's receive path).
  void handle_batch(const envelope_batch& b);
  caf::result<envelope> forward(const envelope& e);
  /// Hands `e` (for another name) to the agent's router and delegates it where that says.
  caf::result<envelope> route(const envelope& e, bool is_request);
  /// Hands the message being handled on to `target` (its reply goes straight to the asker),
  /// relaying it instead when the sender is on another CAF node and the target is the cluster
  /// relay, which takes envelopes only from this node's actors.
  caf::result<envelope> pass_on(const agent_ref& target, envelope e);
  void count(const std::string& tenant, const char* outcome);
  /// Runs an ask's callback for `reply`: traced, timed, Lamport clock advanced, and `reply` as
  /// the current message while `call` runs.
  template <class F>
  void with_reply(const envelope& reply, duration started, F&& call);
  /// Local asks share one CAF request timeout per agent (the earliest deadline) instead of one
  /// each: every CAF timeout is a push to the clock thread and a wake-up of it, per ask.
  void arm_sweep(caf::actor_clock::time_point at);
  /// Fails the asks whose deadline has passed with a timeout; arms the next sweep.
  void sweep();
  void settle(std::uint64_t id, expected<envelope> r);

  struct pending_ask {
    caf::actor_clock::time_point deadline;
    duration timeout;
    duration started;
    reply_callback cb;
    af::address target;
  };

  node_core* core_;
  std::unique_ptr<agent> agent_;
  const handler_table* table_;
  af::context ctx_;
  af::address addr_;
  std::string tenant_;
  af::rng rng_;
  std::uint64_t lamport_ = 0;
  const envelope* current_ = nullptr;
  restart_info restarted_;
  caf::strong_actor_ptr children_sup_;
  std::string injected_fault_;
  // Metric handles for the agent's own tenant (the common case), fetched once.
  counter_handle handled_, rejected_, failed_, sent_;
  histogram_handle ask_duration_;
  std::unordered_map<std::uint64_t, pending_ask> asks_; ///< local asks without a reply yet
  std::uint64_t next_ask_ = 0;
  std::optional<caf::actor_clock::time_point> sweep_at_; ///< when the armed sweep fires
};

} // namespace af::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(af::detail::envelope_batch)
