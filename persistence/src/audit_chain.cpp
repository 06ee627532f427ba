// The audit chain's arithmetic: canonical record bytes, the hash link, and verification of a
// stored chain (each row on its own, then the links in seq order).
#include "af/hash.hpp"
#include "af/store/audit.hpp"
#include "af/v1/audit.pb.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <future>
#include <thread>
#include <vector>

namespace af::store {

std::string canonical_bytes(const v1::AuditRecord& record) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream{&out};
    google::protobuf::io::CodedOutputStream coded{&stream};
    coded.SetSerializationDeterministic(true);
    record.SerializeToCodedStream(&coded);
  }
  return out;
}

sha256_digest chain_hash(const sha256_digest& prev_hash, std::string_view record) {
  // One buffer per thread: verification hashes millions of small records.
  thread_local std::string buf;
  buf.assign(reinterpret_cast<const char*>(prev_hash.data()), prev_hash.size());
  buf.append(record);
  return sha256(buf);
}

audit_row make_audit_row(const v1::AuditRecord& record, const sha256_digest& prev_hash) {
  audit_row row;
  row.seq = record.seq();
  row.tenant = record.tenant();
  row.ts = time_point{std::chrono::nanoseconds{record.ts_ns()}};
  row.actor = record.actor();
  row.action = record.action();
  row.subject = record.subject();
  row.record = canonical_bytes(record);
  row.prev_hash = prev_hash;
  row.hash = chain_hash(prev_hash, row.record);
  return row;
}

std::string_view to_string(chain_fault f) noexcept {
  switch (f) {
  case chain_fault::none:
    return "none";
  case chain_fault::hash_mismatch:
    return "hash_mismatch";
  case chain_fault::column_mismatch:
    return "column_mismatch";
  case chain_fault::broken_link:
    return "broken_link";
  case chain_fault::gap:
    return "gap";
  case chain_fault::reordered:
    return "reordered";
  }
  return "unknown";
}

namespace {

/// The seq inside a canonical record without parsing all of it: deterministic serialization
/// writes fields in number order, so a non-zero seq (field 1, varint) comes first.
std::optional<std::uint64_t> embedded_seq(std::string_view rec) {
  if (rec.empty() || static_cast<std::uint8_t>(rec[0]) != 0x08) return std::nullopt;
  std::uint64_t v = 0;
  for (std::size_t i = 1; i < rec.size() && i <= 10; ++i) {
    auto b = static_cast<std::uint8_t>(rec[i]);
    v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * (i - 1));
    if ((b & 0x80) == 0) return v;
  }
  return std::nullopt;
}

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

chain_fault check_row(const audit_row& row, bool check_columns) {
  if (chain_hash(row.prev_hash, row.record) != row.hash) return chain_fault::hash_mismatch;
  auto e = embedded_seq(row.record);
  if (!e || *e != row.seq) return chain_fault::reordered;
  if (check_columns) {
    // Reused: parsing into a cleared message keeps its strings' buffers (no allocation per row).
    thread_local v1::AuditRecord r;
    if (!r.ParseFromString(row.record) || r.tenant() != row.tenant || r.actor() != row.actor
        || r.action() != row.action || r.subject() != row.subject
        || r.ts_ns() != row.ts.time_since_epoch().count())
      return chain_fault::column_mismatch;
  }
  return chain_fault::none;
}

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
