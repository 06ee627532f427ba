#include "af/sup/circuit_breaker.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

namespace af::sup {

namespace {

constexpr std::size_t k_calls = 0;    // rolling_counts slot of calls
constexpr std::size_t k_failures = 1; // rolling_counts slot of failures

std::string fixed2(double v) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%.2f", v);
  return buf.data();
}

} // namespace

std::string_view to_string(breaker_state s) noexcept {
  switch (s) {
  case breaker_state::closed:
    return "closed";
  case breaker_state::open:
    return "open";
  case breaker_state::half_open:
    return "half_open";
  }
  return "closed";
}

bool is_dependency_failure(const af::error& e) noexcept {
  switch (e.code()) {
  case errc::transient:
  case errc::timeout:
  case errc::internal:
    return true;
  case errc::validation:
  case errc::not_found:
  case errc::unauthorized:
  case errc::forbidden:
  case errc::quota:
  case errc::conflict:
    return false;
  }
  return false;
}

status validate(const breaker_options& o) {
  const auto bad = [](std::string_view field, const std::string& why) {
    return validation_error("breaker_options." + std::string{field} + ": " + why);
  };
  if (!std::isfinite(o.failure_ratio) || o.failure_ratio < 0.0 || o.failure_ratio > 1.0)
    return bad("failure_ratio", "must be within [0, 1], got " + std::to_string(o.failure_ratio));
  if (o.consecutive_failures == 0 && o.failure_ratio == 0.0)
    return validation_error("breaker_options: consecutive_failures and failure_ratio are both "
                            "0: the breaker could never open");
  if (o.failure_ratio > 0.0 && o.min_calls == 0)
    return bad("min_calls", "must be >= 1 when failure_ratio is set, got 0");
  if (o.window <= duration::zero())
    return bad("window", "must be positive, got " + format_duration(o.window));
  if (o.cool_down < duration::zero())
    return bad("cool_down", "must not be negative, got " + format_duration(o.cool_down));
  if (o.half_open_successes == 0) return bad("half_open_successes", "must be >= 1, got 0");
  if (o.half_open_max_calls == 0) return bad("half_open_max_calls", "must be >= 1, got 0");
  return {};
}

circuit_breaker::circuit_breaker(std::string name, breaker_options opts, const af::clock& clk,
                                 af::logger log, af::metrics* metrics)
    : name_(std::move(name)), opts_(std::move(opts)), clock_(&clk), log_(std::move(log)),
      metrics_(metrics), window_(opts_.window) {
  if (!opts_.is_failure) opts_.is_failure = is_dependency_failure;
  if (metrics_ == nullptr) return;
  // Registered at once rather than on the first transition, so that a healthy breaker shows 0.
  auto g = metrics_->gauge("af_circuit_breaker_state",
                           "State of a circuit breaker: 0 closed, 1 open, 2 half_open.",
                           {{"name", name_}});
  if (g) {
    state_gauge_ = *g;
    state_gauge_.set(static_cast<double>(breaker_state::closed));
  } else {
    log_.warn("metrics_registration_failed", g.error().message(), {{"name", name_}});
  }
}

// --- admission ------------------------------------------------------------------------------

expected<breaker_permit> circuit_breaker::acquire() {
  const auto now = clock_->monotonic();
  refresh(now);
  switch (state_) {
  case breaker_state::closed:
    ++stats_.admitted;
    return breaker_permit{generation_, false};
  case breaker_state::half_open:
    if (in_flight_ < std::max(opts_.half_open_max_calls, 1U)) {
      ++in_flight_;
      ++stats_.admitted;
      return breaker_permit{generation_, true};
    }
    break;
  case breaker_state::open:
    break;
  }
  ++stats_.rejected;
  return rejection(now);
}

bool circuit_breaker::allow() { return acquire().has_value(); }

breaker_state circuit_breaker::state() {
  refresh(clock_->monotonic());
  return state_;
}

duration circuit_breaker::retry_after() const {
  if (state_ != breaker_state::open) return duration::zero();
  return std::max(open_until_ - clock_->monotonic(), duration::zero());
}

af::error circuit_breaker::rejection(duration now) const {
  std::string msg = "circuit_breaker '" + name_ + "': ";
  if (state_ == breaker_state::open) {
    // Rounded up, so that a caller who waits this long finds the breaker half_open.
    const auto wait =
        std::chrono::ceil<std::chrono::milliseconds>(std::max(open_until_ - now, duration::zero()));
    msg += "open after " + open_reason_ + "; next trial call in " + format_duration(wait);
  } else {
    msg += "half_open with " + std::to_string(in_flight_) + " trial call(s) in flight (limit "
           + std::to_string(std::max(opts_.half_open_max_calls, 1U))
           + "); retry once a trial call completes";
  }
  return {errc::transient, std::move(msg)};
}

// --- results --------------------------------------------------------------------------------

void circuit_breaker::on_success(const breaker_permit& p) {
  if (current(p)) record_success(p.trial);
}

void circuit_breaker::on_failure(const breaker_permit& p, const af::error& e) {
  if (current(p)) record_failure(p.trial, e);
}

void circuit_breaker::release(const breaker_permit& p) {
  if (p.generation == generation_ && p.trial && in_flight_ > 0) --in_flight_;
}

void circuit_breaker::on_success() { record_success(state_ == breaker_state::half_open); }

void circuit_breaker::on_failure(const af::error& e) {
  record_failure(state_ == breaker_state::half_open, e);
}

bool circuit_breaker::current(const breaker_permit& p) {
  if (p.generation == generation_) return true;
  ++stats_.ignored;
  return false;
}

void circuit_breaker::record_success(bool trial) {
  switch (state_) {
  case breaker_state::closed:
    ++stats_.successes;
    consecutive_ = 0;
    window_.add(clock_->monotonic(), k_calls);
    return;
  case breaker_state::half_open:
    if (!trial || in_flight_ == 0) break;
    --in_flight_;
    ++stats_.successes;
    if (++trial_successes_ >= std::max(opts_.half_open_successes, 1U))
      transition(breaker_state::closed, clock_->monotonic(),
                 std::to_string(trial_successes_) + " successful trial calls in a row");
    return;
  case breaker_state::open:
    break;
  }
  ++stats_.ignored;
}

void circuit_breaker::record_failure(bool trial, const af::error& e) {
  // The dependency answered; the error is about the request, so it says the dependency is up.
  if (!opts_.is_failure(e)) {
    record_success(trial);
    return;
  }
  const auto now = clock_->monotonic();
  switch (state_) {
  case breaker_state::closed: {
    ++stats_.failures;
    ++consecutive_;
    window_.add(now, k_calls);
    window_.add(now, k_failures);
    if (opts_.consecutive_failures > 0 && consecutive_ >= opts_.consecutive_failures) {
      transition(breaker_state::open, now,
                 std::to_string(consecutive_) + " consecutive failures (last: " + e.to_string()
                     + ")");
      return;
    }
    if (opts_.failure_ratio <= 0.0) return;
    const auto t = window_.sum(now);
    const auto calls = static_cast<double>(t[k_calls]);
    if (t[k_calls] < std::max(opts_.min_calls, 1U)) return;
    // Division rather than ratio * calls: 3 / 10 rounds to the same double as 0.3.
    if (const double ratio = static_cast<double>(t[k_failures]) / calls;
        ratio >= opts_.failure_ratio)
      transition(breaker_state::open, now,
                 "a failure ratio of " + fixed2(ratio) + " >= " + fixed2(opts_.failure_ratio)
                     + " over " + std::to_string(t[k_calls]) + " calls in "
                     + format_duration(window_.window()) + " (last: " + e.to_string() + ")");
    return;
  }
  case breaker_state::half_open:
    if (!trial || in_flight_ == 0) break;
    --in_flight_;
    ++stats_.failures;
    transition(breaker_state::open, now, "a failed trial call (" + e.to_string() + ")");
    return;
  case breaker_state::open:
    break;
  }
  ++stats_.ignored;
}

// --- transitions ----------------------------------------------------------------------------

void circuit_breaker::refresh(duration now) {
  if (state_ == breaker_state::open && now >= open_until_)
    transition(breaker_state::half_open, now,
               "cool_down of " + format_duration(opts_.cool_down) + " elapsed");
}

void circuit_breaker::transition(breaker_state to, duration now, std::string reason) {
  const auto from = state_;
  state_ = to;
  // A new period: permits of the old one become stale, and its counters start over.
  ++generation_;
  ++stats_.transitions;
  consecutive_ = 0;
  trial_successes_ = 0;
  in_flight_ = 0;
  if (to == breaker_state::open) {
    open_until_ = now + std::max(opts_.cool_down, duration::zero());
    open_reason_ = reason;
  } else if (to == breaker_state::closed) {
    // Failures from before the breaker opened must not re-open it the moment it closes.
    window_.clear();
  }
  state_gauge_.set(static_cast<double>(to));
  count_transition(to);
  const auto level = to == breaker_state::open ? log_level::warn : log_level::info;
  if (log_.enabled(level))
    log_.log(level, "circuit_breaker_state",
             "circuit_breaker '" + name_ + "': " + std::string{to_string(from)} + " -> "
                 + std::string{to_string(to)},
             {{"name", name_},
              {"from", to_string(from)},
              {"to", to_string(to)},
              {"reason", std::move(reason)}});
}

void circuit_breaker::count_transition(breaker_state to) {
  if (metrics_ == nullptr) return;
  const auto i = static_cast<std::size_t>(to);
  if (!registered_[i]) {
    registered_[i] = true;
    auto c = metrics_->counter("af_circuit_breaker_transitions_total",
                               "State transitions of circuit breakers, by breaker name and the "
                               "state entered.",
                               {{"name", name_}, {"to", std::string{to_string(to)}}});
    if (c)
      transition_counters_[i] = *c;
    else // e.g. the name is taken by another metric type: keep going without this series
      log_.warn("metrics_registration_failed", c.error().message(), {{"name", name_}});
  }
  transition_counters_[i].inc();
}

} // namespace af::sup
