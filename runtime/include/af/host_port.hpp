// "host:port" addresses as used by --listen, --metrics and --connect.
#pragma once

#include "af/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace af {

struct host_port {
  std::string host;
  std::uint16_t port = 0;
  [[nodiscard]] std::string to_string() const { return host + ":" + std::to_string(port); }
};

/// Parses "host:port" ("[::1]:80" for IPv6). `what` names the setting in error messages.
[[nodiscard]] expected<host_port> parse_host_port(std::string_view text, std::string_view what);

} // namespace af
