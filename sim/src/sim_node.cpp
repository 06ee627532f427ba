// A simulated node (world.hpp): the runtime's node parts (node_core, the supervision tree) on
// the simulation's actor system, with virtual services, a store that survives crashes, and a
// route to other nodes through the simulated network.
#include "af/metrics.hpp"
#include "af/node.hpp"
#include "af/sup/supervisor.hpp"
#include "caf_glue.hpp"
#include "cluster_book.hpp"
#include "exec_owner_book.hpp"
#include "raft_book.hpp"
#include "exit_reason.hpp"
#include "supervisor_actor.hpp"
#include "world.hpp"

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

namespace af::sim::detail {

namespace {
/// 2026-01-01T00:00:00Z: every run starts its clocks here, so ids and timestamps depend only on
/// the seed.
constexpr auto k_epoch = time_point{std::chrono::seconds{1'767'225'600}};
} // namespace

sim_node::sim_node(world& w, std::string name)
    : world_(w), name_(std::move(name)),
      clock_(std::make_shared<sim_clock>(w.caf_clock(), k_epoch)),
      metrics_(std::make_unique<af::metrics>(name_, AF_VERSION)),
      disk_(store::make_memory_backend({})) {}

sim_node::~sim_node() = default;

void sim_node::add_population_child(sup::child_spec c) {
  names_.push_back(c.id);
  population_.push_back(std::move(c));
}

status sim_node::start() {
  if (up_) return {};
  if (core_) past_.push_back(std::move(core_));
  ++incarnation_;
  auto core = std::make_unique<af::detail::node_core>();
  core->node_name = name_;
  core->svc.clk = clock_;
  core->svc.seed = world_.draw_seed();
  core->svc.random = std::make_shared<seeded_random_source>(core->svc.seed);
  core->svc.ids = std::make_shared<id_generator>(clock_, world_.draw_seed());
  if (const auto& sink = world_.log_sink()) {
    core->log = logger{sink->for_node(name_)};
  }
  core->metrics = metrics_.get();
  core->sys = &world_.system();
  core->observer = &world_.trace();
  core->cooperative = true;
  const auto net = world_.net_actor();
  core->remote = [net](const address& where) -> expected<agent_ref> {
    return agent_ref{caf::actor_cast<caf::actor_control_block*>(net), where};
  };
  core_ = std::move(core);
  if (auto* c = world_.cluster()) c->node_up(name_);
  if (auto* r = world_.raft()) r->node_up(name_);

  // root (rest_for_one) -> [af.sup.system -> [journal, audit, exec], sim.population ->
  // [the population], af.sup.agents (dynamic)]
  sup::flags flat;
  flat.how = sup::strategy::rest_for_one;
  flat.limits = {10, std::chrono::seconds(10)};
  sup::supervisor_spec system{std::string{k_system_supervisor}, flat, world_.system_services(*this)};
  for (auto& c : system.children)
    c.system = true;
  sup::flags pop_flags;
  pop_flags.how = sup::strategy::one_for_one;
  pop_flags.limits = {50, std::chrono::seconds(1)};
  sup::supervisor_spec pop{"sim.population", pop_flags, population_};
  sup::flags dyn;
  dyn.how = sup::strategy::dynamic;
  sup::supervisor_spec agents{std::string{k_agents_supervisor}, dyn, {}};
  auto root = std::make_shared<sup::supervisor_spec>();
  root->name = std::string{k_root_supervisor};
  root->policy = flat;
  for (auto* s : {&system, &pop, &agents}) {
    auto c = sup::supervisor_child(std::move(*s));
    c.system = true;
    root->children.push_back(std::move(c));
  }
  auto r = sup::detail::spawn_supervisor(*core_, std::move(root), true);
  if (!r) return r.error();
  root_ = *r;
  up_ = true;
  // A root that gives up ends the node, as a node process exits; the simulator restarts it
  // like a process supervisor (systemd) would.
  to_actor(root_)->attach_functor(
      [w = &world_, self = this, inc = incarnation_](const caf::error& reason) {
        w->on_root_exit(*self, inc, sup::detail::classify(reason).text);
      });
  return {};
}

void sim_node::crash() {
  if (!up_) return;
  up_ = false;
  if (auto* c = world_.cluster()) c->node_down(name_, true);
  if (auto* r = world_.raft()) r->node_down(name_, true);
  if (auto* o = world_.exec_owners()) o->node_down(name_);
  // Every actor of this incarnation dies at once, as a process would: no stop hooks in order,
  // no chance to flush. What the store had not committed is gone.
  for (auto& [name, ptr] : core_->registry.snapshot())
    caf::anon_send_exit(ptr, caf::exit_reason::kill);
  root_ = agent_ref{};
  disk_->crash();
}

std::size_t sim_node::zombies() const {
  std::size_t n = 0;
  for (const auto& c : past_)
    n += c->registry.size();
  if (!up_ && core_) n += core_->registry.size();
  return n;
}

} // namespace af::sim::detail
