// The audit chain's arithmetic: canonical record bytes, the hash link and the checks of one row
// (verification of a whole stored chain is in audit_verify.cpp).
#include "af/hash.hpp"
#include "af/store/audit.hpp"
#include "af/v1/audit.pb.h"
#include "audit_detail.hpp"

#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <vector>

namespace af::store {

std::string canonical_bytes(const v1::AuditRecord& record) {
  // What SerializeToCodedStream with SetSerializationDeterministic(true) writes, into a buffer
  // of the exact size (as MessageLite::SerializeToArray does) instead of a growing string that
  // a stream zero-fills to its capacity: every audited step pays this.
  const auto size = record.ByteSizeLong();
  std::string out(size, '\0');
  auto* target = reinterpret_cast<std::uint8_t*>(out.data());
  google::protobuf::io::EpsCopyOutputStream stream{target, static_cast<int>(size),
                                                   /*deterministic=*/true};
  auto* end = record._InternalSerialize(target, &stream);
  out.resize(static_cast<std::size_t>(end - target));
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

audit_row make_audit_row(const v1::AuditRecord& record, std::uint64_t seq, std::string_view tenant,
                         time_point ts, const sha256_digest& prev_hash) {
  const auto ts_ns = static_cast<std::int64_t>(ts.time_since_epoch().count());
  if (record.seq() != 0 || !record.tenant().empty() || record.ts_ns() != 0) {
    v1::AuditRecord r = record; // the writer replaces what the sender set there
    r.set_seq(seq);
    r.set_tenant(std::string{tenant});
    r.set_ts_ns(ts_ns);
    return make_audit_row(r, prev_hash);
  }
  // Deterministic serialization writes fields in number order: seq (1), tenant (2) and ts_ns (3)
  // first, then the record's other fields, which are the bytes of `record` itself (its fields 1-3
  // are unset, so it writes none of them). Proto3 writes no field that holds its default.
  using google::protobuf::io::CodedOutputStream;
  const auto ts_bits = static_cast<std::uint64_t>(ts_ns);
  std::size_t head = 0;
  if (seq != 0) head += 1 + CodedOutputStream::VarintSize64(seq);
  if (!tenant.empty()) head += 1 + CodedOutputStream::VarintSize64(tenant.size()) + tenant.size();
  if (ts_bits != 0) head += 1 + CodedOutputStream::VarintSize64(ts_bits);
  const auto body = record.ByteSizeLong();
  audit_row row;
  row.seq = seq;
  row.tenant = tenant;
  row.ts = time_point{std::chrono::nanoseconds{ts_ns}};
  row.actor = record.actor();
  row.action = record.action();
  row.subject = record.subject();
  row.record.resize(head + body);
  auto* p = reinterpret_cast<std::uint8_t*>(row.record.data());
  if (seq != 0) {
    p = CodedOutputStream::WriteTagToArray(1 << 3, p);
    p = CodedOutputStream::WriteVarint64ToArray(seq, p);
  }
  if (!tenant.empty()) {
    p = CodedOutputStream::WriteTagToArray((2 << 3) | 2, p);
    p = CodedOutputStream::WriteVarint64ToArray(tenant.size(), p);
    p = std::copy(tenant.begin(), tenant.end(), p);
  }
  if (ts_bits != 0) {
    p = CodedOutputStream::WriteTagToArray(3 << 3, p);
    p = CodedOutputStream::WriteVarint64ToArray(ts_bits, p);
  }
  google::protobuf::io::EpsCopyOutputStream stream{p, static_cast<int>(body),
                                                   /*deterministic=*/true};
  auto* end = record._InternalSerialize(p, &stream);
  row.record.resize(
      static_cast<std::size_t>(end - reinterpret_cast<std::uint8_t*>(row.record.data())));
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

namespace {

/// Reads a varint at `p` (advancing it); false when truncated or longer than 10 bytes.
bool read_varint(const char*& p, const char* end, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 70 && p < end; shift += 7) {
    const auto b = static_cast<std::uint8_t>(*p++);
    v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

/// Whether the plain columns equal the record's fields (tenant 2, ts_ns 3, actor 4, action 5,
/// subject 6 of af.v1.AuditRecord), by one scan of the wire format instead of a full parse:
/// verification checks millions of rows. A record that is not well-formed does not match. As
/// in Protobuf parsing, the last occurrence of a field wins and a missing one is its default.
bool columns_match(const audit_row_view& row) {
  std::string_view tenant, actor, action, subject;
  std::uint64_t ts = 0;
  const char* p = row.record.data();
  const char* end = p + row.record.size();
  while (p < end) {
    std::uint64_t key = 0;
    if (!read_varint(p, end, key)) return false;
    const auto field = key >> 3;
    std::uint64_t v = 0;
    switch (key & 7) {
    case 0: // varint
      if (!read_varint(p, end, v)) return false;
      if (field == 3) ts = v;
      break;
    case 1: // 64-bit
      if (end - p < 8) return false;
      p += 8;
      break;
    case 2: { // length-delimited
      if (!read_varint(p, end, v) || v > static_cast<std::uint64_t>(end - p)) return false;
      const std::string_view bytes{p, static_cast<std::size_t>(v)};
      p += v;
      if (field == 2)
        tenant = bytes;
      else if (field == 4)
        actor = bytes;
      else if (field == 5)
        action = bytes;
      else if (field == 6)
        subject = bytes;
      break;
    }
    case 5: // 32-bit
      if (end - p < 4) return false;
      p += 4;
      break;
    default: // groups or invalid wire types: not an AuditRecord
      return false;
    }
    if (field == 0) return false;
  }
  return tenant == row.tenant && actor == row.actor && action == row.action
         && subject == row.subject
         && static_cast<std::int64_t>(ts) == row.ts.time_since_epoch().count();
}

} // namespace

audit_row_view view_of(const audit_row& row) noexcept {
  return {row.seq,     row.tenant, row.ts,        row.actor, row.action,
          row.subject, row.record, row.prev_hash, row.hash};
}

chain_fault check_row(const audit_row& row, bool check_columns) {
  return check_row(view_of(row), check_columns);
}

status backend::audit_scan(std::uint64_t from_seq, std::size_t max,
                           const std::function<bool(const audit_row_view&)>& fn) {
  constexpr std::size_t k_page = 4096;
  while (max > 0) {
    auto rows = audit_read(from_seq, std::min(max, k_page));
    if (!rows) return rows.error();
    for (const auto& r : *rows)
      if (!fn(view_of(r))) return {};
    if (rows->size() < std::min(max, k_page)) return {};
    max -= rows->size();
    from_seq = rows->back().seq + 1;
  }
  return {};
}

chain_fault check_row(const audit_row_view& row, bool check_columns) {
  if (chain_hash(row.prev_hash, row.record) != row.hash) return chain_fault::hash_mismatch;
  auto e = detail::embedded_seq(row.record);
  if (!e || *e != row.seq) return chain_fault::reordered;
  if (check_columns && !columns_match(row)) return chain_fault::column_mismatch;
  return chain_fault::none;
}

} // namespace af::store
