#include "af/sup/retry.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace af::sup {

namespace {

// The retry decision for every error kind, spelled out with the reason. -Wswitch flags a kind
// added to errc until it is decided here, and the static_assert below keeps this table equal to
// af::retryable, which the rest of the runtime uses.
constexpr bool decided_retryable(errc code) noexcept {
  switch (code) {
  case errc::timeout:   // may be slow this once; callers only retry idempotent calls (invariant 4)
  case errc::transient: // by definition: the same call can succeed later
    return true;
  case errc::validation:   // the request itself is wrong: it fails the same way every time
  case errc::not_found:    // retrying does not create it; a caller expecting it to appear polls
  case errc::unauthorized: // missing or expired credentials need a new token, not a retry
  case errc::forbidden:    // a policy decision: the same answer every time
  case errc::quota:        // retrying adds load against the very limit; wait for its reset
  case errc::conflict:     // optimistic concurrency: re-read and recompute; a blind retry conflicts
  case errc::internal:     // a bug or a broken invariant: retrying hides it and multiplies it
    return false;
  }
  return false;
}

constexpr bool table_matches_runtime() noexcept {
  for (int i = static_cast<int>(errc::validation); i <= static_cast<int>(errc::internal); ++i)
    if (decided_retryable(static_cast<errc>(i)) != af::retryable(static_cast<errc>(i)))
      return false;
  return true;
}
static_assert(table_matches_runtime(), "retry.cpp's table disagrees with af::retryable");

constexpr std::size_t k_first = 0; // rolling_counts slot of first attempts
constexpr std::size_t k_retry = 1; // rolling_counts slot of retries

// x^n by squaring: exact IEEE multiplications only, so every platform computes the same bound.
double power(double x, std::uint32_t n) noexcept {
  double r = 1.0;
  while (n != 0) {
    if ((n & 1U) != 0) r *= x;
    x *= x;
    n >>= 1U;
  }
  return r;
}

} // namespace

bool retryable(const af::error& e) noexcept { return af::retryable(e.code()); }

std::string format_duration(duration d) {
  using namespace std::chrono;
  const auto n = d.count();
  if (n != 0 && d % seconds{1} == duration::zero()) return std::to_string(n / 1'000'000'000) + "s";
  if (n != 0 && d % milliseconds{1} == duration::zero())
    return std::to_string(n / 1'000'000) + "ms";
  if (n != 0 && d % microseconds{1} == duration::zero()) return std::to_string(n / 1'000) + "us";
  return std::to_string(n) + "ns";
}

// --- rolling_counts -------------------------------------------------------------------------

rolling_counts::rolling_counts(duration window) noexcept
    : window_(std::max(window, duration{1})),
      width_(std::max(window_ / static_cast<duration::rep>(k_buckets), duration{1})) {}

std::int64_t rolling_counts::index_of(duration now) const noexcept {
  // Floor division, so that times before the clock's origin still map to distinct buckets.
  auto q = now.count() / width_.count();
  if (now.count() % width_.count() < 0) --q;
  return q;
}

void rolling_counts::add(duration now, std::size_t slot, std::uint64_t n) noexcept {
  const auto idx = std::max(index_of(now), newest_);
  newest_ = idx;
  constexpr auto k = static_cast<std::int64_t>(k_buckets);
  auto& b = buckets_[static_cast<std::size_t>(((idx % k) + k) % k)];
  if (b.index != idx) b = bucket{idx, {}};
  b.counts[slot < 2 ? slot : 1] += n;
}

rolling_counts::totals rolling_counts::sum(duration now) const noexcept {
  const auto idx = std::max(index_of(now), newest_);
  const auto oldest = idx - static_cast<std::int64_t>(k_buckets);
  totals out{};
  for (const auto& b : buckets_)
    if (b.index > oldest && b.index <= idx) {
      out[0] += b.counts[0];
      out[1] += b.counts[1];
    }
  return out;
}

void rolling_counts::clear() noexcept {
  buckets_ = {};
  newest_ = std::numeric_limits<std::int64_t>::min();
}

// --- retry_options --------------------------------------------------------------------------

status validate(const retry_options& o) {
  const auto bad = [](std::string_view field, const std::string& why) {
    return validation_error("retry_options." + std::string{field} + ": " + why);
  };
  if (o.max_attempts < 1) return bad("max_attempts", "must be >= 1, got 0");
  if (o.base < duration::zero())
    return bad("base", "must not be negative, got " + format_duration(o.base));
  if (o.cap < o.base)
    return bad("cap",
               "must be >= base (" + format_duration(o.base) + "), got " + format_duration(o.cap));
  if (!std::isfinite(o.multiplier) || o.multiplier < 1.0)
    return bad("multiplier", "must be a finite number >= 1, got " + std::to_string(o.multiplier));
  if (!std::isfinite(o.budget_ratio) || o.budget_ratio < 0.0)
    return bad("budget_ratio",
               "must be a finite number >= 0, got " + std::to_string(o.budget_ratio));
  if (o.budget_window <= duration::zero())
    return bad("budget_window", "must be positive, got " + format_duration(o.budget_window));
  return {};
}

std::string_view to_string(retry_outcome o) noexcept {
  switch (o) {
  case retry_outcome::retry:
    return "retry";
  case retry_outcome::gave_up_not_retryable:
    return "gave_up_not_retryable";
  case retry_outcome::gave_up_exhausted:
    return "gave_up_exhausted";
  case retry_outcome::gave_up_budget:
    return "gave_up_budget";
  }
  return "gave_up_not_retryable";
}

// --- retry_policy ---------------------------------------------------------------------------

retry_policy::retry_policy(std::string name, retry_options opts, const af::clock& clk, af::rng& rng,
                           af::logger log, af::metrics* metrics)
    : name_(std::move(name)), opts_(opts), clock_(&clk), rng_(&rng), log_(std::move(log)),
      metrics_(metrics), budget_(opts.budget_window) {}

void retry_policy::on_first_attempt() {
  budget_.add(clock_->monotonic(), k_first);
  ++stats_.first_attempts;
}

retry_decision retry_policy::next(const af::error& e, std::uint32_t attempt) {
  retry_decision d;
  d.attempt = std::max(attempt, 1U);
  if (!retryable(e)) {
    d.outcome = retry_outcome::gave_up_not_retryable;
  } else if (d.attempt >= std::max(opts_.max_attempts, 1U)) {
    d.outcome = retry_outcome::gave_up_exhausted;
  } else if (const auto now = clock_->monotonic(); !budget_allows(now)) {
    d.outcome = retry_outcome::gave_up_budget;
  } else {
    budget_.add(now, k_retry);
    d.outcome = retry_outcome::retry;
    // Full jitter: uniform over [0, bound] spreads the retries of many callers that failed at
    // the same moment, instead of sending them back in synchronized waves.
    const auto bound = static_cast<std::uint64_t>(backoff_bound(d.attempt).count());
    d.delay = duration{static_cast<duration::rep>(rng_->uniform(bound + 1))};
  }
  count(d.outcome);
  log_decision(d, e, d.attempt);
  return d;
}

af::error retry_policy::give_up_error(const retry_decision& d, const af::error& last) const {
  switch (d.outcome) {
  case retry_outcome::gave_up_exhausted:
    return {last.code(), "retry '" + name_ + "': gave up after " + std::to_string(d.attempt)
                             + " attempts: " + last.to_string()};
  case retry_outcome::gave_up_budget: {
    const auto pct = static_cast<long>(std::lround(std::max(opts_.budget_ratio, 0.0) * 100));
    return {last.code(), "retry '" + name_ + "': retry budget exhausted after attempt "
                             + std::to_string(d.attempt) + " (at most "
                             + std::to_string(opts_.budget_min_per_window) + " + "
                             + std::to_string(pct) + "% of first attempts per "
                             + format_duration(budget_.window()) + "): " + last.to_string()};
  }
  case retry_outcome::gave_up_not_retryable:
  case retry_outcome::retry:
    break;
  }
  return last;
}

duration retry_policy::backoff_bound(std::uint32_t attempt) const noexcept {
  const auto base = std::max(opts_.base, duration::zero());
  const auto cap = std::max(opts_.cap, duration::zero());
  if (base == duration::zero() || cap == duration::zero()) return duration::zero();
  const double mult = std::isfinite(opts_.multiplier) ? std::max(opts_.multiplier, 1.0) : 1.0;
  const double bound = static_cast<double>(base.count()) * power(mult, std::max(attempt, 1U) - 1U);
  // `!(a < b)` also catches an overflow to infinity.
  if (!(bound < static_cast<double>(cap.count()))) return cap;
  return duration{static_cast<duration::rep>(bound)};
}

bool retry_policy::budget_allows(duration now) const noexcept {
  const auto t = budget_.sum(now);
  const double ratio = std::isfinite(opts_.budget_ratio) ? std::max(opts_.budget_ratio, 0.0) : 0.0;
  const double allowed =
      static_cast<double>(opts_.budget_min_per_window) + ratio * static_cast<double>(t[k_first]);
  return static_cast<double>(t[k_retry]) + 1.0 <= allowed;
}

retry_budget_state retry_policy::budget() const {
  const auto t = budget_.sum(clock_->monotonic());
  const double ratio = std::isfinite(opts_.budget_ratio) ? std::max(opts_.budget_ratio, 0.0) : 0.0;
  return {t[k_first], t[k_retry],
          static_cast<double>(opts_.budget_min_per_window)
              + ratio * static_cast<double>(t[k_first])};
}

void retry_policy::count(retry_outcome o) {
  switch (o) {
  case retry_outcome::retry:
    ++stats_.retries;
    break;
  case retry_outcome::gave_up_not_retryable:
    ++stats_.gave_up_not_retryable;
    break;
  case retry_outcome::gave_up_exhausted:
    ++stats_.gave_up_exhausted;
    break;
  case retry_outcome::gave_up_budget:
    ++stats_.gave_up_budget;
    break;
  }
  if (metrics_ == nullptr) return;
  const auto i = static_cast<std::size_t>(o);
  if (!registered_[i]) {
    registered_[i] = true;
    auto c = metrics_->counter(
        "af_retry_attempts_total",
        "Decisions of retry policies after a failed attempt, by policy name and outcome.",
        {{"name", name_}, {"outcome", std::string{to_string(o)}}});
    if (c)
      counters_[i] = *c;
    else // e.g. the name is taken by another metric type: keep going without this series
      log_.warn("metrics_registration_failed", c.error().message(), {{"name", name_}});
  }
  counters_[i].inc();
}

void retry_policy::log_decision(const retry_decision& d, const af::error& e,
                                std::uint32_t attempt) const {
  // Retries and non-retryable errors are routine (debug); giving up on a retryable error is
  // what an operator looks for (info). Extras are built only when the line will be written.
  const auto level =
      d.outcome == retry_outcome::gave_up_exhausted || d.outcome == retry_outcome::gave_up_budget
          ? log_level::info
          : log_level::debug;
  if (!log_.enabled(level)) return;
  nlohmann::json extra = {{"name", name_},
                          {"attempt", attempt},
                          {"outcome", to_string(d.outcome)},
                          {"error", e.to_string()}};
  if (d.retry()) {
    extra["delay_ms"] = std::chrono::duration<double, std::milli>(d.delay).count();
    log_.log(level, "retry_scheduled",
             "retry '" + name_ + "': attempt " + std::to_string(attempt + 1) + " in "
                 + format_duration(d.delay),
             extra);
  } else {
    log_.log(level, "retry_gave_up",
             "retry '" + name_ + "': " + std::string{to_string(d.outcome)} + " after attempt "
                 + std::to_string(attempt),
             extra);
  }
}

} // namespace af::sup
