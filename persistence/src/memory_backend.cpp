// The in-memory backend: the SQLite backend's semantics without a file, for unit tests and the
// simulator, with an explicit durability boundary (sync_all) that a simulated crash falls back to.
#include "af/store/backend.hpp"

#include "store_checks.hpp"

#include <algorithm>
#include <functional>
#include <map>

namespace af::store {

namespace {

// The schema levels of the SQL backends' migrations, emulated: 1 = journal and snapshots,
// 2 = audit log. Keep in step with persistence/migrations/.
constexpr int k_journal_schema = 1;
constexpr int k_audit_schema = 2;
constexpr int k_latest_schema = 2;

class memory_backend_impl final : public memory_backend {
public:
  explicit memory_backend_impl(memory_options opts) : opts_(opts) {
    data_.schema = k_latest_schema;
  }

  [[nodiscard]] std::string_view kind() const noexcept override { return "memory"; }
  [[nodiscard]] const std::string& location() const noexcept override { return location_; }

  std::vector<expected<append_result>> append_batch(std::span<const append_request> batch,
                                                    time_point now) override {
    std::vector<expected<append_result>> out;
    out.reserve(batch.size());
    for (const auto& r : batch)
      out.push_back(append_one(r, now));
    return out;
  }

  expected<std::vector<event_record>> read(std::string_view stream, std::uint64_t from_version,
                                           std::size_t max) override {
    if (auto st = need(k_journal_schema, "read"); !st) return st.error();
    std::vector<event_record> out;
    auto it = data_.streams.find(stream);
    if (it == data_.streams.end()) return out;
    const auto& events = it->second.events;
    const auto first = std::max<std::uint64_t>(from_version, 1) - 1;
    for (auto i = first; i < events.size() && out.size() < max; ++i)
      out.push_back(events[i]);
    return out;
  }

  expected<std::uint64_t> version(std::string_view stream) override {
    if (auto st = need(k_journal_schema, "version"); !st) return st.error();
    auto it = data_.streams.find(stream);
    return it == data_.streams.end() ? std::uint64_t{0} : it->second.events.size();
  }

  expected<std::vector<stream_info>> list_streams(std::string_view prefix, std::string_view tenant,
                                                  std::string_view after,
                                                  std::size_t max) override {
    if (auto st = need(k_journal_schema, "list streams"); !st) return st.error();
    std::vector<stream_info> out;
    for (auto it = data_.streams.lower_bound(std::max(prefix, after));
         it != data_.streams.end() && out.size() < max; ++it) {
      const auto& [id, s] = *it;
      if (!id.starts_with(prefix)) break;
      if (id == after || (!tenant.empty() && s.tenant != tenant)) continue;
      out.push_back({id, s.tenant, s.events.size()});
    }
    return out;
  }

  status save_snapshot(const snapshot_record& s) override {
    if (auto st = need(k_journal_schema, "save snapshot"); !st) return st;
    auto it = data_.streams.find(s.stream);
    const bool exists = it != data_.streams.end();
    if (auto st = check_snapshot(s, exists, exists ? it->second.tenant : std::string{},
                                 exists ? it->second.events.size() : 0);
        !st)
      return st;
    auto [slot, inserted] = data_.snapshots.try_emplace(s.stream, s);
    if (!inserted) {
      record([stream = s.stream, old = slot->second](state& d) { d.snapshots[stream] = old; });
      slot->second = s;
    } else {
      record([stream = s.stream](state& d) { d.snapshots.erase(stream); });
    }
    return {};
  }

  expected<std::optional<snapshot_record>> load_snapshot(std::string_view stream) override {
    if (auto st = need(k_journal_schema, "load snapshot"); !st) return st.error();
    auto it = data_.snapshots.find(stream);
    if (it == data_.snapshots.end()) return std::optional<snapshot_record>{};
    return std::optional<snapshot_record>{it->second};
  }

  expected<audit_head> audit_last() override {
    if (auto st = need(k_audit_schema, "audit_last"); !st) return st.error();
    if (data_.audit.empty()) return audit_head{};
    return audit_head{data_.audit.back().seq, data_.audit.back().hash};
  }

  status audit_append(std::span<const audit_row> rows) override {
    if (auto st = need(k_audit_schema, "audit_append"); !st) return st;
    if (rows.empty()) return {};
    auto head = audit_last();
    if (!head) return head.error();
    if (auto st = check_audit_rows(*head, rows); !st) return st;
    record([size = data_.audit.size()](state& d) { d.audit.resize(size); });
    data_.audit.insert(data_.audit.end(), rows.begin(), rows.end());
    return {};
  }

  expected<std::vector<audit_row>> audit_read(std::uint64_t from_seq, std::size_t max) override {
    if (auto st = need(k_audit_schema, "audit_read"); !st) return st.error();
    std::vector<audit_row> out;
    const auto first = std::max<std::uint64_t>(from_seq, 1) - 1;
    for (auto i = first; i < data_.audit.size() && out.size() < max; ++i)
      out.push_back(data_.audit[i]);
    return out;
  }

  expected<int> schema_version() override { return data_.schema; }
  [[nodiscard]] int latest_schema_version() const noexcept override { return k_latest_schema; }

  status migrate_to(int target) override {
    if (target < 0 || target > k_latest_schema)
      return validation_error("memory: migrate to " + std::to_string(target)
                              + ": this build knows schema versions 0.."
                              + std::to_string(k_latest_schema));
    if (!opts_.sync_on_commit) record([old = data_](state& d) { d = old; });
    // Going down drops the tables of the reverted migrations, and their data with them.
    if (target < k_audit_schema) data_.audit.clear();
    if (target < k_journal_schema) {
      data_.streams.clear();
      data_.snapshots.clear();
    }
    data_.schema = target;
    return {};
  }

  void sync_all() override { undo_.clear(); }

  void crash() override {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it)
      (*it)(data_);
    undo_.clear();
  }

private:
  struct stream_data {
    std::string tenant;
    std::vector<event_record> events; ///< events[i] has version i + 1
  };
  struct state {
    int schema = 0;
    std::map<std::string, stream_data, std::less<>> streams;
    std::map<std::string, snapshot_record, std::less<>> snapshots;
    std::vector<audit_row> audit;
  };

  /// What an SQL backend reports as a missing table.
  [[nodiscard]] status need(int schema, std::string_view op) const {
    if (data_.schema >= schema) return {};
    return internal_error("memory: " + std::string{op} + ": schema version "
                          + std::to_string(data_.schema) + " lacks migration "
                          + std::to_string(schema) + " (migrate first)");
  }

  /// Remembers how to undo a write until the next sync (nothing to undo when every commit syncs).
  void record(std::function<void(state&)> undo) {
    if (!opts_.sync_on_commit) undo_.push_back(std::move(undo));
  }

  expected<append_result> append_one(const append_request& r, time_point now) {
    if (auto st = need(k_journal_schema, "append"); !st) return st.error();
    if (auto st = check_append(r); !st) return st.error();
    auto it = data_.streams.find(r.stream);
    const bool exists = it != data_.streams.end();
    if (auto st = check_expected(r, exists, exists ? it->second.tenant : std::string{},
                                 exists ? it->second.events.size() : 0);
        !st)
      return st.error();
    if (!exists) {
      it = data_.streams.emplace(r.stream, stream_data{r.tenant, {}}).first;
      record([stream = r.stream](state& d) { d.streams.erase(stream); });
    } else {
      record([stream = r.stream, size = it->second.events.size()](state& d) {
        d.streams.find(stream)->second.events.resize(size);
      });
    }
    auto& events = it->second.events;
    const std::uint64_t first = events.size() + 1;
    for (const auto& e : r.events)
      events.push_back(event_record{r.stream, events.size() + 1, r.tenant, e.type, e.payload,
                                    e.envelope_hash, now});
    return append_result{first, events.size(), now};
  }

  memory_options opts_;
  std::string location_ = "memory:";
  state data_;
  std::vector<std::function<void(state&)>> undo_; ///< oldest first, since the last sync
};

} // namespace

std::unique_ptr<memory_backend> make_memory_backend(memory_options opts) {
  return std::make_unique<memory_backend_impl>(opts);
}

} // namespace af::store
