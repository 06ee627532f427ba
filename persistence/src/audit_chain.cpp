// The audit chain's arithmetic: canonical record bytes, the hash link and the checks of one row
// (verification of a whole stored chain is in audit_verify.cpp).
#include "af/hash.hpp"
#include "af/store/audit.hpp"
#include "af/v1/audit.pb.h"
#include "audit_detail.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
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

namespace detail {

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

} // namespace detail

chain_fault check_row(const audit_row& row, bool check_columns) {
  if (chain_hash(row.prev_hash, row.record) != row.hash) return chain_fault::hash_mismatch;
  auto e = detail::embedded_seq(row.record);
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

} // namespace af::store
