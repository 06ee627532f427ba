// Private: groups of `af` subcommands that live in files of their own. Each adds its
// subcommands to the app and returns a runner that runs the one that was parsed, or returns
// nullopt when none of its subcommands was on the command line.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <ostream>

namespace af::cli::detail {

using runner = std::function<std::optional<int>()>;

/// `af audit verify|tail` (apps/src/audit_commands.cpp).
runner add_audit_commands(CLI::App& app, std::ostream& out, std::ostream& err);
/// `af db migrate|status`, `af backup`, `af restore` (apps/src/db_commands.cpp).
runner add_db_commands(CLI::App& app, std::ostream& out, std::ostream& err);

} // namespace af::cli::detail
