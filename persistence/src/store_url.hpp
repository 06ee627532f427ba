// Private: how a store URL is read (open_url and the backup tools share it): its scheme, and the
// SQLite file a path names.
#pragma once

#include <cctype>
#include <filesystem>
#include <string>
#include <string_view>

namespace af::store::detail {

/// "postgres" for "postgres://...", "sqlite" for "sqlite:...", "" when `url` has no scheme.
inline std::string_view scheme_of(std::string_view url) {
  const auto colon = url.find(':');
  // One letter before the colon is a drive letter, not a scheme; a slash first means a path.
  if (colon == std::string_view::npos || colon < 2) return {};
  const auto scheme = url.substr(0, colon);
  if (!std::isalpha(static_cast<unsigned char>(scheme.front()))) return {};
  for (char c : scheme) {
    const auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && c != '+' && c != '-' && c != '.') return {};
  }
  return scheme;
}

/// A plain path or the PATH of "sqlite:PATH" names the database file, or a data directory
/// (existing, or written with a trailing slash) that holds agentflow.db.
inline std::string sqlite_file(const std::string& path) {
  std::error_code ec;
  if (path.ends_with('/') || std::filesystem::is_directory(path, ec))
    return (std::filesystem::path{path} / "agentflow.db").string();
  return path;
}

} // namespace af::store::detail
