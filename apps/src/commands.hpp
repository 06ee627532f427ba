// Private: groups of `af` subcommands that live in files of their own. Each adds its
// subcommands to the app and returns a runner that runs the one that was parsed, or returns
// nullopt when none of its subcommands was on the command line.
#pragma once

#include "af/cli.hpp"
#include "af/config.hpp"
#include "af/plan/agents.hpp"
#include "af/plan/executor.hpp"
#include "af/plan/plugin.hpp"
#include "af/store/journal.hpp"
#include "af/sup/spec.hpp"
#include "af/tool/registry.hpp"

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace af::cli::detail {

using runner = std::function<std::optional<int>()>;

/// Prints "af: <error>" and returns the exit status for it: usage (2) for validation and
/// not_found, failure (1) otherwise (apps/src/cli.cpp).
int fail(std::ostream& err, const error& e);

/// Where the store tools look: `--store URL`, `--data-dir DIR`, or else the node's own
/// configuration (`--config FILE` and AF_* variables: store.url, else node.data_dir), so that
/// `af db status` on the node's machine finds the node's store.
struct store_choice {
  std::string data_dir, store, config_file;

  void add_to(CLI::App& cmd) {
    auto* d =
        cmd.add_option("--data-dir", data_dir, "the node's data directory (DIR/agentflow.db)");
    auto* s = cmd.add_option("--store", store,
                             "a store URL: sqlite:PATH, a path, or postgres://user@host:port/db");
    auto* c = cmd.add_option("--config", config_file,
                             "the node's YAML configuration, for store.url / node.data_dir "
                             "(the default when neither --data-dir nor --store is given)");
    d->excludes(s);
    c->excludes(d);
    c->excludes(s);
  }

  /// The store URL from --store, --data-dir or the configuration (file < AF_* environment).
  [[nodiscard]] expected<std::string> url() const {
    if (!store.empty()) return store;
    if (!data_dir.empty()) return "sqlite:" + data_dir + "/agentflow.db";
    config_sources src;
    src.file = config_file;
    src.env = config::process_environment();
    auto cfg = config::load(src);
    if (!cfg) return cfg.error();
    return store::store_url(*cfg);
  }

  /// Says where the store came from, for "not found" messages.
  [[nodiscard]] std::string origin() const {
    if (!store.empty()) return "--store";
    if (!data_dir.empty()) return "--data-dir";
    return config_file.empty() ? "the default configuration (node.data_dir; or pass --data-dir, "
                                 "--store or --config)"
                               : "--config " + config_file;
  }
};

/// `af audit verify|tail` (apps/src/audit_commands.cpp).
runner add_audit_commands(CLI::App& app, std::ostream& out, std::ostream& err);
/// `af db migrate|status`, `af backup`, `af restore` (apps/src/db_commands.cpp).
runner add_db_commands(CLI::App& app, std::ostream& out, std::ostream& err);
/// `af run`, `af submit`, `af exec ...` (apps/src/plan_commands.cpp).
runner add_plan_commands(CLI::App& app, std::ostream& out, std::ostream& err,
                         const extensions& ext);

/// `af sim run`, `af sim fuzz` (apps/src/sim_commands.cpp).
runner add_sim_commands(CLI::App& app, std::ostream& out, std::ostream& err, const extensions& ext);
/// `af cluster members`, `af ask` (apps/src/cluster_commands.cpp).
runner add_cluster_commands(CLI::App& app, std::ostream& out, std::ostream& err);
/// The cluster's system services (membership, Raft with cluster.raft.members, placement) of a
/// node started with cluster.listen; none without it (apps/src/cluster_services.cpp).
expected<std::vector<sup::child_spec>> cluster_services(const config& cfg);
/// af.exec's ownership settings: enabled with cluster.raft.members and a PostgreSQL store
/// (executions have owner leases and are taken over), off otherwise.
expected<plan::exec_ownership> exec_ownership_from(const config& cfg);
/// af.cluster.singletons for the agent types named by cluster.singletons (none: no service).
expected<std::optional<sup::child_spec>> singletons_service(const config& cfg,
                                                            const plan::agent_types& agents);

/// The agent types and tools a command offers: the built-in ones `builtins` registers, then the
/// user's extensions, then the plugins of --plugin (their code stays mapped while `plugins`
/// lives: keep it beyond whatever runs the agents).
struct agent_catalog {
  /// First, so destroyed last: the plugins' code must stay mapped while any factory or tool
  /// they registered still exists.
  std::shared_ptr<plan::plugin_set> plugins;
  std::shared_ptr<plan::agent_types> agents;
  std::shared_ptr<tool::registry> tools;
};
using builtin_agents = std::function<status(plan::agent_types&, tool::registry&)>;
expected<agent_catalog> load_agents(const std::vector<std::string>& plugin_files,
                                    const extensions& ext, const builtin_agents& builtins);
/// The af.exec service of a node started by `af`: the std.* agents (std.ledger writing the
/// node's store), the user's extensions, and the plugins (kept loaded in `plugins` until the
/// node has stopped).
struct exec_service_parts {
  sup::child_spec spec;
  std::shared_ptr<plan::plugin_set> plugins;
  std::shared_ptr<plan::agent_types> agents; ///< the catalog af.exec spawns from
};
expected<exec_service_parts> exec_service(const config& cfg,
                                          const std::vector<std::string>& plugin_files,
                                          const extensions& ext, bool resume,
                                          plan::exec_ownership ownership = {});

} // namespace af::cli::detail
