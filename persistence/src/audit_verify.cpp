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
#include <thread>
#include <vector>

namespace af::store {

namespace {

using detail::embedded_seq;

std::string describe(chain_fault f, const audit_row* row, std::uint64_t seq,
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

expected<verify_result> verify_chain(backend& db, const verify_options& opts) {
  verify_result out;
  const auto page = std::max<std::size_t>(opts.page_size, 1);
  std::uint64_t next = 1; // the seq the chain expects at this position
  sha256_digest prev{};   // the hash the next row must link to
  auto read = [&db, page](std::uint64_t from) { return db.audit_read(from, page); };
  auto rows = read(next);
  for (;;) {
    if (!rows) return rows.error();
    if (rows->empty()) break;
    // Read ahead from the seq after this page's last row: if this page is intact, that is the
    // seq the chain expects next (rows come sorted by seq and every one was `next`). The future
    // is waited for on every path out of this iteration (its destructor blocks), so the backend
    // is never used by two threads at once.
    std::future<expected<std::vector<audit_row>>> ahead;
    if (opts.read_ahead) ahead = std::async(std::launch::async, read, rows->back().seq + 1);
    std::span<const audit_row> span{*rows};
    // Each row's own checks (the expensive part: one SHA-256 each) are independent.
    auto bad = opts.first_bad_row ? opts.first_bad_row(span, opts.check_columns)
                                  : first_bad_sequential(span, opts.check_columns);
    // The links, in order, up to the first row that failed on its own.
    for (std::size_t i = 0; i < span.size(); ++i) {
      const auto& r = span[i];
      chain_fault f = chain_fault::none;
      if (r.seq != next)
        f = chain_fault::gap; // rows come sorted by seq: a larger one skipped
      else if (i == bad)
        f = check_row(r, opts.check_columns);
      if (f == chain_fault::none && r.prev_hash != prev) f = chain_fault::broken_link;
      if (f != chain_fault::none) {
        out.first_bad_seq = next;
        out.fault = f;
        out.why = describe(f, &r, next, &prev);
        return out;
      }
      prev = r.hash;
      ++next;
      ++out.count;
    }
    rows = ahead.valid() ? ahead.get() : read(next);
  }
  return out;
}

} // namespace af::store
