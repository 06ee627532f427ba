// Durations as text (af/duration_text.hpp): the one parser behind plan timeouts, std.sleep and
// simulation scenarios; exact values, refusals that quote the text, and format_duration's round
// trip.
#include "af/duration_text.hpp"

#include <catch2/catch.hpp>

#include <initializer_list>
#include <string>

namespace {
using namespace std::chrono_literals;
using Catch::Matchers::Contains;
} // namespace

TEST_CASE("durations: one parser for plans, std.sleep and scenarios", "[duration]") {
  using af::parse_duration;
  CHECK(*parse_duration("250ms") == 250ms);
  CHECK(*parse_duration("2s") == 2s);
  CHECK(*parse_duration("1.5s") == 1500ms);
  CHECK(*parse_duration("1m") == 60s);
  CHECK(*parse_duration("1h") == 3600s);
  CHECK(*parse_duration("1500us") == 1500us);
  CHECK(*parse_duration("10ns") == 10ns);
  CHECK(*parse_duration("0") == 0ns);
  CHECK(*parse_duration("-250ms") == -250ms);
  CHECK(*parse_duration("0.000000001s") == 1ns);
  CHECK(*parse_duration("1.50s") == 1500ms);
  CHECK(*parse_duration("0.1h") == 6min);
  CHECK(*parse_duration("9223372036s") == 9223372036s);

  for (const char* bad : {"", "s", "5", "-", "5 s", "5d", "1.5ns", "0.0000000001s", ".5s", "5.s",
                          "1e3ms", "+5s", "--5s", "9223372037s", "99999999999999999999ns"}) {
    INFO(bad);
    auto d = parse_duration(bad);
    REQUIRE_FALSE(d);
    CHECK(d.error().code() == af::errc::validation);
    CHECK_THAT(d.error().message(), Contains(std::string{"'"} + bad + "'"));
    CHECK_THAT(d.error().message(), Contains("expected a duration"));
  }
  CHECK(parse_duration("1.5ns").error().message()
        == "'1.5ns': finer than a nanosecond; expected a duration: a number and a unit ns, us, "
           "ms, s, m or h (250ms, 1.5s, 2m)");

  // format_duration writes text that reads back to the same value.
  for (af::duration d : std::initializer_list<af::duration>{0ns, 1ns, 999ns, 1500ns, 250ms, 1500ms,
                                                            2s, 90s, 2min, 3h, -250ms, 1234567891ns,
                                                            std::chrono::nanoseconds::max()}) {
    INFO(d.count());
    auto back = parse_duration(af::format_duration(d));
    REQUIRE(back);
    CHECK(*back == d);
  }
  CHECK(af::format_duration(1500ms) == "1.5s");
  CHECK(af::format_duration(90s) == "90s");
  CHECK(af::format_duration(2min) == "2m");
  CHECK(af::format_duration(-250ms) == "-250ms");
  CHECK(af::format_duration(1500ns) == "1.5us");
}
