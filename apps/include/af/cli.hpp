// The `af` command-line entry point, as a library: a user's own node binary can register its
// agents and then hand argc/argv to af::cli::main.
#pragma once

#include <iosfwd>

namespace af::cli {

/// Exit codes: 0 success, 1 runtime failure, 2 usage or validation error (bad flag, bad config).
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failure = 1;
inline constexpr int k_exit_usage = 2;

/// Runs `af` with the given arguments, writing to `out` and `err`.
int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

/// `run` on std::cout and std::cerr.
int main(int argc, char** argv);

} // namespace af::cli
