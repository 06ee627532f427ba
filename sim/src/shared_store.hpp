// Private: a simulated node's store. The in-memory backend outlives the node's crashes (it is
// the node's "disk"); each (re)start of the journal and the audit writer opens a handle on it.
#pragma once

#include "af/store/backend.hpp"

#include <memory>

namespace af::sim::detail {

/// Forwards every call to the node's memory backend, which it shares with the node's other
/// handles and with the simulator (which crashes it).
class shared_store final : public store::backend {
public:
  explicit shared_store(std::shared_ptr<store::memory_backend> disk) : disk_(std::move(disk)) {}

  [[nodiscard]] std::string_view kind() const noexcept override { return disk_->kind(); }
  [[nodiscard]] const std::string& location() const noexcept override { return disk_->location(); }
  std::vector<expected<store::append_result>>
  append_batch(std::span<const store::append_request> batch, time_point now) override {
    return disk_->append_batch(batch, now);
  }
  expected<std::vector<store::event_record>> read(std::string_view stream, std::uint64_t from,
                                                  std::size_t max) override {
    return disk_->read(stream, from, max);
  }
  expected<std::uint64_t> version(std::string_view stream) override {
    return disk_->version(stream);
  }
  expected<std::vector<store::stream_info>> list_streams(std::string_view prefix,
                                                         std::string_view tenant,
                                                         std::string_view after,
                                                         std::size_t max) override {
    return disk_->list_streams(prefix, tenant, after, max);
  }
  expected<std::optional<store::stream_info>> stream(std::string_view stream) override {
    return disk_->stream(stream);
  }
  expected<store::compact_result> compact(const store::compact_options& opts) override {
    return disk_->compact(opts);
  }
  expected<std::uint64_t> storage_bytes() override { return disk_->storage_bytes(); }
  status save_snapshot(const store::snapshot_record& s) override { return disk_->save_snapshot(s); }
  expected<std::optional<store::snapshot_record>> load_snapshot(std::string_view stream) override {
    return disk_->load_snapshot(stream);
  }
  expected<store::audit_head> audit_last() override { return disk_->audit_last(); }
  status audit_append(std::span<const store::audit_row> rows) override {
    return disk_->audit_append(rows);
  }
  expected<std::vector<store::audit_row>> audit_read(std::uint64_t from_seq,
                                                     std::size_t max) override {
    return disk_->audit_read(from_seq, max);
  }
  status audit_scan(std::uint64_t from_seq, std::size_t max,
                    const std::function<bool(const store::audit_row_view&)>& fn) override {
    return disk_->audit_scan(from_seq, max, fn);
  }
  expected<int> schema_version() override { return disk_->schema_version(); }
  [[nodiscard]] int latest_schema_version() const noexcept override {
    return disk_->latest_schema_version();
  }
  status migrate_to(int target) override { return disk_->migrate_to(target); }

private:
  std::shared_ptr<store::memory_backend> disk_;
};

} // namespace af::sim::detail
