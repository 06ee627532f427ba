// Diagnostics of the SQLite backend that the portable interface has no room for (tests, `af db`).
#pragma once

#include "af/store/backend.hpp"

#include <string>
#include <string_view>

namespace af::store {

/// The value of `PRAGMA <name>` on the backend's own connection (some settings, such as
/// synchronous and busy_timeout, are per connection). `validation` when `b` is not SQLite.
[[nodiscard]] expected<std::string> sqlite_pragma(backend& b, std::string_view name);

} // namespace af::store
