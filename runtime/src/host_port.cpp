#include "af/host_port.hpp"

#include <charconv>

namespace af {

expected<host_port> parse_host_port(std::string_view text, std::string_view what) {
  auto fail = [&](std::string_view why) {
    return validation_error(std::string{what} + ": '" + std::string{text} + "' " + std::string{why}
                            + " (expected host:port, e.g. 127.0.0.1:7400)");
  };
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return fail("has no port");
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) return fail("has no host");
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || ptr != port.data() + port.size() || value > 65535)
    return fail("has an invalid port");
  return host_port{std::string{host}, static_cast<std::uint16_t>(value)};
}

} // namespace af
