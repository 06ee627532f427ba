// Durations written as text ("250ms", "1.5s", "-2m"): the one parser behind plan timeouts,
// std.sleep and simulation scenarios, so every file format spells durations the same way.
#pragma once

#include "af/error.hpp"
#include "af/services.hpp"

#include <string>
#include <string_view>

namespace af {

/// An optional '-', an integer or decimal, and a unit ns, us, ms, s, m or h: "250ms", "1.5s",
/// "2m", "1h", "1500us", "10ns", "-250ms"; "0" needs no unit. Errors (`validation`) when the
/// text is malformed, is not a whole number of nanoseconds ("1.5ns") or does not fit in
/// `duration` (about 292 years). The message quotes the text; callers add where it came from.
[[nodiscard]] expected<duration> parse_duration(std::string_view text);

/// What `parse_duration` accepts, for messages: "a duration: a number and a unit ns, us, ms,
/// s, m or h (250ms, 1.5s, 2m)".
[[nodiscard]] std::string_view duration_syntax() noexcept;

/// Short text that parse_duration reads back exactly: "0", "250ms", "1.5s", "-2m", "1500us".
[[nodiscard]] std::string format_duration(duration d);

} // namespace af
