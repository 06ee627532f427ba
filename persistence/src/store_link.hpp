// Private: what the store agents (af.journal, af.audit) share: opening their backend with
// retries (a store that is down must not take the node down), the `transient` error their
// requests get meanwhile, and af_store_errors_total.
#pragma once

#include "af/agent.hpp"
#include "af/metrics.hpp"
#include "af/store/backend.hpp"
#include "af/sup/spec.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace af::store::detail {

class store_link {
public:
  using opener = std::function<expected<std::unique_ptr<backend>>()>;

  /// `who` names the agent in errors ("journal", "audit writer"); `event` is the log event of a
  /// failed open ("journal_unavailable").
  store_link(opener open, std::string who, std::string event)
      : open_(std::move(open)), who_(std::move(who)), event_(std::move(event)) {}

  /// Opens the backend; true when it is open. A transient failure is retried: `Reopen` is sent
  /// to the agent after a capped exponential backoff with full jitter (first wait up to 50 ms).
  template <class Reopen>
  bool open(context& ctx) {
    auto db = open_ ? open_()
                    : expected<std::unique_ptr<backend>>{
                        error{errc::validation, who_ + ": no backend configured"}};
    if (db) {
      db_ = std::move(*db);
      open_error_.reset();
      return true;
    }
    open_error_ = db.error();
    count(ctx, db.error());
    if (!retryable(db.error().code())) {
      ctx.log().error(event_, "cannot open the store (not retried): " + db.error().to_string());
      return false;
    }
    auto delay = sup::backoff{std::chrono::milliseconds(50), std::chrono::seconds(5), {}}.delay(
        ++open_attempts_ + 1, ctx.rng());
    ctx.log().warn(event_, "cannot open the store; retrying: " + db.error().to_string(),
                   {{"retry_in_ms", std::chrono::duration<double, std::milli>(delay).count()}});
    ctx.schedule(delay, Reopen{});
    return false;
  }

  /// The open backend, or null.
  [[nodiscard]] backend* db() const noexcept { return db_.get(); }

  /// What requests get while the backend is not open.
  [[nodiscard]] error unavailable() const {
    return error{errc::transient,
                 who_ + " unavailable: " + (open_error_ ? open_error_->to_string() : "not open")};
  }

  /// Counts `e` in af_store_errors_total{backend,kind} and returns it.
  error count(context& ctx, const error& e) {
    auto kind = std::string{to_string(e.code())};
    auto it = counters_.find(kind);
    if (it == counters_.end()) {
      counter_handle h;
      if (auto c = ctx.metrics().counter(
              "af_store_errors_total", "Storage errors by backend and kind",
              {{"backend", db_ ? std::string{db_->kind()} : "unopened"}, {"kind", kind}}))
        h = *c;
      it = counters_.emplace(kind, h).first;
    }
    it->second.inc();
    return e;
  }

private:
  opener open_;
  std::string who_;
  std::string event_;
  std::unique_ptr<backend> db_;
  std::optional<error> open_error_;
  std::uint32_t open_attempts_ = 0;
  std::map<std::string, counter_handle> counters_;
};

} // namespace af::store::detail
