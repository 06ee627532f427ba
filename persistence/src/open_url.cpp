// open_url: picks and opens a backend from a store URL ("memory:", "sqlite:PATH", a plain path,
// "postgres://..."), as given on the command line (--store) or in the node's configuration.
#include "af/store/backend.hpp"

#include <cctype>
#include <filesystem>

namespace af::store {

namespace {

/// "postgres" for "postgres://...", "sqlite" for "sqlite:...", "" when `url` has no scheme.
std::string_view scheme_of(std::string_view url) {
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
std::string sqlite_file(std::string path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.ends_with('/') || fs::is_directory(path, ec))
    return (fs::path{path} / "agentflow.db").string();
  return path;
}

} // namespace

expected<std::unique_ptr<backend>> open_url(const std::string& url) {
  if (url.empty())
    return validation_error("store URL is empty: expected memory:, sqlite:PATH, a path or "
                            "postgres://user@host:port/db");
  const auto scheme = scheme_of(url);
  if (scheme.empty()) return open_sqlite({.path = sqlite_file(url)});
  if (scheme == "memory") {
    if (url != "memory:")
      return validation_error("store URL '" + url
                              + "': the memory backend takes no path (memory:)");
    return std::unique_ptr<backend>{make_memory_backend()};
  }
  if (scheme == "sqlite") {
    // "sqlite:///abs/path" and "sqlite:rel/path" both work.
    auto path = url.substr(scheme.size() + 1);
    if (path.starts_with("//")) path.erase(0, 2);
    if (path.empty()) return validation_error("store URL '" + url + "': no database path");
    return open_sqlite({.path = sqlite_file(path)});
  }
  if (scheme == "postgres" || scheme == "postgresql") return open_postgres({.url = url});
  return validation_error("store URL '" + url + "': unknown scheme '" + std::string{scheme}
                          + "' (expected memory:, sqlite:PATH, a path or postgres://...)");
}

} // namespace af::store
