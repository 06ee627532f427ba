#include "af/error.hpp"

#include <array>

namespace af {

namespace {
constexpr std::array<std::string_view, 9> k_names = {
    "validation", "not_found", "unauthorized", "forbidden", "quota",
    "timeout",    "transient", "conflict",     "internal",
};
} // namespace

std::string_view to_string(errc code) noexcept {
  auto i = static_cast<size_t>(code) - 1;
  return i < k_names.size() ? k_names[i] : std::string_view{"internal"};
}

bool from_string(std::string_view name, errc& out) noexcept {
  for (size_t i = 0; i < k_names.size(); ++i)
    if (k_names[i] == name) {
      out = static_cast<errc>(i + 1);
      return true;
    }
  return false;
}

std::string error::to_string() const {
  std::string out{af::to_string(code_)};
  out += ": ";
  out += message_;
  return out;
}

} // namespace af
