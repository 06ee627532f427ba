// Private: groups of `af` subcommands that live in files of their own. Each adds its
// subcommands to the app and returns a runner that runs the one that was parsed, or returns
// nullopt when none of its subcommands was on the command line.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <ostream>
#include <string>

namespace af::cli::detail {

using runner = std::function<std::optional<int>()>;

/// The `--data-dir DIR | --store URL` pair of the store tools (one excludes the other).
inline void add_store_flags(CLI::App& cmd, std::string& data_dir, std::string& store) {
  auto* d = cmd.add_option("--data-dir", data_dir, "the node's data directory (DIR/agentflow.db)");
  auto* s = cmd.add_option("--store", store,
                           "a store URL: sqlite:PATH, a path, or postgres://user@host:port/db");
  d->excludes(s);
}

/// `af audit verify|tail` (apps/src/audit_commands.cpp).
runner add_audit_commands(CLI::App& app, std::ostream& out, std::ostream& err);
/// `af db migrate|status`, `af backup`, `af restore` (apps/src/db_commands.cpp).
runner add_db_commands(CLI::App& app, std::ostream& out, std::ostream& err);

} // namespace af::cli::detail
