// The numbered SQL migrations of each backend, embedded at build time from
// persistence/migrations/<backend>/NNNN_name.{up,down}.sql (see persistence/CMakeLists.txt).
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace af::store {

/// One schema step: `up` applies it, `down` reverts it. Numbers run 1, 2, ... without gaps.
struct migration {
  int number = 0;
  std::string name; ///< "journal", "audit_log", ... (the file name without number and suffix)
  std::string_view up;
  std::string_view down;
};

/// The migrations of "sqlite" or "postgres", in order (empty for an unknown backend).
[[nodiscard]] std::span<const migration> migrations_for(std::string_view backend);

} // namespace af::store
