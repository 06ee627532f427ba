// Shared by the crash-safety test and its child (af_crash_appender): the streams it appends to
// and the exact payload of every event, so the test can tell each event's batch and position.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace af::test {

inline constexpr std::uint64_t k_crash_streams = 6;
inline constexpr std::uint64_t k_crash_max_batch = 5; ///< events per append: 1..5
inline constexpr std::string_view k_crash_event_type = "af.test.CrashEvent";
inline constexpr std::string_view k_crash_audit_action = "journal.append";

inline std::string crash_stream(std::uint64_t i) { return "crash/" + std::to_string(i); }

/// "<stream>|<gen>|<appender>|<batch>|<index>|<k>|" then a filler of 0..63 bytes, so payload
/// sizes vary. gen (the child's run), appender and batch name the append; index is the event's
/// position in it, k its size.
inline std::string crash_payload(const std::string& stream, std::uint64_t gen,
                                 std::uint64_t appender, std::uint64_t batch, std::uint64_t index,
                                 std::uint64_t k) {
  std::string p = stream + "|" + std::to_string(gen) + "|" + std::to_string(appender) + "|"
                  + std::to_string(batch) + "|" + std::to_string(index) + "|" + std::to_string(k)
                  + "|";
  const auto fill = (gen * 31 + appender * 17 + batch * 7 + index * 13) % 64;
  p.append(fill, static_cast<char>('a' + (batch + index) % 26));
  return p;
}

} // namespace af::test
