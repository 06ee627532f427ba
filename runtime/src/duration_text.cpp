// Durations as text (af/duration_text.hpp). Exact integer arithmetic: a decimal is accepted only
// when it is a whole number of nanoseconds, so "0.1s" is 100'000'000 ns, never a rounded double.
#include "af/duration_text.hpp"

#include <array>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <utility>

namespace af {

namespace {

struct unit {
  std::string_view suffix;
  std::int64_t ns;
};

// Two-letter units first: "250ms" ends with "s" too.
constexpr std::array<unit, 6> k_units{{{"ns", 1},
                                       {"us", 1'000},
                                       {"ms", 1'000'000},
                                       {"s", 1'000'000'000},
                                       {"m", 60'000'000'000},
                                       {"h", 3'600'000'000'000}}};

bool all_digits(std::string_view s) {
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return !s.empty();
}

error malformed(std::string_view text, std::string_view why = {}) {
  std::string msg;
  msg.reserve(text.size() + why.size() + 96);
  msg.append("'").append(text).append("': ").append(why);
  if (!why.empty()) msg.append("; ");
  msg.append("expected ").append(duration_syntax());
  return validation_error(std::move(msg));
}

} // namespace

std::string_view duration_syntax() noexcept {
  return "a duration: a number and a unit ns, us, ms, s, m or h (250ms, 1.5s, 2m)";
}

expected<duration> parse_duration(std::string_view text) {
  auto body = text;
  const bool negative = body.starts_with('-');
  if (negative) body.remove_prefix(1);
  if (body == "0") return duration{0};
  const unit* u = nullptr;
  for (const auto& candidate : k_units)
    if (body.ends_with(candidate.suffix)) {
      u = &candidate;
      body.remove_suffix(candidate.suffix.size());
      break;
    }
  if (u == nullptr) return malformed(text);
  const auto dot = body.find('.');
  const auto whole_text = body.substr(0, dot);
  auto frac_text = dot == std::string_view::npos ? std::string_view{} : body.substr(dot + 1);
  if (!all_digits(whole_text) || (dot != std::string_view::npos && !all_digits(frac_text)))
    return malformed(text);
  while (frac_text.ends_with('0'))
    frac_text.remove_suffix(1);

  const auto too_long = [&] { return malformed(text, "too long (at most about 292 years)"); };
  std::int64_t whole = 0;
  auto [end, ec] = std::from_chars(whole_text.data(), whole_text.data() + whole_text.size(), whole);
  if (ec != std::errc{} || end != whole_text.data() + whole_text.size()) return too_long();
  std::int64_t ns = 0;
  if (__builtin_mul_overflow(whole, u->ns, &ns)) return too_long();

  if (!frac_text.empty()) {
    // frac / 10^digits of a unit is frac * u / 10^digits ns: whole only when 10^digits / g
    // divides frac, where g = gcd(u, 10^digits).
    if (frac_text.size() > 18) return malformed(text, "finer than a nanosecond");
    std::int64_t frac = 0;
    std::from_chars(frac_text.data(), frac_text.data() + frac_text.size(), frac);
    std::int64_t scale = 1;
    for (std::size_t i = 0; i < frac_text.size(); ++i)
      scale *= 10;
    const auto g = std::gcd(u->ns, scale);
    if (frac % (scale / g) != 0) return malformed(text, "finer than a nanosecond");
    std::int64_t frac_ns = 0;
    if (__builtin_mul_overflow(frac / (scale / g), u->ns / g, &frac_ns)
        || __builtin_add_overflow(ns, frac_ns, &ns))
      return too_long();
  }
  return duration{negative ? -ns : ns};
}

std::string format_duration(duration d) {
  const auto ns = d.count();
  if (ns == 0) return "0";
  // The magnitude as unsigned: -ns would overflow for the most negative value.
  const auto mag =
      ns < 0 ? std::uint64_t(0) - static_cast<std::uint64_t>(ns) : static_cast<std::uint64_t>(ns);
  const std::string sign = ns < 0 ? "-" : "";
  // Whole hours or minutes; else seconds, milliseconds or microseconds with at most three
  // decimals; else nanoseconds.
  for (auto it = k_units.rbegin(); it != k_units.rend(); ++it) {
    const auto unit_ns = static_cast<std::uint64_t>(it->ns);
    if (mag < unit_ns) continue;
    if (it->suffix == "h" || it->suffix == "m") {
      if (mag % unit_ns == 0) return sign + std::to_string(mag / unit_ns) + std::string{it->suffix};
      continue;
    }
    if (it->suffix != "ns" && mag % (unit_ns / 1000) != 0) continue;
    std::string out = std::to_string(mag / unit_ns);
    if (it->suffix != "ns") {
      auto frac = std::to_string(1000 + (mag % unit_ns) / (unit_ns / 1000)).substr(1);
      while (!frac.empty() && frac.back() == '0')
        frac.pop_back();
      if (!frac.empty()) out += "." + frac;
    }
    return sign + out + std::string{it->suffix};
  }
  return sign + std::to_string(mag) + "ns";
}

} // namespace af
