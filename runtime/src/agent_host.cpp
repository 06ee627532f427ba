#include "agent_host.hpp"

#include "af/node.hpp"
#include "af/v1/runtime.pb.h"
#include "exit_reason.hpp"
#include "supervisor_actor.hpp"

#include <caf/actor_system.hpp>
#include <caf/behavior.hpp>
#include <caf/exit_reason.hpp>
#include <caf/message_view.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>
#include <caf/type_erased_tuple.hpp>

#include <algorithm>
#include <stdexcept>

#include <google/protobuf/empty.pb.h>

namespace af::detail {

namespace {

const char* k_handled = "handled";
const char* k_rejected = "rejected";
const char* k_failed = "failed";
const char* k_sent = "sent";

/// The reply state of a tell: nobody waits.
class no_reply final : public reply_state {
public:
  void deliver(std::shared_ptr<const google::protobuf::Message>) override {}
  void fail(error) override {}
  bool pending() const override { return false; }
};

const std::shared_ptr<reply_state>& no_reply_instance() {
  static const std::shared_ptr<reply_state> inst = std::make_shared<no_reply>();
  return inst;
}

/// The reply state of an ask: a CAF response promise plus what the reply envelope needs.
class promise_reply final : public reply_state {
public:
  promise_reply(node_core* core, address self, envelope request,
                caf::typed_response_promise<envelope> rp, af::rng& r)
      : core_(core), self_(std::move(self)), request_(std::move(request)), rp_(std::move(rp)),
        rng_(r.next_u64()) {}

  ~promise_reply() override {
    if (pending())
      fail(error{errc::internal, "agent '" + self_.to_string() + "' dropped the ask for '"
                                     + request_.payload_type_name() + "' without replying"});
  }

  void deliver(std::shared_ptr<const google::protobuf::Message> msg) override {
    if (!pending()) return;
    rp_.deliver(core_->make_reply(self_, request_, std::move(msg), rng_));
  }

  void fail(error e) override { deliver(error_payload(e)); }

  bool pending() const override { return rp_.pending(); }

private:
  node_core* core_;
  address self_;
  envelope request_;
  caf::typed_response_promise<envelope> rp_;
  af::rng rng_;
};

} // namespace

// --- agent_host -------------------------------------------------------------------------

agent_host::agent_host(caf::actor_config& cfg, node_core* core, std::unique_ptr<agent> a,
                       af::address addr, std::string tenant, std::uint64_t seed,
                       restart_info restarted)
    : envelope_actor::base(cfg), core_(core), agent_(std::move(a)),
      table_(&agent_->handler_table()), ctx_(this), addr_(std::move(addr)),
      tenant_(std::move(tenant)), rng_(seed), restarted_(std::move(restarted)) {
  gateway = table_->kind == "af.control";
  const auto& h = core_->handles(tenant_, table_->kind);
  handled_ = h.handled;
  rejected_ = h.rejected;
  failed_ = h.failed;
  sent_ = h.sent;
  ask_duration_ = h.ask_duration;
  // Bound before the actor can run: an agent that stops in on_start must not leave its name
  // bound to a dead actor.
  core_->registry.bind(addr_.name, caf::strong_actor_ptr{ctrl()});
  // The same for the virtual kinds it routes; a claim refused here is refused again, with its
  // error, when the agent calls context::route_kinds.
  if (table_->router)
    if (auto kinds = agent_->routed_kinds(); !kinds.empty())
      (void)core_->set_virtual_router(
          {addr_.name, caf::strong_actor_ptr{ctrl()}, std::move(kinds)});
  // A handler that throws crashes the agent with an abnormal reason (CAF-NOTES.md: returning
  // none from an exception handler would turn the crash into a normal exit).
  set_exception_handler([](caf::scheduled_actor* self, std::exception_ptr& ep) -> caf::error {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    auto* host = static_cast<agent_host*>(self);
    if (auto suppressed = host->core_->crash_log_slot())
      host->core_->log.error(
          "agent_crashed", "handler threw: " + what,
          {{"agent", host->addr_.name}, {"kind", host->kind()}, {"suppressed", *suppressed}});
    return sup::detail::crash_reason(what);
  });
  // The children supervisor escalated: this agent fails, and its own supervisor decides.
  set_down_handler([](caf::scheduled_actor* self, caf::down_msg& m) {
    auto* host = static_cast<agent_host*>(self);
    if (!host->children_sup_ || m.source != host->children_sup_) return;
    host->children_sup_ = nullptr;
    if (m.reason && m.reason != caf::exit_reason::user_shutdown)
      host->quit(sup::detail::escalated_reason("the children of agent '" + host->addr_.name
                                               + "' failed too often: "
                                               + sup::detail::classify(m.reason).text));
  });
  // Anything that is not an envelope (a peer with another type registry, a stray CAF message)
  // is logged, counted and answered with an error: never dropped silently.
  set_default_handler([](caf::scheduled_actor* self,
                         caf::message_view& m) -> caf::result<caf::message> {
    auto* host = static_cast<agent_host*>(self);
    // Tells from the cluster transport, several per CAF message (caf_glue.hpp).
    if (m.content().match_elements<envelope_batch>()) {
      host->handle_batch(*static_cast<const envelope_batch*>(m.content().get(0)));
      return caf::message{};
    }
    auto what = to_string(m.content());
    host->core_->log.warn("unexpected_message", "not an af.envelope: " + what,
                          {{"agent", host->addr_.name}, {"kind", host->kind()}});
    host->count(host->tenant_, k_rejected);
    return caf::make_error(caf::sec::unexpected_message, "agent '" + host->addr_.name
                                                             + "' accepts only af.envelope, got "
                                                             + what);
  });
}

agent_host::behavior_type agent_host::make_behavior() {
  core_->metrics->agents_active().inc();
  if (restarted_.restarts > 0) agent_->recover(ctx_, restarted_);
  agent_->on_start(ctx_);
  return {[this](const envelope& e) -> caf::result<envelope> { return handle(e); }};
}

void agent_host::on_exit() {
  current_ = nullptr;
  // The callbacks of asks still waiting may hold references to this actor (CAF drops its own
  // response handlers at exit the same way): nobody answers them now.
  asks_.clear();
  sweep_at_.reset();
  if (agent_) {
    agent_->on_stop(ctx_);
    agent_.reset();
    core_->metrics->agents_active().dec();
  }
  // The children supervisor stops the children in reverse start order.
  if (children_sup_) caf::anon_send_exit(children_sup_, caf::exit_reason::user_shutdown);
  children_sup_ = nullptr;
  core_->registry.erase(addr_.name, ctrl());
  if (table_->router) core_->clear_virtual_router(ctrl());
}

void agent_host::count(const std::string& tenant, const char* outcome) {
  if (tenant == tenant_) {
    if (outcome == k_handled)
      handled_.inc();
    else if (outcome == k_rejected)
      rejected_.inc();
    else if (outcome == k_failed)
      failed_.inc();
    else
      sent_.inc();
    return;
  }
  core_->metrics->agent_messages(tenant, table_->kind, outcome).inc();
}

caf::result<envelope> agent_host::handle(const envelope& e) {
  if (core_->observer != nullptr) core_->observer->delivered(addr_, e);
  if (!injected_fault_.empty())
    throw std::runtime_error{std::exchange(injected_fault_, std::string{})};
  lamport_ = std::max(lamport_, e.logical_ts()) + 1;
  const bool is_request = current_message_id().is_request();
  if (gateway && e.receiver().name != addr_.name && !e.receiver().name.empty()) return forward(e);
  if (table_->router && e.receiver().name != addr_.name && !e.receiver().name.empty())
    return route(e, is_request);

  auto it = table_->by_type.find(e.payload_type());
  if (it == table_->by_type.end()) {
    count(e.tenant(), k_rejected);
    core_->log.warn("message_rejected", "no handler for payload type",
                    {{"agent", addr_.name},
                     {"kind", table_->kind},
                     {"payload_type", e.payload_type_name()},
                     {"from", e.sender().to_string()}});
    error err{errc::validation, "agent '" + addr_.name + "' (kind '" + table_->kind
                                    + "') has no handler for payload type '" + e.payload_type_name()
                                    + "'"};
    if (is_request) return core_->make_reply(addr_, e, error_payload(err), rng_);
    return caf::delegated<envelope>{};
  }

  // A tell borrows the shared no-reply state by reference: no reference count that every
  // worker thread would bounce between cores on every message.
  std::shared_ptr<reply_state> ask_state;
  if (is_request)
    ask_state =
        std::make_shared<promise_reply>(core_, addr_, e, make_response_promise<envelope>(), rng_);
  const std::shared_ptr<reply_state>& rs = is_request ? ask_state : no_reply_instance();
  current_ = &e;
  try {
    it->second(*agent_, ctx_, e, rs);
  } catch (const std::exception& ex) {
    current_ = nullptr;
    count(e.tenant(), k_failed);
    rs->fail(error{errc::internal, "agent '" + addr_.name + "' failed handling '"
                                       + e.payload_type_name() + "': " + ex.what()});
    throw; // crash the agent: the exception handler turns it into an abnormal exit
  }
  current_ = nullptr;
  count(e.tenant(), k_handled);
  return caf::delegated<envelope>{};
}

void agent_host::handle_batch(const envelope_batch& b) {
  for (const auto& e : b.items) {
    // An envelope that stopped the agent drops the rest, as a stop drops the rest of a mailbox.
    if (getf(is_shutting_down_flag)) return; // set by quit()
    (void)handle(e); // tells: nothing to reply
  }
}

caf::result<envelope> agent_host::forward(const envelope& e) {
  // Through the node's lookup: a virtual name (`Kind/id`) reaches the virtual router.
  auto target = core_->lookup(e.receiver().name);
  if (!target) {
    count(e.tenant(), k_rejected);
    return core_->make_reply(addr_, e, error_payload(target.error()), rng_);
  }
  count(e.tenant(), k_handled);
  return pass_on(*target, e);
}

caf::result<envelope> agent_host::pass_on(const agent_ref& target, envelope e) {
  const auto& sender = current_sender();
  const bool to_other_node = !target.addr().node.empty() && target.addr().node != core_->node_name;
  if (!to_other_node || (sender != nullptr && sender->node() == home_system().node()))
    return delegate(to_actor(target), std::move(e));
  // A client on the control endpoint asked for an agent on another node: relay it from here.
  if (!current_message_id().is_request()) {
    send(to_actor(target), std::move(e));
    return caf::delegated<envelope>{};
  }
  auto rp = make_response_promise<envelope>();
  // The relay answers every ask (a reply, or an error when the peer is lost); the bound only
  // keeps a reply that never comes from holding a handler for the life of this agent.
  request(to_actor(target), std::chrono::minutes(10), std::move(e))
      .then([rp](envelope& reply) mutable { rp.deliver(std::move(reply)); },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return caf::delegated<envelope>{};
}

caf::result<envelope> agent_host::route(const envelope& e, bool is_request) {
  current_ = &e;
  expected<agent_ref> target = error{errc::internal, "no route"};
  try {
    target = table_->router(*agent_, ctx_, e);
  } catch (const std::exception& ex) {
    current_ = nullptr;
    count(e.tenant(), k_failed);
    if (is_request)
      make_response_promise<envelope>().deliver(core_->make_reply(
          addr_, e,
          error_payload(error{errc::internal, "router '" + addr_.name + "' failed routing '"
                                                  + e.receiver().to_string() + "': " + ex.what()}),
          rng_));
    throw;
  }
  current_ = nullptr;
  if (!target || !target->valid() || target->ctrl() == ctrl()) {
    error err = !target ? std::move(target).error()
                : target->valid()
                    ? error{errc::internal, "router '" + addr_.name + "' routed '"
                                                + e.receiver().to_string()
                                                + "' to itself (use lookup_registered)"}
                    : error{errc::not_found, "router '" + addr_.name + "' found no agent for '"
                                                 + e.receiver().to_string() + "'"};
    count(e.tenant(), k_rejected);
    core_->log.warn("route_refused", err.message(),
                    {{"agent", addr_.name},
                     {"receiver", e.receiver().to_string()},
                     {"kind", std::string{to_string(err.code())}},
                     {"payload_type", e.payload_type_name()},
                     {"from", e.sender().to_string()},
                     {"ask", is_request}});
    if (is_request) return core_->make_reply(addr_, e, error_payload(err), rng_);
    return caf::delegated<envelope>{};
  }
  count(e.tenant(), k_handled);
  if (target->addr() == e.receiver()) return pass_on(*target, e);
  // Readdressed, so that a relay to another node sends it to the agent the router chose.
  envelope_fields f = e.fields();
  f.receiver = target->addr();
  if (!f.receiver.node.empty() && f.receiver.node != core_->node_name)
    f.headers[std::string{k_routed_by_header}] = core_->node_name;
  return pass_on(*target, envelope::make(std::move(f)));
}

void agent_host::tell(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg) {
  const auto& tenant = current_ ? current_->tenant() : tenant_;
  auto env =
      core_->make_envelope(addr_, to.addr(), std::move(msg), current_, ++lamport_, tenant, rng_);
  count(tenant, k_sent);
  send(to_actor(to), std::move(env));
}

void agent_host::schedule(duration delay, std::shared_ptr<const google::protobuf::Message> msg) {
  const auto& tenant = current_ ? current_->tenant() : tenant_;
  auto env = core_->make_envelope(addr_, addr_, std::move(msg), current_, ++lamport_, tenant, rng_);
  delayed_send(
      this,
      std::chrono::duration_cast<std::chrono::microseconds>(std::max(delay, duration::zero())),
      std::move(env));
}

void agent_host::ask(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg,
                     duration timeout, reply_callback cb) {
  const auto& tenant = current_ ? current_->tenant() : tenant_;
  auto env =
      core_->make_envelope(addr_, to.addr(), std::move(msg), current_, ++lamport_, tenant, rng_);
  count(tenant, k_sent);
  auto started = core_->svc.clk->monotonic();
  auto target = to_actor(to);
  if (target && target->node() != home_system().node()) {
    // A remote ask keeps a CAF timeout of its own: a reply the middleman loses must not leave a
    // response handler behind until this agent stops.
    auto shared_cb = std::make_shared<reply_callback>(std::move(cb));
    request(target, timeout, std::move(env))
        .then(
            [this, shared_cb, started](const envelope& reply) {
              with_reply(reply, started, [&] { (*shared_cb)(reply); });
            },
            [shared_cb, timeout, target = to.addr()](caf::error& err) {
              (*shared_cb)(ask_error(err, target.to_string(), timeout));
            });
    return;
  }
  // Local: the ask's deadline is kept here and checked by the agent's one armed sweep; a reply
  // that comes after its ask timed out finds no pending ask and is dropped, as CAF drops it.
  const auto now = clock().now();
  constexpr auto k_far = std::chrono::hours{24 * 365};
  const auto deadline = timeout >= k_far ? caf::actor_clock::time_point::max()
                                         : now + std::max(timeout, duration::zero());
  const auto id = ++next_ask_;
  asks_.emplace(id, pending_ask{deadline, timeout, started, std::move(cb), to.addr()});
  if (deadline != caf::actor_clock::time_point::max() && (!sweep_at_ || deadline < *sweep_at_))
    arm_sweep(deadline);
  request(target, caf::infinite, std::move(env))
      .then([this, id](const envelope& reply) { settle(id, reply); },
            [this, id](caf::error& err) {
              auto it = asks_.find(id);
              if (it == asks_.end()) return;
              auto e = ask_error(err, it->second.target.to_string(), it->second.timeout);
              settle(id, std::move(e));
            });
}

void agent_host::settle(std::uint64_t id, expected<envelope> r) {
  auto it = asks_.find(id);
  if (it == asks_.end()) return; // it timed out before
  auto cb = std::move(it->second.cb);
  const auto started = it->second.started;
  asks_.erase(it);
  if (!r) {
    cb(std::move(r));
    return;
  }
  const envelope reply = *r; // current_ while the callback runs (r is moved into it)
  with_reply(reply, started, [&] { cb(std::move(r)); });
}

template <class F>
void agent_host::with_reply(const envelope& reply, duration started, F&& call) {
  if (core_->observer != nullptr) core_->observer->delivered(addr_, reply);
  ask_duration_.observe(
      std::chrono::duration<double>(core_->svc.clk->monotonic() - started).count());
  lamport_ = std::max(lamport_, reply.logical_ts()) + 1;
  auto prev = current_;
  current_ = &reply;
  call();
  current_ = prev;
}

void agent_host::arm_sweep(caf::actor_clock::time_point at) {
  sweep_at_ = at;
  // A request to nobody whose only answer is its timeout, at `at`: CAF cancels it when this
  // actor stops (a delayed message would keep the stopped actor alive until it fires).
  auto mid = new_request_id(caf::message_priority::normal).response_id();
  clock().set_request_timeout(at, this, mid);
  add_multiplexed_response_handler(mid, caf::behavior{[this, at](caf::error&) {
                                     if (sweep_at_ == at) sweep_at_.reset();
                                     sweep();
                                   }});
}

void agent_host::sweep() {
  const auto now = clock().now();
  std::vector<std::uint64_t> expired;
  auto next = caf::actor_clock::time_point::max();
  for (const auto& [id, p] : asks_) {
    if (p.deadline <= now)
      expired.push_back(id);
    else
      next = std::min(next, p.deadline);
  }
  if (next != caf::actor_clock::time_point::max() && (!sweep_at_ || next < *sweep_at_))
    arm_sweep(next);
  std::sort(expired.begin(), expired.end()); // in the order they were asked
  for (auto id : expired) {
    auto it = asks_.find(id);
    if (it == asks_.end()) continue; // settled by a callback of an earlier one
    auto e =
        ask_error(caf::sec::request_timeout, it->second.target.to_string(), it->second.timeout);
    settle(id, std::move(e));
  }
}

void agent_host::stop_self(caf::error reason) { quit(std::move(reason)); }

expected<agent_ref> agent_host::spawn_child(std::function<std::unique_ptr<agent>()> factory,
                                            std::string name, agent_options opts) {
  if (!children_sup_) {
    auto spec = std::make_shared<sup::supervisor_spec>();
    spec->name = sup::detail::children_supervisor_name(addr_.name);
    spec->policy = agent_->child_supervision();
    auto s = sup::detail::spawn_supervisor(*core_, std::move(spec), true);
    if (!s) return s.error();
    children_sup_ = caf::strong_actor_ptr{s->ctrl()};
    monitor(children_sup_);
  }
  if (opts.tenant.empty()) opts.tenant = tenant_;
  return core_->spawn_supervised(std::move(factory), std::move(name), std::move(opts),
                                 children_sup_);
}

// --- node_core ----------------------------------------------------------------------------

expected<agent_ref> node_core::spawn(std::unique_ptr<agent> a, std::string name,
                                     spawn_options opts) {
  if (!a) return validation_error("agent '" + name + "': no agent to spawn (null)");
  if (name.empty()) return validation_error("agent name: must not be empty");
  if (!opts.system && name.starts_with("af."))
    return validation_error("agent name '" + name + "': the prefix 'af.' is reserved");
  if (name.size() > 255)
    return validation_error("agent name: longer than 255 bytes ('" + name.substr(0, 32) + "...')");
  if (auto r = registry.reserve(name, a->handler_table().kind); !r) return r.error();
  if (opts.tenant.empty()) opts.tenant = default_tenant;
  address addr{node_name, name};
  auto seed = svc.random->next_u64();
  restart_info ri{opts.restarts, std::move(opts.last_exit)};
  auto actor = opts.detached && !cooperative ? sys->spawn<agent_host, caf::detached>(
                   this, std::move(a), addr, std::move(opts.tenant), seed, std::move(ri))
                             : sys->spawn<agent_host>(this, std::move(a), addr,
                                                      std::move(opts.tenant), seed, std::move(ri));
  return agent_ref{ctrl_of(actor), std::move(addr)};
}

expected<agent_ref> node_core::spawn_supervised(std::function<std::unique_ptr<agent>()> factory,
                                                std::string name, agent_options opts,
                                                const caf::strong_actor_ptr& supervisor,
                                                bool system) {
  if (!supervisor) return error{errc::transient, "no supervisor to start '" + name + "' under"};
  if (!factory) return validation_error("agent '" + name + "': no factory");
  std::unique_ptr<agent> a;
  try {
    a = factory();
  } catch (const std::exception& ex) {
    return error{errc::internal, "agent factory of '" + name + "' threw: " + ex.what()};
  }
  auto spec = std::make_shared<sup::child_spec>();
  spec->id = name;
  spec->restart = opts.restart;
  spec->shutdown = opts.shutdown;
  spec->tenant = opts.tenant;
  spec->make_agent = std::move(factory);
  spec->system = system;
  spec->detached = opts.detached;
  spawn_options so;
  so.tenant = std::move(opts.tenant);
  so.system = system;
  so.detached = opts.detached;
  auto ref = spawn(std::move(a), std::move(name), std::move(so));
  if (!ref) return ref;
  caf::anon_send(caf::actor_cast<caf::actor>(supervisor), sup::detail::adopt_atom::value,
                 sup::detail::spec_ptr{std::move(spec)}, caf::strong_actor_ptr{ref->ctrl()});
  return ref;
}

std::optional<std::uint64_t> node_core::crash_log_slot() {
  constexpr double k_per_second = 50;
  std::lock_guard guard{crash_log_mtx_};
  auto t = svc.clk->monotonic();
  crash_log_tokens_ =
      std::min(k_per_second,
               crash_log_tokens_
                   + std::chrono::duration<double>(t - crash_log_refill_).count() * k_per_second);
  crash_log_refill_ = t;
  if (crash_log_tokens_ < 1) {
    ++crash_log_suppressed_;
    return std::nullopt;
  }
  crash_log_tokens_ -= 1;
  return std::exchange(crash_log_suppressed_, 0);
}

const agent_metric_handles& node_core::handles(const std::string& tenant, const std::string& kind) {
  auto key = tenant + '\x1f' + kind;
  {
    std::shared_lock guard{handles_mtx_};
    if (auto it = handles_.find(key); it != handles_.end()) return *it->second;
  }
  auto h = std::make_unique<agent_metric_handles>();
  h->handled = metrics->agent_messages(tenant, kind, k_handled);
  h->rejected = metrics->agent_messages(tenant, kind, k_rejected);
  h->failed = metrics->agent_messages(tenant, kind, k_failed);
  h->sent = metrics->agent_messages(tenant, kind, k_sent);
  h->ask_duration = metrics->ask_duration(kind);
  std::unique_lock guard{handles_mtx_};
  auto [it, inserted] = handles_.try_emplace(std::move(key), std::move(h));
  return *it->second;
}

expected<agent_ref> node_core::lookup(const address& where) const {
  if (where.node.empty() || where.node == node_name) return lookup(where.name);
  if (!remote)
    return not_found_error("no route from node '" + node_name + "' to node '" + where.node
                           + "' (for agent '" + where.name + "')");
  return remote(where);
}

namespace {
/// The kind of a virtual name `Kind/id` (both parts non-empty), or "" for any other name.
std::string_view virtual_kind(std::string_view name) {
  auto slash = name.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == name.size()) return {};
  return name.substr(0, slash);
}
} // namespace

status node_core::set_virtual_router(virtual_routing r) {
  for (const auto& k : r.kinds)
    if (k.empty() || k.find('/') != std::string::npos)
      return validation_error("virtual kind '" + k + "' (router '" + r.router
                              + "'): must be non-empty and hold no '/'");
  std::unique_lock guard{routing_mtx_};
  auto next = std::make_shared<std::vector<virtual_routing>>();
  if (routing_)
    for (const auto& o : *routing_) {
      if (o.router == r.router) continue; // replaced by this claim
      if (registry.find(o.router) != o.actor) continue; // a router that is gone
      for (const auto& k : r.kinds)
        if (std::find(o.kinds.begin(), o.kinds.end(), k) != o.kinds.end())
          return error{errc::conflict, "node '" + node_name + "': agent '" + o.router
                                           + "' routes virtual kind '" + k + "' already"};
      next->push_back(o);
    }
  next->push_back(std::move(r));
  routing_ = std::move(next);
  return {};
}

void node_core::clear_virtual_router(const caf::actor_control_block* actor) {
  std::unique_lock guard{routing_mtx_};
  if (!routing_) return;
  auto next = std::make_shared<std::vector<virtual_routing>>();
  for (const auto& o : *routing_)
    if (o.actor.get() != actor) next->push_back(o);
  if (next->empty())
    routing_.reset();
  else
    routing_ = std::move(next);
}

expected<agent_ref> node_core::lookup(std::string_view name) const {
  if (auto kind = virtual_kind(name); !kind.empty()) {
    std::shared_ptr<const std::vector<virtual_routing>> r;
    {
      std::shared_lock guard{routing_mtx_};
      r = routing_;
    }
    if (r)
      for (const auto& o : *r)
        if (std::find(o.kinds.begin(), o.kinds.end(), kind) != o.kinds.end())
          return agent_ref{o.actor.get(), address{node_name, std::string{name}}};
    if (r) {
      auto found = lookup_registered(name);
      if (found) return found;
      return not_found_error("no virtual agent kind '" + std::string{kind} + "' on node '"
                             + node_name + "' (and no agent named '" + std::string{name} + "')");
    }
  }
  return lookup_registered(name);
}

expected<agent_ref> node_core::lookup_registered(std::string_view name) const {
  auto ptr = registry.find(name);
  if (!ptr)
    return not_found_error("no agent named '" + std::string{name} + "' on node '" + node_name
                           + "'");
  return agent_ref{ptr.get(), address{node_name, std::string{name}}};
}

namespace {
template <std::size_t N>
void fill_random(std::array<std::uint8_t, N>& out, af::rng& r) {
  for (std::size_t i = 0; i < N; i += 8) {
    auto w = r.next_u64();
    for (std::size_t j = 0; j < 8 && i + j < N; ++j)
      out[i + j] = static_cast<std::uint8_t>(w >> (8 * j));
  }
}
} // namespace

envelope node_core::make_envelope(const address& from, const address& to,
                                  std::shared_ptr<const google::protobuf::Message> payload,
                                  const envelope* cause, std::uint64_t lamport,
                                  const std::string& tenant, af::rng& r) {
  envelope_fields f;
  f.message_id = svc.ids->next();
  f.tenant = tenant;
  if (cause != nullptr) {
    f.trace.trace_id = cause->trace().trace_id;
    f.trace.parent_span_id = cause->trace().span_id;
    f.trace.flags = cause->trace().flags;
    f.correlation_id =
        cause->correlation_id().is_nil() ? cause->message_id() : cause->correlation_id();
    f.causation_id = cause->message_id();
  } else {
    fill_random(f.trace.trace_id, r);
    f.trace.flags = 1; // sampled
  }
  fill_random(f.trace.span_id, r);
  f.sender = from;
  f.receiver = to;
  f.payload = std::move(payload);
  f.logical_ts = lamport;
  return envelope::make(std::move(f));
}

envelope node_core::make_reply(const address& from, const envelope& request,
                               std::shared_ptr<const google::protobuf::Message> payload,
                               af::rng& r) {
  return make_envelope(from, request.sender(), std::move(payload), &request,
                       request.logical_ts() + 1, request.tenant(), r);
}

// --- payload helpers -----------------------------------------------------------------------

std::shared_ptr<const google::protobuf::Message> error_payload(const error& e) {
  auto m = std::make_shared<v1::Error>();
  m->set_kind(std::string{to_string(e.code())});
  m->set_message(e.message());
  return m;
}

std::shared_ptr<const google::protobuf::Message> empty_payload() {
  static const auto inst = std::make_shared<const google::protobuf::Empty>();
  return inst;
}

bool error_from_envelope(const envelope& e, error& out) {
  const auto* p = e.payload_as<v1::Error>();
  if (p == nullptr) return false;
  errc code = errc::internal;
  if (!from_string(p->kind(), code)) code = errc::internal;
  out = error{code, p->message()};
  return true;
}

} // namespace af::detail

// --- agent_ref and context -----------------------------------------------------------------

namespace af {

agent_ref::agent_ref(caf::actor_control_block* ctrl, address addr) noexcept
    : ctrl_(ctrl), addr_(std::move(addr)) {
  if (ctrl_ != nullptr) intrusive_ptr_add_ref(ctrl_);
}

agent_ref::agent_ref(const agent_ref& other) noexcept : ctrl_(other.ctrl_), addr_(other.addr_) {
  if (ctrl_ != nullptr) intrusive_ptr_add_ref(ctrl_);
}

agent_ref::agent_ref(agent_ref&& other) noexcept
    : ctrl_(std::exchange(other.ctrl_, nullptr)), addr_(std::move(other.addr_)) {}

agent_ref& agent_ref::operator=(agent_ref other) noexcept {
  std::swap(ctrl_, other.ctrl_);
  std::swap(addr_, other.addr_);
  return *this;
}

agent_ref::~agent_ref() {
  if (ctrl_ != nullptr) intrusive_ptr_release(ctrl_);
}

const address& context::self() const { return host_->addr(); }
const std::string& context::kind() const { return host_->kind(); }
agent_ref context::self_ref() const { return agent_ref{host_->ctrl(), host_->addr()}; }
time_point context::now() const { return host_->core().svc.clk->now(); }
const af::clock& context::clock() const { return *host_->core().svc.clk; }
duration context::monotonic() const { return host_->core().svc.clk->monotonic(); }
af::rng& context::rng() { return host_->agent_rng(); }
ulid context::next_id() { return host_->core().svc.ids->next(); }
af::metrics& context::metrics() const { return *host_->core().metrics; }
const envelope* context::current() const { return host_->current(); }
af::node& context::this_node() const { return *host_->core().owner; }
bool context::threads_allowed() const {
  return !host_->core().cooperative && host_->core().owner != nullptr;
}
duration context::default_timeout() const { return host_->core().ask_timeout; }

const std::string& context::tenant() const {
  const auto* cur = host_->current();
  return cur != nullptr ? cur->tenant() : host_->own_tenant();
}

logger context::log() const {
  const auto& base = host_->core().log;
  log_context lc;
  lc.tenant = tenant();
  if (const auto* cur = host_->current()) {
    lc.trace_id = cur->trace().trace_id_hex();
    lc.span_id = cur->trace().span_id_hex();
    lc.message_id = cur->message_id().to_string();
    if (!cur->correlation_id().is_nil()) lc.correlation_id = cur->correlation_id().to_string();
    if (!cur->causation_id().is_nil()) lc.causation_id = cur->causation_id().to_string();
  }
  return base.with(std::move(lc));
}

expected<agent_ref> context::lookup(std::string_view name) const {
  return host_->core().lookup(name);
}

expected<agent_ref> context::lookup(const address& where) const {
  return host_->core().lookup(where);
}

expected<agent_ref> context::lookup_registered(std::string_view name) const {
  return host_->core().lookup_registered(name);
}

status context::route_kinds(std::vector<std::string> kinds) {
  if (!host_->handler_table_router())
    return validation_error("agent '" + self().name
                            + "' declares no router (handlers::route): it cannot route kinds");
  detail::node_core::virtual_routing r;
  r.router = self().name;
  r.actor = caf::strong_actor_ptr{host_->ctrl()};
  r.kinds = std::move(kinds);
  return host_->core().set_virtual_router(std::move(r));
}

void context::tell_erased(const agent_ref& to,
                          std::shared_ptr<const google::protobuf::Message> msg) {
  host_->tell(to, std::move(msg));
}

void context::schedule_erased(duration delay,
                              std::shared_ptr<const google::protobuf::Message> msg) {
  host_->schedule(delay, std::move(msg));
}

void context::ask_erased(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg,
                         duration timeout, detail::reply_callback cb) {
  host_->ask(to, std::move(msg), timeout, std::move(cb));
}

expected<agent_ref> context::spawn_erased(std::function<std::unique_ptr<agent>()> factory,
                                          std::string name, agent_options opts) {
  return host_->spawn_child(std::move(factory), std::move(name), std::move(opts));
}

void context::stop() { host_->stop_self(caf::exit_reason::normal); }

void context::fail(error reason) { host_->stop_self(sup::detail::fail_reason(reason)); }

} // namespace af
