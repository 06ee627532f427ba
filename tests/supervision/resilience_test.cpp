// Tests of the resilience helpers (af/sup/retry.hpp, af/sup/circuit_breaker.hpp): state machines
// driven by a manual clock, seeded jitter, metric values and transition log lines.
#include "af/sup/circuit_breaker.hpp"
#include "af/sup/retry.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using af::duration;
using af::errc;
using af::sup::breaker_state;
using af::sup::retry_outcome;
using nlohmann::json;

constexpr std::array<errc, 9> k_all_kinds = {
    errc::validation, errc::not_found, errc::unauthorized, errc::forbidden, errc::quota,
    errc::timeout,    errc::transient, errc::conflict,     errc::internal,
};

af::error err(errc c) { return {c, "dep: something " + std::string{af::to_string(c)}}; }

// A logger writing JSON lines into memory, at debug level.
struct captured_log {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  af::logger log;

  captured_log() {
    const af::log_options opts{
        .level = af::log_level::debug, .format = "json", .file = {}, .node = "n1"};
    log = af::logger{af::make_memory_log_backend(opts, lines)};
  }
  // The parsed lines whose event is `event`.
  std::vector<json> events(std::string_view event) const {
    std::vector<json> out;
    for (const auto& l : *lines) {
      auto j = json::parse(l);
      if (j.value("event", "") == event) out.push_back(std::move(j));
    }
    return out;
  }
};

double counter_value(af::metrics& m, const std::string& name, const af::metric_labels& labels) {
  auto c = m.counter(name, "", labels);
  REQUIRE(c);
  return c->value();
}

double gauge_value(af::metrics& m, const std::string& name, const af::metric_labels& labels) {
  auto g = m.gauge(name, "", labels);
  REQUIRE(g);
  return g->value();
}

// Options whose budget never runs out, to look at backoff alone.
af::sup::retry_options unlimited_budget() {
  af::sup::retry_options o;
  o.max_attempts = std::numeric_limits<std::uint32_t>::max();
  o.budget_min_per_window = std::numeric_limits<std::uint32_t>::max();
  return o;
}

} // namespace

// --- retry: classification ------------------------------------------------------------------

TEST_CASE("retryable: only transient and timeout, for every error kind", "[resilience][retry]") {
  for (const auto kind : k_all_kinds) {
    INFO(af::to_string(kind));
    const bool expected = kind == errc::transient || kind == errc::timeout;
    CHECK(af::sup::retryable(kind) == expected);
    CHECK(af::sup::retryable(err(kind)) == expected);
  }
  // The message never matters, only the kind.
  CHECK_FALSE(af::sup::retryable(af::error{errc::validation, "transient timeout, please retry"}));
}

TEST_CASE("retry: a non-retryable error gives up at once, whatever the attempt",
          "[resilience][retry]") {
  af::manual_clock clk;
  af::rng rng{1};
  af::sup::retry_policy p{"db", {}, clk, rng};
  for (const auto kind : k_all_kinds) {
    if (af::sup::retryable(kind)) continue;
    INFO(af::to_string(kind));
    p.on_first_attempt();
    const auto d = p.next(err(kind), 1);
    CHECK(d.outcome == retry_outcome::gave_up_not_retryable);
    CHECK_FALSE(d.retry());
    CHECK(d.delay == duration::zero());
    // Reported unchanged: the caller's error speaks for itself.
    CHECK(p.give_up_error(d, err(kind)) == err(kind));
  }
  // Not retryable wins over exhausted.
  CHECK(p.next(err(errc::conflict), 99).outcome == retry_outcome::gave_up_not_retryable);
  CHECK(p.stats().gave_up_not_retryable == 8);
  CHECK(p.stats().retries == 0);
}

// --- retry: backoff -------------------------------------------------------------------------

TEST_CASE("retry: the backoff bound grows by the multiplier and stops at the cap",
          "[resilience][retry]") {
  af::manual_clock clk;
  af::rng rng{1};
  af::sup::retry_options o; // base 50ms, multiplier 2, cap 5s
  af::sup::retry_policy p{"db", o, clk, rng};
  CHECK(p.backoff_bound(0) == 50ms); // taken as attempt 1
  CHECK(p.backoff_bound(1) == 50ms);
  CHECK(p.backoff_bound(2) == 100ms);
  CHECK(p.backoff_bound(3) == 200ms);
  CHECK(p.backoff_bound(7) == 3200ms);
  CHECK(p.backoff_bound(8) == 5s); // 6.4s capped
  CHECK(p.backoff_bound(64) == 5s);
  CHECK(p.backoff_bound(std::numeric_limits<std::uint32_t>::max()) == 5s); // no overflow

  o.multiplier = 3.0;
  o.base = 10ms;
  o.cap = 1s;
  af::sup::retry_policy p3{"db", o, clk, rng};
  CHECK(p3.backoff_bound(2) == 30ms);
  CHECK(p3.backoff_bound(4) == 270ms);
  CHECK(p3.backoff_bound(5) == 810ms);
  CHECK(p3.backoff_bound(6) == 1s);

  o.multiplier = 1.0;
  af::sup::retry_policy flat{"db", o, clk, rng};
  CHECK(flat.backoff_bound(1) == 10ms);
  CHECK(flat.backoff_bound(40) == 10ms);

  o.base = duration::zero();
  af::sup::retry_policy zero{"db", o, clk, rng};
  CHECK(zero.backoff_bound(5) == duration::zero());
}

TEST_CASE("retry: full jitter is uniform over [0, bound]", "[resilience][retry]") {
  af::manual_clock clk;
  af::rng rng{42};
  af::sup::retry_policy p{"db", unlimited_budget(), clk, rng};
  for (const std::uint32_t attempt : {1U, 3U, 12U}) {
    const auto bound = p.backoff_bound(attempt);
    INFO("attempt " << attempt << ", bound " << af::sup::format_duration(bound));
    constexpr int n = 10'000;
    double sum = 0;
    std::array<int, 4> quarters{};
    auto lo = duration::max();
    auto hi = duration::zero();
    for (int i = 0; i < n; ++i) {
      const auto d = p.next(err(errc::transient), attempt);
      REQUIRE(d.retry());
      REQUIRE(d.delay >= duration::zero());
      REQUIRE(d.delay <= bound);
      lo = std::min(lo, d.delay);
      hi = std::max(hi, d.delay);
      sum += static_cast<double>(d.delay.count());
      const auto q = static_cast<std::size_t>(4.0 * static_cast<double>(d.delay.count())
                                              / static_cast<double>(bound.count()));
      ++quarters[std::min<std::size_t>(q, 3)];
    }
    const double mean = sum / n;
    const double half = static_cast<double>(bound.count()) / 2;
    // The standard error of the mean is bound / sqrt(12 n) ~ 0.3% of the bound.
    CHECK(mean == Approx(half).epsilon(0.02));
    for (const int q : quarters)
      CHECK(q == Approx(n / 4).epsilon(0.08));
    // Full jitter reaches both ends (unlike "equal jitter", which never goes below bound / 2).
    CHECK(lo < bound / 100);
    CHECK(hi > bound - bound / 100);
  }
}

TEST_CASE("retry: the same seed gives the same delays", "[resilience][retry]") {
  af::manual_clock clk;
  const auto draw = [&](std::uint64_t seed) {
    af::rng rng{seed};
    af::sup::retry_policy p{"db", unlimited_budget(), clk, rng};
    std::vector<duration> out;
    for (std::uint32_t attempt = 1; attempt <= 50; ++attempt)
      out.push_back(p.next(err(errc::timeout), attempt).delay);
    return out;
  };
  CHECK(draw(7) == draw(7));
  CHECK(draw(7) != draw(8));
}

TEST_CASE("retry: gives up once max_attempts attempts failed", "[resilience][retry]") {
  af::manual_clock clk;
  af::rng rng{1};
  af::sup::retry_options o;
  o.max_attempts = 3;
  af::sup::retry_policy p{"db", o, clk, rng};
  p.on_first_attempt();
  const auto d1 = p.next(err(errc::timeout), 1);
  REQUIRE(d1.retry());
  CHECK(d1.attempt == 1);
  CHECK(d1.delay <= 50ms);
  const auto d2 = p.next(err(errc::transient), 2);
  REQUIRE(d2.retry());
  CHECK(d2.delay <= 100ms);
  const auto d3 = p.next(err(errc::timeout), 3);
  CHECK(d3.outcome == retry_outcome::gave_up_exhausted);
  CHECK(d3.delay == duration::zero());
  const auto e = p.give_up_error(d3, err(errc::timeout));
  CHECK(e.code() == errc::timeout); // the kind survives, so callers still classify it
  CHECK(e.message() == "retry 'db': gave up after 3 attempts: timeout: dep: something timeout");
  CHECK(p.stats().retries == 2);
  CHECK(p.stats().gave_up_exhausted == 1);

  o.max_attempts = 1; // never retries
  af::sup::retry_policy once{"db", o, clk, rng};
  CHECK(once.next(err(errc::transient), 1).outcome == retry_outcome::gave_up_exhausted);
  o.max_attempts = 0; // behaves as 1
  af::sup::retry_policy zero{"db", o, clk, rng};
  CHECK(zero.next(err(errc::transient), 1).outcome == retry_outcome::gave_up_exhausted);
}

// --- retry: budget --------------------------------------------------------------------------

TEST_CASE("retry: the budget caps retries per window and recovers as the window slides",
          "[resilience][retry]") {
  af::manual_clock clk;
  af::rng rng{3};
  af::metrics m{"n1", "test"};
  af::sup::retry_options o;
  o.max_attempts = 100;
  o.budget_min_per_window = 2;
  o.budget_ratio = 0.5;
  o.budget_window = 10s; // buckets of 1s
  af::sup::retry_policy p{"flaky", o, clk, rng, {}, &m};

  for (int i = 0; i < 4; ++i)
    p.on_first_attempt();
  CHECK(p.budget().allowed == Approx(4.0)); // 2 + 0.5 * 4
  for (int i = 0; i < 4; ++i)
    REQUIRE(p.next(err(errc::transient), 1).retry());
  auto d = p.next(err(errc::transient), 1);
  CHECK(d.outcome == retry_outcome::gave_up_budget);
  CHECK(p.budget().retries == 4);
  const auto e = p.give_up_error(d, err(errc::transient));
  CHECK(e.code() == errc::transient);
  CHECK(e.message()
        == "retry 'flaky': retry budget exhausted after attempt 1 (at most 2 + 50% of first "
           "attempts per 10s): transient: dep: something transient");

  SECTION("more first attempts fund more retries") {
    clk.advance(3s);
    p.on_first_attempt();
    p.on_first_attempt(); // allowed: 2 + 0.5 * 6 = 5
    CHECK(p.next(err(errc::timeout), 2).retry());
    CHECK(p.next(err(errc::timeout), 2).outcome == retry_outcome::gave_up_budget);
  }

  SECTION("the spent budget comes back when its events leave the window") {
    clk.advance(9999ms); // bucket 9: bucket 0 is still in the window
    CHECK(p.next(err(errc::transient), 1).outcome == retry_outcome::gave_up_budget);
    clk.advance(1ms); // t = 10s: bucket 0 left the window
    const auto b = p.budget();
    CHECK(b.first_attempts == 0);
    CHECK(b.retries == 0);
    CHECK(b.allowed == Approx(2.0));
    CHECK(p.next(err(errc::transient), 1).retry());
    CHECK(p.next(err(errc::transient), 1).retry());
    CHECK(p.next(err(errc::transient), 1).outcome == retry_outcome::gave_up_budget);
    CHECK(counter_value(m, "af_retry_attempts_total", {{"name", "flaky"}, {"outcome", "retry"}})
          == 6);
    CHECK(counter_value(m, "af_retry_attempts_total",
                        {{"name", "flaky"}, {"outcome", "gave_up_budget"}})
          == 3);
  }
}

TEST_CASE("retry: metrics are counted per outcome and registered on first use - decisions are "
          "logged",
          "[resilience][retry]") {
  af::manual_clock clk;
  af::rng rng{5};
  af::metrics m{"n1", "test"};
  captured_log cap;
  af::sup::retry_options o;
  o.max_attempts = 2;
  af::sup::retry_policy p{"payments", o, clk, rng, cap.log, &m};

  p.on_first_attempt();
  REQUIRE(p.next(err(errc::timeout), 1).retry());
  CHECK(p.next(err(errc::validation), 1).outcome == retry_outcome::gave_up_not_retryable);
  // Nothing gave up for exhaustion yet: that series does not exist.
  auto text = m.serialize_text();
  CHECK(text.find(R"(af_retry_attempts_total{name="payments",outcome="retry"} 1)")
        != std::string::npos);
  CHECK(text.find(R"(outcome="gave_up_exhausted")") == std::string::npos);

  CHECK(p.next(err(errc::timeout), 2).outcome == retry_outcome::gave_up_exhausted);
  text = m.serialize_text();
  CHECK(text.find(R"(af_retry_attempts_total{name="payments",outcome="gave_up_exhausted"} 1)")
        != std::string::npos);
  CHECK(counter_value(m, "af_retry_attempts_total",
                      {{"name", "payments"}, {"outcome", "gave_up_not_retryable"}})
        == 1);

  const auto scheduled = cap.events("retry_scheduled");
  REQUIRE(scheduled.size() == 1);
  CHECK(scheduled[0]["level"] == "debug");
  CHECK(scheduled[0]["name"] == "payments");
  CHECK(scheduled[0]["attempt"] == 1);
  CHECK(scheduled[0]["outcome"] == "retry");
  CHECK(scheduled[0]["error"] == "timeout: dep: something timeout");
  const auto gave_up = cap.events("retry_gave_up");
  REQUIRE(gave_up.size() == 2);
  CHECK(gave_up[0]["outcome"] == "gave_up_not_retryable");
  CHECK(gave_up[0]["level"] == "debug");
  CHECK(gave_up[1]["outcome"] == "gave_up_exhausted");
  CHECK(gave_up[1]["level"] == "info");
}

TEST_CASE("retry: a metric name taken by another type does not break the policy",
          "[resilience][retry]") {
  af::manual_clock clk;
  af::rng rng{5};
  af::metrics m{"n1", "test"};
  REQUIRE(m.gauge("af_retry_attempts_total", "squatter"));
  captured_log cap;
  af::sup::retry_policy p{"db", {}, clk, rng, cap.log, &m};
  p.on_first_attempt();
  CHECK(p.next(err(errc::timeout), 1).retry());
  CHECK(p.next(err(errc::timeout), 1).retry());
  CHECK(p.stats().retries == 2);
  CHECK(cap.events("metrics_registration_failed").size() == 1); // once, not per decision
}

TEST_CASE("retry: validate names the offending field", "[resilience][retry]") {
  CHECK(af::sup::validate(af::sup::retry_options{}).has_value());
  const auto msg = [](af::sup::retry_options o) {
    const auto s = af::sup::validate(o);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code() == errc::validation);
    return s.error().message();
  };
  af::sup::retry_options o;
  o.max_attempts = 0;
  CHECK(msg(o) == "retry_options.max_attempts: must be >= 1, got 0");
  o = {};
  o.cap = 10ms;
  CHECK(msg(o) == "retry_options.cap: must be >= base (50ms), got 10ms");
  o = {};
  o.multiplier = 0.5;
  CHECK(msg(o).starts_with("retry_options.multiplier: must be a finite number >= 1"));
  o = {};
  o.budget_ratio = -1;
  CHECK(msg(o).starts_with("retry_options.budget_ratio:"));
  o = {};
  o.budget_window = duration::zero();
  CHECK(msg(o) == "retry_options.budget_window: must be positive, got 0ns");
}

TEST_CASE("rolling_counts: an event counts for between window - window/10 and window",
          "[resilience][retry]") {
  af::sup::rolling_counts w{10s};
  w.add(2500ms, 0);    // bucket [2s, 3s)
  w.add(2900ms, 1, 3); // same bucket
  CHECK(w.sum(2900ms) == af::sup::rolling_counts::totals{1, 3});
  CHECK(w.sum(11999ms) == af::sup::rolling_counts::totals{1, 3});
  CHECK(w.sum(12s) == af::sup::rolling_counts::totals{0, 0});
  // A clock that steps back expires nothing and adds to the newest bucket.
  w.add(20s, 0);
  w.add(5s, 0);
  CHECK(w.sum(5s) == af::sup::rolling_counts::totals{2, 0});
  CHECK(w.sum(29999ms) == af::sup::rolling_counts::totals{2, 0});
  CHECK(w.sum(30s) == af::sup::rolling_counts::totals{0, 0});
  w.add(31s, 1);
  w.clear();
  CHECK(w.sum(31s) == af::sup::rolling_counts::totals{0, 0});
}

TEST_CASE("format_duration picks the largest exact unit", "[resilience][retry]") {
  CHECK(af::sup::format_duration(10s) == "10s");
  CHECK(af::sup::format_duration(1500ms) == "1500ms");
  CHECK(af::sup::format_duration(250us) == "250us");
  CHECK(af::sup::format_duration(7ns) == "7ns");
  CHECK(af::sup::format_duration(duration::zero()) == "0ns");
}

// --- circuit breaker ------------------------------------------------------------------------

namespace {

af::sup::breaker_options consecutive_only(std::uint32_t n) {
  af::sup::breaker_options o;
  o.consecutive_failures = n;
  o.failure_ratio = 0; // off
  o.cool_down = 10s;
  return o;
}

// Runs one admitted call that fails with `e`.
void fail_once(af::sup::circuit_breaker& b, const af::error& e) {
  auto p = b.acquire();
  REQUIRE(p);
  b.on_failure(*p, e);
}

void succeed_once(af::sup::circuit_breaker& b) {
  auto p = b.acquire();
  REQUIRE(p);
  b.on_success(*p);
}

} // namespace

TEST_CASE("breaker: every error kind is classified for counting", "[resilience][breaker]") {
  for (const auto kind : k_all_kinds) {
    INFO(af::to_string(kind));
    const bool counts = kind == errc::transient || kind == errc::timeout || kind == errc::internal;
    CHECK(af::sup::is_dependency_failure(err(kind)) == counts);
  }
}

TEST_CASE("breaker: opens after N consecutive failures - a success resets the run",
          "[resilience][breaker]") {
  af::manual_clock clk;
  af::sup::circuit_breaker b{"db", consecutive_only(3), clk};
  CHECK(b.state() == breaker_state::closed);
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::transient));
  CHECK(b.consecutive_failures() == 2);
  succeed_once(b);
  CHECK(b.consecutive_failures() == 0);
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::internal));
  CHECK(b.state() == breaker_state::closed);
  fail_once(b, err(errc::timeout));
  CHECK(b.state() == breaker_state::open);
  CHECK(b.open_reason() == "3 consecutive failures (last: timeout: dep: something timeout)");
  CHECK(b.stats().failures == 5);
  CHECK(b.stats().successes == 1);
}

TEST_CASE("breaker: rejects while open with an error that names it and the wait",
          "[resilience][breaker]") {
  af::manual_clock clk;
  af::sup::circuit_breaker b{"db", consecutive_only(2), clk};
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::timeout));
  REQUIRE(b.state() == breaker_state::open);
  CHECK(b.retry_after() == 10s);

  clk.advance(2500ms);
  auto p = b.acquire();
  REQUIRE_FALSE(p);
  CHECK(p.error().code() == errc::transient);
  CHECK(p.error().message()
        == "circuit_breaker 'db': open after 2 consecutive failures (last: timeout: dep: "
           "something timeout); next trial call in 7500ms");
  CHECK(b.retry_after() == 7500ms);
  CHECK_FALSE(b.allow());
  CHECK(b.stats().rejected == 2);
  // Results reported without a permit while open change nothing.
  b.on_success();
  b.on_failure(err(errc::timeout));
  CHECK(b.state() == breaker_state::open);
  CHECK(b.stats().ignored == 2);
}

TEST_CASE("breaker: half_open once cool_down has passed, not before", "[resilience][breaker]") {
  af::manual_clock clk;
  af::sup::circuit_breaker b{"db", consecutive_only(1), clk};
  fail_once(b, err(errc::transient));
  clk.advance(10s - 1ns);
  CHECK(b.state() == breaker_state::open);
  CHECK(b.retry_after() == 1ns);
  auto early = b.acquire();
  REQUIRE_FALSE(early);
  CHECK(early.error().message().ends_with("next trial call in 1ms")); // rounded up
  clk.advance(1ns);
  CHECK(b.state() == breaker_state::half_open);
  CHECK(b.retry_after() == duration::zero());
}

TEST_CASE("breaker: half_open admits at most half_open_max_calls trial calls at once",
          "[resilience][breaker]") {
  af::manual_clock clk;
  auto o = consecutive_only(1);
  o.half_open_max_calls = 2;
  o.half_open_successes = 3;
  af::sup::circuit_breaker b{"db", o, clk};
  fail_once(b, err(errc::timeout));
  clk.advance(10s);

  auto t1 = b.acquire();
  auto t2 = b.acquire();
  REQUIRE(t1);
  REQUIRE(t2);
  CHECK(t1->trial);
  CHECK(b.state() == breaker_state::half_open);
  CHECK(b.trial_calls_in_flight() == 2);
  auto t3 = b.acquire();
  REQUIRE_FALSE(t3);
  CHECK(t3.error().code() == errc::transient);
  CHECK(t3.error().message()
        == "circuit_breaker 'db': half_open with 2 trial call(s) in flight (limit 2); retry once "
           "a trial call completes");

  b.on_success(*t1); // frees a slot, 1 of 3 successes
  CHECK(b.trial_calls_in_flight() == 1);
  auto t4 = b.acquire();
  REQUIRE(t4);
  b.release(*t2); // cancelled by its caller: frees the slot, counts nothing
  CHECK(b.trial_calls_in_flight() == 1);
  auto t5 = b.acquire();
  REQUIRE(t5);
  CHECK_FALSE(b.allow());
  CHECK(b.state() == breaker_state::half_open);
}

TEST_CASE("breaker: closes after M successful trials in a row", "[resilience][breaker]") {
  af::manual_clock clk;
  auto o = consecutive_only(2);
  o.half_open_successes = 3;
  af::sup::circuit_breaker b{"db", o, clk};
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::timeout));
  clk.advance(10s);
  succeed_once(b);
  succeed_once(b);
  CHECK(b.state() == breaker_state::half_open);
  succeed_once(b);
  CHECK(b.state() == breaker_state::closed);
  // Closed again with a clean slate: one failure does not re-open it.
  fail_once(b, err(errc::timeout));
  CHECK(b.state() == breaker_state::closed);
  fail_once(b, err(errc::timeout));
  CHECK(b.state() == breaker_state::open);
}

TEST_CASE("breaker: any failed trial re-opens it and restarts the cool-down",
          "[resilience][breaker]") {
  af::manual_clock clk;
  auto o = consecutive_only(1);
  o.half_open_successes = 2;
  af::sup::circuit_breaker b{"db", o, clk};
  fail_once(b, err(errc::timeout));
  clk.advance(15s);
  succeed_once(b); // 1 of 2
  REQUIRE(b.state() == breaker_state::half_open);
  fail_once(b, err(errc::internal));
  CHECK(b.state() == breaker_state::open);
  CHECK(b.open_reason() == "a failed trial call (internal: dep: something internal)");
  CHECK(b.retry_after() == 10s); // from now, not from the first opening
  clk.advance(10s - 1ns);
  CHECK(b.state() == breaker_state::open);
  clk.advance(1ns);
  CHECK(b.state() == breaker_state::half_open);
  // The run of successes starts over in the new half_open period.
  succeed_once(b);
  CHECK(b.state() == breaker_state::half_open);
  succeed_once(b);
  CHECK(b.state() == breaker_state::closed);
}

TEST_CASE("breaker: opens on the failure ratio over the window, only with min_calls calls",
          "[resilience][breaker]") {
  af::manual_clock clk;
  af::sup::breaker_options o;
  o.consecutive_failures = 0; // off: only the ratio
  o.failure_ratio = 0.5;
  o.min_calls = 10;
  o.window = 10s;
  af::sup::circuit_breaker b{"db", o, clk};

  SECTION("not below min_calls, even at 100% failures") {
    for (int i = 0; i < 9; ++i)
      fail_once(b, err(errc::timeout));
    CHECK(b.state() == breaker_state::closed);
    fail_once(b, err(errc::timeout));
    CHECK(b.state() == breaker_state::open);
    CHECK(b.open_reason().starts_with("a failure ratio of 1.00 >= 0.50 over 10 calls in 10s"));
  }

  SECTION("at the ratio once min_calls is reached, with successes in between") {
    for (int i = 0; i < 5; ++i) {
      succeed_once(b);
      fail_once(b, err(errc::transient));
      clk.advance(100ms);
    }
    // The fifth failure made 5 / 10 = 0.5.
    CHECK(b.state() == breaker_state::open);
    CHECK(b.open_reason().starts_with("a failure ratio of 0.50 >= 0.50 over 10 calls"));
  }

  SECTION("below the ratio it stays closed") {
    for (int i = 0; i < 20; ++i) {
      succeed_once(b);
      succeed_once(b);
      fail_once(b, err(errc::transient)); // 1 in 3
    }
    CHECK(b.state() == breaker_state::closed);
  }

  SECTION("failures that left the window no longer count") {
    for (int i = 0; i < 9; ++i)
      fail_once(b, err(errc::timeout)); // at t = 0
    clk.advance(10s);                   // they left the window
    for (int i = 0; i < 6; ++i)
      succeed_once(b);
    for (int i = 0; i < 4; ++i)
      fail_once(b, err(errc::timeout)); // 4 / 10 < 0.5
    CHECK(b.state() == breaker_state::closed);
    fail_once(b, err(errc::timeout)); // 5 / 11 < 0.5
    CHECK(b.state() == breaker_state::closed);
    fail_once(b, err(errc::timeout)); // 6 / 12 = 0.5
    CHECK(b.state() == breaker_state::open);
  }
}

TEST_CASE("breaker: closing forgets the failures that opened it, even within the window",
          "[resilience][breaker]") {
  af::manual_clock clk;
  af::sup::breaker_options o;
  o.consecutive_failures = 0;
  o.failure_ratio = 0.5;
  o.min_calls = 4;
  o.window = 60s;
  o.cool_down = 1s; // much shorter than the window
  o.half_open_successes = 1;
  af::sup::circuit_breaker b{"db", o, clk};
  for (int i = 0; i < 4; ++i)
    fail_once(b, err(errc::timeout));
  REQUIRE(b.state() == breaker_state::open);
  clk.advance(1s);
  succeed_once(b);
  REQUIRE(b.state() == breaker_state::closed);
  // The four failures are still within 60s, but they belong to the period before: one new
  // failure is 1 call, below min_calls.
  fail_once(b, err(errc::timeout));
  CHECK(b.state() == breaker_state::closed);
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::timeout));
  CHECK(b.state() == breaker_state::open);
}

TEST_CASE("breaker: errors about the request do not count, by default", "[resilience][breaker]") {
  af::manual_clock clk;
  af::sup::circuit_breaker b{"db", consecutive_only(3), clk};
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::timeout));
  for (const auto kind : {errc::validation, errc::not_found, errc::unauthorized, errc::forbidden,
                          errc::quota, errc::conflict})
    for (int i = 0; i < 10; ++i)
      fail_once(b, err(kind));
  CHECK(b.state() == breaker_state::closed);
  // The dependency answered: the run of failures is broken.
  CHECK(b.consecutive_failures() == 0);
  CHECK(b.stats().failures == 2);
  CHECK(b.stats().successes == 60);

  SECTION("in half_open an answered request counts as a successful trial") {
    for (int i = 0; i < 3; ++i)
      fail_once(b, err(errc::transient));
    clk.advance(10s);
    auto o = b.options();
    for (std::uint32_t i = 0; i < o.half_open_successes; ++i)
      fail_once(b, err(errc::validation));
    CHECK(b.state() == breaker_state::closed);
  }

  SECTION("a custom predicate decides instead") {
    auto o = consecutive_only(2);
    o.is_failure = [](const af::error& e) { return e.code() == errc::quota; };
    af::sup::circuit_breaker q{"quota-bound", o, clk};
    fail_once(q, err(errc::timeout));
    fail_once(q, err(errc::timeout));
    CHECK(q.state() == breaker_state::closed);
    fail_once(q, err(errc::quota));
    fail_once(q, err(errc::quota));
    CHECK(q.state() == breaker_state::open);
  }
}

TEST_CASE("breaker: results of calls admitted in an earlier state period are ignored",
          "[resilience][breaker]") {
  af::manual_clock clk;
  auto o = consecutive_only(2);
  o.half_open_successes = 1;
  af::sup::circuit_breaker b{"db", o, clk};
  auto slow = b.acquire(); // admitted while closed
  REQUIRE(slow);
  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::timeout));
  clk.advance(10s);
  auto trial = b.acquire();
  REQUIRE(trial);
  REQUIRE(b.state() == breaker_state::half_open);
  // The slow call's success is not a trial result: it neither closes nor frees the slot.
  b.on_success(*slow);
  CHECK(b.state() == breaker_state::half_open);
  CHECK(b.trial_calls_in_flight() == 1);
  b.on_failure(*slow, err(errc::timeout));
  CHECK(b.state() == breaker_state::half_open);
  b.release(*slow);
  CHECK(b.trial_calls_in_flight() == 1);
  CHECK(b.stats().ignored == 2);
  b.on_success(*trial);
  CHECK(b.state() == breaker_state::closed);
  // A permit from the finished half_open period is stale as well.
  b.on_failure(*trial, err(errc::timeout));
  CHECK(b.consecutive_failures() == 0);
}

TEST_CASE("breaker: results without a permit", "[resilience][breaker]") {
  af::manual_clock clk;
  auto o = consecutive_only(2);
  o.half_open_successes = 1;
  af::sup::circuit_breaker b{"db", o, clk};
  REQUIRE(b.allow());
  b.on_failure(err(errc::timeout));
  REQUIRE(b.allow());
  b.on_failure(err(errc::timeout));
  CHECK(b.state() == breaker_state::open);
  clk.advance(10s);
  CHECK(b.state() == breaker_state::half_open);
  b.on_success(); // no trial in flight: not a trial result
  CHECK(b.state() == breaker_state::half_open);
  REQUIRE(b.allow());
  b.on_success();
  CHECK(b.state() == breaker_state::closed);
}

TEST_CASE("breaker: transitions set the state gauge, count per target state and log one line "
          "each",
          "[resilience][breaker]") {
  af::manual_clock clk;
  af::metrics m{"n1", "test"};
  captured_log cap;
  auto o = consecutive_only(2);
  o.half_open_successes = 1;
  af::sup::circuit_breaker b{"payments", o, clk, cap.log, &m};
  const af::metric_labels name{{"name", "payments"}};
  const auto transitions = [&](const char* to) {
    return counter_value(m, "af_circuit_breaker_transitions_total",
                         {{"name", "payments"}, {"to", to}});
  };

  // Registered at construction: a healthy breaker exports 0.
  CHECK(m.serialize_text().find(R"(af_circuit_breaker_state{name="payments"} 0)")
        != std::string::npos);
  CHECK(m.serialize_text().find("af_circuit_breaker_transitions_total{") == std::string::npos);

  fail_once(b, err(errc::timeout));
  fail_once(b, err(errc::timeout));
  CHECK(gauge_value(m, "af_circuit_breaker_state", name) == 1);
  clk.advance(10s);
  fail_once(b, err(errc::transient)); // half_open -> open
  CHECK(gauge_value(m, "af_circuit_breaker_state", name) == 1);
  clk.advance(10s);
  CHECK(b.state() == breaker_state::half_open);
  CHECK(gauge_value(m, "af_circuit_breaker_state", name) == 2);
  succeed_once(b);
  CHECK(gauge_value(m, "af_circuit_breaker_state", name) == 0);
  CHECK(transitions("open") == 2);
  CHECK(transitions("half_open") == 2);
  CHECK(transitions("closed") == 1);
  CHECK(b.stats().transitions == 5);

  const auto lines = cap.events("circuit_breaker_state");
  REQUIRE(lines.size() == 5);
  CHECK(cap.lines->size() == 5); // nothing else is logged
  const std::vector<std::pair<std::string, std::string>> expected = {{"closed", "open"},
                                                                     {"open", "half_open"},
                                                                     {"half_open", "open"},
                                                                     {"open", "half_open"},
                                                                     {"half_open", "closed"}};
  for (std::size_t i = 0; i < lines.size(); ++i) {
    INFO(lines[i].dump());
    CHECK(lines[i]["name"] == "payments");
    CHECK(lines[i]["from"] == expected[i].first);
    CHECK(lines[i]["to"] == expected[i].second);
    CHECK(lines[i]["level"] == (expected[i].second == "open" ? "warn" : "info"));
    CHECK(lines[i]["node"] == "n1");
  }
  CHECK(lines[0]["reason"] == "2 consecutive failures (last: timeout: dep: something timeout)");
  CHECK(lines[1]["reason"] == "cool_down of 10s elapsed");
  CHECK(lines[2]["reason"] == "a failed trial call (transient: dep: something transient)");
  CHECK(lines[4]["reason"] == "1 successful trial calls in a row");
  CHECK(lines[0]["msg"] == "circuit_breaker 'payments': closed -> open");
}

TEST_CASE("breaker: without metrics and logger it still works", "[resilience][breaker]") {
  af::manual_clock clk;
  af::sup::circuit_breaker b{"db", consecutive_only(1), clk};
  fail_once(b, err(errc::timeout));
  CHECK(b.state() == breaker_state::open);
  clk.advance(10s);
  succeed_once(b);
  succeed_once(b);
  succeed_once(b); // default half_open_successes = 3, one trial at a time
  CHECK(b.state() == breaker_state::closed);
}

TEST_CASE("breaker: validate names the offending field", "[resilience][breaker]") {
  CHECK(af::sup::validate(af::sup::breaker_options{}).has_value());
  const auto msg = [](const af::sup::breaker_options& o) {
    const auto s = af::sup::validate(o);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code() == errc::validation);
    return s.error().message();
  };
  af::sup::breaker_options o;
  o.failure_ratio = 1.5;
  CHECK(msg(o).starts_with("breaker_options.failure_ratio: must be within [0, 1], got 1.5"));
  o = {};
  o.failure_ratio = 0;
  o.consecutive_failures = 0;
  CHECK(msg(o)
        == "breaker_options: consecutive_failures and failure_ratio are both 0: the breaker "
           "could never open");
  o = {};
  o.min_calls = 0;
  CHECK(msg(o) == "breaker_options.min_calls: must be >= 1 when failure_ratio is set, got 0");
  o = {};
  o.window = duration::zero();
  CHECK(msg(o) == "breaker_options.window: must be positive, got 0ns");
  o = {};
  o.half_open_max_calls = 0;
  CHECK(msg(o) == "breaker_options.half_open_max_calls: must be >= 1, got 0");
}
