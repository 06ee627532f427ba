// `af run`, `af submit` and `af exec list|show|pause|resume|cancel|approve|stuck|replay`: plans on
// an embedded node or on a running one (--connect), docs/planning.md and docs/cli.md.
#include "af/client.hpp"
#include "af/node.hpp"
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"
#include "af/store/audit.hpp"
#include "af/store/journal.hpp"
#include "af/v1/exec.pb.h"
#include "commands.hpp"
#include "demo_plan.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <thread>
#include <unistd.h>

namespace af::cli::detail {

expected<agent_catalog> load_agents(const std::vector<std::string>& plugin_files,
                                    const extensions& ext, const builtin_agents& builtins) {
  agent_catalog out{std::make_shared<plan::plugin_set>(), std::make_shared<plan::agent_types>(),
                    std::make_shared<tool::registry>()};
  if (builtins)
    if (auto st = builtins(*out.agents, *out.tools); !st) return st.error();
  if (ext.add) ext.add(*out.agents, *out.tools);
  for (const auto& f : plugin_files)
    if (auto st = out.plugins->load(f, *out.agents, *out.tools); !st) return st.error();
  return out;
}

expected<exec_service_parts> exec_service(const config& cfg,
                                          const std::vector<std::string>& plugin_files,
                                          const extensions& ext, bool resume,
                                          plan::exec_ownership ownership) {
  auto catalog = load_agents(plugin_files, ext,
                             [&](plan::agent_types& agents, tool::registry& tools) -> status {
                               plan::std_agent_options so;
                               so.ledger_url = store::store_url(cfg);
                               if (auto st = plan::add_std_agents(agents, so); !st) return st;
                               return demo::add_demo_plan_agents(agents, tools);
                             });
  if (!catalog) return catalog.error();
  plan::exec_options o;
  o.agents = catalog->agents;
  o.tools = catalog->tools;
  o.resume = resume;
  o.ownership = std::move(ownership);
  return exec_service_parts{plan::exec_child(std::move(o)), std::move(catalog->plugins),
                            catalog->agents};
}

namespace {

std::string status_name(v1::ExecStatus s) {
  switch (s) {
  case v1::EXEC_RUNNING:
    return "running";
  case v1::EXEC_PAUSED:
    return "paused";
  case v1::EXEC_COMPLETED:
    return "completed";
  case v1::EXEC_FAILED:
    return "failed";
  case v1::EXEC_CANCELED:
    return "canceled";
  default:
    return "ended";
  }
}

/// What `af exec list` prints in its state column: a saga's own state (compensating, stuck,
/// compensated, ...) unless an operator paused it, else the status.
std::string state_name(const v1::ExecutionInfo& i) {
  if (i.saga_state().empty()) return status_name(i.status());
  if (i.status() == v1::EXEC_PAUSED && i.saga_state() != "stuck") return "paused";
  return i.saga_state();
}

bool is_end(v1::ExecStatus s) {
  return s == v1::EXEC_COMPLETED || s == v1::EXEC_FAILED || s == v1::EXEC_CANCELED;
}

std::string mode_name(v1::ExecMode m) {
  switch (m) {
  case v1::EXEC_STRICT:
    return "strict";
  case v1::EXEC_DRY_RUN:
    return "dry-run";
  default:
    return "auto";
  }
}

expected<v1::ExecMode> parse_mode(const std::string& m) {
  if (m.empty() || m == "auto") return v1::EXEC_AUTO;
  if (m == "strict") return v1::EXEC_STRICT;
  if (m == "dry-run") return v1::EXEC_DRY_RUN;
  return validation_error("--mode '" + m + "': expected auto, strict or dry-run");
}

/// --set key=value inputs: the value is JSON when it parses as JSON, else a string.
expected<std::string> inputs_of(const std::vector<std::string>& sets) {
  nlohmann::json in = nlohmann::json::object();
  for (const auto& s : sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0)
      return validation_error("--set '" + s + "': expected NAME=VALUE");
    auto v = nlohmann::json::parse(s.substr(eq + 1), nullptr, false);
    in[s.substr(0, eq)] = v.is_discarded() ? nlohmann::json(s.substr(eq + 1)) : v;
  }
  return in.dump();
}

std::string user() {
  const char* u = std::getenv("USER");
  return std::string{"cli:"} + (u != nullptr && *u != '\0' ? u : "unknown");
}

nlohmann::json parse_json(const std::string& s) {
  if (s.empty()) return nullptr;
  auto j = nlohmann::json::parse(s, nullptr, false);
  return j.is_discarded() ? nlohmann::json(s) : j;
}

nlohmann::json info_json(const v1::ExecutionInfo& i) {
  nlohmann::json j{{"execution_id", i.execution_id()},
                   {"status", status_name(i.status())},
                   {"plan", i.plan_name()},
                   {"plan_hash", to_hex(i.plan_hash())},
                   {"mode", mode_name(i.mode())},
                   {"steps", i.steps_total()},
                   {"steps_completed", i.steps_completed()},
                   {"steps_failed", i.steps_failed()},
                   {"outputs", parse_json(i.outputs_json())},
                   {"journal_version", i.version()}};
  if (!i.tenant().empty()) j["tenant"] = i.tenant();
  if (!i.saga_state().empty()) j["saga"] = i.saga_state();
  if (i.started_at_ns() != 0) j["started_at_ns"] = i.started_at_ns();
  if (i.ended_at_ns() != 0) j["ended_at_ns"] = i.ended_at_ns();
  if (!i.error().empty()) j["error"] = i.error();
  if (i.steps_size() > 0) {
    auto& steps = j["step_list"] = nlohmann::json::array();
    for (const auto& s : i.steps())
      steps.push_back({{"id", s.step_id()},
                       {"state", s.state()},
                       {"attempt", s.attempt()},
                       {"output", parse_json(s.output_json())},
                       {"error", s.error()}});
  }
  return j;
}

void print_info(const v1::ExecutionInfo& i, bool json, std::ostream& out) {
  if (json) {
    out << info_json(i).dump() << "\n";
    return;
  }
  out << "execution  " << i.execution_id() << "\n"
      << "status     " << status_name(i.status()) << "\n";
  if (!i.saga_state().empty()) out << "saga       " << i.saga_state() << "\n";
  out << "plan       " << i.plan_name() << " (hash " << to_hex(i.plan_hash()) << ")\n"
      << "mode       " << mode_name(i.mode()) << "\n"
      << "steps      " << i.steps_completed() << " completed, " << i.steps_failed() << " failed, "
      << i.steps_total() << " scheduled\n";
  if (!i.error().empty()) out << "error      " << i.error() << "\n";
  if (!i.outputs_json().empty()) out << "outputs    " << parse_json(i.outputs_json()).dump(2) << "\n";
  for (const auto& s : i.steps()) {
    out << "  " << std::left << std::setw(24) << s.step_id() << " " << std::setw(10) << s.state()
        << " attempt " << s.attempt();
    if (!s.error().empty()) out << "  " << s.error();
    out << "\n";
  }
}

/// The schedule a dry run prints: DAG levels, FSM states, the BT tree.
void print_schedule(const v1::PlanIR& p, bool json, std::ostream& out) {
  auto call_text = [](const v1::Call& c) -> std::string {
    switch (c.kind()) {
    case v1::STEP_AGENT:
      return "agent " + c.target() + (c.node().empty() ? "" : " on " + c.node());
    case v1::STEP_TOOL:
      return "tool " + c.target() + (c.node().empty() ? "" : " on " + c.node());
    case v1::STEP_PLAN:
      return "sub-plan " + std::to_string(c.sub_plan());
    case v1::STEP_WAIT:
      return "wait " + std::to_string(c.wait_ms()) + " ms";
    case v1::STEP_APPROVAL:
      return "approval";
    default:
      return "nothing";
    }
  };
  nlohmann::json j{{"plan", p.name()}, {"plan_hash", to_hex(p.hash())}};
  if (!json) out << "plan " << p.name() << " (hash " << to_hex(p.hash()) << ")\n";
  if (p.type() == v1::PLAN_DAG) {
    std::map<std::string, int> level;
    auto& levels = j["levels"] = nlohmann::json::array();
    for (const auto& s : p.steps()) {
      int l = 0;
      for (const auto& a : s.after())
        l = std::max(l, level[a] + 1);
      level[s.id()] = l;
      while (static_cast<int>(levels.size()) <= l)
        levels.push_back(nlohmann::json::array());
      levels[static_cast<std::size_t>(l)].push_back(s.id());
    }
    for (std::size_t l = 0; l < levels.size(); ++l) {
      if (json) continue;
      out << "level " << l << ":\n";
      for (const auto& id : levels[l])
        for (const auto& s : p.steps())
          if (s.id() == id.get<std::string>())
            out << "  " << s.id() << "  (" << call_text(s.call()) << ")"
                << (s.for_each().empty() ? "" : "  for_each " + s.for_each())
                << (s.after_size() > 0 ? "  after " + [&] {
                      std::string a;
                      for (const auto& x : s.after())
                        a += (a.empty() ? "" : ",") + x;
                      return a;
                    }()
                                       : "")
                << "\n";
    }
  } else if (p.type() == v1::PLAN_FSM) {
    j["initial"] = p.fsm().initial();
    if (!json) out << "initial " << p.fsm().initial() << "\n";
    for (const auto& s : p.fsm().states()) {
      std::string on;
      for (const auto& t : s.on())
        on += (on.empty() ? "" : ", ") + t.outcome() + " -> " + t.next();
      j["states"][s.name()] = {{"call", call_text(s.call())}, {"on", on}, {"final", s.final()}};
      if (!json)
        out << "  " << s.name() << "  (" << call_text(s.call()) << ")"
            << (s.final() ? "  final" : "") << (on.empty() ? "" : "  on: " + on) << "\n";
    }
  } else if (p.type() == v1::PLAN_SAGA) {
    auto& steps = j["steps"] = nlohmann::json::array();
    int n = 0;
    for (const auto& s : p.saga()) {
      const auto undo =
          s.compensate().kind() == v1::STEP_NONE ? std::string{"none"} : call_text(s.compensate());
      steps.push_back({{"id", s.id()}, {"call", call_text(s.call())}, {"compensate", undo}});
      if (!json)
        out << "step " << ++n << ": " << s.id() << "  (" << call_text(s.call())
            << ")  compensate: " << undo << "\n";
    }
  } else {
    std::function<void(const v1::BtNode&, int)> walk = [&](const v1::BtNode& n, int depth) {
      if (!json)
        out << std::string(static_cast<std::size_t>(2 * depth + 2), ' ') << n.id() << "  "
            << v1::BtType_Name(n.type())
            << (n.type() == v1::BT_ACTION ? "  (" + call_text(n.call()) + ")" : "")
            << (n.expr().empty() ? "" : "  " + n.expr()) << "\n";
      for (const auto& c : n.children())
        walk(c, depth + 1);
    };
    walk(p.root(), 0);
  }
  if (json) out << j.dump() << "\n";
}

/// Either an embedded node or a connection to a running one; `ask` goes to af.exec.
class exec_endpoint {
public:
  static expected<exec_endpoint> connect(const std::string& addr) {
    auto c = remote_node::connect(addr);
    if (!c) return c.error();
    exec_endpoint e;
    e.remote_ = std::move(c).value();
    return e;
  }
  static expected<exec_endpoint> embedded(config cfg, const std::vector<std::string>& plugins,
                                          const extensions& ext, bool resume) {
    exec_endpoint e;
    node::options opt;
    opt.system_services.push_back(store::journal_child(store::journal_options_from(cfg)));
    opt.system_services.push_back(store::audit_child(store::audit_options_from(cfg)));
    auto svc = exec_service(cfg, plugins, ext, resume);
    if (!svc) return svc.error();
    opt.system_services.push_back(std::move(svc->spec));
    e.plugins_ = std::move(svc->plugins);
    opt.cfg = std::move(cfg);
    auto n = node::start(std::move(opt));
    if (!n) return n.error();
    e.node_ = std::move(n).value();
    return e;
  }

  template <class Reply, class Msg>
  expected<Reply> ask(Msg m, duration timeout) {
    if (remote_) return remote_->ask<Reply>(plan::k_exec_agent, std::move(m), timeout);
    return node_->ask<Reply>(plan::k_exec_agent, std::move(m), timeout);
  }

  exec_endpoint() = default;
  exec_endpoint(exec_endpoint&&) noexcept = default;
  exec_endpoint& operator=(exec_endpoint&&) noexcept = default;
  ~exec_endpoint() {
    if (node_) node_->shutdown();
    node_.reset();
  }

private:
  std::shared_ptr<plan::plugin_set> plugins_; // outlives node_ (destroyed after it)
  std::unique_ptr<node> node_;
  std::unique_ptr<remote_node> remote_;
};

struct store_flags {
  std::string data_dir, store, config_file, log_level;
  void add_to(CLI::App& cmd) {
    cmd.add_option("--data-dir", data_dir, "the data directory (DIR/agentflow.db)");
    cmd.add_option("--store", store, "a store URL: sqlite:PATH or postgres://...");
    cmd.add_option("--config", config_file, "a node configuration file");
    cmd.add_option("--log-level", log_level, "trace|debug|info|warn|error|off (default warn)");
  }
  expected<config> load() const {
    config_sources src;
    src.file = config_file;
    src.env = config::process_environment();
    if (!data_dir.empty()) src.flags.push_back({"node.data_dir", data_dir, "--data-dir"});
    if (!store.empty()) src.flags.push_back({"store.url", store, "--store"});
    src.flags.push_back({"log.level", log_level.empty() ? "warn" : log_level, "--log-level"});
    auto cfg = config::load(src);
    if (!cfg) return cfg;
    std::error_code ec;
    std::filesystem::create_directories(cfg->get_string("node.data_dir"), ec);
    return cfg;
  }
};

int usage(std::ostream& err, const error& e) {
  err << "af: " << e.to_string() << "\n";
  return k_exit_usage;
}

int failed(std::ostream& err, const error& e) {
  err << "af: " << e.to_string() << "\n";
  return k_exit_failure;
}

/// Waits for an execution to end, printing a progress line on a terminal.
expected<v1::ExecutionInfo> wait_end(exec_endpoint& ep, const std::string& id, bool progress,
                                     std::ostream& out) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int sleep_ms = 2;; sleep_ms = std::min(sleep_ms * 2, 100)) {
    v1::ExecutionRef ref;
    ref.set_execution_id(id);
    auto i = ep.ask<v1::ExecutionInfo>(ref, std::chrono::seconds(60));
    if (!i) return i;
    if (progress) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      out << "\r" << status_name(i->status()) << ": " << i->steps_completed() << " steps done, "
          << i->steps_failed() << " failed, " << i->steps_in_flight() << " in flight  (" << std::fixed << std::setprecision(1) << s << " s)   " << std::flush;
    }
    if (is_end(i->status())) {
      if (progress) out << "\n";
      return i;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
  }
}

} // namespace

runner add_plan_commands(CLI::App& app, std::ostream& out, std::ostream& err,
                         const extensions& ext) {
  struct state {
    std::string file, mode, connect, id, step, by, reason, plan_file;
    std::vector<std::string> sets, plugins;
    bool json = false, wait = false, all = false, progress = false;
    store_flags store;
  };
  auto st = std::make_shared<state>();

  auto* run = app.add_subcommand(
      "run", "run a plan to completion on an embedded node and print its outputs\n"
             "(exit 0: completed, 1: failed or canceled, 2: invalid plan)\n\nExample:\n"
             "  af run examples/plans/primes.yaml --data-dir /tmp/af --set limit=100000\n"
             "  af run examples/plans/payouts.yaml --mode dry-run");
  run->add_option("plan", st->file, "the plan file (YAML)")->required();
  run->add_option("--mode", st->mode, "auto (default) | strict | dry-run");
  run->add_option("--set", st->sets, "an input, NAME=VALUE (VALUE is JSON or a string)");
  run->add_option("--plugin", st->plugins, "load agent types and tools from a plugin");
  run->add_flag("--json", st->json, "print JSON: execution id, status, steps, outputs");
  run->add_flag("--progress", st->progress, "print a live progress line");
  st->store.add_to(*run);

  auto* submit = app.add_subcommand(
      "submit", "submit a plan to a running node and print the execution id\n\nExample:\n"
                "  af submit plan.yaml --connect 127.0.0.1:7400 --wait");
  submit->add_option("plan", st->file, "the plan file (YAML)")->required();
  submit->add_option("--connect", st->connect, "the node's control endpoint HOST:PORT")
      ->required();
  submit->add_option("--mode", st->mode, "auto (default) | strict");
  submit->add_option("--set", st->sets, "an input, NAME=VALUE");
  submit->add_option("--id", st->id, "the execution id (default: a new ULID); resubmitting an "
                                     "id returns the existing execution");
  submit->add_flag("--wait", st->wait, "wait until the execution ends");
  submit->add_option("--by", st->by, "who starts it (default: cli:$USER; audited)");
  submit->add_flag("--json", st->json, "print JSON");

  auto* exec = app.add_subcommand("exec", "list, inspect and steer executions");
  exec->require_subcommand(1);
  auto add_target = [&](CLI::App* c, bool with_id) {
    c->add_option("--connect", st->connect, "the node's control endpoint HOST:PORT");
    st->store.add_to(*c);
    c->add_flag("--json", st->json, "print JSON");
    if (with_id) c->add_option("id", st->id, "the execution id")->required();
  };
  auto* list = exec->add_subcommand(
      "list", "list executions (running and paused; --all: also ended ones this node knows)\n\n"
              "Example:\n  af exec list --connect 127.0.0.1:7400 --all");
  add_target(list, false);
  list->add_flag("--all", st->all, "include ended executions");
  auto* show = exec->add_subcommand(
      "show", "show an execution: status, plan hash, steps\n\nExample:\n"
              "  af exec show 01J... --connect 127.0.0.1:7400\n"
              "  af exec show 01J... --data-dir /tmp/af   (from the store, no node needed)");
  add_target(show, true);
  std::map<std::string, v1::ExecControl::Op> ops{{"pause", v1::ExecControl::PAUSE},
                                                 {"resume", v1::ExecControl::RESUME},
                                                 {"cancel", v1::ExecControl::CANCEL},
                                                 {"approve", v1::ExecControl::APPROVE},
                                                 {"stuck", v1::ExecControl::STUCK}};
  std::map<std::string, CLI::App*> control;
  for (const auto& [name, op] : ops) {
    const std::string what =
        name == "stuck" ? "mark a compensating saga stuck: no further compensation attempt until "
                          "`af exec resume` (audited with --by)"
                        : name + " an execution (audited with --by)";
    auto* c = exec->add_subcommand(name, what + "\n\nExample:\n  af exec " + name + " 01J... "
                                             + (name == "approve" ? "review " : "")
                                             + "--connect 127.0.0.1:7400 --by alice");
    c->add_option("id", st->id, "the execution id")->required();
    if (name == "approve") c->add_option("step", st->step, "the approval step")->required();
    c->add_option("--connect", st->connect, "the node's control endpoint HOST:PORT")->required();
    c->add_option("--by", st->by, "who does it (default: cli:$USER)");
    c->add_option("--reason", st->reason, "why (recorded in the journal and the audit)");
    c->add_flag("--json", st->json, "print JSON");
    control[name] = c;
  }
  auto* replay = exec->add_subcommand(
      "replay", "replay a recorded execution against its plan (or --plan NEW.yaml) with side\n"
                "effects suppressed and report whether the same decisions come out\n"
                "(exit 0: compatible, 1: diverged)\n\nExample:\n"
                "  af exec replay 01J... --connect 127.0.0.1:7400 --plan plan-v2.yaml");
  add_target(replay, true);
  replay->add_option("--plan", st->plan_file, "a changed plan to check against the history");

  return [=, &out, &err]() -> std::optional<int> {
    auto endpoint = [&]() -> expected<exec_endpoint> {
      if (!st->connect.empty()) return exec_endpoint::connect(st->connect);
      auto cfg = st->store.load();
      if (!cfg) return cfg.error();
      return exec_endpoint::embedded(std::move(*cfg), st->plugins, ext, false);
    };
    const std::string by = st->by.empty() ? user() : st->by;

    if (run->parsed() || submit->parsed()) {
      auto ir = plan::compile_file(st->file);
      if (!ir) return usage(err, ir.error());
      auto mode = parse_mode(st->mode);
      if (!mode) return usage(err, mode.error());
      auto inputs = inputs_of(st->sets);
      if (!inputs) return usage(err, inputs.error());
      if (*mode == v1::EXEC_DRY_RUN) {
        // The inputs are checked as a start would check them: a dry run that passes starts.
        if (auto in = plan::resolve_inputs(*ir, *inputs); !in) return usage(err, in.error());
        print_schedule(*ir, st->json, out);
        return k_exit_ok;
      }
      auto ep = endpoint();
      if (!ep) return failed(err, ep.error());
      v1::StartExecution req;
      *req.mutable_plan() = *ir;
      req.set_inputs_json(*inputs);
      req.set_mode(*mode);
      req.set_execution_id(st->id);
      req.set_by(by);
      auto started = ep->ask<v1::ExecutionInfo>(req, std::chrono::seconds(60));
      if (!started)
        return started.error().code() == errc::validation ? usage(err, started.error())
                                                          : failed(err, started.error());
      if (submit->parsed() && !st->wait) {
        if (st->json)
          out << info_json(*started).dump() << "\n";
        else
          out << started->execution_id() << "\n";
        return k_exit_ok;
      }
      const bool progress = !st->json && (st->progress || ::isatty(STDOUT_FILENO) != 0);
      if (!st->json)
        out << "execution " << started->execution_id() << " of plan " << ir->name() << " (hash "
            << plan::plan_hash_hex(*ir).substr(0, 16) << "…)\n"
            << std::flush;
      auto end = wait_end(*ep, started->execution_id(), progress, out);
      if (!end) return failed(err, end.error());
      if (st->json) {
        out << info_json(*end).dump() << "\n";
      } else {
        out << "status: " << status_name(end->status()) << ", " << end->steps_completed()
            << " steps completed, " << end->steps_failed() << " failed\n";
        if (!end->saga_state().empty()) out << "saga: " << end->saga_state() << "\n";
        if (!end->error().empty()) out << "error: " << end->error() << "\n";
        out << "outputs: " << parse_json(end->outputs_json()).dump(2) << "\n";
      }
      return end->status() == v1::EXEC_COMPLETED ? k_exit_ok : k_exit_failure;
    }
    if (list->parsed()) {
      auto ep = endpoint();
      if (!ep) return failed(err, ep.error());
      v1::ListExecutions req;
      req.set_all(st->all);
      auto l = ep->ask<v1::ExecutionList>(req, std::chrono::seconds(30));
      if (!l) return failed(err, l.error());
      if (st->json) {
        auto a = nlohmann::json::array();
        for (const auto& i : l->executions())
          a.push_back(info_json(i));
        out << a.dump() << "\n";
      } else {
        for (const auto& i : l->executions())
          out << i.execution_id() << "  " << std::left << std::setw(10) << state_name(i) << " "
              << i.plan_name() << "  " << i.steps_completed() << " steps done\n";
      }
      return k_exit_ok;
    }
    if (show->parsed()) {
      auto ep = endpoint();
      if (!ep) return failed(err, ep.error());
      v1::ExecutionRef ref;
      ref.set_execution_id(st->id);
      ref.set_steps(true);
      auto i = ep->ask<v1::ExecutionInfo>(ref, std::chrono::seconds(30));
      if (!i) return i.error().code() == errc::not_found ? usage(err, i.error())
                                                         : failed(err, i.error());
      print_info(*i, st->json, out);
      return k_exit_ok;
    }
    for (const auto& [name, c] : control) {
      if (!c->parsed()) continue;
      auto ep = endpoint();
      if (!ep) return failed(err, ep.error());
      v1::ExecControl req;
      req.set_execution_id(st->id);
      req.set_op(ops.at(name));
      req.set_step_id(st->step);
      req.set_by(by);
      req.set_reason(st->reason);
      auto i = ep->ask<v1::ExecutionInfo>(req, std::chrono::seconds(30));
      if (!i) return failed(err, i.error());
      if (st->json)
        out << info_json(*i).dump() << "\n";
      else
        out << name << ": execution " << i->execution_id() << " is " << state_name(*i) << "\n";
      return k_exit_ok;
    }
    if (replay->parsed()) {
      v1::ReplayRequest req;
      req.set_execution_id(st->id);
      if (!st->plan_file.empty()) {
        auto ir = plan::compile_file(st->plan_file);
        if (!ir) return usage(err, ir.error());
        *req.mutable_plan() = *ir;
      }
      auto ep = endpoint();
      if (!ep) return failed(err, ep.error());
      auto r = ep->ask<v1::ReplayReport>(req, std::chrono::seconds(120));
      if (!r) return r.error().code() == errc::not_found ? usage(err, r.error())
                                                         : failed(err, r.error());
      if (st->json) {
        out << nlohmann::json{{"execution_id", st->id},
                              {"compatible", r->compatible()},
                              {"events_checked", r->events_checked()},
                              {"divergence", r->divergence()},
                              {"recorded_hash", r->recorded_hash()},
                              {"replay_hash", r->replay_hash()}}
                   .dump()
            << "\n";
      } else if (r->compatible()) {
        out << "replay of " << st->id << ": compatible, " << r->events_checked()
            << " events reproduced" << (st->plan_file.empty() ? "" : " by " + st->plan_file)
            << " (hash " << r->replay_hash().substr(0, 16) << "…)\n";
      } else {
        out << "replay of " << st->id << ": DIVERGED at " << r->divergence() << "\n";
      }
      return r->compatible() ? k_exit_ok : k_exit_failure;
    }
    return std::nullopt;
  };
}

} // namespace af::cli::detail
