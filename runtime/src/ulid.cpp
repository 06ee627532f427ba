#include "af/ulid.hpp"

namespace af {

namespace {
__extension__ typedef unsigned __int128 u128;
constexpr std::string_view k_crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int crockford_value(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  if (c == 'O') c = '0';
  if (c == 'I' || c == 'L') c = '1';
  auto pos = k_crockford.find(c);
  return pos == std::string_view::npos ? -1 : static_cast<int>(pos);
}
} // namespace

ulid ulid::from_parts(std::uint64_t unix_ms, std::uint16_t rand_hi, std::uint64_t rand_lo) {
  bytes_type b{};
  for (int i = 0; i < 6; ++i)
    b[i] = static_cast<std::uint8_t>(unix_ms >> (8 * (5 - i)));
  b[6] = static_cast<std::uint8_t>(rand_hi >> 8);
  b[7] = static_cast<std::uint8_t>(rand_hi);
  for (int i = 0; i < 8; ++i)
    b[8 + i] = static_cast<std::uint8_t>(rand_lo >> (8 * (7 - i)));
  return ulid{b};
}

std::uint64_t ulid::unix_ms() const noexcept {
  std::uint64_t ms = 0;
  for (int i = 0; i < 6; ++i)
    ms = (ms << 8) | bytes_[i];
  return ms;
}

bool ulid::is_nil() const noexcept {
  for (auto x : bytes_)
    if (x != 0) return false;
  return true;
}

std::string ulid::to_string() const {
  // 128 bits as 26 base32 digits: the first digit carries only 3 bits.
  std::string out(26, '0');
  u128 v = 0;
  for (auto x : bytes_)
    v = (v << 8) | x;
  for (int i = 25; i >= 0; --i) {
    out[static_cast<size_t>(i)] = k_crockford[static_cast<size_t>(v & 31u)];
    v >>= 5;
  }
  return out;
}

expected<ulid> ulid::parse(std::string_view text) {
  if (text.size() != 26)
    return validation_error("ulid: expected 26 characters, got " + std::to_string(text.size()));
  u128 v = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    int d = crockford_value(text[i]);
    if (d < 0)
      return validation_error("ulid: invalid character '" + std::string(1, text[i])
                              + "' at position " + std::to_string(i));
    if (i == 0 && d > 7) return validation_error("ulid: value overflows 128 bits");
    v = (v << 5) | static_cast<unsigned>(d);
  }
  bytes_type b{};
  for (int i = 15; i >= 0; --i) {
    b[static_cast<size_t>(i)] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
  return ulid{b};
}

expected<ulid> ulid::from_bytes(std::string_view raw) {
  if (raw.size() != 16)
    return validation_error("ulid: expected 16 bytes, got " + std::to_string(raw.size()));
  bytes_type b{};
  for (size_t i = 0; i < 16; ++i)
    b[i] = static_cast<std::uint8_t>(raw[i]);
  return ulid{b};
}

} // namespace af
