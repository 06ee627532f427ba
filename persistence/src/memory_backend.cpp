// The in-memory backend: the SQLite backend's semantics without a file, for unit tests and the
// simulator, with an explicit durability boundary (sync_all) that a simulated crash falls back to.
#include "af/store/backend.hpp"

#include "store_checks.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>

namespace af::store {

namespace {

// The schema levels of the SQL backends' migrations, emulated: 1 = journal and snapshots,
// 2 = audit log, 3 = retention, 4 = SQLite's events in commit order and 5 = its integer stream
// ids (storage layouts: nothing to emulate). Keep in step with persistence/migrations/sqlite/.
constexpr int k_journal_schema = 1;
constexpr int k_audit_schema = 2;
constexpr int k_retention_schema = 3;
constexpr int k_latest_schema = 5;
// The journal's calls use the retention columns (migration 3), as the SQL backends' do.
constexpr int k_journal_needs = k_retention_schema;

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
    if (auto st = need(k_journal_needs, "read"); !st) return st.error();
    std::vector<event_record> out;
    auto it = data_.streams.find(stream);
    if (it == data_.streams.end() || max == 0) return out;
    const auto& s = it->second;
    if (auto st = check_not_pruned(stream, from_version, s.pruned); !st) return st.error();
    const auto first = std::max<std::uint64_t>(from_version, 1) - 1 - s.pruned;
    for (auto i = first; i < s.events.size() && out.size() < max; ++i) {
      const auto& e = s.events[i];
      out.push_back(event_record{it->first, s.pruned + i + 1, s.tenant, *e.type, e.payload,
                                 e.envelope_hash, e.committed_at});
    }
    return out;
  }

  expected<std::uint64_t> version(std::string_view stream) override {
    if (auto st = need(k_journal_needs, "version"); !st) return st.error();
    auto it = data_.streams.find(stream);
    return it == data_.streams.end() ? std::uint64_t{0} : it->second.version();
  }

  expected<std::optional<stream_info>> stream(std::string_view stream) override {
    if (auto st = need(k_journal_needs, "stream"); !st) return st.error();
    auto it = data_.streams.find(stream);
    if (it == data_.streams.end()) return std::optional<stream_info>{};
    return std::optional<stream_info>{info_of(it->first, it->second)};
  }

  expected<compact_result> compact(const compact_options& opts) override {
    if (auto st = need(k_journal_needs, "compact"); !st) return st.error();
    compact_result out;
    if (opts.max_streams == 0) return out;
    const auto cutoff = opts.now - opts.retention;
    // The same order as the SQL backends: oldest finish first, then oldest snapshot first.
    std::vector<std::pair<time_point, std::string>> due;
    for (const auto& [id, s] : data_.streams)
      if (s.finished_at && *s.finished_at <= cutoff) due.emplace_back(*s.finished_at, id);
    std::sort(due.begin(), due.end());
    if (due.size() > opts.max_streams) due.resize(opts.max_streams);
    for (const auto& [at, id] : due) {
      auto it = data_.streams.find(id);
      auto snap = data_.snapshots.find(id);
      std::optional<snapshot_record> old_snap;
      if (snap != data_.snapshots.end()) old_snap = snap->second;
      record([id = id, old = it->second, old_snap](state& d) {
        d.streams[id] = old;
        if (old_snap) d.snapshots[id] = *old_snap;
      });
      out.events_deleted += it->second.events.size();
      data_.streams.erase(it);
      if (snap != data_.snapshots.end()) data_.snapshots.erase(snap);
      ++out.streams_deleted;
    }
    std::vector<std::pair<time_point, std::string>> covered;
    for (const auto& [id, snap] : data_.snapshots) {
      auto it = data_.streams.find(id);
      if (snap.taken_at <= cutoff && it != data_.streams.end() && snap.version > it->second.pruned)
        covered.emplace_back(snap.taken_at, id);
    }
    std::sort(covered.begin(), covered.end());
    if (covered.size() > opts.max_streams) covered.resize(opts.max_streams);
    for (const auto& [at, id] : covered) {
      auto& s = data_.streams.find(id)->second;
      record([id = id, old = s](state& d) { d.streams[id] = old; });
      const auto through = data_.snapshots.find(id)->second.version;
      const auto n = through - s.pruned;
      s.events.erase(s.events.begin(), s.events.begin() + static_cast<std::ptrdiff_t>(n));
      s.pruned = through;
      out.events_deleted += n;
      ++out.streams_pruned;
    }
    out.more = due.size() == opts.max_streams || covered.size() == opts.max_streams;
    return out;
  }

  expected<std::uint64_t> storage_bytes() override {
    std::uint64_t total = 0;
    for (const auto& [id, s] : data_.streams) {
      total += id.size() + s.tenant.size();
      for (const auto& e : s.events)
        total += e.type->size() + e.payload.size() + e.envelope_hash.size();
    }
    for (const auto& [id, snap] : data_.snapshots)
      total += id.size() + snap.type.size() + snap.payload.size();
    for (const auto& a : data_.audit)
      total += a.record.size() + a.prev_hash.size() + a.hash.size();
    return total;
  }

  expected<std::vector<stream_info>> list_streams(std::string_view prefix, std::string_view tenant,
                                                  std::string_view after,
                                                  std::size_t max) override {
    if (auto st = need(k_journal_needs, "list streams"); !st) return st.error();
    std::vector<stream_info> out;
    for (auto it = data_.streams.lower_bound(std::max(prefix, after));
         it != data_.streams.end() && out.size() < max; ++it) {
      const auto& [id, s] = *it;
      if (!id.starts_with(prefix)) break;
      if (id == after || (!tenant.empty() && s.tenant != tenant)) continue;
      out.push_back(info_of(id, s));
    }
    return out;
  }

  status save_snapshot(const snapshot_record& s) override {
    if (auto st = need(k_journal_needs, "save snapshot"); !st) return st;
    auto it = data_.streams.find(s.stream);
    const bool exists = it != data_.streams.end();
    if (auto st = check_snapshot(s, exists, exists ? it->second.tenant : std::string{},
                                 exists ? it->second.version() : 0);
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
    if (target < k_retention_schema)
      for (auto& [id, s] : data_.streams)
        s.finished_at.reset();
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
  /// An event as kept: the stream, its tenant and the version are the stream's (read() puts
  /// them back), the type one of few interned names. Every journaled event pays for what is
  /// stored here, and a deque grows without moving what it holds.
  struct stored_event {
    const std::string* type = nullptr; ///< in types_
    std::string payload;
    sha256_digest envelope_hash{};
    time_point committed_at{};
  };
  struct stream_data {
    std::string tenant;
    std::deque<stored_event> events; ///< events[i] has version pruned + i + 1
    std::uint64_t pruned = 0;        ///< events 1..pruned were removed by compaction
    std::optional<time_point> finished_at;
    [[nodiscard]] std::uint64_t version() const { return pruned + events.size(); }
  };
  struct state {
    int schema = 0;
    std::map<std::string, stream_data, std::less<>> streams;
    std::map<std::string, snapshot_record, std::less<>> snapshots;
    std::deque<audit_row> audit;
  };

  /// What an SQL backend reports as a missing table.
  [[nodiscard]] status need(int schema, std::string_view op) const {
    if (data_.schema >= schema) return {};
    return internal_error("memory: " + std::string{op} + ": schema version "
                          + std::to_string(data_.schema) + " lacks migration "
                          + std::to_string(schema) + " (migrate first)");
  }

  static stream_info info_of(const std::string& id, const stream_data& s) {
    return stream_info{id, s.tenant, s.version(), s.pruned, s.finished_at};
  }

  /// Remembers how to undo a write until the next sync (nothing to undo when every commit syncs).
  void record(std::function<void(state&)> undo) {
    if (!opts_.sync_on_commit) undo_.push_back(std::move(undo));
  }

  expected<append_result> append_one(const append_request& r, time_point now) {
    if (auto st = need(k_journal_needs, "append"); !st) return st.error();
    if (auto st = check_append(r); !st) return st.error();
    auto it = data_.streams.find(r.stream);
    const bool exists = it != data_.streams.end();
    if (auto st = check_expected(r, exists, exists ? it->second.tenant : std::string{},
                                 exists ? it->second.version() : 0,
                                 exists && it->second.finished_at.has_value());
        !st)
      return st.error();
    if (!exists) {
      it = data_.streams.emplace(r.stream, stream_data{r.tenant, {}, 0, std::nullopt}).first;
      record([stream = r.stream](state& d) { d.streams.erase(stream); });
    } else {
      record([stream = r.stream, size = it->second.events.size()](state& d) {
        auto& s = d.streams.find(stream)->second;
        s.events.resize(size);
        s.finished_at.reset(); // a finished stream takes no appends: this one finished it
      });
    }
    auto& s = it->second;
    const std::uint64_t first = s.version() + 1;
    for (const auto& e : r.events)
      s.events.push_back(
          stored_event{&*types_.insert(e.type).first, e.payload, e.envelope_hash, now});
    if (r.finish) s.finished_at = now;
    return append_result{first, s.version(), now};
  }

  memory_options opts_;
  std::string location_ = "memory:";
  state data_;
  std::set<std::string, std::less<>> types_;      ///< every event type appended (a handful)
  std::vector<std::function<void(state&)>> undo_; ///< oldest first, since the last sync
};

} // namespace

std::unique_ptr<memory_backend> make_memory_backend(memory_options opts) {
  return std::make_unique<memory_backend_impl>(opts);
}

} // namespace af::store
