// SHA-256 (OpenSSL EVP) and hex helpers used by envelopes, the audit chain and traces.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace af {

using digest = std::array<std::uint8_t, 32>;

/// SHA-256 of `data`. Thread-safe; reuses a per-thread EVP context.
[[nodiscard]] digest sha256(std::string_view data);

/// Lower-case hex of arbitrary bytes.
[[nodiscard]] std::string to_hex(const std::uint8_t* data, std::size_t size);
[[nodiscard]] inline std::string to_hex(std::string_view bytes) {
  return to_hex(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}
template <std::size_t N>
[[nodiscard]] std::string to_hex(const std::array<std::uint8_t, N>& a) {
  return to_hex(a.data(), N);
}

} // namespace af
