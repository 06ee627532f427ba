// The engine of one run (world.hpp): builds the nodes and populations, drives the test
// coordinator one message at a time in an order drawn from the seed, jumps virtual time to the
// next timer when nothing can run, applies the faults, and reports.
#include "world.hpp"

#include "af/hash.hpp"
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"
#include "af/store/audit.hpp"
#include "af/store/journal.hpp"
#include "af/v1/exec.pb.h"
#include "af/v1/plan.pb.h"
#include "agent_host.hpp"
#include "caf_glue.hpp"
#include "cluster_book.hpp"
#include "exec_owner_book.hpp"
#include "kv_clients.hpp"
#include "raft_book.hpp"
#include "shared_store.hpp"
#include "sim_agents.hpp"
#include "virtual_agents.hpp"
#include "wall_clock.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace af::sim::detail {

namespace {

std::string fmt_time(duration d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3fs", std::chrono::duration<double>(d).count());
  return buf;
}

/// Forwards envelopes for other nodes to the network, and the network's own timers.
class network_actor : public caf::event_based_actor {
public:
  network_actor(caf::actor_config& cfg, network* net) : caf::event_based_actor(cfg), net_(net) {}
  caf::behavior make_behavior() override {
    return {
        [this](envelope& e) { net_->on_send(this, std::move(e)); },
        [this](deliver_atom, std::uint64_t id) { net_->on_deliver(this, id); },
    };
  }
  const char* name() const override { return "sim.network"; }

private:
  network* net_;
};

/// Applies each scheduled fault when its timer fires: faults happen in virtual time, between
/// two messages, like everything else.
class director_actor : public caf::event_based_actor {
public:
  director_actor(caf::actor_config& cfg, world* w) : caf::event_based_actor(cfg), world_(w) {}
  caf::behavior make_behavior() override {
    return {[this](fault_atom, std::uint64_t i) { world_->apply_fault(i); }};
  }
  const char* name() const override { return "sim.director"; }

private:
  world* world_;
};

/// Draws the times of a Poisson process with `per_minute` events per minute in [0, until).
std::vector<duration> poisson_times(af::rng& r, double per_minute, duration until) {
  std::vector<duration> out;
  if (per_minute <= 0) return out;
  const double mean_ns = 60e9 / per_minute;
  double t = 0;
  for (;;) {
    t += -std::log(1.0 - r.uniform01()) * mean_ns;
    if (t >= static_cast<double>(until.count()) || out.size() >= 100'000) break;
    out.emplace_back(static_cast<std::int64_t>(t));
  }
  return out;
}

} // namespace

// --- tracer -------------------------------------------------------------------------------------

tracer::tracer(const sim_clock& clock, const std::string& file)
    : clock_(clock), ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
  if (!file.empty()) file_ = std::make_unique<std::ofstream>(file, std::ios::trunc);
}

tracer::~tracer() { EVP_MD_CTX_free(ctx_); }

void tracer::delivered(const address& receiver, const envelope& e) {
  ++count_;
  const auto t = clock_.monotonic().count();
  // One record: len(node), len(name) (4 bytes each, so ("ab","c") and ("a","bc") differ), node,
  // name, the envelope hash, the virtual time in ns (8 bytes); all little-endian. Records are
  // buffered and hashed in large chunks: the digest is the same as record by record.
  auto put = [this](std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i)
      buf_.push_back(static_cast<char>(v >> (8 * i)));
  };
  put(receiver.node.size(), 4);
  put(receiver.name.size(), 4);
  buf_ += receiver.node;
  buf_ += receiver.name;
  const auto& h = e.hash();
  buf_.append(reinterpret_cast<const char*>(h.data()), h.size());
  put(static_cast<std::uint64_t>(t), 8);
  if (buf_.size() >= 16384) {
    EVP_DigestUpdate(ctx_, buf_.data(), buf_.size());
    buf_.clear();
  }
  if (file_) {
    nlohmann::json line{{"t_ns", t},
                        {"node", receiver.node},
                        {"to", receiver.name},
                        {"from", e.sender().to_string()},
                        {"type", e.payload_type_name()},
                        {"hash", e.hash_hex()}};
    *file_ << line.dump() << '\n';
  }
}

std::string tracer::hex() {
  if (result_.empty()) {
    EVP_DigestUpdate(ctx_, buf_.data(), buf_.size());
    buf_.clear();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, md, &n);
    static constexpr char k_hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; ++i) {
      result_ += k_hex[md[i] >> 4];
      result_ += k_hex[md[i] & 15];
    }
    if (file_) file_->flush();
  }
  return result_;
}

// --- world ---------------------------------------------------------------------------------------

world::world(const scenario& sc, const run_options& opts)
    : sc_(sc), opts_(opts), pick_(opts.seed ^ 0x9e3779b97f4a7c15ULL), seeds_(opts.seed),
      fault_rng_(opts.seed ^ 0x5851f42d4c957f2dULL), state_(std::make_unique<sim_state>()) {}

world::~world() {
  // Kill everything left and let the coordinator finish the exits before the system goes.
  for (auto& n : nodes_)
    n->crash();
  if (sys_) {
    if (net_actor_) caf::anon_send_exit(net_actor_, caf::exit_reason::kill);
    if (director_) caf::anon_send_exit(director_, caf::exit_reason::kill);
    net_actor_ = nullptr;
    director_ = nullptr;
    while (sched_->try_run_once()) {
    }
  }
  nodes_.clear();
  // Timers left in the test clock refer to dead actors; the system's destructor drops them.
  sys_.reset();
}

const caf::detail::test_actor_clock& world::caf_clock() const { return sched_->clock(); }

duration world::elapsed() const { return clock_->monotonic(); }

sim_node* world::find_node(std::string_view name) {
  for (auto& n : nodes_)
    if (n->name() == name) return n.get();
  return nullptr;
}

void world::note(std::string what) { timeline_.push_back(fmt_time(elapsed()) + " " + what); }

std::vector<sup::child_spec> world::system_services(sim_node& n) {
  std::vector<sup::child_spec> out;
  // Cluster membership (scenario `cluster:`): the `membership` profile runs nothing else.
  if (cluster_ && sc_.cluster.membership_only) {
    out.push_back(cluster_->service(n.name()));
    return out;
  }
  auto disk = n.disk();
  store::journal_options jo;
  // With `ownership:` the journal is one database every node reaches (PostgreSQL in a real
  // cluster): a node's crash loses nothing of it, and another node reads a dead node's
  // executions from it.
  jo.open = [jdisk = shared_disk_ ? shared_disk_ : disk]() -> expected<std::unique_ptr<store::backend>> {
    return std::unique_ptr<store::backend>{std::make_unique<shared_store>(jdisk)};
  };
  out.push_back(store::journal_child(std::move(jo)));
  store::audit_options ao;
  ao.open = [disk]() -> expected<std::unique_ptr<store::backend>> {
    return std::unique_ptr<store::backend>{std::make_unique<shared_store>(disk)};
  };
  out.push_back(store::audit_child(std::move(ao)));
  plan::exec_options eo;
  eo.agents = types_;
  eo.tools = opts_.tools ? opts_.tools : std::make_shared<tool::registry>();
  eo.journal_timeout = std::chrono::seconds(10);
  if (exec_owners_) {
    eo.ownership = sc_.ownership.options;
    eo.observer = exec_owners_;
  }
  out.push_back(plan::exec_child(std::move(eo)));
  if (cluster_) out.push_back(cluster_->service(n.name()));
  if (raft_ && raft_->member(n.name())) out.push_back(raft_->service(n.name()));
  if (virtual_)
    for (auto& c : virtual_agent_services(*this, n, *virtual_))
      out.push_back(std::move(c));
  return out;
}

status world::build() {
  cfg_ = std::make_unique<caf::actor_system_config>();
  cfg_->set("scheduler.policy", caf::atom("testing"));
  cfg_->set("logger.verbosity", caf::atom("quiet"));
  cfg_->add_message_type<envelope>("af.envelope");
  sys_ = std::make_unique<caf::actor_system>(*cfg_);
  sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(sys_->scheduler());
  clock_ = std::make_unique<sim_clock>(sched_->clock(), time_point{});
  trace_ = std::make_unique<tracer>(*clock_, opts_.trace_file);
  if (!trace_->file_ok())
    return validation_error("--trace: cannot write '" + opts_.trace_file + "'");
  if (!opts_.log_file.empty()) {
    log_options lo;
    lo.format = "json";
    lo.file = opts_.log_file;
    auto b = make_log_backend(lo);
    if (!b) return b.error();
    log_ = *b;
  }
  net_ = std::make_unique<network>(*this, sc_.network, draw_seed());
  net_actor_ = sys_->spawn<network_actor>(net_.get());
  director_ = sys_->spawn<director_actor>(this);
  state_->elapsed = [this] { return elapsed(); };

  // Agent types: std.* (std.ledger writes the run's in-memory ledger), then the caller's.
  auto types = std::make_shared<plan::agent_types>();
  if (auto s = plan::add_std_agents(*types, {}); !s) return s;
  if (auto s = types->add("std.ledger", memory_ledger_type(state_->ledger)); !s) return s;
  if (opts_.agents)
    for (const auto& name : opts_.agents->names())
      if (!types->find(name))
        if (auto s = types->add(name, *opts_.agents->find(name)); !s) return s;
  types_ = types;

  if (sc_.nodes.empty()) return validation_error("scenario '" + sc_.name + "': no nodes");
  if (sc_.cluster.enabled) {
    if (auto s = cluster::validate(sc_.cluster.swim); !s) return s.error();
    cluster_ = std::make_shared<cluster_book>(*this, sc_);
  }
  if (sc_.raft.enabled) {
    if (auto s = cluster::validate(sc_.raft.options); !s) return s.error();
    if (sc_.cluster.membership_only)
      return validation_error("scenario '" + sc_.name
                              + "': raft needs each member's journal; cluster.profile "
                                "membership runs none");
    for (const auto& m : sc_.raft.options.members)
      if (std::find(sc_.nodes.begin(), sc_.nodes.end(), m) == sc_.nodes.end())
        return validation_error("scenario '" + sc_.name + "': raft member '" + m
                                + "' is not a declared node");
    raft_ = std::make_shared<raft_book>(*this, sc_);
  }
  if (sc_.ownership.enabled) {
    // Each node's af.exec takes its leases from its own af.cluster.raft.
    for (const auto& n : sc_.nodes)
      if (!sc_.raft.enabled
          || std::find(sc_.raft.options.members.begin(), sc_.raft.options.members.end(), n)
                 == sc_.raft.options.members.end())
        return validation_error("scenario '" + sc_.name + "': ownership needs raft on every node ('"
                                + n + "' is not a raft member)");
    if (auto s = plan::validate(sc_.ownership.options); !s) return s.error();
    exec_owners_ = std::make_shared<exec_owner_book>(*this);
    shared_disk_ = store::make_memory_backend({});
  }
  for (const auto& name : sc_.nodes)
    nodes_.push_back(std::make_unique<sim_node>(*this, name));
  if (raft_)
    for (const auto& m : sc_.raft.options.members)
      if (auto w = raft_->writer(m)) find_node(m)->add_population_child(std::move(*w));
  if (!opts_.history_file.empty() && !sc_.kv_clients.enabled)
    return validation_error("--history: scenario '" + sc_.name
                            + "' has no kv_clients section, so no history to write");
  if (sc_.kv_clients.enabled) {
    if (!raft_)
      return validation_error("scenario '" + sc_.name + "': kv_clients needs a raft section");
    kv_ = std::make_unique<kv_book>();
    kv_->spec = sc_.kv_clients;
    kv_->members = sc_.raft.options.members;
    kv_->stop_at = sc_.run_for;
    kv_->elapsed = [this] { return elapsed(); };
    for (auto& [node, child] : kv_client_children(*kv_, sc_.nodes)) {
      auto* n = find_node(node);
      if (n == nullptr)
        return validation_error("scenario '" + sc_.name + "': kv_clients node '" + node
                                + "' is not a declared node");
      n->add_population_child(std::move(child));
    }
  }

  // Populations: NAME-i on the i-th of its nodes, round-robin.
  for (const auto& p : sc_.populations) {
    auto& addrs = state_->populations[p.name];
    const auto& on = p.nodes.empty() ? sc_.nodes : p.nodes;
    for (std::size_t i = 0; i < p.count; ++i)
      addrs.push_back(address{on[i % on.size()], p.name + "-" + std::to_string(i)});
  }
  for (const auto& p : sc_.populations) {
    auto factory = population_factory(p, *state_, *types_);
    if (!factory) return factory.error();
    for (const auto& a : state_->populations[p.name]) {
      sup::child_spec c;
      c.id = a.name;
      c.restart = sup::restart_policy::permanent;
      c.make_agent = *factory;
      find_node(a.node)->add_population_child(std::move(c));
      ++agents_;
    }
  }

  // Workflows: execution i of a workflow runs on node i mod N, started at i * interval.
  std::map<std::string, std::vector<submission>> per_node;
  for (const auto& w : sc_.workflows) {
    auto ir = plan::compile_file(w.plan);
    if (!ir) return error{ir.error().code(), w.where + ": workflow plan: " + ir.error().message()};
    auto inputs = plan::resolve_inputs(*ir, w.inputs.dump());
    if (!inputs)
      return error{inputs.error().code(), w.where + ": workflow inputs: " + inputs.error().message()};
    auto shared = std::make_shared<const v1::PlanIR>(std::move(*ir));
    std::vector<std::string> ledger_steps, ledger_compensations;
    for (const auto& s : shared->steps())
      if (s.call().target() == "std.ledger" && s.for_each().empty()) ledger_steps.push_back(s.id());
    for (const auto& s : shared->saga()) {
      if (s.call().target() == "std.ledger") ledger_steps.push_back(s.id());
      if (s.compensate().target() == "std.ledger") ledger_compensations.push_back(s.id());
    }
    for (std::size_t i = 0; i < w.count; ++i) {
      const auto& node = sc_.nodes[i % sc_.nodes.size()];
      submission sub;
      sub.execution_id = "wf-" + std::to_string(state_->workflows.executions.size());
      sub.plan = shared;
      sub.inputs_json = *inputs;
      sub.at = w.interval * static_cast<std::int64_t>(i);
      state_->workflows.executions[sub.execution_id] = {node, shared->name(), ledger_steps,
                                                        shared->type() == v1::PLAN_SAGA,
                                                        ledger_compensations};
      per_node[node].push_back(std::move(sub));
    }
  }
  for (auto& [node, subs] : per_node) {
    sup::child_spec c;
    c.id = "sim.submitter";
    c.restart = sup::restart_policy::permanent;
    c.make_agent = submitter_factory(std::move(subs));
    find_node(node)->add_population_child(std::move(c));
  }

  // Virtual agents: placement on every node, a client on each client node.
  if (!sc_.virtual_agents.kinds.empty()) {
    virtual_ = std::make_unique<virtual_book>();
    virtual_->cluster_disk = store::make_memory_backend({});
    const auto& va = sc_.virtual_agents;
    for (const auto& node : va.client_nodes.empty() ? sc_.nodes : va.client_nodes) {
      sup::child_spec c;
      c.id = "sim.virtual_client";
      c.restart = sup::restart_policy::permanent;
      c.make_agent = virtual_client_factory(*this, *virtual_);
      find_node(node)->add_population_child(std::move(c));
    }
  }

  for (auto& n : nodes_)
    if (auto s = n->start(); !s) return s;
  schedule_faults();
  return {};
}

void world::schedule_faults() {
  faults_ = sc_.faults;
  const auto& rf = sc_.random_faults;
  af::rng r{draw_seed()};
  for (auto t : poisson_times(r, rf.crash_per_minute, sc_.run_for)) {
    fault_spec f;
    f.what = fault_spec::kind::crash;
    f.at = t;
    f.node = sc_.nodes[r.uniform(sc_.nodes.size())];
    f.down_for = rf.down_for;
    f.where = "random";
    faults_.push_back(std::move(f));
  }
  for (auto t : poisson_times(r, rf.partition_per_minute, sc_.run_for)) {
    fault_spec f;
    f.what = fault_spec::kind::partition;
    f.at = t;
    // One node cut off from the rest.
    const auto& lone = sc_.nodes[r.uniform(sc_.nodes.size())];
    std::vector<std::string> rest;
    for (const auto& n : sc_.nodes)
      if (n != lone) rest.push_back(n);
    f.groups = {{lone}, rest};
    f.heal_after = rf.partition_for;
    f.where = "random";
    faults_.push_back(std::move(f));
  }
  for (auto t : poisson_times(r, rf.throw_per_minute, sc_.run_for)) {
    if (agents_ == 0) break;
    // A random population agent.
    std::vector<const std::vector<address>*> pops;
    for (const auto& [name, addrs] : state_->populations)
      pops.push_back(&addrs);
    const auto& addrs = *pops[r.uniform(pops.size())];
    const auto& a = addrs[r.uniform(addrs.size())];
    fault_spec f;
    f.what = fault_spec::kind::throw_in;
    f.at = t;
    f.node = a.node;
    f.agent = a.name;
    f.where = "random";
    faults_.push_back(std::move(f));
  }
  auto all = std::move(faults_);
  faults_.clear();
  for (auto& f : all)
    add_fault(std::move(f));
}

void world::apply_fault(std::size_t i) {
  if (i >= faults_.size()) return;
  const auto f = faults_[i]; // a copy: follow-up faults are appended below
  if (draining_ && f.what != fault_spec::kind::restart && f.what != fault_spec::kind::heal) return;
  auto* n = f.node.empty() ? nullptr : find_node(f.node);
  switch (f.what) {
    case fault_spec::kind::crash:
      if (n == nullptr || !n->up()) return;
      n->crash();
      ++crashes_;
      note("crash " + f.node);
      if (f.down_for > duration::zero()) {
        fault_spec g;
        g.what = fault_spec::kind::restart;
        g.at = elapsed() + f.down_for;
        g.node = f.node;
        g.where = f.where;
        add_fault(std::move(g));
      }
      return;
    case fault_spec::kind::restart:
      if (n == nullptr || n->up()) return;
      if (auto s = n->start(); !s) {
        note("restart " + f.node + " failed: " + s.error().to_string());
        return;
      }
      ++restarts_;
      note("restart " + f.node);
      return;
    case fault_spec::kind::partition: {
      net_->partition(f.groups);
      if (cluster_) cluster_->partition_changed(true);
      std::string text;
      for (const auto& g : f.groups) {
        text += text.empty() ? "[" : " | [";
        for (std::size_t k = 0; k < g.size(); ++k)
          text += (k ? "," : "") + g[k];
        text += "]";
      }
      note("partition " + text);
      if (f.heal_after > duration::zero()) {
        fault_spec g;
        g.what = fault_spec::kind::heal;
        g.at = elapsed() + f.heal_after;
        add_fault(std::move(g));
      }
      return;
    }
    case fault_spec::kind::heal:
      net_->heal();
      if (cluster_) cluster_->partition_changed(false);
      note("heal");
      return;
    case fault_spec::kind::skew:
      if (n == nullptr) return;
      n->clock().set_skew(f.skew);
      note("skew " + f.node + " " + fmt_time(f.skew));
      return;
    case fault_spec::kind::throw_in: {
      if (n == nullptr || !n->up()) return;
      auto ptr = n->core()->registry.find(f.agent);
      if (!ptr) {
        note("throw " + f.node + "/" + f.agent + " skipped: no such live agent");
        return;
      }
      auto* host = dynamic_cast<af::detail::agent_host*>(caf::actor_cast<caf::abstract_actor*>(ptr));
      if (host == nullptr) return;
      host->inject_fault("injected fault (seed " + std::to_string(opts_.seed) + ")");
      // A message now, so the throw happens now (not whenever the agent next hears from anyone).
      auto& core = *n->core();
      auto env = core.make_envelope(address{f.node, "sim.director"}, address{f.node, f.agent},
                                    af::detail::empty_payload(), nullptr, 0, core.default_tenant,
                                    fault_rng_);
      caf::anon_send(caf::actor_cast<caf::actor>(ptr), std::move(env));
      note("throw " + f.node + "/" + f.agent);
      return;
    }
  }
}

void world::on_root_exit(sim_node& n, std::uint64_t inc, const std::string& why) {
  if (!n.up() || n.incarnation() != inc || !director_) return;
  n.crash();
  ++gave_up_;
  note("gave up " + n.name() + " (" + why + "); restart in 1s");
  fault_spec g;
  g.what = fault_spec::kind::restart;
  g.at = elapsed() + std::chrono::seconds(1);
  g.node = n.name();
  g.where = "node gave up";
  add_fault(std::move(g));
}

void world::add_fault(fault_spec f) {
  const auto in = std::max(f.at - elapsed(), duration::zero());
  faults_.push_back(std::move(f));
  caf::delayed_anon_send(director_, std::chrono::duration_cast<caf::timespan>(in),
                         fault_atom::value, static_cast<std::uint64_t>(faults_.size() - 1));
}

bool world::run_until(duration limit) {
  auto& s = *sched_;
  const auto t_limit = clock_->monotonic() > limit ? clock_->monotonic() : limit;
  const auto start = caf_clock().current_time - clock_->monotonic();
  std::uint64_t since_progress = 0;
  for (;;) {
    if (opts_.until && clock_->monotonic() >= *opts_.until) return false;
    if (!s.jobs.empty()) {
      const auto n = s.jobs.size();
      if (n > 1) std::swap(s.jobs.front(), s.jobs[pick_.uniform(n)]);
      s.run_once();
      if (opts_.on_progress && ++since_progress >= 20'000) {
        since_progress = 0;
        progress p;
        p.virtual_time = clock_->monotonic();
        p.run_until = sc_.run_for + sc_.drain;
        p.delivered = trace_->count();
        opts_.on_progress(p);
      }
      continue;
    }
    const auto& timers = caf_clock().schedule();
    if (timers.empty()) return true;
    auto due = std::chrono::duration_cast<duration>(timers.begin()->first - start);
    if (opts_.until && due > *opts_.until) {
      const_cast<caf::detail::test_actor_clock&>(caf_clock()).current_time =
          start + std::chrono::duration_cast<caf::timespan>(*opts_.until);
      return false;
    }
    if (due > t_limit) {
      const_cast<caf::detail::test_actor_clock&>(caf_clock()).current_time =
          start + std::chrono::duration_cast<caf::timespan>(t_limit);
      return true;
    }
    s.trigger_timeout();
  }
}

void world::start_drain() {
  draining_ = true;
  if (cluster_) cluster_->drain_begins(elapsed());
  if (net_) net_->heal();
  if (cluster_ && cluster_->partitioned()) cluster_->partition_changed(false);
  for (auto& n : nodes_)
    if (!n->up()) {
      if (auto s = n->start(); s) {
        ++restarts_;
        note("restart " + n->name() + " (drain)");
      }
    }
  note("drain");
}

expected<report> world::run() {
  const stopwatch wall;
  if (auto s = build(); !s) return s.error();
  bool complete = run_until(sc_.run_for);
  if (complete) {
    start_drain();
    complete = run_until(sc_.run_for + sc_.drain);
  }
  report r;
  r.scenario = sc_.name;
  r.seed = opts_.seed;
  r.virtual_time = elapsed();
  r.stopped_early = !complete;
  r.delivered = trace_->count();
  r.network_sent = net_->sent;
  r.dropped = net_->dropped;
  r.duplicated = net_->duplicated;
  r.crashes = crashes_ + gave_up_;
  r.restarts = restarts_;
  for (const auto& n : nodes_) {
    // Sum the node's af_supervisor_restarts_total series from its exposition text (one line
    // per series: NAME{labels} VALUE; comment lines start with '#').
    std::istringstream text{n->metrics().serialize_text()};
    constexpr std::string_view family = "af_supervisor_restarts_total";
    for (std::string line; std::getline(text, line);)
      if (line.starts_with(family) && line.size() > family.size()
          && (line[family.size()] == '{' || line[family.size()] == ' '))
        r.supervisor_restarts +=
            static_cast<std::uint64_t>(std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr));
  }
  r.agents = agents_;
  if (virtual_) {
    finish_virtual_report(*this, *virtual_);
    r.virtual_agents = virtual_->counts;
  }
  if (kv_) {
    linearizable_ = finish_kv(*kv_, elapsed());
    r.kv = kv_->counts;
    if (!opts_.history_file.empty())
      if (auto s = write_kv_history(*kv_, opts_.history_file); !s) return s.error();
  }
  r.invariants = check_invariants(complete);
  r.trace_hash = trace_->hex();
  r.timeline = timeline_;
  if (cluster_) r.membership = cluster_->figures();
  if (raft_) r.raft = raft_->figures();
  if (exec_owners_) r.ownership = exec_owners_->figures();
  r.wall_seconds = wall.seconds();
  r.deliveries_per_second = r.wall_seconds > 0 ? static_cast<double>(r.delivered) / r.wall_seconds : 0;
  return r;
}

} // namespace af::sim::detail

namespace af::sim {

expected<report> run(const scenario& sc, const run_options& opts) {
  detail::world w{sc, opts};
  return w.run();
}

} // namespace af::sim
