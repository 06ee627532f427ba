#include "af/cli.hpp"

#include "af/client.hpp"
#include "af/config.hpp"
#include "af/cluster/singleton.hpp"
#include "af/node.hpp"
#include "af/plan/executor.hpp"
#include "af/store/audit.hpp"
#include "af/store/journal.hpp"
#include "af/sup/supervisor.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/exec.pb.h"
#include "af/v1/gossip.pb.h"
#include "af/v1/placement.pb.h"
#include "af/v1/runtime.pb.h"
#include "af/v1/supervision.pb.h"
#include "commands.hpp"
#include "demo.hpp"

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <pthread.h>
#include <thread>

#include <unistd.h>

namespace af::cli {

namespace detail {
int fail(std::ostream& err, const error& e) {
  err << "af: " << e.to_string() << "\n";
  return e.code() == errc::validation || e.code() == errc::not_found ? k_exit_usage
                                                                     : k_exit_failure;
}
} // namespace detail

namespace {

/// Flags every node-starting command shares; they become config overrides ("flag --listen").
struct node_flags {
  std::string config_file;
  std::string name, data_dir, listen, metrics, log_level, log_format;
  std::string cluster_listen, cluster_secret_file, tls_cert, tls_key, tls_ca, join, raft_members;
  std::vector<std::string> sets;

  void add_to(CLI::App& app, bool with_endpoints) {
    app.add_option("--config", config_file, "YAML configuration file");
    app.add_option("--name", name, "node name (node.name)");
    app.add_option("--data-dir", data_dir, "data directory (node.data_dir)");
    if (with_endpoints) {
      app.add_option("--listen", listen,
                     "publish the control endpoint on HOST:PORT (node.listen; port 0: any)");
      app.add_option("--metrics", metrics,
                     "serve Prometheus /metrics on HOST:PORT (metrics.listen; port 0: any)");
      app.add_option("--cluster-listen", cluster_listen,
                     "listen for cluster peers on HOST:PORT (cluster.listen; port 0: any; needs "
                     "--cluster-secret-file)");
      app.add_option("--cluster-secret-file", cluster_secret_file,
                     "file holding the cluster secret, at least 16 bytes (cluster.secret_file)");
      app.add_option("--tls-cert", tls_cert,
                     "PEM certificate for cluster TLS (cluster.tls_cert; with --tls-key, --tls-ca)");
      app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert (cluster.tls_key)");
      app.add_option("--tls-ca", tls_ca,
                     "PEM CA certificates trusted for peers' certificates (cluster.tls_ca)");
      app.add_option("--join", join,
                     "join the cluster through these seeds: HOST:PORT[,HOST:PORT...] of other "
                     "nodes' --cluster-listen (cluster.join)");
      app.add_option("--raft-members", raft_members,
                     "run the Raft metadata group with these voters: NAME[,NAME...], this node "
                     "included, the same on every member (cluster.raft.members; with a "
                     "PostgreSQL store.url, executions are leased and taken over)");
    }
    app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off (log.level)");
    app.add_option("--log-format", log_format, "auto|json|text (log.format)");
    app.add_option("--set", sets, "any configuration key, as KEY=VALUE (repeatable)");
  }

  expected<config> load(std::vector<config_override> extra_defaults = {}) const {
    config_sources src;
    src.file = config_file;
    src.env = config::process_environment();
    auto add = [&](const std::string& v, const char* key, const char* flag) {
      if (!v.empty()) src.flags.push_back({key, v, flag});
    };
    add(name, "node.name", "--name");
    add(data_dir, "node.data_dir", "--data-dir");
    add(listen, "node.listen", "--listen");
    add(metrics, "metrics.listen", "--metrics");
    add(cluster_listen, "cluster.listen", "--cluster-listen");
    add(cluster_secret_file, "cluster.secret_file", "--cluster-secret-file");
    add(tls_cert, "cluster.tls_cert", "--tls-cert");
    add(tls_key, "cluster.tls_key", "--tls-key");
    add(tls_ca, "cluster.tls_ca", "--tls-ca");
    add(join, "cluster.join", "--join");
    add(raft_members, "cluster.raft.members", "--raft-members");
    add(log_level, "log.level", "--log-level");
    add(log_format, "log.format", "--log-format");
    for (const auto& s : sets) {
      auto eq = s.find('=');
      if (eq == std::string::npos || eq == 0)
        return validation_error("flag --set '" + s + "': expected KEY=VALUE");
      src.flags.push_back({s.substr(0, eq), s.substr(eq + 1), "--set " + s.substr(0, eq)});
    }
    auto cfg = config::load(src);
    // Command defaults (e.g. a quieter log for `af demo`) apply only where nothing else did:
    // neither the file, nor the environment, nor a flag.
    std::vector<config_override> unset;
    if (cfg)
      for (auto& d : extra_defaults)
        if (cfg->source(d.key) == config_source::defaults) unset.push_back(std::move(d));
    if (unset.empty()) return cfg;
    src.flags.insert(src.flags.begin(), unset.begin(), unset.end());
    return config::load(src);
  }
};

using detail::fail;

/// An error the node answered at run time (not the user's input): always exit 1.
int fail_remote(std::ostream& err, const error& e) {
  err << "af: " << e.to_string() << "\n";
  return k_exit_failure;
}

nlohmann::json status_json(const v1::NodeStatus& s) {
  nlohmann::json features = nlohmann::json::object();
  for (const auto& [k, v] : s.features())
    features[k] = v;
  return {{"name", s.name()},
          {"version", s.version()},
          {"uptime_seconds", s.uptime_seconds()},
          {"agent_count", s.agent_count()},
          {"listen_port", s.listen()},
          {"metrics_port", s.metrics()},
          {"scheduler", {{"policy", s.scheduler_policy()}, {"threads", s.scheduler_threads()}}},
          {"features", features}};
}

int cmd_version(bool json, std::ostream& out) {
  if (json)
    out << nlohmann::json{{"name", "agentflow"}, {"version", AF_VERSION}}.dump() << "\n";
  else
    out << "af (agentflow) " << AF_VERSION << "\n";
  return k_exit_ok;
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts) so sigwait can
/// take them; restores the old mask on destruction.
class signal_block {
public:
  signal_block() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~signal_block() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  /// The signal taken, or 0 when none arrived within `timeout`.
  int wait_for(std::chrono::milliseconds timeout) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    ts.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1'000'000);
    int sig = sigtimedwait(&set_, nullptr, &ts);
    return sig < 0 ? 0 : sig;
  }

private:
  sigset_t set_{}, old_{};
};

int cmd_node_start(const node_flags& flags, const std::string& port_file, bool demo_service,
                   const std::vector<std::string>& plugins, const extensions& ext,
                   std::ostream& out, std::ostream& err) {
  auto cfg = flags.load();
  if (!cfg) return fail(err, cfg.error());
  const auto& data_dir = cfg->get_string("node.data_dir");
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec || ::access(data_dir.c_str(), W_OK) != 0)
    return fail(err, error{errc::validation, "node.data_dir: '" + data_dir
                                                 + "' is not a writable directory ("
                                                 + cfg->origin("node.data_dir") + ")"});
  signal_block signals; // before the node starts its threads, so they inherit the mask
  node::options opt;
  // The journal (SQLite under the data directory unless store.url says otherwise) runs under
  // af.sup.system; a store that is down is retried, it does not stop the node.
  opt.system_services.push_back(store::journal_child(store::journal_options_from(*cfg)));
  opt.system_services.push_back(store::audit_child(store::audit_options_from(*cfg)));
  // With cluster.listen: SWIM membership, Raft (cluster.raft.members), then the virtual-agent
  // router (it subscribes to membership); before af.exec, which takes its leases from Raft.
  auto cluster = detail::cluster_services(*cfg);
  if (!cluster) return fail(err, cluster.error());
  for (auto& c : *cluster)
    opt.system_services.push_back(std::move(c));
  // af.exec resumes every unfinished execution in the store once the node is up (with Raft and
  // a shared store: those whose lease it can take, its own first).
  auto ownership = detail::exec_ownership_from(*cfg);
  if (!ownership) return fail(err, ownership.error());
  const bool owns_executions = ownership->enabled;
  const auto lease_ttl = ownership->lease_ttl;
  auto exec = detail::exec_service(*cfg, plugins, ext, true, std::move(*ownership));
  if (!exec) return fail(err, exec.error());
  opt.system_services.push_back(std::move(exec->spec));
  // Cluster singletons (cluster.singletons), after af.exec: they are made from its agent types.
  auto singletons = detail::singletons_service(*cfg, *exec->agents);
  if (!singletons) return fail(err, singletons.error());
  const bool runs_singletons = singletons->has_value();
  if (runs_singletons) opt.system_services.push_back(std::move(**singletons));
  opt.cfg = std::move(*cfg);
  auto n = node::start(std::move(opt));
  if (!n) return fail(err, n.error());
  auto& nd = **n;
  if (demo_service)
    if (auto r = demo::spawn_service(nd); !r) return fail(err, r.error());
  nlohmann::json ports{{"name", nd.name()},
                       {"listen_port", nd.listen_port()},
                       {"cluster_port", nd.cluster_port()},
                       {"metrics_port", nd.metrics().exposer_port()},
                       {"pid", ::getpid()}};
  if (!port_file.empty()) {
    std::ofstream pf{port_file + ".tmp"};
    pf << ports.dump() << "\n";
    pf.close();
    if (!pf || std::rename((port_file + ".tmp").c_str(), port_file.c_str()) != 0)
      return fail(err, error{errc::internal, "--port-file: cannot write '" + port_file + "'"});
  }
  out << "af node " << nd.name() << " running: " << ports.dump()
      << " (SIGINT/SIGTERM stop, SIGHUP reloads feature flags)" << std::endl;
  for (;;) {
    // Wake up now and then: the node may stop by itself (its root supervisor gave up).
    int sig = signals.wait_for(std::chrono::milliseconds(200));
    if (sig == 0) {
      if (auto f = nd.failure()) {
        nd.shutdown();
        err << "af: node " << nd.name() << " failed: " << f->message() << std::endl;
        return k_exit_failure;
      }
      continue;
    }
    if (sig == SIGHUP) {
      // The node logs a reload and a bad file (which keeps the old flags), but not a node
      // started without --config: say so here rather than ignore the signal silently.
      if (auto r = nd.reload_features(); !r && nd.cfg().file().empty())
        nd.log().warn("features_reload_failed", r.error().to_string());
      continue;
    }
    nd.log().info("signal_received", sig == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  }
  // With execution ownership, hand the executions over before leaving: af.exec stops its
  // executors and releases their leases, so the other nodes take them at once (they scan when
  // they hear this node left) instead of after the lease ttl.
  if (runs_singletons) {
    auto h = nd.ask<v1::SingletonHandoverResult>(cluster::k_singletons_agent,
                                                 v1::SingletonHandover{}, std::chrono::seconds(5));
    if (!h) nd.log().warn("singleton_handover_failed", h.error().to_string());
  }
  if (owns_executions) {
    auto h = nd.ask<v1::ExecHandoverResult>(plan::k_exec_agent, v1::ExecHandover{},
                                            lease_ttl + std::chrono::seconds(2));
    if (!h) nd.log().warn("exec_handover_failed", h.error().to_string());
  }
  // A graceful leave: a few members are told at once and gossip spreads it, so this node's
  // virtual agents move without waiting for failure detection.
  if (nd.lookup("af.cluster.members")) {
    auto left = nd.ask<v1::MembersReply>("af.cluster.members", v1::SwimLeave{},
                                         std::chrono::seconds(2));
    if (left)
      std::this_thread::sleep_for(std::chrono::milliseconds(300)); // the tells leave the transport
    else
      nd.log().warn("cluster_leave_failed", left.error().to_string());
  }
  nd.shutdown();
  out << "af node " << nd.name() << " stopped" << std::endl;
  return k_exit_ok;
}

int cmd_node_tree(const std::string& connect, bool json, std::uint32_t max_children, int timeout_ms,
                  std::ostream& out, std::ostream& err) {
  auto client = remote_node::connect(connect);
  if (!client) return fail(err, client.error());
  v1::TreeRequest req;
  req.set_max_children(max_children);
  auto t = (*client)->ask<v1::SupervisorTree>(k_control_agent, req,
                                              std::chrono::milliseconds(timeout_ms));
  if (!t) return fail_remote(err, t.error());
  if (json) {
    std::string text;
    google::protobuf::util::JsonPrintOptions po;
    po.preserve_proto_field_names = true;
    po.always_print_primitive_fields = true;
    if (auto st = google::protobuf::util::MessageToJsonString(*t, &text, po); !st.ok())
      return fail(err, error{errc::internal, "tree as JSON: " + st.ToString()});
    out << text << "\n";
    return k_exit_ok;
  }
  out << sup::render_tree(*t);
  return k_exit_ok;
}

int cmd_node_status(const std::string& connect, bool json, int timeout_ms, std::ostream& out,
                    std::ostream& err) {
  auto client = remote_node::connect(connect);
  if (!client) return fail(err, client.error());
  auto s = (*client)->ask<v1::NodeStatus>(k_control_agent, v1::NodeStatusRequest{},
                                          std::chrono::milliseconds(timeout_ms));
  if (!s) return fail_remote(err, s.error());
  if (json) {
    out << status_json(*s).dump() << "\n";
    return k_exit_ok;
  }
  out << "node       " << s->name() << "\n"
      << "version    " << s->version() << "\n"
      << "uptime     " << std::fixed << std::setprecision(1) << s->uptime_seconds() << " s\n"
      << "agents     " << s->agent_count() << "\n"
      << "scheduler  " << s->scheduler_policy() << ", " << s->scheduler_threads() << " threads\n";
  for (const auto& [k, v] : s->features())
    out << "feature    " << k << " = " << v << "\n";
  return k_exit_ok;
}

void print_demo(const v1::DemoRequest& req, const v1::DemoResult& r, bool json, std::ostream& out) {
  const bool ok = r.primes() == r.expected();
  if (json) {
    out << nlohmann::json{{"workers", req.workers()},
                          {"tasks", r.tasks()},
                          {"limit", req.limit()},
                          {"primes", r.primes()},
                          {"expected", r.expected()},
                          {"ok", ok},
                          {"asks", r.asks()},
                          {"seconds", r.seconds()},
                          {"task_rtt_us", {{"p50", r.task_p50_us()}, {"p99", r.task_p99_us()}}},
                          {"peer_rtt_us", {{"p50", r.peer_p50_us()}, {"p99", r.peer_p99_us()}}}}
               .dump()
        << "\n";
    return;
  }
  out << std::fixed << std::setprecision(1) << "result: " << r.primes() << " primes below "
      << req.limit() << " (independent sieve: " << r.expected() << ", "
      << (ok ? "match" : "MISMATCH") << ")\n"
      << "asks: " << r.asks() << " (" << r.tasks() << " tasks + " << 2 * r.tasks()
      << " peer asks) in " << std::setprecision(3) << r.seconds() << " s\n"
      << std::setprecision(1) << "task round trip (coordinator -> worker -> 2 peers -> back): p50 "
      << r.task_p50_us() << " us, p99 " << r.task_p99_us() << " us\n"
      << "peer round trip (worker -> peer -> worker): p50 " << r.peer_p50_us() << " us, p99 "
      << r.peer_p99_us() << " us\n";
}

int cmd_demo(const node_flags& flags, const v1::DemoRequest& req, const std::string& connect,
             bool json, std::ostream& out, std::ostream& err) {
  const auto timeout = std::chrono::minutes(10);
  if (!json)
    out << "af demo: " << req.workers() << " worker agents, " << req.tasks() << " tasks ("
        << req.window() << " in flight), counting primes below " << req.limit()
        << (connect.empty() ? "" : " on node " + connect) << "\n"
        << std::flush;
  expected<v1::DemoResult> result = error{errc::internal, "not run"};
  if (!connect.empty()) {
    auto client = remote_node::connect(connect);
    if (!client) return fail(err, client.error());
    result = (*client)->ask<v1::DemoResult>("demo.service", req, timeout);
  } else {
    auto cfg = flags.load({{"log.level", "warn", "af demo default"}});
    if (!cfg) return fail(err, cfg.error());
    node::options opt;
    opt.cfg = std::move(*cfg);
    auto n = node::start(std::move(opt));
    if (!n) return fail(err, n.error());
    if (auto r = demo::spawn_service(**n); !r) return fail(err, r.error());
    if (!json)
      if (auto r = demo::spawn_progress(**n, out, ::isatty(STDOUT_FILENO) != 0); !r)
        return fail(err, r.error());
    result = (*n)->ask<v1::DemoResult>("demo.service", req, timeout);
  }
  if (!result) return fail_remote(err, result.error());
  print_demo(req, *result, json, out);
  return result->primes() == result->expected() ? k_exit_ok : k_exit_failure;
}

int cmd_config_show(const node_flags& flags, bool json, std::ostream& out, std::ostream& err) {
  auto cfg = flags.load();
  if (!cfg) return fail(err, cfg.error());
  auto j = cfg->to_json();
  if (json) {
    out << j.dump(2) << "\n";
    return k_exit_ok;
  }
  for (const auto& d : config::schema())
    out << std::left << std::setw(28) << d.key << " = " << std::setw(20)
        << cfg->get_string_any(d.key) << "  (" << cfg->origin(d.key) << ")\n";
  for (const auto& [k, v] : cfg->features().snapshot_strings())
    out << std::left << std::setw(28) << ("features." + k) << " = " << v << "\n";
  return k_exit_ok;
}

int cmd_config_keys(std::ostream& out) {
  for (const auto& d : config::schema())
    out << d.key << "  (" << d.type << ", default '" << d.default_value << "', env " << d.env_var
        << ")\n    " << d.description << "\n";
  return k_exit_ok;
}

} // namespace

int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
        const extensions& ext) {
  CLI::App app{"af: the AgentFlow command (agents, nodes, demo)\n\n"
               "Example:\n  af demo\n  af node start --listen 127.0.0.1:7400 --metrics "
               "127.0.0.1:9400"};
  app.name("af");
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");

  bool json = false;
  auto* version =
      app.add_subcommand("version", "print the version\n\nExample:\n  af version --json");
  version->add_flag("--json", json, "print JSON");

  auto* node_cmd = app.add_subcommand("node", "run or query a node");
  node_cmd->require_subcommand(1);
  node_flags start_flags;
  std::string port_file;
  bool no_demo = false;
  auto* start = node_cmd->add_subcommand(
      "start", "run a node until SIGINT/SIGTERM (SIGHUP reloads feature flags)\n\nExample:\n"
               "  af node start --data-dir /tmp/af --listen 127.0.0.1:7400 --metrics "
               "127.0.0.1:9400");
  start_flags.add_to(*start, true);
  start->add_option("--port-file", port_file,
                    "write {\"name\",\"listen_port\",\"metrics_port\",\"cluster_port\",\"pid\"} as JSON once listening");
  start->add_flag("--no-demo-service", no_demo, "do not register demo.service");
  std::vector<std::string> start_plugins;
  start->add_option("--plugin", start_plugins,
                    "load agent types and tools from a plugin (a shared library exporting "
                    "agentflow_plugin_init; repeatable)");

  std::string connect;
  int timeout_ms = 5000;
  auto* status = node_cmd->add_subcommand(
      "status", "print a running node's name, uptime and agent count\n\nExample:\n"
                "  af node status --connect 127.0.0.1:7400 --json");
  status->add_option("--connect", connect, "the node's control endpoint HOST:PORT")->required();
  status->add_flag("--json", json, "print JSON");
  status->add_option("--timeout-ms", timeout_ms, "how long to wait for the reply")
      ->check(CLI::Range(1, 3'600'000));

  std::uint32_t max_children = 1000;
  auto* tree = node_cmd->add_subcommand(
      "tree", "print a running node's supervision tree: supervisors, strategies, children,\n"
              "their state and restart counts\n\nExample:\n"
              "  af node tree --connect 127.0.0.1:7400\n"
              "  af node tree --connect 127.0.0.1:7400 --json --max-children 50");
  tree->add_option("--connect", connect, "the node's control endpoint HOST:PORT")->required();
  tree->add_flag("--json", json, "print JSON (af.v1.SupervisorTree)");
  tree->add_option("--max-children", max_children,
                   "children listed per supervisor (the rest are counted)")
      ->check(CLI::Range(1, 1'000'000));
  tree->add_option("--timeout-ms", timeout_ms, "how long to wait for the reply")
      ->check(CLI::Range(1, 3'600'000));

  node_flags demo_flags;
  std::uint32_t workers = 1000, tasks = 10000, window = 64;
  std::uint64_t limit = 5'000'000;
  auto* demo_cmd = app.add_subcommand(
      "demo", "1,000 agents counting primes together: a coordinator fans tasks out to workers,\n"
              "each worker asks two peers before replying; prints progress, the checked result\n"
              "and round-trip p50/p99\n\nExample:\n  af demo\n  af demo --workers 200 --json\n"
              "  af demo --connect 127.0.0.1:7400   (run it inside a running node)");
  demo_flags.add_to(*demo_cmd, false);
  demo_cmd->add_option("--workers", workers, "worker agents")->check(CLI::Range(3, 1'000'000));
  demo_cmd->add_option("--tasks", tasks, "tasks to fan out")->check(CLI::Range(1, 10'000'000));
  demo_cmd->add_option("--limit", limit, "count the primes below this number")
      ->check(CLI::Range(3, 1'000'000'000));
  demo_cmd->add_option("--window", window, "tasks in flight at once")
      ->check(CLI::Range(1, 1'000'000));
  demo_cmd->add_option("--connect", connect, "run the demo inside the node at HOST:PORT");
  demo_cmd->add_flag("--json", json, "print the result as JSON");

  auto* config_cmd = app.add_subcommand("config", "inspect the layered configuration");
  config_cmd->require_subcommand(1);
  node_flags show_flags;
  auto* show = config_cmd->add_subcommand(
      "show", "print every key with its value and where it came from\n\nExample:\n"
              "  AF_SCHEDULER_THREADS=1 af config show --config node.yaml --json");
  show_flags.add_to(*show, true);
  show->add_flag("--json", json, "print JSON");
  auto* keys = config_cmd->add_subcommand(
      "keys", "list every configuration key, its type, default and environment variable\n\n"
              "Example:\n  af config keys");

  auto run_audit = detail::add_audit_commands(app, out, err);
  auto run_db = detail::add_db_commands(app, out, err);
  auto run_plans = detail::add_plan_commands(app, out, err, ext);
  auto run_sim = detail::add_sim_commands(app, out, err, ext);
  auto run_cluster = detail::add_cluster_commands(app, out, err);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return k_exit_ok;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return k_exit_ok;
  } catch (const CLI::ParseError& e) {
    // Subcommand help (-h after a subcommand) arrives as CallForHelp from the subcommand.
    if (e.get_exit_code() == 0) {
      out << e.what() << "\n";
      return k_exit_ok;
    }
    // CLI11 reports a missing subcommand or required option before the arguments it did not
    // understand, so `af --bogus` or `af frobnicate` would only say "A subcommand is required":
    // name the culprits first.
    std::string msg = e.what();
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr)
      if (auto extra = app.remaining(true); !extra.empty())
        msg = std::string{CLI::ExtrasError(extra).what()} + " (" + msg + ")";
    err << "af: " << msg << "\nRun 'af --help' (or 'af SUBCOMMAND --help') for usage.\n";
    return k_exit_usage;
  }

  try {
    if (version->parsed()) return cmd_version(json, out);
    if (start->parsed()) return cmd_node_start(start_flags, port_file, !no_demo, start_plugins, ext, out,
                                            err);
    if (status->parsed()) return cmd_node_status(connect, json, timeout_ms, out, err);
    if (tree->parsed()) return cmd_node_tree(connect, json, max_children, timeout_ms, out, err);
    if (demo_cmd->parsed()) {
      v1::DemoRequest req;
      req.set_workers(workers);
      req.set_tasks(tasks);
      req.set_limit(limit);
      req.set_window(window);
      return cmd_demo(demo_flags, req, connect, json, out, err);
    }
    if (show->parsed()) return cmd_config_show(show_flags, json, out, err);
    if (keys->parsed()) return cmd_config_keys(out);
    if (auto rc = run_audit()) return *rc;
    if (auto rc = run_db()) return *rc;
    if (auto rc = run_plans()) return *rc;
    if (auto rc = run_sim()) return *rc;
    if (auto rc = run_cluster()) return *rc;
  } catch (const std::exception& ex) {
    err << "af: internal error: " << ex.what() << "\n";
    return k_exit_failure;
  }
  return k_exit_usage;
}

int main(int argc, char** argv) { return run(argc, argv, std::cout, std::cerr); }

int main(int argc, char** argv, const extensions& ext) {
  return run(argc, argv, std::cout, std::cerr, ext);
}

} // namespace af::cli
