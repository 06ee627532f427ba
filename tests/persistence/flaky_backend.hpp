// A test backend: the memory backend behind a front that fails chosen calls with `transient`,
// as a busy SQLite file or a PostgreSQL connection lost mid-call does.
#pragma once

#include "af/store/backend.hpp"

#include <atomic>
#include <functional>
#include <chrono>
#include <memory>
#include <thread>

namespace af::test {

class flaky_backend final : public store::backend {
public:
  struct faults {
    int append_failures = 0; ///< the first N append_batch calls fail and write nothing
    int audit_failures = 0;  ///< the first N audit_append calls fail and write nothing
    /// The first N audit_append calls write the rows, then report a transient failure (a
    /// connection lost after COMMIT was sent).
    int audit_failures_after_commit = 0;
    /// While set, append_batch waits (a commit that takes long: a slow sync, a lock).
    std::shared_ptr<std::atomic<bool>> hold_appends = nullptr;
    /// Every append_batch takes at least this long (a sync of that length).
    std::chrono::milliseconds commit_delay{0};
    /// Told the size of every append_batch call, on the calling thread.
    std::function<void(std::size_t)> on_batch = nullptr;
  };

  /// `calls` counts append_batch and audit_append calls (shared with the test).
  flaky_backend(faults f, std::shared_ptr<std::atomic<int>> calls)
      : faults_(f), calls_(std::move(calls)) {}

  [[nodiscard]] std::string_view kind() const noexcept override { return "memory"; }
  [[nodiscard]] const std::string& location() const noexcept override { return inner_->location(); }
  std::vector<expected<store::append_result>>
  append_batch(std::span<const store::append_request> batch, time_point now) override {
    const int n = calls_->fetch_add(1);
    while (faults_.hold_appends && faults_.hold_appends->load())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (faults_.commit_delay.count() > 0) std::this_thread::sleep_for(faults_.commit_delay);
    if (faults_.on_batch) faults_.on_batch(batch.size());
    if (n < faults_.append_failures)
      return std::vector<expected<store::append_result>>(batch.size(), busy());
    return inner_->append_batch(batch, now);
  }
  status audit_append(std::span<const store::audit_row> rows) override {
    const int n = calls_->fetch_add(1);
    if (n < faults_.audit_failures) return busy();
    if (n < faults_.audit_failures_after_commit) {
      if (auto st = inner_->audit_append(rows); !st) return st;
      return error{errc::transient, "flaky: connection lost after COMMIT was sent (simulated)"};
    }
    return inner_->audit_append(rows);
  }

  expected<std::vector<store::event_record>> read(std::string_view s, std::uint64_t v,
                                                  std::size_t m) override {
    return inner_->read(s, v, m);
  }
  expected<std::uint64_t> version(std::string_view s) override { return inner_->version(s); }
  expected<std::vector<store::stream_info>>
  list_streams(std::string_view p, std::string_view t, std::string_view a, std::size_t m) override {
    return inner_->list_streams(p, t, a, m);
  }
  expected<std::optional<store::stream_info>> stream(std::string_view s) override {
    return inner_->stream(s);
  }
  expected<store::compact_result> compact(const store::compact_options& o) override {
    return inner_->compact(o);
  }
  expected<std::uint64_t> storage_bytes() override { return inner_->storage_bytes(); }
  status save_snapshot(const store::snapshot_record& s) override {
    return inner_->save_snapshot(s);
  }
  expected<std::optional<store::snapshot_record>> load_snapshot(std::string_view s) override {
    return inner_->load_snapshot(s);
  }
  expected<store::audit_head> audit_last() override { return inner_->audit_last(); }
  expected<std::vector<store::audit_row>> audit_read(std::uint64_t f, std::size_t m) override {
    return inner_->audit_read(f, m);
  }
  expected<int> schema_version() override { return inner_->schema_version(); }
  [[nodiscard]] int latest_schema_version() const noexcept override {
    return inner_->latest_schema_version();
  }
  status migrate_to(int target) override { return inner_->migrate_to(target); }

  /// The memory backend behind the front (to look at what was really written).
  [[nodiscard]] store::memory_backend& inner() { return *inner_; }

private:
  static error busy() { return error{errc::transient, "flaky: database is locked (simulated)"}; }

  faults faults_;
  std::shared_ptr<std::atomic<int>> calls_;
  std::unique_ptr<store::memory_backend> inner_ = store::make_memory_backend();
};

} // namespace af::test
