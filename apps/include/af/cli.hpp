// The `af` command-line entry point, as a library: a user's own node binary can register its
// agents and then hand argc/argv to af::cli::main.
#pragma once

#include <functional>
#include <iosfwd>

namespace af::plan {
class agent_types;
} // namespace af::plan
namespace af::tool {
class registry;
} // namespace af::tool

namespace af::cli {

/// What a user's own node binary adds to `af`: agent types and tools registered on every node
/// the command starts (`af node start`, `af run`), next to the built-in std.* agents and the
/// plugins given with --plugin.
struct extensions {
  std::function<void(plan::agent_types&, tool::registry&)> add;
};

/// Exit codes: 0 success, 1 runtime failure, 2 usage or validation error (bad flag, bad config).
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failure = 1;
inline constexpr int k_exit_usage = 2;

/// Runs `af` with the given arguments, writing to `out` and `err`.
int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
        const extensions& ext = {});

/// `run` on std::cout and std::cerr.
int main(int argc, char** argv);
int main(int argc, char** argv, const extensions& ext);

} // namespace af::cli
