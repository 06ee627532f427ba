// The request checks every backend applies identically, so that they agree on which errors a
// request gets and what the messages say (the conformance suite in tests/persistence/ checks it).
#pragma once

#include "af/store/backend.hpp"

#include <algorithm>
#include <span>
#include <string>
#include <string_view>

namespace af::store {

/// A request every backend refuses before looking at the database.
[[nodiscard]] inline status check_append(const append_request& r) {
  if (r.stream.empty()) return validation_error("append: the stream id is empty");
  if (r.events.empty()) return validation_error("append to stream " + r.stream + ": no events");
  return {};
}

/// The optimistic-concurrency check against the stream as stored (`exists` false: no stream).
/// A stream keeps the tenant of its first append, and a finished stream takes no more events.
[[nodiscard]] inline status check_expected(const append_request& r, bool exists,
                                           std::string_view tenant, std::uint64_t actual,
                                           bool finished) {
  if (exists && tenant != r.tenant)
    return make_error(errc::forbidden, "append to stream " + r.stream
                                           + ": the stream belongs to tenant '"
                                           + std::string{tenant} + "', not '" + r.tenant + "'");
  if (finished)
    return make_error(errc::conflict, "append to stream " + r.stream
                                          + ": the stream is finished (at version "
                                          + std::to_string(actual) + ") and takes no more events");
  if (r.expected_version != k_any_version && r.expected_version != actual)
    return make_error(errc::conflict, "append to stream " + r.stream + ": expected version "
                                          + std::to_string(r.expected_version) + ", actual version "
                                          + std::to_string(actual));
  return {};
}

/// Reading events that compaction removed: an error, not a silent gap.
[[nodiscard]] inline status check_not_pruned(std::string_view stream, std::uint64_t from_version,
                                             std::uint64_t pruned_through) {
  if (pruned_through == 0 || std::max<std::uint64_t>(from_version, 1) > pruned_through) return {};
  return make_error(errc::not_found,
                    "read stream " + std::string{stream} + " from version "
                        + std::to_string(std::max<std::uint64_t>(from_version, 1)) + ": events 1.."
                        + std::to_string(pruned_through)
                        + " were pruned by compaction (the stream's snapshot covers them): load "
                          "the snapshot and read from version "
                        + std::to_string(pruned_through + 1));
}

/// A snapshot may not claim events the stream does not have, nor another tenant's stream.
[[nodiscard]] inline status check_snapshot(const snapshot_record& s, bool exists,
                                           std::string_view tenant, std::uint64_t version) {
  if (s.stream.empty()) return validation_error("save snapshot: the stream id is empty");
  if (s.version > version)
    return validation_error("save snapshot of stream " + s.stream + ": version "
                            + std::to_string(s.version) + " is beyond the stream's version "
                            + std::to_string(version));
  if (exists && tenant != s.tenant)
    return make_error(errc::forbidden, "save snapshot of stream " + s.stream
                                           + ": the stream belongs to tenant '"
                                           + std::string{tenant} + "', not '" + s.tenant + "'");
  return {};
}

/// Rows must continue the chain: seq head.seq + 1, + 2, ... (`conflict` otherwise: another writer
/// got there first) and each prev_hash must be the previous row's hash (`validation`).
[[nodiscard]] inline status check_audit_rows(const audit_head& head,
                                             std::span<const audit_row> rows) {
  auto seq = head.seq + 1;
  const sha256_digest* prev = &head.hash;
  for (const auto& r : rows) {
    if (r.seq != seq)
      return make_error(errc::conflict, "audit_append: row seq " + std::to_string(r.seq)
                                            + " does not follow seq " + std::to_string(seq - 1)
                                            + " (expected seq " + std::to_string(seq) + ")");
    if (r.prev_hash != *prev)
      return validation_error("audit_append: row seq " + std::to_string(r.seq)
                              + ": prev_hash is not the hash of seq " + std::to_string(seq - 1));
    prev = &r.hash;
    ++seq;
  }
  return {};
}

} // namespace af::store
