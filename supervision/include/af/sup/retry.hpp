// Retry policy for calls to a dependency: which errors to retry, capped exponential backoff with
// full jitter, and a retry budget so that one flaky dependency cannot multiply the load on it.
#pragma once

#include "af/error.hpp"
#include "af/log.hpp"
#include "af/metrics.hpp"
#include "af/services.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace af::sup {

// --- classification -------------------------------------------------------------------------

/// Whether an error kind may be retried: `af::retryable(errc)` from <af/error.hpp>, re-exported
/// so that there is one answer for the whole runtime (only `transient` and `timeout`; the choice
/// for every kind is spelled out next to a compile-time check in retry.cpp).
using af::retryable;

/// Whether this error may be retried: decided by its kind alone, never by its message.
[[nodiscard]] bool retryable(const af::error& e) noexcept;

/// A short rendering of a duration for messages: "10s", "1500ms", "250us", "7ns" (the largest
/// unit that divides it exactly).
[[nodiscard]] std::string format_duration(duration d);

// --- sliding window -------------------------------------------------------------------------

/// Two event counts over the last `window` of a monotonic clock, e.g. (first attempts, retries)
/// or (calls, failures). The window is kept in `k_buckets` buckets, so memory does not grow with
/// the call rate: an event counts for at least `window - window / k_buckets` and at most
/// `window`. If the clock steps back, events go to the newest bucket (nothing expires early).
/// Not thread-safe.
class rolling_counts {
public:
  static constexpr std::size_t k_buckets = 10;
  using totals = std::array<std::uint64_t, 2>;

  /// A `window` of zero or less is taken as one nanosecond.
  explicit rolling_counts(duration window) noexcept;

  /// Counts `n` events of kind `slot` (0 or 1) at monotonic time `now`.
  void add(duration now, std::size_t slot, std::uint64_t n = 1) noexcept;
  /// The counts of both kinds within the window that ends at `now`.
  [[nodiscard]] totals sum(duration now) const noexcept;
  void clear() noexcept;
  [[nodiscard]] duration window() const noexcept { return window_; }

private:
  struct bucket {
    /// Which bucket-width interval of time the counts belong to (the minimum: none yet).
    std::int64_t index = std::numeric_limits<std::int64_t>::min();
    totals counts{};
  };
  [[nodiscard]] std::int64_t index_of(duration now) const noexcept;

  duration window_;
  duration width_;
  std::int64_t newest_ = std::numeric_limits<std::int64_t>::min();
  std::array<bucket, k_buckets> buckets_{};
};

// --- policy ---------------------------------------------------------------------------------

struct retry_options {
  /// Attempts in total, the first one included: 1 never retries. 0 behaves as 1.
  std::uint32_t max_attempts = 5;
  /// Upper bound of the delay after the first failed attempt.
  duration base = std::chrono::milliseconds{50};
  /// The delay bound never exceeds this, however many attempts failed.
  duration cap = std::chrono::seconds{5};
  /// Growth of the delay bound per failed attempt: bound(n) = min(cap, base * multiplier^(n-1))
  /// after attempt n. Below 1 behaves as 1 (constant bound).
  double multiplier = 2.0;
  /// Retry budget: within any `budget_window`, retries may be at most this fraction of the first
  /// attempts (0.2: one retry per five calls), plus `budget_min_per_window`.
  double budget_ratio = 0.2;
  /// Retries always allowed per window, so that a dependency called rarely can still be retried.
  std::uint32_t budget_min_per_window = 10;
  /// The sliding window of the budget (resolution: a tenth of it, see rolling_counts).
  duration budget_window = std::chrono::seconds{10};
};

/// Checks the options as a configuration loader would; the error names the field, e.g.
/// "retry_options.cap: must be >= base (50ms), got 10ms". `retry_policy` accepts any options
/// (out-of-range values are clamped as documented on each field), so this is advisory.
[[nodiscard]] status validate(const retry_options& opts);

/// What `retry_policy::next` decided.
enum class retry_outcome : unsigned char {
  retry,                 ///< try again after `retry_decision::delay`
  gave_up_not_retryable, ///< the error's kind is not retryable
  gave_up_exhausted,     ///< max_attempts reached
  gave_up_budget,        ///< the retry budget of the window is spent
};

/// "retry", "gave_up_not_retryable", "gave_up_exhausted", "gave_up_budget": the values of the
/// `outcome` label of af_retry_attempts_total.
[[nodiscard]] std::string_view to_string(retry_outcome o) noexcept;

struct retry_decision {
  retry_outcome outcome = retry_outcome::gave_up_not_retryable;
  /// How long to wait before the next attempt (number `attempt + 1`); zero unless retrying.
  duration delay{};
  /// The number of the attempt that failed (1-based).
  std::uint32_t attempt = 1;

  [[nodiscard]] bool retry() const noexcept { return outcome == retry_outcome::retry; }
};

/// Local totals of the decisions of one policy (also exported as af_retry_attempts_total).
struct retry_stats {
  std::uint64_t first_attempts = 0;
  std::uint64_t retries = 0;
  std::uint64_t gave_up_not_retryable = 0;
  std::uint64_t gave_up_exhausted = 0;
  std::uint64_t gave_up_budget = 0;
};

/// The budget as it stands now, within the sliding window.
struct retry_budget_state {
  std::uint64_t first_attempts = 0;
  std::uint64_t retries = 0;
  /// Retries the window allows in total: budget_min_per_window + budget_ratio * first_attempts.
  double allowed = 0;
};

/// Decides, after each failed attempt at calling one dependency, whether and when to try again.
///
/// Usage from an actor (the policy is a plain member of the actor; NOT thread-safe):
///
///     policy.on_first_attempt();               // once per logical call, before attempt 1
///     ... attempt n fails with error e ...
///     auto d = policy.next(e, n);              // records the retry in the budget if granted
///     if (d.retry()) schedule attempt d.attempt + 1 after d.delay;
///     else fail with policy.give_up_error(d, e);
///
/// Time comes only from the injected clock and randomness from the injected rng, so the same
/// seed and the same (virtual) times give the same delays. `name` names the dependency (it is a
/// metric label: keep it from a bounded set, never a per-request id). The clock, rng and metrics
/// must outlive the policy. Metrics are optional (nullptr: off), so is the logger (default: off).
class retry_policy {
public:
  retry_policy(std::string name, retry_options opts, const af::clock& clk, af::rng& rng,
               af::logger log = {}, af::metrics* metrics = nullptr);

  /// Records the first attempt of a logical call: it funds the retry budget.
  void on_first_attempt();

  /// After attempt number `attempt` (1-based; 0 is taken as 1) failed with `e`. A retry decision
  /// is recorded in the budget and counted; so is every way of giving up (checked in this order:
  /// not retryable, attempts exhausted, budget exhausted).
  [[nodiscard]] retry_decision next(const af::error& e, std::uint32_t attempt);

  /// The error to report once the policy gave up: `last` unchanged when it is not retryable,
  /// otherwise `last`'s kind with a message that says why retrying stopped, e.g.
  /// "retry 'db': gave up after 5 attempts: timeout: no reply from db within 2s".
  [[nodiscard]] af::error give_up_error(const retry_decision& d, const af::error& last) const;

  /// The upper bound of the jittered delay after attempt `attempt` fails:
  /// min(cap, base * multiplier^(attempt-1)). The delay itself is uniform in [0, bound].
  [[nodiscard]] duration backoff_bound(std::uint32_t attempt) const noexcept;

  [[nodiscard]] retry_budget_state budget() const;
  [[nodiscard]] const retry_stats& stats() const noexcept { return stats_; }
  [[nodiscard]] const retry_options& options() const noexcept { return opts_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

private:
  [[nodiscard]] bool budget_allows(duration now) const noexcept;
  void count(retry_outcome o);
  void log_decision(const retry_decision& d, const af::error& e, std::uint32_t attempt) const;

  std::string name_;
  retry_options opts_;
  const af::clock* clock_;
  af::rng* rng_;
  af::logger log_;
  af::metrics* metrics_;
  rolling_counts budget_;
  retry_stats stats_;
  // One series per outcome, registered on first use so that unused outcomes export nothing.
  std::array<counter_handle, 4> counters_{};
  std::array<bool, 4> registered_{};
};

} // namespace af::sup
