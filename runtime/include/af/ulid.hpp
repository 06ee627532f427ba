// af::ulid: sortable 128-bit ids in the ULID layout (48-bit Unix milliseconds, 80 random bits),
// rendered as 26 Crockford base32 characters.
#pragma once

#include "af/error.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace af {

class ulid {
public:
  using bytes_type = std::array<std::uint8_t, 16>;

  constexpr ulid() = default;
  explicit constexpr ulid(const bytes_type& b) : bytes_(b) {}
  /// Builds an id from a millisecond timestamp and the 80-bit random part (hi: top 16 bits).
  static ulid from_parts(std::uint64_t unix_ms, std::uint16_t rand_hi, std::uint64_t rand_lo);
  /// Parses 26 Crockford base32 characters (case-insensitive).
  static expected<ulid> parse(std::string_view text);
  /// From exactly 16 raw bytes.
  static expected<ulid> from_bytes(std::string_view raw);

  [[nodiscard]] const bytes_type& bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::string_view raw() const noexcept {
    return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
  }
  [[nodiscard]] std::uint64_t unix_ms() const noexcept;
  [[nodiscard]] bool is_nil() const noexcept;
  [[nodiscard]] std::string to_string() const;

  friend constexpr bool operator==(const ulid&, const ulid&) = default;
  friend constexpr auto operator<=>(const ulid&, const ulid&) = default;

private:
  bytes_type bytes_{};
};

} // namespace af
