// open_url: picks and opens a backend from a store URL ("memory:", "sqlite:PATH", a plain path,
// "postgres://..."), as given on the command line (--store) or in the node's configuration.
#include "af/store/backend.hpp"
#include "store_url.hpp"

namespace af::store {

using detail::scheme_of;
using detail::sqlite_file;

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
