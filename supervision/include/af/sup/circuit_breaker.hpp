// Circuit breaker for calls to a dependency: stops calling it while it keeps failing, then lets a
// few trial calls through after a cool-down to find out whether it has recovered.
#pragma once

#include "af/error.hpp"
#include "af/log.hpp"
#include "af/metrics.hpp"
#include "af/services.hpp"
#include "af/sup/retry.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace af::sup {

/// closed: calls go through; open: calls are rejected; half_open: a few trial calls go through.
/// The values are those of the gauge af_circuit_breaker_state.
enum class breaker_state : unsigned char { closed = 0, open = 1, half_open = 2 };

/// "closed", "open", "half_open".
[[nodiscard]] std::string_view to_string(breaker_state s) noexcept;

/// The default answer to "does this error say the dependency is in trouble?": transient, timeout
/// and internal do. The others describe the caller's request or rights (validation, not_found,
/// unauthorized, forbidden, conflict) or a limit the dependency enforces on purpose (quota), so
/// they must not cut every other caller off.
[[nodiscard]] bool is_dependency_failure(const af::error& e) noexcept;

struct breaker_options {
  /// Open after this many counted failures in a row while closed; 0 disables this trigger.
  std::uint32_t consecutive_failures = 5;
  /// Open when failures / calls >= this ratio within `window` while closed, once the window
  /// holds at least `min_calls` calls; 0 disables this trigger.
  double failure_ratio = 0.5;
  /// Fewer calls than this in the window say too little for the ratio (0 behaves as 1).
  std::uint32_t min_calls = 20;
  /// The sliding window of the ratio trigger (resolution: a tenth of it, see rolling_counts).
  duration window = std::chrono::seconds{30};
  /// How long to stay open before admitting trial calls; restarts on every re-opening.
  duration cool_down = std::chrono::seconds{10};
  /// Close after this many successful trial calls in a row in half_open (0 behaves as 1).
  std::uint32_t half_open_successes = 3;
  /// Trial calls in flight at once in half_open; more are rejected (0 behaves as 1).
  std::uint32_t half_open_max_calls = 1;
  /// Which errors count as failures; empty: `is_dependency_failure`. An error that does not
  /// count is recorded as a success, since the dependency did answer.
  std::function<bool(const af::error&)> is_failure{};
};

/// Checks the options as a configuration loader would; the error names the field, e.g.
/// "breaker_options.failure_ratio: must be within [0, 1], got 1.5". `circuit_breaker` accepts
/// any options (clamped as documented on each field), so this is advisory.
[[nodiscard]] status validate(const breaker_options& opts);

/// Admission of one call, to hand back with its outcome, so that a result which arrives after
/// the breaker changed state (a slow call admitted while closed, a trial call of an earlier
/// half_open period) is recognised as stale and ignored.
struct breaker_permit {
  std::uint64_t generation = 0; ///< the breaker's state period that admitted the call
  bool trial = false;           ///< admitted in half_open: holds one of its trial slots
};

/// Local totals of one breaker.
struct breaker_stats {
  std::uint64_t admitted = 0;  ///< calls let through
  std::uint64_t rejected = 0;  ///< calls refused while open or half_open was full
  std::uint64_t successes = 0; ///< results recorded as successes (uncounted errors included)
  std::uint64_t failures = 0;  ///< results recorded as failures
  std::uint64_t ignored = 0;   ///< stale results, or results while open
  std::uint64_t transitions = 0;
};

/// A circuit breaker in front of one dependency.
///
///     auto p = breaker.acquire();               // before each call
///     if (!p) reply with p.error();             // transient: names the breaker and the wait
///     ... call ...
///     breaker.on_success(*p);   or   breaker.on_failure(*p, err);
///
/// closed -> open after `consecutive_failures` failures in a row, or a failure ratio >=
/// `failure_ratio` over `window` with at least `min_calls` calls; open -> half_open once
/// `cool_down` has passed (noticed by the next acquire(), allow() or state()); half_open ->
/// closed after `half_open_successes` successful trials in a row; half_open -> open on any
/// failed trial. Each transition writes one log line (event "circuit_breaker_state", fields
/// name, from, to, reason) and updates af_circuit_breaker_state{name} and
/// af_circuit_breaker_transitions_total{name, to}.
///
/// Every admitted call must end in on_success, on_failure or release; a trial call that never
/// reports back keeps its half_open slot, so give calls a timeout and report it as a failure.
///
/// Time comes only from the injected clock (virtual under the simulator). NOT thread-safe: a
/// plain member of the actor that makes the calls. `name` is a metric label (bounded set: name
/// the dependency, not a request). The clock and metrics must outlive the breaker; metrics are
/// optional (nullptr: off), so is the logger (default: off).
class circuit_breaker {
public:
  circuit_breaker(std::string name, breaker_options opts, const af::clock& clk, af::logger log = {},
                  af::metrics* metrics = nullptr);

  /// Admits a call, or refuses it with a `transient` error that names the breaker, its state and
  /// when it will admit a trial call, e.g. "circuit_breaker 'db': open after 5 consecutive
  /// failures (last: timeout: ...); next trial call in 7500ms".
  [[nodiscard]] expected<breaker_permit> acquire();
  /// acquire() for callers that report results without a permit (see on_success()).
  [[nodiscard]] bool allow();

  /// The admitted call succeeded.
  void on_success(const breaker_permit& p);
  /// The admitted call failed with `e`; counts as a failure only if `is_failure(e)`.
  void on_failure(const breaker_permit& p, const af::error& e);
  /// The admitted call ended without saying anything about the dependency (e.g. cancelled by its
  /// caller): frees its trial slot, records nothing.
  void release(const breaker_permit& p);

  /// Without a permit: the result is taken to belong to a call admitted in the current state
  /// period. In half_open it is ignored unless a trial call is in flight.
  void on_success();
  void on_failure(const af::error& e);

  /// The state now; an open breaker whose cool-down has passed becomes half_open here.
  [[nodiscard]] breaker_state state();
  /// How long until an open breaker admits a trial call; zero when not open.
  [[nodiscard]] duration retry_after() const;
  /// Why the breaker last opened ("5 consecutive failures (last: ...)"); empty if it never did.
  [[nodiscard]] const std::string& open_reason() const noexcept { return open_reason_; }
  [[nodiscard]] std::uint32_t consecutive_failures() const noexcept { return consecutive_; }
  [[nodiscard]] std::uint32_t trial_calls_in_flight() const noexcept { return in_flight_; }
  [[nodiscard]] const breaker_stats& stats() const noexcept { return stats_; }
  [[nodiscard]] const breaker_options& options() const noexcept { return opts_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

private:
  void record_success(bool trial);
  void record_failure(bool trial, const af::error& e);
  [[nodiscard]] bool current(const breaker_permit& p);
  void refresh(duration now);
  void transition(breaker_state to, duration now, std::string reason);
  [[nodiscard]] af::error rejection(duration now) const;
  void count_transition(breaker_state to);

  std::string name_;
  breaker_options opts_;
  const af::clock* clock_;
  af::logger log_;
  af::metrics* metrics_;

  breaker_state state_ = breaker_state::closed;
  std::uint64_t generation_ = 0;
  rolling_counts window_; // slot 0: calls, slot 1: failures; used while closed
  std::uint32_t consecutive_ = 0;
  std::uint32_t trial_successes_ = 0;
  std::uint32_t in_flight_ = 0;
  duration open_until_{};
  std::string open_reason_;
  breaker_stats stats_;

  gauge_handle state_gauge_;
  // One series per target state, registered on its first transition.
  std::array<counter_handle, 3> transition_counters_{};
  std::array<bool, 3> registered_{};
};

} // namespace af::sup
