// Verification of a stored audit chain: each row on its own (in parallel over the cores when
// asked), then the links in seq order, reading the next page while the current one is checked.
//
// Tool-side code: `af audit verify` and benchmarks run it in their own process, never inside an
// actor, so it may start threads (the one exception to ARCHITECTURE.md invariant 1 in
// persistence/, listed in tests/runtime/determinism_test.cpp). verify_chain with default
// options uses none.
#include "af/hash.hpp"
#include "af/store/audit.hpp"
#include "audit_detail.hpp"

#include <algorithm>
#include <future>
#include <limits>
#include <optional>
#include <thread>
#include <vector>

namespace af::store {

namespace {

using detail::embedded_seq;

std::string describe(chain_fault f, const audit_row_view* row, std::uint64_t seq,
                     const sha256_digest* expected_prev) {
  auto s = "seq " + std::to_string(seq) + ": ";
  switch (f) {
  case chain_fault::hash_mismatch:
    return s + "hash " + to_hex(row->hash) + " is not SHA-256(prev_hash || record) = "
           + to_hex(chain_hash(row->prev_hash, row->record)) + " (record or hash edited)";
  case chain_fault::column_mismatch:
    return s + "the tenant/ts/actor/action/subject columns differ from the hashed record";
  case chain_fault::broken_link:
    return s + "prev_hash " + to_hex(row->prev_hash) + " is not the previous row's hash "
           + to_hex(*expected_prev) + " (a row before it was deleted, inserted or replaced)";
  case chain_fault::gap:
    return s + "missing (the next stored row is seq " + std::to_string(row->seq) + ")";
  case chain_fault::reordered: {
    auto e = embedded_seq(row->record);
    return s + "the row holds the record of seq " + (e ? std::to_string(*e) : std::string{"?"})
           + " (rows swapped or renumbered)";
  }
  case chain_fault::none:
    break;
  }
  return s + "ok";
}

std::size_t first_bad_sequential(std::span<const audit_row> rows, bool check_columns) {
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (check_row(rows[i], check_columns) != chain_fault::none) return i;
  return rows.size();
}

} // namespace

std::size_t first_bad_row_parallel(std::span<const audit_row> rows, bool check_columns,
                                   unsigned threads) {
  if (threads == 0) threads = std::max(1U, std::thread::hardware_concurrency());
  // Below ~256 rows a part, starting a thread costs more than it saves.
  const std::size_t parts =
      std::min<std::size_t>(threads, std::max<std::size_t>(rows.size() / 256, 1));
  if (parts == 1) return first_bad_sequential(rows, check_columns);
  const std::size_t chunk = (rows.size() + parts - 1) / parts;
  auto part = [&](std::size_t p) {
    auto begin = std::min(rows.size(), p * chunk);
    return rows.subspan(begin, std::min(chunk, rows.size() - begin));
  };
  // found[p]: the first failing index of part p, rows.size() when none; the first over all parts
  // is the sequential answer.
  std::vector<std::size_t> found(parts, rows.size());
  {
    std::vector<std::jthread> workers;
    workers.reserve(parts - 1);
    for (std::size_t p = 1; p < parts; ++p)
      workers.emplace_back([&, p] {
        auto span = part(p);
        if (auto i = first_bad_sequential(span, check_columns); i < span.size())
          found[p] = p * chunk + i;
      });
    auto span = part(0);
    if (auto i = first_bad_sequential(span, check_columns); i < span.size()) found[0] = i;
  } // joins
  return *std::min_element(found.begin(), found.end());
}

verify_options parallel_verify_options() {
  verify_options vo;
  vo.first_bad_row = [](std::span<const audit_row> rows, bool check_columns) {
    return first_bad_row_parallel(rows, check_columns);
  };
  vo.read_ahead = true;
  return vo;
}

verify_options parallel_verify_options(std::function<expected<std::unique_ptr<backend>>()> reader) {
  auto vo = parallel_verify_options();
  vo.open_reader = std::move(reader);
  return vo;
}

namespace {

/// What one stretch of the chain showed.
struct range_result {
  verify_result r;
  sha256_digest last_hash{};               ///< the hash of the last row that verified
  std::optional<sha256_digest> first_prev; ///< the first row's prev_hash, when not linked here
  bool first_row_bad = false;              ///< the failure is the first row on its own
};

/// Walks a stretch of the chain row by row, in seq order: the seq, the row's own checks and the
/// link to the previous row. The first row's link is checked against `prev`, or, when the
/// stretch starts in the middle (its previous row is another reader's), left to the caller.
class chain_walk {
public:
  chain_walk(std::uint64_t from, std::optional<sha256_digest> prev)
      : from_(from), next_(from), prev_(prev.value_or(sha256_digest{})), linked_(prev.has_value()) {
  }

  /// The next row; `own` is the row's own fault (check_row), already known. False once a fault
  /// is found (out() has it).
  bool accept(const audit_row_view& r, chain_fault own) {
    chain_fault f = r.seq != next_ ? chain_fault::gap : own; // rows come sorted: one skipped
    if (f == chain_fault::none && !linked_) {
      out_.first_prev = r.prev_hash;
      linked_ = true;
    } else if (f == chain_fault::none && r.prev_hash != prev_) {
      f = chain_fault::broken_link;
    }
    if (f != chain_fault::none) {
      out_.r.first_bad_seq = next_;
      out_.r.fault = f;
      out_.r.why = describe(f, &r, next_, &prev_);
      out_.first_row_bad = next_ == from_;
      return false;
    }
    prev_ = r.hash;
    out_.last_hash = prev_;
    ++next_;
    ++out_.r.count;
    return true;
  }

  [[nodiscard]] std::uint64_t next() const { return next_; }
  [[nodiscard]] range_result& out() { return out_; }

private:
  range_result out_;
  std::uint64_t from_;
  std::uint64_t next_; ///< the seq the chain expects at this position
  sha256_digest prev_; ///< the hash the next row must link to
  bool linked_;
};

/// Checks the rows from seq `from` up to seq `to` (inclusive; the chain's end when it is the
/// largest value), as verify_chain does. `prev` is the hash the first row must link to; unset,
/// the first row's link is left to the caller (first_prev). Without a row checker or read-ahead,
/// the rows stream out of the store (audit_scan) and are checked as they pass, on this thread.
expected<range_result> verify_range(backend& db, const verify_options& opts, std::uint64_t from,
                                    std::uint64_t to, std::optional<sha256_digest> prev_in) {
  chain_walk walk{from, prev_in};
  if (!opts.first_bad_row && !opts.read_ahead) {
    const auto max = to == std::numeric_limits<std::uint64_t>::max()
                         ? std::numeric_limits<std::size_t>::max()
                         : static_cast<std::size_t>(to - from + 1);
    auto st = db.audit_scan(from, max, [&](const audit_row_view& r) {
      if (walk.next() > to) return false;
      return walk.accept(r, r.seq == walk.next() ? check_row(r, opts.check_columns)
                                                 : chain_fault::none);
    });
    if (!st) return st.error();
    return std::move(walk.out());
  }
  const auto page = std::max<std::size_t>(opts.page_size, 1);
  auto read = [&db, page, to](std::uint64_t at) {
    // Never past `to` (another reader has that stretch), unless rows are missing before it.
    const auto left = to - at + 1;
    return db.audit_read(at, static_cast<std::size_t>(std::min<std::uint64_t>(page, left)));
  };
  auto rows = read(from);
  while (walk.next() <= to) {
    if (!rows) return rows.error();
    if (rows->empty()) break;
    // Read ahead from the seq after this page's last row: if this page is intact, that is the
    // seq the chain expects next (rows come sorted by seq and every one was `next`). The future
    // is waited for on every path out of this iteration (its destructor blocks), so the backend
    // is never used by two threads at once.
    std::future<expected<std::vector<audit_row>>> ahead;
    const auto after = rows->back().seq + 1;
    if (opts.read_ahead && after <= to) ahead = std::async(std::launch::async, read, after);
    std::span<const audit_row> span{*rows};
    // Each row's own checks (the expensive part: one SHA-256 each) are independent.
    auto bad = opts.first_bad_row ? opts.first_bad_row(span, opts.check_columns)
                                  : first_bad_sequential(span, opts.check_columns);
    // The links, in order, up to the first row that failed on its own.
    for (std::size_t i = 0; i < span.size() && walk.next() <= to; ++i) {
      const auto& r = span[i];
      const auto own =
          i == bad && r.seq == walk.next() ? check_row(r, opts.check_columns) : chain_fault::none;
      if (!walk.accept(view_of(r), own)) return std::move(walk.out());
    }
    if (walk.next() > to) break;
    rows = ahead.valid() ? ahead.get() : read(walk.next());
  }
  return std::move(walk.out());
}

constexpr std::uint64_t k_max_seq = std::numeric_limits<std::uint64_t>::max();

} // namespace

expected<verify_result> verify_chain(backend& db, const verify_options& opts) {
  // Two readers: the second half of the chain on a connection of its own, on another thread.
  if (opts.open_reader) {
    auto head = db.audit_last();
    if (!head) return head.error();
    if (head->seq >= 2 * opts.split_min) {
      const auto mid = head->seq / 2;
      auto second = opts.open_reader();
      if (!second) return second.error();
      auto half = opts;
      half.first_bad_row = nullptr; // each reader checks its own rows: two threads, two cores
      half.read_ahead = false;
      auto later = std::async(std::launch::async, [&] {
        return verify_range(**second, half, mid + 1, k_max_seq, std::nullopt);
      });
      auto first = verify_range(db, half, 1, mid, sha256_digest{});
      auto rest = later.get();
      if (!first) return first.error();
      if (!first->r.intact()) return first->r; // the earliest fault is in the first half
      if (first->r.count < mid) {              // rows missing at the end of the first half
        verify_result v = first->r;
        v.first_bad_seq = first->r.count + 1;
        v.fault = chain_fault::gap;
        v.why = "seq " + std::to_string(*v.first_bad_seq) + ": missing";
        return v;
      }
      if (!rest) return rest.error();
      verify_result v = rest->r;
      v.count += first->r.count;
      if (!rest->r.intact() && rest->first_row_bad) return v; // mid + 1 is bad on its own
      if (rest->first_prev && *rest->first_prev != first->last_hash) {
        v.count = first->r.count;
        v.first_bad_seq = mid + 1;
        v.fault = chain_fault::broken_link;
        v.why = "seq " + std::to_string(mid + 1) + ": prev_hash " + to_hex(*rest->first_prev)
                + " is not the previous row's hash " + to_hex(first->last_hash)
                + " (a row before it was deleted, inserted or replaced)";
        return v;
      }
      return v;
    }
  }
  auto all = verify_range(db, opts, 1, k_max_seq, sha256_digest{});
  if (!all) return all.error();
  return all->r;
}

} // namespace af::store
