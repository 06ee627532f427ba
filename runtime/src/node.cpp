#include "af/node.hpp"

#include "af/host_port.hpp"
#include "af/sup/spec.hpp"
#include "af/sup/supervisor.hpp"
#include "af/v1/runtime.pb.h"
#include "af/v1/supervision.pb.h"
#include "agent_host.hpp"
#include "caf_glue.hpp"
#include "caf_scheduler.hpp"
#include "exit_reason.hpp"
#include "supervisor_actor.hpp"
#include "transport.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <algorithm>
#include <condition_variable>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace af {

namespace {

/// The node's control agent: answers `af node status` and flag reloads, and (as the node's
/// gateway) forwards envelopes addressed to other local agents.
class control_agent : public agent_base<control_agent> {
public:
  static void define(handlers<control_agent>& h) {
    h.kind("af.control")
        .on(&control_agent::on_status)
        .on(&control_agent::on_reload)
        .on(&control_agent::on_tree);
  }

  /// `af node tree`: the root supervisor collects the tree from its subtrees.
  void on_tree(context& ctx, const v1::TreeRequest& req, responder<v1::SupervisorTree> rp) {
    ctx.ask<v1::SupervisorTree>(k_root_supervisor, req, std::chrono::seconds(10),
                                [rp](expected<v1::SupervisorTree> t) mutable {
                                  if (t)
                                    rp.reply(std::move(*t));
                                  else
                                    rp.fail(std::move(t).error());
                                });
  }

  expected<v1::NodeStatus> on_status(context& ctx, const v1::NodeStatusRequest&) {
    return ctx.this_node().node_status();
  }

  expected<v1::ReloadFlagsResult> on_reload(context& ctx, const v1::ReloadFlagsRequest&) {
    auto& n = ctx.this_node();
    if (auto r = n.reload_features(); !r) return r.error();
    v1::ReloadFlagsResult out;
    for (const auto& [k, v] : n.cfg().features().snapshot_strings())
      (*out.mutable_features())[k] = v;
    return out;
  }
};

std::shared_ptr<log_backend> backend_from_config(const config& cfg, std::string& err) {
  log_options lo;
  auto level = parse_log_level(cfg.get_string("log.level"));
  lo.level = level ? *level : log_level::info;
  lo.format = cfg.get_string("log.format");
  lo.file = cfg.get_string("log.file");
  lo.node = cfg.get_string("node.name");
  auto b = make_log_backend(lo);
  if (!b) {
    err = b.error().to_string();
    return nullptr;
  }
  return *b;
}

/// CAF's configuration of a node's actor system, carrying a way back to the node for code that
/// only has the actor system (the envelope deserializer).
struct node_caf_config : caf::actor_system_config {
  detail::node_core* core = nullptr;
};

std::string_view rejection_reason(const error& e) {
  const auto& m = e.message();
  if (m.find("exceeds the limit") != std::string::npos) return reject_reason::oversized;
  if (m.find("unknown payload type") != std::string::npos) return reject_reason::unknown_type;
  if (m.starts_with("envelope.hash")) return reject_reason::hash_mismatch;
  return reject_reason::malformed;
}

} // namespace

namespace {
detail::node_core* core_of(caf::execution_unit* ctx) noexcept {
  if (ctx == nullptr) return nullptr;
  const auto* cfg = dynamic_cast<const node_caf_config*>(&ctx->system().config());
  return cfg != nullptr ? cfg->core : nullptr;
}
} // namespace

decode_options wire_decode_options(caf::execution_unit* ctx) noexcept {
  const auto* core = core_of(ctx);
  return core != nullptr ? core->decode : decode_options{};
}

void report_rejected_envelope(caf::execution_unit* ctx, const error& e) noexcept {
  auto* core = core_of(ctx);
  if (core == nullptr) return;
  core->metrics->envelope_rejected(rejection_reason(e)).inc();
  core->log.warn("envelope_rejected", e.to_string(),
                 {{"reason", std::string{rejection_reason(e)}}});
}

struct node::impl {
  af::config cfg = af::config::defaults();
  std::unique_ptr<node_caf_config> caf_cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<af::metrics> metrics;
  detail::node_core core;
  agent_ref control;
  agent_ref root;
  std::uint16_t listen_port = 0;
  std::shared_ptr<detail::transport_status> transport;
  duration started{};
  bool stopped = false;
  // Set by the root supervisor's exit (on a CAF thread), read by wait_stopped/failure.
  mutable std::mutex exit_mtx;
  std::condition_variable exit_cv;
  bool root_exited = false;
  std::optional<error> failure;
};

namespace {

/// Caps glibc's malloc arenas (process-wide; the last node started sets it). Elsewhere, and
/// under sanitizers whose allocator ignores it, a no-op.
void set_malloc_arena_max(std::int64_t arenas) {
#if defined(__GLIBC__)
  (void)mallopt(M_ARENA_MAX, static_cast<int>(arenas));
#else
  (void)arenas;
#endif
}

duration ms(const config& cfg, const std::string& key) {
  return std::chrono::milliseconds(cfg.get_int(key));
}

sup::intensity intensity_of(const config& cfg, const std::string& prefix) {
  return {static_cast<std::uint32_t>(cfg.get_int(prefix + ".max_restarts")),
          ms(cfg, prefix + ".period_ms")};
}

/// The node's tree: root (rest_for_one) -> [system services (rest_for_one) -> [af.control],
/// agents (dynamic)]. Shutdown runs in reverse: agents first, the control endpoint last.
std::shared_ptr<const sup::supervisor_spec> node_tree_spec(const config& cfg,
                                                           std::vector<sup::child_spec> services) {
  sup::backoff delay{ms(cfg, "supervision.backoff.base_ms"), ms(cfg, "supervision.backoff.cap_ms"),
                     ms(cfg, "supervision.backoff.reset_ms")};
  sup::supervisor_spec system;
  system.name = std::string{k_system_supervisor};
  system.policy = {sup::strategy::rest_for_one, intensity_of(cfg, "supervision.system"), delay};
  for (auto& svc : services) {
    svc.system = true;
    system.children.push_back(std::move(svc));
  }
  auto ctl = sup::agent_child<control_agent>(std::string{k_control_agent});
  ctl.system = true;
  system.children.push_back(std::move(ctl));

  sup::supervisor_spec agents;
  agents.name = std::string{k_agents_supervisor};
  agents.policy = {sup::strategy::dynamic, intensity_of(cfg, "supervision.agents"), delay};

  auto root = std::make_shared<sup::supervisor_spec>();
  root->name = std::string{k_root_supervisor};
  root->policy = {sup::strategy::rest_for_one, intensity_of(cfg, "supervision.root"), delay};
  for (auto* s : {&system, &agents}) {
    auto c = sup::supervisor_child(std::move(*s));
    c.system = true;
    root->children.push_back(std::move(c));
  }
  return root;
}

} // namespace

expected<std::unique_ptr<node>> node::start(options opt) {
  auto p = std::make_unique<impl>();
  p->cfg = std::move(opt.cfg);
  const auto& cfg = p->cfg;
  auto& core = p->core;
  core.node_name = cfg.get_string("node.name");
  core.svc = opt.svc ? std::move(*opt.svc) : services::real(cfg.get_uint("rng.seed"));
  core.ask_timeout = std::chrono::milliseconds(cfg.get_int("agent.ask_timeout_ms"));
  core.decode.max_payload_bytes =
      static_cast<std::size_t>(cfg.get_int("envelope.max_payload_bytes"));
  // The cluster transport: options checked (secret read, TLS files loaded) before anything runs.
  auto transport_opts = detail::transport_options_from(cfg);
  if (!transport_opts) return transport_opts.error();

  auto backend = opt.log;
  if (!backend) {
    std::string err;
    backend = backend_from_config(cfg, err);
    if (!backend) return validation_error(err);
  }
  core.log = logger{backend};
  p->metrics = std::make_unique<af::metrics>(core.node_name, AF_VERSION);
  core.metrics = p->metrics.get();

  // Before the scheduler's threads exist: with one arena per thread, memory that one worker
  // frees is reusable only by threads of its arena, and each arena grows into fresh pages of
  // its own (page faults are dear on a VM). One shared arena halved the page faults of a
  // 10,000-step chain; its effect on time is not settled (docs/architecture.md, "Memory
  // allocator"), so it is off by default.
  if (const auto arenas = cfg.get_int("malloc.arena_max"); arenas > 0) set_malloc_arena_max(arenas);

  // CAF: scheduler chosen on purpose for 2 cores (docs/architecture.md, "Scheduler").
  p->caf_cfg = std::make_unique<node_caf_config>();
  auto& cc = *p->caf_cfg;
  cc.core = &core;
  cc.set("scheduler.policy", caf::atom_from_string(cfg.get_string("scheduler.policy")));
  cc.set("scheduler.max-threads", static_cast<std::size_t>(cfg.get_int("scheduler.threads")));
  // An idle work-stealing worker first polls, then polls with short sleeps (CAF: 500 polls, 50 us
  // each), then waits on a signal that new work from a foreign thread (the middleman, a timer,
  // node::ask) raises. Work arriving during those sleeps waits out the sleep plus the kernel's
  // timer slack: 60-100 us on each hop from a foreign thread. Going to the signalled wait after
  // a few polls cut a thread -> agent round trip from 121 us to 19 us here (docs/architecture.md).
  cc.set("work-stealing.moderate-poll-attempts",
         static_cast<std::size_t>(cfg.get_int("scheduler.idle_polls")));
  cc.set("work-stealing.moderate-sleep-duration",
         caf::timespan{std::chrono::microseconds(cfg.get_int("scheduler.idle_poll_sleep_us"))});
  if (cfg.get_string("scheduler.policy") == "stealing") detail::use_work_stealing_scheduler(cc);
  cc.set("middleman.workers", static_cast<std::size_t>(0));
  cc.load<caf::io::middleman>();
  cc.add_message_type<envelope>("af.envelope");
  p->sys = std::make_unique<caf::actor_system>(cc);
  core.sys = p->sys.get();
  p->started = core.svc.clk->monotonic();

  auto self = std::unique_ptr<node>(new node(std::move(p)));
  auto* im = self->impl_.get();
  im->core.owner = self.get();
  if (*transport_opts) {
    im->transport = std::make_shared<detail::transport_status>();
    // Before the cluster services (af.cluster.*: membership asks it for its endpoint), after
    // the others: under rest_for_one a transport restart then restarts only what uses it.
    auto at =
        std::find_if(opt.system_services.begin(), opt.system_services.end(),
                     [](const sup::child_spec& c) { return c.id.starts_with("af.cluster."); });
    opt.system_services.insert(
        at, detail::transport_child(im->core, std::move(**transport_opts), im->transport));
    // Other nodes' agents are reached through the transport (whichever instance runs now).
    auto* core_ptr = &im->core;
    im->core.remote = [core_ptr](const address& where) -> expected<agent_ref> {
      auto t = core_ptr->registry.find(k_cluster_transport);
      if (!t)
        return error{errc::transient, "node '" + core_ptr->node_name
                                          + "': the cluster transport is restarting or stopped"};
      return agent_ref{t.get(), where};
    };
  }
  auto root = sup::detail::spawn_supervisor(
      im->core, node_tree_spec(cfg, std::move(opt.system_services)), true);
  if (!root) return root.error();
  im->root = *root;
  // When the root goes, the node is done; if it gave up (escalation), the node has failed.
  to_actor(im->root)->attach_functor([im](const caf::error& reason) {
    std::lock_guard guard{im->exit_mtx};
    im->root_exited = true;
    if (sup::detail::is_escalation(reason)) {
      auto text = sup::detail::classify(reason).text;
      im->failure = error{errc::internal, "root supervisor gave up: " + text};
      im->core.log.error("node_failed",
                         "the root supervisor exceeded its restart intensity; the node stops",
                         {{"reason", text}});
    }
    im->exit_cv.notify_all();
  });
  // A transport that cannot listen stops the tree at once: report that, not its consequences.
  if (im->transport) {
    std::unique_lock g{im->transport->mtx};
    im->transport->cv.wait_for(g, std::chrono::seconds(30), [im] {
      return im->transport->published || im->transport->failed.has_value();
    });
    if (im->transport->failed) return *im->transport->failed;
    if (!im->transport->published)
      return error{errc::internal, "node '" + im->core.node_name
                                       + "': the cluster transport did not start listening"};
  }
  // Readiness: the tree answers once every supervisor has started its children.
  if (auto t = self->tree(1, std::chrono::seconds(30)); !t)
    return error{errc::internal,
                 "node '" + im->core.node_name
                     + "': supervision tree did not start: " + t.error().to_string()};
  auto ctl = im->core.lookup(k_control_agent);
  if (!ctl) return ctl.error();
  im->control = *ctl;

  if (auto listen = cfg.get_string("node.listen"); !listen.empty())
    if (auto r = self->listen(listen); !r) return r.error();
  if (auto m = cfg.get_string("metrics.listen"); !m.empty())
    if (auto r = self->serve_metrics(m); !r) return r.error();
  self->impl_->core.log.info("node_started", "node " + self->name() + " started",
                             {{"scheduler", cfg.get_string("scheduler.policy")},
                              {"threads", cfg.get_int("scheduler.threads")},
                              {"listen_port", self->impl_->listen_port},
                              {"metrics_port", self->impl_->metrics->exposer_port()},
                              {"seed", self->impl_->core.svc.seed}});
  return self;
}

node::node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

node::~node() { shutdown(); }

const std::string& node::name() const { return impl_->core.node_name; }
const af::config& node::cfg() const { return impl_->cfg; }
const af::services& node::svc() const { return impl_->core.svc; }
const logger& node::log() const { return impl_->core.log; }
af::metrics& node::metrics() { return *impl_->metrics; }
std::uint16_t node::listen_port() const { return impl_->listen_port; }

std::uint16_t node::cluster_port() const {
  if (!impl_->transport) return 0;
  std::lock_guard g{impl_->transport->mtx};
  return impl_->transport->port;
}

duration node::uptime() const { return impl_->core.svc.clk->monotonic() - impl_->started; }

detail::node_core& node::core() { return impl_->core; }

namespace {
expected<caf::strong_actor_ptr> agents_supervisor(detail::node_core& core) {
  auto sup = core.registry.find(k_agents_supervisor);
  if (!sup)
    return error{errc::transient,
                 "node '" + core.node_name + "': the agents supervisor is restarting or stopped"};
  return sup;
}
} // namespace

expected<agent_ref> node::spawn_agent(std::function<std::unique_ptr<agent>()> factory,
                                      std::string name, agent_options opts) {
  if (impl_->stopped) return error{errc::transient, "node '" + this->name() + "' is shut down"};
  auto sup = agents_supervisor(impl_->core);
  if (!sup) return sup.error();
  return impl_->core.spawn_supervised(std::move(factory), std::move(name), std::move(opts), *sup);
}

expected<agent_ref> node::spawn_agent(std::unique_ptr<agent> a, std::string name,
                                      std::string tenant) {
  // A one-shot factory: the instance can be made once, so the child is temporary.
  auto shared = std::make_shared<std::unique_ptr<agent>>(std::move(a));
  agent_options opts;
  opts.tenant = std::move(tenant);
  opts.restart = sup::restart_policy::temporary;
  return spawn_agent([shared]() { return std::move(*shared); }, std::move(name), std::move(opts));
}

expected<agent_ref> node::start_child(sup::child_spec spec) {
  if (impl_->stopped) return error{errc::transient, "node '" + this->name() + "' is shut down"};
  auto sup = lookup(k_agents_supervisor);
  if (!sup)
    return error{errc::transient,
                 "node '" + name() + "': the agents supervisor is restarting or stopped"};
  return sup::supervisor_ref{*this, *sup}.start_child(std::move(spec));
}

expected<agent_ref> node::lookup(std::string_view name) const { return impl_->core.lookup(name); }

std::size_t node::agent_count() const {
  return impl_->core.registry.count_except("af.", sup::detail::k_supervisor_kind);
}

std::size_t node::actor_count() const { return impl_->sys->registry().running(); }

expected<v1::SupervisorTree> node::tree(std::uint32_t max_children, duration timeout) {
  v1::TreeRequest req;
  req.set_max_children(max_children);
  return ask<v1::SupervisorTree>(k_root_supervisor, req, timeout);
}

std::optional<error> node::failure() const {
  std::lock_guard guard{impl_->exit_mtx};
  return impl_->failure;
}

bool node::wait_stopped(duration timeout) {
  std::unique_lock guard{impl_->exit_mtx};
  return impl_->exit_cv.wait_for(guard, timeout, [this] { return impl_->root_exited; });
}

status node::stop_agent(const agent_ref& ref) {
  if (!ref.valid()) return validation_error("stop_agent: invalid agent reference");
  auto actor = to_actor(ref);
  caf::scoped_actor self{*impl_->sys};
  self->monitor(actor);
  self->send_exit(actor, caf::exit_reason::user_shutdown);
  bool done = false;
  self->receive([&](const caf::down_msg&) { done = true; },
                caf::after(std::chrono::seconds(10)) >> [&] {});
  if (!done) return error{errc::timeout, "agent '" + ref.name() + "' did not stop within 10 s"};
  return {};
}

namespace {
address edge_address(const std::string& node_name) { return {node_name, "af.edge"}; }
} // namespace

void node::tell_erased(const agent_ref& to, std::shared_ptr<const google::protobuf::Message> msg) {
  auto& core = impl_->core;
  af::rng r{core.svc.random->next_u64()};
  auto env = core.make_envelope(edge_address(core.node_name), to.addr(), std::move(msg), nullptr, 0,
                                core.default_tenant, r);
  if ((!to.addr().node.empty() && to.addr().node != core.node_name)
      || to.addr().name == k_cluster_transport) {
    // The cluster transport refuses envelopes without a local sender (only this node's actors
    // may hand it envelopes).
    caf::scoped_actor self{*impl_->sys};
    self->send(to_actor(to), std::move(env));
    return;
  }
  caf::anon_send(to_actor(to), std::move(env));
}

expected<envelope> node::ask_erased(const agent_ref& to,
                                    std::shared_ptr<const google::protobuf::Message> msg,
                                    duration timeout, std::string tenant) {
  auto& core = impl_->core;
  af::rng r{core.svc.random->next_u64()};
  auto env = core.make_envelope(edge_address(core.node_name), to.addr(), std::move(msg), nullptr, 0,
                                tenant.empty() ? core.default_tenant : tenant, r);
  caf::scoped_actor self{*impl_->sys};
  std::optional<expected<envelope>> result;
  self->request(to_actor(to), timeout, std::move(env))
      .receive([&](const envelope& reply) { result.emplace(reply); },
               [&](const caf::error& err) {
                 result.emplace(ask_error(err, to.addr().to_string(), timeout));
               });
  return std::move(*result);
}

expected<std::uint16_t> node::listen(const std::string& text) {
  auto hp = parse_host_port(text, "node.listen");
  if (!hp) return hp.error();
  auto ctl = to_actor(impl_->control);
  auto port = impl_->sys->middleman().publish(ctl, hp->port, hp->host.c_str(), true);
  if (!port)
    return error{errc::transient, "node.listen: cannot listen on " + text
                                      + " (address in use, or not an address of this machine?): "
                                      + impl_->sys->render(port.error())};
  impl_->listen_port = *port;
  impl_->core.log.info("control_listening", "control endpoint published",
                       {{"address", hp->host + ":" + std::to_string(*port)}});
  return *port;
}

expected<std::uint16_t> node::serve_metrics(const std::string& host_port) {
  auto r = impl_->metrics->start_exposer(host_port);
  if (r)
    impl_->core.log.info("metrics_listening", "metrics exposer started",
                         {{"address", host_port}, {"port", *r}});
  return r;
}

status node::reload_features() {
  const auto& file = impl_->cfg.file();
  if (file.empty())
    return validation_error("features: the node was started without a configuration file");
  auto r = impl_->cfg.features_ptr()->reload_from_file(file, config::process_environment());
  if (!r) {
    impl_->core.log.error("features_reload_failed", r.error().to_string());
    return r;
  }
  impl_->core.log.info("features_reloaded", "feature flags reloaded",
                       {{"version", impl_->cfg.features().version()}});
  return {};
}

v1::NodeStatus node::node_status() const {
  v1::NodeStatus s;
  s.set_name(name());
  s.set_version(AF_VERSION);
  s.set_uptime_seconds(std::chrono::duration<double>(uptime()).count());
  s.set_agent_count(agent_count());
  if (impl_->listen_port != 0) s.set_listen(std::to_string(impl_->listen_port));
  if (auto mp = impl_->metrics->exposer_port(); mp != 0) s.set_metrics(std::to_string(mp));
  s.set_scheduler_policy(impl_->cfg.get_string("scheduler.policy"));
  s.set_scheduler_threads(static_cast<std::uint32_t>(impl_->cfg.get_int("scheduler.threads")));
  for (const auto& [k, v] : impl_->cfg.features().snapshot_strings())
    (*s.mutable_features())[k] = v;
  return s;
}

void node::shutdown() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  auto& core = impl_->core;
  core.log.info("node_stopping", "stopping the supervision tree",
                {{"agents", agent_count()}, {"actors", actor_count()}});
  // The root stops its children in reverse start order (agents, then system services), each
  // within its shutdown timeout; whatever is left after the node's own deadline is killed.
  if (impl_->root.valid())
    caf::anon_send_exit(to_actor(impl_->root), caf::exit_reason::user_shutdown);
  if (!wait_stopped(ms(impl_->cfg, "supervision.shutdown_timeout_ms"))) {
    core.log.error("node_shutdown_timeout",
                   "the supervision tree did not stop in time; killing what is left",
                   {{"actors", actor_count()}});
    caf::anon_send_exit(to_actor(impl_->root), caf::exit_reason::kill);
  }
  // Agents' own children supervisors are not children of the tree (an agent owns its): they
  // were told to stop when their agent stopped. Give them a moment, then kill what is left.
  if (auto left = core.registry.snapshot(); !left.empty()) {
    caf::scoped_actor self{*impl_->sys};
    for (auto& [name, ptr] : left)
      self->monitor(ptr);
    std::size_t downs = 0;
    bool timed_out = false;
    while (downs < left.size() && !timed_out)
      self->receive([&](const caf::down_msg&) { ++downs; },
                    caf::after(std::chrono::seconds(5)) >> [&] { timed_out = true; });
    for (auto& [name, ptr] : core.registry.snapshot()) {
      core.log.warn("node_shutdown_kill", "killing '" + name + "' which outlived the tree");
      caf::anon_send_exit(ptr, caf::exit_reason::kill);
    }
  }
  impl_->control = agent_ref{};
  impl_->root = agent_ref{};
  impl_->sys->await_all_actors_done();
  impl_->metrics->stop_exposer();
  core.log.info("node_stopped", "node " + core.node_name + " stopped");
  core.log.flush();
}

} // namespace af
